"""In-flight calls of a framework callback handler, keyed by the framework's call id.

Both frameworks report an LLM call as start -> (streamed pieces) -> end or error, each event
carrying an id of the call (LangChain's ``run_id``, LlamaIndex's span or event id). A
:class:`CallTracker` turns those events into one :class:`BudgetRun` per call, so the adapters
stay thin. Thread-safe: calls of one handler may run in several threads at once.
"""

from __future__ import annotations

import contextvars
import threading
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

from lean_plugins.budget.output_budget import OutputBudget
from lean_plugins.budget.policy import BudgetResult, BudgetRun
from lean_plugins.tokens import Tokenizer


@dataclass
class TrackedCall:
    """One LLM call followed by a handler."""

    run: BudgetRun
    criterion: bool = False
    """True when the run is the model's own stopping criterion (a local model): the model
    stops itself, exactly, and streamed text is not counted again."""
    streamed: bool = False
    """True once a streamed piece arrived through the framework's token event."""
    pending: str = ""
    output: str = ""
    """Criterion mode: the text the model streamed so far (kept by the caller)."""
    taken: int = 0
    result: BudgetResult | None = None

    @property
    def stopped(self) -> bool:
        return self.run.stopped

    def take(self) -> str:
        """Kept text not handed out yet: always a prefix of the final text, never more."""
        if self.result is not None:
            out = self.result.text[self.taken :]
        elif self.criterion:
            safe = min(self.run.safe_length(), len(self.output))
            out = self.output[self.taken : safe] if safe > self.taken else ""
        else:
            out, self.pending = self.pending, ""
        self.taken += len(out)
        return out


class CallTracker:
    """Maps a framework's call ids to :class:`TrackedCall` s of one :class:`OutputBudget`."""

    def __init__(
        self,
        budget: OutputBudget,
        *,
        route: str | None = None,
        budget_tokens: int | None = None,
        tokenizer: str | Tokenizer | None = None,
        prompt: str | None = None,
        keep_results: int = 1000,
        skip_nested: bool = False,
        criterion: BudgetRun | None = None,
    ) -> None:
        self.budget = budget
        self.route = route
        self.budget_tokens = budget_tokens
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.skip_nested = skip_nested
        self._criterion = criterion  # the first call runs with this run as its stopping criterion
        self._lock = threading.Lock()
        self._calls: dict[Hashable, TrackedCall] = {}
        self.latest: TrackedCall | None = None
        self.results: deque[BudgetResult] = deque(maxlen=keep_results)
        # With skip_nested: the call in flight in this thread / task. A call that starts inside
        # it (a chat call that runs a completion call, as LlamaIndex's CustomLLM does) is part
        # of it. Two streams opened in one thread before either ends would also look nested,
        # so this is off unless the framework nests calls.
        self._active: contextvars.ContextVar[TrackedCall | None] = contextvars.ContextVar(
            f"lean_plugins_budget_call_{id(self)}", default=None
        )
        self._nested: set[Hashable] = set()

    @property
    def last_result(self) -> BudgetResult | None:
        with self._lock:
            return self.results[-1] if self.results else None

    def start(
        self, key: Hashable, prompt: str | None, *, model: str | None = None, input_tokens: int | None = None
    ) -> TrackedCall | None:
        """Follow a new call; ``None`` when it runs inside a call already followed here."""
        outer = self._active.get() if self.skip_nested else None
        if outer is not None and outer.result is None:
            with self._lock:
                self._nested.add(key)
            return None
        if self._criterion is not None:
            call = TrackedCall(self._criterion, criterion=True)
            self._criterion = None
        else:
            run = self.budget.start(
                self.prompt if self.prompt is not None else prompt,
                route=self.route,
                budget=self.budget_tokens,
                model=self.budget.model or model,  # a model name set on the budget wins
                input_tokens=input_tokens,
                tokenizer=self.tokenizer,
            )
            call = TrackedCall(run)
        with self._lock:
            self._calls[key] = call
            self.latest = call
        if self.skip_nested:
            self._active.set(call)
        return call

    def get(self, key: Hashable) -> TrackedCall | None:
        return self._calls.get(key)

    def feed(self, call: TrackedCall, text: str) -> None:
        """Count a streamed piece of ``call``'s answer."""
        if call.result is None and not call.criterion:
            out = call.run.feed(text)
            if out:
                call.pending += out

    def end(
        self,
        key: Hashable,
        text: str | None = None,
        *,
        output_tokens: int | None = None,
        input_tokens: int | None = None,
        truncated: bool = False,
        cached: bool = False,
    ) -> BudgetResult | None:
        """The call ended. ``text``: its whole answer, counted when nothing was streamed."""
        call = self._calls.get(key)
        if call is None:
            with self._lock:
                self._nested.discard(key)
            return None
        return self.finish(
            call,
            text,
            output_tokens=output_tokens,
            input_tokens=input_tokens,
            truncated=truncated,
            cached=cached,
        )

    def finish(
        self,
        call: TrackedCall,
        text: str | None = None,
        *,
        output_tokens: int | None = None,
        input_tokens: int | None = None,
        truncated: bool = False,
        cached: bool = False,
    ) -> BudgetResult:
        if call.result is not None:
            return call.result
        if text and not call.criterion and not call.streamed and call.run.tokens_so_far == 0:
            call.run.feed(text)  # not streamed: account (and judge) the whole answer
        result = call.run.finish(
            text if call.criterion else None,
            output_tokens=output_tokens,
            input_tokens=input_tokens,
            truncated_by_provider=truncated,
            cached=cached,
        )
        call.result = result
        with self._lock:
            self.results.append(result)
            for key, value in list(self._calls.items()):
                if value is call:
                    del self._calls[key]
        if self._active.get() is call:
            self._active.set(None)
        return result
