"""LlamaIndex adapter of the output budget (layer 4).

* :class:`OutputBudgetHandler`: an instrumentation event handler
  (``dispatcher.add_event_handler``) that follows ``LLMChat/CompletionStartEvent``,
  ``...InProgressEvent`` and ``...EndEvent`` (and ``ExceptionEvent`` when a stream is closed
  early), counts each call's output tokens exactly and accounts every call in the ledger.
* :class:`OutputBudgetCallbackHandler`: the same accounting through a ``CallbackManager``
  (``Settings.callback_manager``), which sees each call once, at its end.
* :func:`with_output_budget`: wraps any LlamaIndex LLM so that every call stops at its
  budget and returns the text kept, with ``additional_kwargs["stop_reason"]``. LlamaIndex
  swallows exceptions raised by event handlers, so only a wrapper can stop a stream: it sets
  the LLM's ``max_tokens`` to the budget up front where the LLM has that field, reads the
  stream itself and closes it at the budget.

The wrapper accounts its own calls; the handlers skip calls made inside a budgeted LLM, so
installing both never counts a call twice. The logic lives in :mod:`lean_plugins.budget`.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from pydantic import ConfigDict, Field, PrivateAttr, field_serializer

from lean_plugins.agents import agent_step_budget, plain_tool_call, reply_tool_call_tokens
from lean_plugins.budget import BudgetResult, OutputBudget
from lean_plugins.budget.call import MAX_TOKENS_FIELDS, BudgetedCall, capped_limits, is_local_model
from lean_plugins.budget.tracker import CallTracker
from lean_plugins.errors import ConfigurationError
from lean_plugins.ledger import is_cache_hit
from lean_plugins.tokens import count_tokens
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.callbacks.base_handler import BaseCallbackHandler as LlamaBaseCallbackHandler
from llama_index.core.callbacks.schema import CBEventType, EventPayload
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.exception import ExceptionEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionInProgressEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.instrumentation.events.span import SpanDropEvent
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection

__all__ = [
    "MAX_TOKENS_FIELDS",
    "BudgetedLLM",
    "OutputBudgetCallbackHandler",
    "OutputBudgetHandler",
    "is_local_model",
    "with_output_budget",
]

# Set while a budgeted LLM runs its inner LLM: the handlers leave those calls to it.
_inside_budgeted_call: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "lean_plugins_budgeted_call", default=False
)


def provider_usage(response: Any) -> tuple[int | None, int | None]:
    """(input, output) tokens the provider reported on a LlamaIndex response, if any."""
    if response is None:
        return None, None
    extra = getattr(response, "additional_kwargs", None) or {}
    prompt, completion = extra.get("prompt_tokens"), extra.get("completion_tokens")
    raw = getattr(response, "raw", None)
    usage = raw.get("usage") if isinstance(raw, dict) else getattr(raw, "usage", None)
    if usage is not None:
        get = usage.get if isinstance(usage, dict) else lambda k: getattr(usage, k, None)
        prompt = prompt or get("prompt_tokens") or get("input_tokens")
        completion = completion or get("completion_tokens") or get("output_tokens")
    return prompt, completion


def reply_tool_calls(message: ChatMessage) -> list[dict[str, Any]]:
    """The tool calls of a LlamaIndex reply in the core's plain form (``name``, ``args``,
    ``id``; :func:`lean_plugins.agents.plain_tool_call`): its ``ToolCallBlock`` s, else
    ``additional_kwargs["tool_calls"]`` (where function-calling LLMs put them before the blocks
    existed, as plain dicts or the provider's objects). One source only, so a reply that
    carries the same calls both ways counts them once."""
    blocks = [b for b in message.blocks if isinstance(b, ToolCallBlock)]
    calls: list[Any] = [{"name": b.tool_name, "args": b.tool_kwargs, "id": b.tool_call_id} for b in blocks]
    return [plain_tool_call(c) for c in calls or message.additional_kwargs.get("tool_calls") or []]


def _tool_call_tokens(response: Any) -> int:
    """Output tokens of the tool calls ``response`` carries (0 for a completion or no calls):
    the core rule, :func:`lean_plugins.agents.reply_tool_call_tokens`."""
    message = getattr(response, "message", None)
    return reply_tool_call_tokens(reply_tool_calls(message)) if isinstance(message, ChatMessage) else 0


def _cache_hit(response: Any) -> bool:
    """True when a cache served ``response`` (the cache-hit contract of :mod:`lean_plugins.ledger`)."""
    return is_cache_hit(getattr(response, "additional_kwargs", None), getattr(response, "raw", None))


def _accounted_by_budget(response: Any) -> bool:
    """True when a budgeted LLM (:func:`with_output_budget`) produced ``response`` inside the
    call the handler follows (an outer wrapper's, e.g. ``CachedLLM(with_output_budget(llm))``
    on a miss): it accounted the call itself, so the handler must not book it again."""
    extra = getattr(response, "additional_kwargs", None) or {}
    return "output_budget" in extra and not _cache_hit(response)


def _response_text(response: Any) -> str | None:
    if response is None:
        return None
    if isinstance(response, ChatResponse):
        return response.message.content or ""
    return getattr(response, "text", None)


def _last_user_text(messages: Sequence[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == MessageRole.USER:
            return message.content or ""
    return messages[-1].content or "" if messages else ""


def _model_name(model_dict: dict[str, Any] | None) -> str | None:
    model_dict = model_dict or {}
    return model_dict.get("model") or model_dict.get("model_name") or model_dict.get("class_name")


class OutputBudgetHandler(BaseEventHandler):
    """Instrumentation handler: exact output-token counts and accounting of every LLM call.

    Register it with ``get_dispatcher().add_event_handler(OutputBudgetHandler(budget=...))``.
    Each call is judged against its budget (``results`` / ``last_result`` say where it would
    have stopped) but not stopped: LlamaIndex ignores exceptions from event handlers. Use
    :func:`with_output_budget` to stop generation.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)
    budget: OutputBudget = Field(description="The budget every call is judged and accounted with.")
    route: str | None = Field(default=None, description="Route name the budgets are learned under.")
    _tracker: CallTracker = PrivateAttr()

    def __init__(self, budget: OutputBudget | int, **kwargs: Any) -> None:
        budget = budget if isinstance(budget, OutputBudget) else OutputBudget(budget)
        super().__init__(budget=budget, **kwargs)
        self._tracker = CallTracker(budget, route=self.route, skip_nested=True)

    @classmethod
    def class_name(cls) -> str:
        return "OutputBudgetHandler"

    @property
    def results(self) -> list[BudgetResult]:
        return list(self._tracker.results)

    @property
    def last_result(self) -> BudgetResult | None:
        return self._tracker.last_result

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if _inside_budgeted_call.get():
            return
        key = event.span_id
        if isinstance(event, LLMChatStartEvent):
            self._tracker.start(
                key,
                _last_user_text(event.messages),
                model=_model_name(event.model_dict),
                input_tokens=sum(count_tokens(m.content or "") for m in event.messages),
            )
        elif isinstance(event, LLMCompletionStartEvent):
            self._tracker.start(key, event.prompt, model=_model_name(event.model_dict))
        elif isinstance(event, (LLMChatInProgressEvent, LLMCompletionInProgressEvent)):
            call = self._tracker.get(key)
            if call is not None:
                call.streamed = call.run.streamed = True
                delta = event.response.delta
                if delta is None:  # some LLMs send only the text so far
                    text = _response_text(event.response) or ""
                    delta = text[len(call.run.counter.text) :]
                self._tracker.feed(call, delta)
        elif isinstance(event, (LLMChatEndEvent, LLMCompletionEndEvent)):
            if _accounted_by_budget(event.response):
                self._tracker.discard(key)
                return
            input_tokens, output_tokens = provider_usage(event.response)
            self._tracker.end(
                key,
                _response_text(event.response),
                output_tokens=output_tokens,
                input_tokens=input_tokens,
                cached=_cache_hit(event.response),
                tool_call_tokens=_tool_call_tokens(event.response),
            )
        elif isinstance(event, (ExceptionEvent, SpanDropEvent)):
            self._tracker.end(key)  # a stream closed early or failed: account what was produced


class OutputBudgetCallbackHandler(LlamaBaseCallbackHandler):
    """``CallbackManager`` handler: accounts every LLM call at its end (exact token counts,
    provider usage when reported). ``Settings.callback_manager = CallbackManager([handler])``."""

    def __init__(self, budget: OutputBudget | int, *, route: str | None = None) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        budget = budget if isinstance(budget, OutputBudget) else OutputBudget(budget)
        self.tracker = CallTracker(budget, route=route, skip_nested=True)

    @property
    def results(self) -> list[BudgetResult]:
        return list(self.tracker.results)

    @property
    def last_result(self) -> BudgetResult | None:
        return self.tracker.last_result

    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        if event_type == CBEventType.LLM and not _inside_budgeted_call.get():
            payload = payload or {}
            model = _model_name(payload.get(EventPayload.SERIALIZED))
            messages = payload.get(EventPayload.MESSAGES)
            if messages:
                self.tracker.start(
                    event_id,
                    _last_user_text(messages),
                    model=model,
                    input_tokens=sum(count_tokens(m.content or "") for m in messages),
                )
            else:
                prompts = payload.get(EventPayload.PROMPT)
                prompt = prompts[0] if isinstance(prompts, list) and prompts else prompts
                self.tracker.start(event_id, str(prompt or ""), model=model)
        return event_id

    def on_event_end(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        **kwargs: Any,
    ) -> None:
        if event_type != CBEventType.LLM:
            return
        payload = payload or {}
        response = payload.get(EventPayload.RESPONSE) or payload.get(EventPayload.COMPLETION)
        if _accounted_by_budget(response):
            self.tracker.discard(event_id)
            return
        input_tokens, output_tokens = provider_usage(response)
        self.tracker.end(
            event_id,
            _response_text(response),
            output_tokens=output_tokens,
            input_tokens=input_tokens,
            cached=_cache_hit(response),
            tool_call_tokens=_tool_call_tokens(response),
        )

    def start_trace(self, trace_id: str | None = None) -> None:
        return None

    def end_trace(self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None) -> None:
        return None


# -- the enforcing wrapper ----------------------------------------------------------------------
def _capped(llm: LLM, budget: int) -> tuple[LLM, bool]:
    """A copy of ``llm`` limited to ``budget`` output tokens, and whether a field was set."""
    update = capped_limits(type(llm).model_fields, dict(llm), budget)
    return (llm.model_copy(update=update), True) if update else (llm, False)


def _delta(response: Any, seen: str) -> str:
    """The new text of an inner streamed response (some LLMs send only the text so far)."""
    if response.delta is not None:
        return response.delta
    text = _response_text(response) or ""
    return text[len(seen) :] if text.startswith(seen) else ""


class BudgetedLLM(FunctionCallingLLM):
    """A LlamaIndex LLM whose every call stops at its output budget; see
    :func:`with_output_budget`.

    Tool calling (``chat_with_tools``, ``predict_and_call``, function-calling agents) goes
    through the wrapped LLM's own tool handling when it is a ``FunctionCallingLLM``; the tool
    calls it returns are kept, only the text is cut.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)
    llm: LLM = Field(description="The LLM that generates.")
    budget: OutputBudget = Field(description="The fixed or predicted per-call output budget.")
    route: str | None = Field(default=None, description="Route name the budgets are learned under.")
    raise_on_stop: bool = Field(
        default=False, description="Raise BudgetExceededError (with partial_text) at a budget stop."
    )

    @classmethod
    def class_name(cls) -> str:
        return "BudgetedLLM"

    @field_serializer("budget")
    def _budget_settings(self, budget: OutputBudget) -> dict[str, Any]:
        # what a cache keys on (CachedLLM hashes to_dict()): the budget, not an object address
        return budget.settings()

    # -- tool calling: the wrapped LLM's own -----------------------------------------------------
    def _tool_llm(self) -> FunctionCallingLLM:
        if not isinstance(self.llm, FunctionCallingLLM):
            raise ConfigurationError(
                f"{type(self.llm).__name__} does not call tools (it is not a FunctionCallingLLM), so "
                "its budgeted version cannot either: use a function-calling LLM."
            )
        return self.llm

    def _prepare_chat_with_tools(self, tools: Sequence[Any], **kwargs: Any) -> dict[str, Any]:
        return self._tool_llm()._prepare_chat_with_tools(tools, **kwargs)

    def _validate_chat_with_tools_response(self, response: ChatResponse, tools: Sequence[Any], **kwargs: Any) -> ChatResponse:
        return self._tool_llm()._validate_chat_with_tools_response(response, tools, **kwargs)

    def get_tool_calls_from_response(self, response: ChatResponse, **kwargs: Any) -> list[ToolSelection]:
        return self._tool_llm().get_tool_calls_from_response(response, **kwargs)

    @property
    def metadata(self) -> LLMMetadata:
        # num_output is what LlamaIndex reserves for the answer: at most the budget's cap
        inner = self.llm.metadata
        cap = self.budget.max_tokens if self.budget.predictor is not None else self.budget.budget_for(route=self.route)
        return inner.model_copy(update={"num_output": min(inner.num_output, cap)})

    # -- shared steps -------------------------------------------------------------------------
    def _begin(self, prompt: str, input_tokens: int | None = None) -> tuple[LLM, BudgetedCall, dict]:
        """The inner LLM capped at the call's budget, the call's state, extra call kwargs."""
        tokens = self.budget.budget_for(prompt, route=self.route)
        inner, capped = _capped(self.llm, tokens)
        local = is_local_model(self.llm)
        run = self.budget.start(
            prompt,
            route=self.route,
            budget=tokens,
            model=self.budget.model or _model_name(self.llm.to_dict()),
            input_tokens=0 if local else input_tokens,  # a local model reports its own
        )
        # our local model takes the run as its stopping criterion: it stops itself, exactly
        extra = {"stopping_criteria": [run]} if local else {}
        return inner, BudgetedCall(run, criterion=local, capped=capped), extra

    def _end(self, call: BudgetedCall, last: Any) -> BudgetResult:
        input_tokens, output_tokens = provider_usage(last)
        raw = getattr(last, "raw", None)
        result = call.finish(
            output_tokens=output_tokens,
            input_tokens=input_tokens,
            finish_reason=raw.get("finish_reason") if isinstance(raw, dict) else None,
            cached=_cache_hit(last),
            tool_call_tokens=_tool_call_tokens(last),
        )
        if self.raise_on_stop and result.stopped:
            raise result.exceeded_error()
        return result

    def _follow(self, stream: Iterator[Any], call: BudgetedCall, tools: bool = False) -> Iterator[tuple[str, Any]]:
        """Read ``stream`` (inner responses), yield (kept delta, response); stop at the budget
        (with ``tools`` bound only the text stops: the stream is read to its end, so a tool
        call after a long preamble is kept)."""
        try:
            while True:
                token = _inside_budgeted_call.set(True)
                try:
                    response = next(stream)
                except StopIteration:
                    return
                finally:
                    _inside_budgeted_call.reset(token)
                yield call.step(_delta(response, call.seen)), response
                if call.should_close and not tools:
                    return
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # at the budget: stop the inner stream (and its billing)

    async def _afollow(self, stream: Any, call: BudgetedCall, tools: bool = False) -> AsyncIterator[tuple[str, Any]]:
        try:
            while True:
                token = _inside_budgeted_call.set(True)
                try:
                    response = await stream.__anext__()
                except StopAsyncIteration:
                    return
                finally:
                    _inside_budgeted_call.reset(token)
                yield call.step(_delta(response, call.seen)), response
                if call.should_close and not tools:
                    return
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    def _inner(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        token = _inside_budgeted_call.set(True)
        try:
            return fn(*args, **kwargs)
        finally:
            _inside_budgeted_call.reset(token)

    async def _ainner(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        token = _inside_budgeted_call.set(True)
        try:
            return await fn(*args, **kwargs)
        finally:
            _inside_budgeted_call.reset(token)

    @staticmethod
    def _extra(result: BudgetResult | None, last: Any) -> dict[str, Any]:
        """The inner response's own extras (usage, ...), and on the last one the verdict."""
        extra = dict(getattr(last, "additional_kwargs", None) or {})
        if result is not None:
            extra.update(stop_reason=result.stop_reason, output_budget=result.to_metadata())
        return extra

    def _chat_response(self, text: str, delta: str | None, result: BudgetResult | None, last: Any) -> ChatResponse:
        """The kept text in the inner message's place: its tool calls and other non-text
        blocks and ``additional_kwargs`` are kept, only the text is cut."""
        inner = getattr(last, "message", None)
        blocks: list[Any] = [TextBlock(text=text)]
        if inner is not None:
            blocks += [b for b in inner.blocks if not isinstance(b, TextBlock)]
        message = ChatMessage(
            role=MessageRole.ASSISTANT,
            blocks=blocks,
            additional_kwargs=dict(inner.additional_kwargs) if inner is not None else {},
        )
        return ChatResponse(
            message=message, delta=delta, raw=getattr(last, "raw", None), additional_kwargs=self._extra(result, last)
        )

    def _completion_response(
        self, text: str, delta: str | None, result: BudgetResult | None, last: Any
    ) -> CompletionResponse:
        return CompletionResponse(
            text=text, delta=delta, raw=getattr(last, "raw", None), additional_kwargs=self._extra(result, last)
        )

    @staticmethod
    def _chat_input(messages: Sequence[ChatMessage]) -> tuple[str, int]:
        return _last_user_text(messages), sum(count_tokens(m.content or "") for m in messages)

    # -- streaming ----------------------------------------------------------------------------
    def _responses(self, stream: Iterator[Any], call: BudgetedCall, make: Any, tools: bool = False) -> Iterator[Any]:
        """Kept text as responses built by ``make``; the last one carries the stop reason."""
        text, last = "", None
        for delta, last in self._follow(stream, call, tools):
            if delta:
                text += delta
                yield make(text, delta, None, last)
        result = self._end(call, last)
        yield make(result.text, result.text[len(text) :], result, last)

    async def _aresponses(self, stream: Any, call: BudgetedCall, make: Any, tools: bool = False) -> AsyncIterator[Any]:
        text, last = "", None
        async for delta, last in self._afollow(stream, call, tools):
            if delta:
                text += delta
                yield make(text, delta, None, last)
        result = self._end(call, last)
        yield make(result.text, result.text[len(text) :], result, last)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        inner, call, extra = self._begin(prompt)
        stream = self._inner(inner.stream_complete, prompt, formatted=formatted, **kwargs, **extra)
        return self._responses(stream, call, self._completion_response)

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        prompt, input_tokens = self._chat_input(messages)
        inner, call, extra = self._begin(prompt, input_tokens)
        stream = self._inner(inner.stream_chat, messages, **kwargs, **extra)
        return self._responses(stream, call, self._chat_response, bool(kwargs.get("tools")))

    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        inner, call, extra = self._begin(prompt)
        stream = await self._ainner(inner.astream_complete, prompt, formatted=formatted, **kwargs, **extra)
        return self._aresponses(stream, call, self._completion_response)

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        prompt, input_tokens = self._chat_input(messages)
        inner, call, extra = self._begin(prompt, input_tokens)
        stream = await self._ainner(inner.astream_chat, messages, **kwargs, **extra)
        return self._aresponses(stream, call, self._chat_response, bool(kwargs.get("tools")))

    # -- whole answers (read through the stream so the budget can stop it) ---------------------
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        last = None
        for last in self.stream_complete(prompt, formatted=formatted, **kwargs):  # noqa: B007
            pass
        assert last is not None
        return last.model_copy(update={"delta": None})

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        last = None
        for last in self.stream_chat(messages, **kwargs):  # noqa: B007
            pass
        assert last is not None
        return last.model_copy(update={"delta": None})

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        last = None
        async for last in await self.astream_complete(prompt, formatted=formatted, **kwargs):  # noqa: B007
            pass
        assert last is not None
        return last.model_copy(update={"delta": None})

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        last = None
        async for last in await self.astream_chat(messages, **kwargs):  # noqa: B007
            pass
        assert last is not None
        return last.model_copy(update={"delta": None})


def _is_cached_llm(llm: LLM) -> bool:
    cached_llm = sys.modules.get(f"{__package__}.cached_llm")
    return cached_llm is not None and isinstance(llm, cached_llm.CachedLLM)


def with_output_budget(
    llm: LLM, budget: OutputBudget | int, *, route: str | None = None, raise_on_stop: bool = False
) -> LLM:
    """Wrap any LlamaIndex ``llm`` so every call stops at its (fixed or predicted) budget.

    Use the result wherever an LLM goes (``Settings.llm``, a query engine). Responses carry
    ``additional_kwargs["stop_reason"]`` (``natural``, ``budget``, ``soft_budget``) and
    ``additional_kwargs["output_budget"]`` (budget, tokens used and generated, their unit).
    With an int, a cut answer claims no saving in the ledger (the tokens the model had not yet
    generated are unknown, and ``llm``'s own max-tokens setting is a cap, not a cost): the rule
    of :func:`lean_plugins.agents.agent_step_budget`, LangChain's ``LeanBudgetMiddleware`` too.

    A :class:`~lean_plugins.llama_index.CachedLLM` keeps its place outside the budget (the
    order composes either way): ``with_output_budget(CachedLLM(llm), n)`` returns
    ``CachedLLM(with_output_budget(llm, n))``, so a hit spends nothing and an answer the budget
    cut is cached, under a key that includes the budget.
    """
    if not isinstance(budget, OutputBudget):
        # One rule with LangChain's agent middleware: a cut answer is booked against the LLM's
        # own max-tokens setting, what the call could have cost without the budget.
        budget = agent_step_budget(budget, llm.llm if _is_cached_llm(llm) else llm)
    cached_llm = sys.modules.get(f"{__package__}.cached_llm")  # loaded when a CachedLLM exists
    if cached_llm is not None and isinstance(llm, cached_llm.CachedLLM):
        inner = with_output_budget(llm.llm, budget, route=route, raise_on_stop=raise_on_stop)
        # built anew: its keys derive from the LLM it wraps, now the budgeted one (the cache is
        # the tenant's already; the tenant still goes into the namespace)
        outer = type(llm)(inner, cache=llm.cache)
        outer.tenant = llm.tenant
        return outer
    return BudgetedLLM(
        llm=llm,
        budget=budget,
        route=route or budget.route,
        raise_on_stop=raise_on_stop or budget.raise_on_stop,
    )
