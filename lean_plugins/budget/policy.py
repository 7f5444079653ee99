"""The stopping policy of one call: hard stop at the budget, soft stop at a sentence end.

A :class:`BudgetRun` follows one generation, either as text chunks (a provider's stream, via
:meth:`BudgetRun.feed`) or as token steps (a local model, via the run being a
:data:`~lean_plugins.generation.StoppingCriterion`). It decides when to stop and which text to
keep:

* ``budget``: the answer reached the budget; the text is its first ``budget`` tokens.
* ``soft_budget``: as ``budget``, but the text is cut back to the last sentence end that lies
  in the final ``soft_window`` (15%) of the budget, so the answer does not end mid-sentence.
* ``confidence``: a local model's own end-of-sequence probability passed the threshold; the
  text ends at the sentence where the model would have liked to end.
* ``natural``: the model ended by itself within the budget.

When streaming, :meth:`BudgetRun.feed` returns only text that is sure to be kept: the open
last token piece is held back (it may still change), and inside the final window only whole
sentences are released. So what a user saw streamed is always a prefix of the final text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lean_plugins.budget.counting import StreamingTokenCounter
from lean_plugins.errors import BudgetExceededError, ConfigurationError
from lean_plugins.generation import GenerationStep
from lean_plugins.tokens import DEFAULT_TOKENIZER, Tokenizer, count_tokens

#: Why a budgeted call ended (a subset of :data:`lean_plugins.generation.STOP_REASONS`).
BUDGET_STOP_REASONS = ("natural", "budget", "soft_budget", "confidence")

# A sentence end confirmed by the whitespace after it, or the end of a line (lists, code).
_BOUNDARY = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)|\n+")
# Token mode: the generated text so far ends at a sentence end or a line end.
_ENDS_SENTENCE = re.compile(r"(?:[.!?…]+[\"'”’)\]]*|\n)[ \t]*\n*$")


@dataclass(frozen=True)
class BudgetResult:
    """What a budgeted call returned, and why it stopped."""

    text: str
    """The text kept (for a stop: a prefix of what the model generated)."""
    stop_reason: str
    """One of ``natural``, ``budget``, ``soft_budget``, ``confidence``."""
    budget: int
    """The output budget of the call, in tokens."""
    tokens_used: int
    """Tokens of ``text`` (never more than ``budget``)."""
    tokens_generated: int
    """Tokens the model produced before it was stopped (what was paid for)."""
    route: str | None = None
    query_kind: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    unit: str = DEFAULT_TOKENIZER
    """What ``budget``, ``tokens_used`` and ``tokens_generated`` count: ``model`` (a local
    model's own tokens), ``provider`` (the provider's reported count), or the name of the
    tokenizer that counted the text (``cl100k_base`` unless told otherwise)."""

    @property
    def stopped(self) -> bool:
        """True when the budget (not the model) ended the answer."""
        return self.stop_reason != "natural"

    def exceeded_error(self) -> BudgetExceededError:
        """The exception for callers who asked to be told of a budget stop (text kept on it)."""
        return BudgetExceededError(
            f"The output budget of {self.budget} tokens stopped the answer ({self.stop_reason}); "
            "the partial text is on this exception's partial_text.",
            partial_text=self.text,
            tokens_used=self.tokens_used,
        )

    def to_metadata(self) -> dict[str, Any]:
        """A plain dict for a framework's response metadata."""
        return {
            "stop_reason": self.stop_reason,
            "budget": self.budget,
            "tokens_used": self.tokens_used,
            "tokens_generated": self.tokens_generated,
            "route": self.route,
            "query_kind": self.query_kind,
            "unit": self.unit,
        }


class BudgetRun:
    """The stopping state of one call. Create it with :meth:`OutputBudget.start`.

    Use it either as a text-stream follower (:meth:`feed`, then :meth:`finish`) or as a
    stopping criterion for a local model (call it with each :class:`GenerationStep`, then
    :meth:`finish`); not both in one call.
    """

    def __init__(
        self,
        budget: int,
        *,
        tokenizer: str | Tokenizer = DEFAULT_TOKENIZER,
        soft_window: float = 0.15,
        confidence_threshold: float | None = None,
        route: str | None = None,
        query_kind: str | None = None,
        on_finish: Callable[[BudgetRun, BudgetResult], None] | None = None,
    ) -> None:
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
            raise ConfigurationError(f"An output budget must be a positive int of tokens, got {budget!r}.")
        if not 0.0 <= soft_window < 1.0:
            raise ConfigurationError(
                f"soft_window is the fraction of the budget in which a sentence end may end the "
                f"answer early; it must be in [0, 1), got {soft_window!r}."
            )
        if confidence_threshold is not None and not 0.0 < confidence_threshold <= 1.0:
            raise ConfigurationError(
                f"confidence_threshold is an end-of-sequence probability in (0, 1], got "
                f"{confidence_threshold!r}; pass None to turn the confidence stop off."
            )
        self.budget = budget
        self.window_start = budget - int(soft_window * budget)
        self.confidence_threshold = confidence_threshold
        self.route = route
        self.query_kind = query_kind
        self.tokenizer = tokenizer
        self._on_finish = on_finish
        self.stop_reason: str | None = None
        self.result: BudgetResult | None = None
        self.released_chars = 0
        self.cached = False
        """True when the answer came from a cache (set at start or by :meth:`finish`)."""
        self.streamed = False
        """True when the answer arrived as a stream (the ledger books it as ``llm / stream``)."""
        self.input_tokens: int | None = None
        """The provider's prompt token count, when :meth:`finish` was given one."""
        self._kept_text: str | None = None
        self._kept_tokens = 0
        self._generated = 0
        # text mode
        self._counter: StreamingTokenCounter | None = None
        self._held = ""
        self._window_chars: int | None = None
        self._boundary_chars: int | None = None
        # token mode
        self._last_step: GenerationStep | None = None
        self._prev_boundary: tuple[int, str] | None = None
        self._soft_step: tuple[int, str] | None = None
        self._armed = False
        self._boundary_len = 0
        self._pre_window_len = 0

    @property
    def stopped(self) -> bool:
        """True once the budget decided to stop (the caller should stop reading)."""
        return self.stop_reason is not None

    # -- text mode (streamed chunks) ---------------------------------------------------------
    @property
    def counter(self) -> StreamingTokenCounter:
        if self._counter is None:
            self._counter = StreamingTokenCounter(self.tokenizer)
        return self._counter

    @property
    def tokens_so_far(self) -> int:
        """Tokens seen so far (streamed text or generated steps)."""
        if self._last_step is not None:
            return self._last_step.n_tokens
        return self._counter.total_tokens if self._counter is not None else 0

    def feed(self, chunk: str) -> str:
        """Add a streamed chunk; returns the text that may be shown now (possibly empty).

        After the return, check :attr:`stopped`: when True, stop reading the stream.
        """
        if not chunk:
            return ""
        counter = self.counter
        if self.stop_reason is not None:
            # A caller that keeps reading after the stop: count what is still produced (it is
            # paid for), keep nothing of it.
            counter.feed(chunk)
            self._generated = counter.total_tokens
            return ""
        # far from the window the count only needs to be exact later: let the counter batch
        committed = counter.feed(chunk, exact_from=self.window_start)
        if committed:
            self._held += committed
            self._scan(committed)
        if counter.committed_tokens >= self.budget:
            self._stop_text(counter.total_tokens)
            return self._release(len(self._kept_text or ""))
        return self._release(self._release_limit())

    def _scan(self, committed: str) -> None:
        counter = self.counter
        if self._window_chars is None and counter.committed_tokens >= self.window_start:
            self._window_chars = len(counter.prefix_text(self.window_start))
        if self._window_chars is None:
            return
        upper = counter.committed_chars
        if counter.committed_tokens > self.budget:  # only sentence ends within the budget count
            upper = len(counter.prefix_text(self.budget))
        start = counter.committed_chars - len(committed)
        region = committed + counter.tail[:1]  # one character of look-ahead confirms a sentence end
        for match in _BOUNDARY.finditer(region):
            end = start + match.end()
            if end > upper:
                break
            if end >= self._window_chars:
                self._boundary_chars = end

    def _release_limit(self) -> int:
        counter = self.counter
        if self._window_chars is None:
            return counter.committed_chars
        return min(counter.committed_chars, max(self._window_chars, self._boundary_chars or 0))

    def _release(self, limit: int) -> str:
        if limit <= self.released_chars:
            return ""
        # _held is the committed text not released yet: slicing it keeps the per-chunk cost
        # independent of the answer's length.
        cut = limit - self.released_chars
        text, self._held = self._held[:cut], self._held[cut:]
        self.released_chars = limit
        return text

    def _stop_text(self, generated: int) -> None:
        counter = self.counter
        full = counter.prefix_text(self.budget)
        boundary = self._boundary_chars
        if boundary is not None and boundary < len(full):
            self._kept_text = full[:boundary]
            self._kept_tokens = min(self.budget, count_tokens(self._kept_text, counter.tokenizer))
            self.stop_reason = "soft_budget"
        else:
            self._kept_text = full
            self._kept_tokens = min(self.budget, counter.committed_tokens)
            self.stop_reason = "budget"
        self._generated = generated

    # -- token mode (a local model's stopping criterion) --------------------------------------
    def __call__(self, step: GenerationStep) -> bool:
        """Stopping criterion: True stops generation after this step."""
        if self.stop_reason is not None:
            return True
        self._last_step = step
        n, text = step.n_tokens, step.text
        threshold, eos = self.confidence_threshold, step.eos_probability
        if threshold is not None and eos is not None and eos >= threshold:
            if self._prev_boundary is not None:
                # The model wanted to end right after the previous sentence but went on.
                self._stop_step("confidence", *self._prev_boundary, generated=n)
                return True
            self._armed = True  # it wants to end: finish this sentence, then stop
        ends_sentence = _ENDS_SENTENCE.search(text) is not None
        self._prev_boundary = (n, text) if ends_sentence else None
        if ends_sentence:
            self._boundary_len = len(text)
        if n < self.window_start:
            self._pre_window_len = len(text)
        if ends_sentence and n >= self.window_start:
            self._soft_step = (n, text)
        if ends_sentence and self._armed and n <= self.budget:
            self._stop_step("confidence", n, text, generated=n)
            return True
        if n >= self.budget:
            if self._soft_step is not None and self._soft_step[0] < n:
                self._stop_step("soft_budget", *self._soft_step, generated=n)
            else:
                self._stop_step("budget", min(n, self.budget), text, generated=n)
            return True
        return False

    def safe_length(self) -> int:
        """Token mode: how many characters of the generated text are sure to be kept, so a
        stream may show them now. Inside the final window (and always with the confidence stop
        on) only whole sentences are safe, since the end may be cut back to a sentence end."""
        if self._kept_text is not None:
            return len(self._kept_text)
        step = self._last_step
        if step is None:
            return 0
        if self.confidence_threshold is None and step.n_tokens < self.window_start:
            safe = len(step.text)
        elif self.confidence_threshold is None:
            safe = max(self._boundary_len, self._pre_window_len)
        else:
            safe = self._boundary_len
        if step.text[:safe].endswith("\ufffd"):  # half a multi-byte character: wait for the rest
            safe -= 1
        return safe

    def _stop_step(self, reason: str, n_kept: int, text: str, *, generated: int) -> None:
        self.stop_reason = reason
        self._kept_tokens = n_kept
        self._kept_text = text
        self._generated = generated

    # -- end of the call ----------------------------------------------------------------------
    def finish(
        self,
        text: str | None = None,
        *,
        output_tokens: int | None = None,
        input_tokens: int | None = None,
        truncated_by_provider: bool = False,
        cached: bool = False,
        tool_call_tokens: int = 0,
    ) -> BudgetResult:
        """End the call and return its :class:`BudgetResult` (idempotent).

        ``text``: the final text when the model ended by itself (token mode: the model's own
        post-processed text; text mode: ignored, the streamed text is used). ``output_tokens``:
        the provider's own count of generated tokens (``usage_metadata``), used for accounting;
        ``input_tokens`` likewise for the prompt. ``tool_call_tokens``: the tokens of the
        reply's tool calls (:func:`lean_plugins.agents.reply_tool_call_tokens`), added to the
        text's count wherever the provider's count is not used; a tool call is never cut, so
        they are both used and generated.
        ``truncated_by_provider``: the provider stopped at the ``max_tokens`` we set.
        ``cached``: the answer came from a cache (its tokens were avoided, not spent).
        """
        if self.result is not None:
            return self.result
        self.input_tokens = input_tokens
        self.cached = self.cached or cached
        if self._last_step is not None:
            result = self._finish_tokens(text)
        else:
            if self._counter is None and text:
                # No steps and no stream: a whole answer, counted and judged in text mode (a
                # local model's ids are never decoded with a tokenizer that is not its own).
                self.feed(text)
            result = self._finish_text(truncated_by_provider)
        if output_tokens is not None and not self._cut_by_us(result):
            # The provider's count covers the whole kept text: one unit for the call.
            unit = result.unit if result.unit == "model" else "provider"
            result = _replace(result, tokens_used=output_tokens, tokens_generated=output_tokens, unit=unit)
        elif tool_call_tokens:
            result = _replace(
                result,
                tokens_used=result.tokens_used + tool_call_tokens,
                tokens_generated=result.tokens_generated + tool_call_tokens,
            )
        self.result = result
        if self._on_finish is not None:
            self._on_finish(self, result)
        return result

    def _finish_text(self, truncated_by_provider: bool) -> BudgetResult:
        counter = self.counter
        if self.stop_reason is None:
            generated = counter.total_tokens
            committed = counter.tail
            counter.finish()
            if committed:
                self._scan(committed)
            if counter.committed_tokens > self.budget:
                self._stop_text(generated)
            elif truncated_by_provider:
                self._stop_text(generated)
                if self.stop_reason == "budget":
                    self._kept_text, self._kept_tokens = counter.text, counter.committed_tokens
            else:
                self.stop_reason = "natural"
                self._kept_text, self._kept_tokens = counter.text, counter.committed_tokens
                self._generated = generated
        return self._result(unit=self._text_unit())

    def _finish_tokens(self, text: str | None) -> BudgetResult:
        if self.stop_reason is None:
            step = self._last_step
            self.stop_reason = "natural"
            self._kept_text = text if text is not None else (step.text if step else "")
            # The criterion stops at n >= budget, so a natural end is within the budget.
            self._kept_tokens = self._generated = step.n_tokens if step else 0
        return self._result(unit="model")

    def _cut_by_us(self, result: BudgetResult) -> bool:
        """True when the kept text is shorter than what the model generated (our stop)."""
        if not result.stopped:
            return False
        return self._counter is None or result.text != self._counter.text

    def _text_unit(self) -> str:
        if isinstance(self.tokenizer, str):
            return self.tokenizer
        return "model"  # a tokenizer object is the model's own (see OutputBudget's tokenizer)

    def _result(self, *, unit: str) -> BudgetResult:
        return BudgetResult(
            text=self._kept_text or "",
            stop_reason=self.stop_reason or "natural",
            budget=self.budget,
            tokens_used=self._kept_tokens,
            tokens_generated=max(self._generated, self._kept_tokens),
            route=self.route,
            query_kind=self.query_kind,
            unit=unit,
        )

    def remaining_text(self) -> str:
        """After :meth:`finish`: the kept text not yet returned by :meth:`feed`."""
        if self.result is None:
            raise RuntimeError("remaining_text() is available after finish()")
        rest = self.result.text[self.released_chars :]
        self.released_chars = len(self.result.text)
        return rest


def _replace(result: BudgetResult, **changes: Any) -> BudgetResult:
    from dataclasses import replace

    return replace(result, **changes)
