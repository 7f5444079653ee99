"""One budgeted call, as both framework adapters drive it.

A :class:`BudgetedCall` follows one model call under a :class:`~lean_plugins.budget.BudgetRun`:
the model's output arrives in pieces (:meth:`BudgetedCall.push`), the call hands out only text
that is sure to be kept (:meth:`BudgetedCall.take`), says when the reader should close the
stream (:attr:`BudgetedCall.should_close`), and ends with the provider's usage and finish reason
(:meth:`BudgetedCall.finish`), which accounts the call once. With a local model the run is the
model's own stopping criterion: the model stops itself, exactly, and the pieces are only shown.

The rules the adapters share live here too: which model fields carry an output-token limit
(:data:`MAX_TOKENS_FIELDS`, :func:`capped_limits`), which finish reasons mean the provider hit
that limit, and which models are ours (:func:`is_local_model`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lean_plugins.budget.policy import BudgetResult, BudgetRun

#: Fields through which models (LangChain and LlamaIndex, any provider) take an output-token
#: limit, in order of preference; the first one a model has is set to the budget.
MAX_TOKENS_FIELDS = (
    "max_tokens",
    "max_new_tokens",
    "max_output_tokens",
    "max_completion_tokens",
    "num_predict",
    "max_tokens_to_sample",
    "num_output",
)

#: Finish reasons with which providers say they stopped at the output-token limit.
PROVIDER_LENGTH_REASONS = frozenset({"length", "max_tokens", "MAX_TOKENS"})


def capped_limits(fields: Iterable[str], values: dict[str, Any], budget: int) -> dict[str, int]:
    """The update that limits a model to ``budget`` output tokens: ``{field: limit}`` for the
    first of :data:`MAX_TOKENS_FIELDS` among ``fields`` (empty when it has none). A smaller
    limit the caller set already is kept."""
    names = set(fields)
    for name in MAX_TOKENS_FIELDS:
        if name in names:
            current = values.get(name)
            ok = isinstance(current, int) and not isinstance(current, bool) and current > 0
            return {name: min(current, budget) if ok else budget}
    return {}


def is_local_model(model: Any) -> bool:
    """True for our own local models (LangChain ``LeanChatModel`` / ``LeanLLM``, LlamaIndex
    ``LeanLocalLLM``): they take a stopping criterion, so the budget stops them exactly,
    inside generation."""
    return type(model).__module__.startswith("lean_plugins.") and hasattr(model, "local_llm")


def is_length_stop(finish_reason: Any) -> bool:
    """True when a provider's finish reason says it stopped at the output-token limit."""
    return isinstance(finish_reason, str) and finish_reason in PROVIDER_LENGTH_REASONS


@dataclass
class BudgetedCall:
    """The state of one budgeted call; see the module docs."""

    run: BudgetRun
    criterion: bool = False
    """True when the run is the model's own stopping criterion (a local model)."""
    capped: bool = False
    """True when the model's max-tokens field was set to the budget."""
    streamed: bool = False
    """True once a piece arrived through a framework's streamed-token event."""
    seen: str = ""
    """Everything the model streamed (criterion mode: what may be shown is a prefix of it)."""
    pending: str = ""
    taken: int = 0
    result: BudgetResult | None = None

    @property
    def stopped(self) -> bool:
        """True once the budget decided to stop."""
        return self.run.stopped

    @property
    def should_close(self) -> bool:
        """True when the reader should close the model's stream now (the budget stopped it and
        the model does not stop itself)."""
        return self.run.stopped and not self.criterion

    def count(self, text: str) -> None:
        """Count a streamed piece without taking it (a tracer's token event)."""
        if self.result is None and not self.criterion and text:
            self.pending += self.run.feed(text)

    def push(self, text: str) -> None:
        """Add a streamed piece of the answer."""
        self.run.streamed = True
        self.seen += text
        self.count(text)

    def take(self) -> str:
        """Kept text not handed out yet: always a prefix of the final text, never more."""
        if self.result is not None:
            out = self.result.text[self.taken :]
        elif self.criterion:
            safe = min(self.run.safe_length(), len(self.seen))
            out = self.seen[self.taken : safe] if safe > self.taken else ""
        else:
            out, self.pending = self.pending, ""
        self.taken += len(out)
        return out

    def step(self, text: str) -> str:
        """:meth:`push` then :meth:`take`: the kept text this piece adds."""
        self.push(text)
        return self.take()

    def finish(
        self,
        text: str | None = None,
        *,
        output_tokens: int | None = None,
        input_tokens: int | None = None,
        finish_reason: Any = None,
        cached: bool = False,
        tool_call_tokens: int = 0,
    ) -> BudgetResult:
        """End the call (idempotent) and account it once.

        ``text``: the whole answer when it was not streamed (it is judged now: a model that
        cannot stream never hands out text beyond the budget). ``output_tokens`` /
        ``input_tokens``: the provider's usage, if reported. ``finish_reason``: the provider's.
        ``cached``: a cache served the answer (nothing was spent). ``tool_call_tokens``: the
        reply's tool calls counted by :func:`lean_plugins.agents.reply_tool_call_tokens`
        (both adapters pass it): without the provider's usage the call is booked as its text
        plus these, as every other layer books the same reply. They never cut anything and do
        not count towards the provider-cap check below (that count is the provider's own wire
        form, which ours only approximates).
        """
        if self.result is not None:
            return self.result
        run = self.run
        if text and not self.criterion and not self.seen and run.tokens_so_far == 0:
            self.count(text)  # not streamed: account (and judge) the whole answer
        produced = output_tokens if output_tokens is not None else run.tokens_so_far
        # a capped model that produced its whole budget was stopped by the cap we set
        truncated = is_length_stop(finish_reason) or (self.capped and produced >= run.budget)
        self.result = run.finish(
            (text if text is not None else self.seen or None) if self.criterion else None,
            output_tokens=output_tokens,
            input_tokens=input_tokens,
            truncated_by_provider=truncated,
            cached=cached,
            tool_call_tokens=tool_call_tokens,
        )
        return self.result
