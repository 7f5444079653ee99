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
from typing import Any

from lean_plugins.budget.call import BudgetedCall
from lean_plugins.budget.output_budget import OutputBudget
from lean_plugins.budget.policy import BudgetResult, BudgetRun
from lean_plugins.tokens import Tokenizer

#: A call followed by a handler is a :class:`~lean_plugins.budget.call.BudgetedCall`.
TrackedCall = BudgetedCall


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
                streamed=False,  # until a streamed piece arrives
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
        call.count(text)

    def end(
        self,
        key: Hashable,
        text: str | None = None,
        *,
        output_tokens: int | None = None,
        input_tokens: int | None = None,
        finish_reason: Any = None,
        cached: bool = False,
        tool_call_tokens: int = 0,
    ) -> BudgetResult | None:
        """The call ended. ``text``: its whole answer, counted when nothing was streamed;
        ``tool_call_tokens``: its tool calls' (see :meth:`BudgetedCall.finish`)."""
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
            finish_reason=finish_reason,
            cached=cached,
            tool_call_tokens=tool_call_tokens,
        )

    def discard(self, key: Hashable) -> None:
        """Stop following the call ``key`` without accounting it (something else accounted it)."""
        with self._lock:
            call = self._calls.pop(key, None)
            self._nested.discard(key)
        if call is not None and self._active.get() is call:
            self._active.set(None)

    def finish(
        self,
        call: TrackedCall,
        text: str | None = None,
        *,
        output_tokens: int | None = None,
        input_tokens: int | None = None,
        finish_reason: Any = None,
        cached: bool = False,
        tool_call_tokens: int = 0,
    ) -> BudgetResult:
        if call.result is not None:
            return call.result
        result = call.finish(
            text,
            output_tokens=output_tokens,
            input_tokens=input_tokens,
            finish_reason=finish_reason,
            cached=cached,
            tool_call_tokens=tool_call_tokens,
        )
        with self._lock:
            self.results.append(result)
            for key, value in list(self._calls.items()):
                if value is call:
                    del self._calls[key]
        if self._active.get() is call:
            self._active.set(None)
        return result
