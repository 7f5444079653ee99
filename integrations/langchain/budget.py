"""LangChain adapter of the output budget (layer 4).

* :func:`with_output_budget`: the way to stop a call and keep the text. A chat model becomes
  a :class:`BudgetedChatModel` (still a chat model: tool calls, usage, metadata, the model's
  cache kept), a text-completion LLM a :class:`BudgetedTextLLM`, and a chain around a model a
  :class:`BudgetedChain` with the model inside it budgeted. Each call sets the model's
  max-tokens field to its budget, reads the stream itself and closes it at the budget, and
  returns the kept text with its ``stop_reason``; callbacks see the call end with
  ``on_llm_end``. No exception reaches the caller unless they ask (``raise_on_stop=True``).
* :class:`OutputBudgetCallbackHandler`: a callback handler that counts each LLM call's
  streamed tokens exactly, judges it against the budget and accounts it in the ledger (with
  ``stop_stream=True`` it also stops a stream by raising, which loses the streamed text:
  langchain issue #11959).

The logic (the budgeted call, counting, stopping, prediction, accounting) is in
:mod:`lean_plugins.budget`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any
from uuid import UUID

from langchain_core.caches import BaseCache
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    CallbackManagerForLLMRun,
)
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel, BaseLanguageModel, BaseLLM, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    message_chunk_to_message,
)
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    ChatResult,
    Generation,
    GenerationChunk,
    LLMResult,
)
from langchain_core.prompts import BasePromptTemplate
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig, RunnableSequence
from langchain_core.runnables.config import ensure_config
from lean_plugins.langchain.cache import served_from_cache
from pydantic import BaseModel, ConfigDict, Field

from lean_plugins.agents import reply_tool_call_tokens
from lean_plugins.budget import BudgetResult, BudgetRun, OutputBudget, route_for_template
from lean_plugins.budget.call import MAX_TOKENS_FIELDS, BudgetedCall, capped_limits, is_local_model
from lean_plugins.budget.tracker import CallTracker, TrackedCall
from lean_plugins.errors import BudgetExceededError, ConfigurationError
from lean_plugins.ledger import is_cache_hit
from lean_plugins.tokens import Tokenizer, count_tokens

__all__ = [
    "MAX_TOKENS_FIELDS",
    "BudgetedChain",
    "BudgetedChatModel",
    "BudgetedText",
    "BudgetedTextLLM",
    "OutputBudgetCallbackHandler",
    "OutputBudgetStop",
    "is_local_model",
    "with_output_budget",
]


class OutputBudgetStop(BudgetExceededError):
    """Raised by the handler inside a model's stream to stop it at the budget."""


def _model_name(
    serialized: dict[str, Any] | None, metadata: dict[str, Any] | None, kwargs: dict
) -> str | None:
    params = kwargs.get("invocation_params") or {}
    return (
        (metadata or {}).get("ls_model_name")
        or params.get("model")
        or params.get("model_name")
        or (serialized or {}).get("name")
    )


def _message_text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(
        block if isinstance(block, str) else str(block.get("text", ""))
        for block in content
        if isinstance(block, str) or (isinstance(block, dict) and block.get("type") == "text")
    )


class OutputBudgetCallbackHandler(BaseCallbackHandler):
    """Counts each LLM call's output tokens exactly, accounts it, and stops it at the budget.

    Token counts: the ``tokenizer`` given (pass the model's own when it is ours), cl100k_base
    otherwise; the provider's ``usage_metadata`` (or ``llm_output["token_usage"]``) replaces
    the count in the accounting when the provider sends it.

    By default the handler judges and accounts each call but does not stop it, so a handler
    passed the usual way (``config={"callbacks": [handler]}``) never costs the caller the
    answer; :func:`with_output_budget` is what stops a call and keeps the text. With
    ``stop_stream=True`` the handler raises :class:`OutputBudgetStop` from
    ``on_llm_new_token`` when a streamed answer reaches its budget: LangChain ends the call with
    that exception and the streamed text is lost to the caller (langchain #11959); it is on the
    exception's ``partial_text`` and on :attr:`last_result`. Calls of a budgeted model
    (:class:`BudgetedChatModel`) are left to it: it accounts them itself.

    ``budget_tokens`` fixes the budget of the calls (default: the budget's own, predicted per
    call); ``prompt`` replaces the prompt text the prediction reads; ``criterion`` is a run
    already passed to a local model as its stopping criterion, adopted by the next call.
    """

    raise_error: bool = True
    """Let the stop exception reach the model's stream loop (LangChain logs and swallows it
    otherwise)."""
    run_inline: bool = True
    """Count tokens in order, in the caller's thread, also under asyncio."""

    def __init__(
        self,
        budget: OutputBudget | int,
        *,
        route: str | None = None,
        budget_tokens: int | None = None,
        tokenizer: str | Tokenizer | None = None,
        stop_stream: bool = False,
        prompt: str | None = None,
        criterion: BudgetRun | None = None,
    ) -> None:
        super().__init__()
        budget = budget if isinstance(budget, OutputBudget) else OutputBudget(budget)
        self.tracker = CallTracker(
            budget,
            route=route,
            budget_tokens=budget_tokens,
            tokenizer=tokenizer,
            prompt=prompt,
            criterion=criterion,
        )
        self.stop_stream = stop_stream
        self.raise_error = stop_stream

    @property
    def budget(self) -> OutputBudget:
        return self.tracker.budget

    @property
    def results(self) -> list[BudgetResult]:
        """Results of the calls finished so far (the most recent 1,000)."""
        return list(self.tracker.results)

    @property
    def last_result(self) -> BudgetResult | None:
        """The result of the most recently finished call (text kept, tokens, stop reason)."""
        return self.tracker.last_result

    # -- start --------------------------------------------------------------------------------
    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        prompt = prompts[0] if prompts else ""
        self.tracker.start(run_id, prompt, model=_model_name(serialized, metadata, kwargs))

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if (serialized or {}).get("id", [None])[-1] == BudgetedChatModel.__name__:
            return  # the budgeted model accounts its own calls
        batch = messages[0] if messages else []
        question = next((_message_text(m) for m in reversed(batch) if m.type == "human"), "")
        input_tokens = sum(count_tokens(_message_text(m)) for m in batch)
        self.tracker.start(
            run_id, question, model=_model_name(serialized, metadata, kwargs), input_tokens=input_tokens
        )

    # -- tokens -------------------------------------------------------------------------------
    def on_llm_new_token(self, token: str, *, run_id: UUID, **kwargs: Any) -> None:
        call = self.tracker.get(run_id)
        if call is None or call.result is not None:
            return
        call.streamed = call.run.streamed = True
        self.feed(call, token)

    def feed(self, call: TrackedCall, text: str) -> None:
        """Count streamed output of ``call`` (also text that bypassed ``on_llm_new_token``)."""
        self.tracker.feed(call, text)
        if call.run.stopped and self.stop_stream:
            result = self.tracker.finish(call)
            raise OutputBudgetStop(
                f"Output budget of {result.budget} tokens reached ({result.stop_reason}); "
                "the text so far is on this exception's partial_text and on the handler's "
                "last_result. Use with_output_budget(...) to get it back as the answer.",
                partial_text=result.text,
                tokens_used=result.tokens_used,
            )

    # -- end ----------------------------------------------------------------------------------
    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        generation = response.generations[0][0] if response.generations and response.generations[0] else None
        output_tokens = input_tokens = finish_reason = None
        cached = False
        tool_call_tokens = 0
        if generation is not None:
            info = generation.generation_info or {}
            finish_reason = info.get("finish_reason")
            cached = is_cache_hit(info)
            if isinstance(generation, ChatGeneration):
                usage = getattr(generation.message, "usage_metadata", None) or {}
                output_tokens, input_tokens = usage.get("output_tokens"), usage.get("input_tokens")
                meta = generation.message.response_metadata or {}
                finish_reason = finish_reason or meta.get("finish_reason") or meta.get("stop_reason")
                cached = cached or is_cache_hit(meta) or served_from_cache(generation)
                tool_call_tokens = _tool_call_tokens(generation.message)
        token_usage = (response.llm_output or {}).get("token_usage") or {}
        self.tracker.end(
            run_id,
            generation.text if generation is not None else None,
            output_tokens=output_tokens or token_usage.get("completion_tokens"),
            input_tokens=input_tokens or token_usage.get("prompt_tokens"),
            finish_reason=finish_reason,
            cached=cached,
            tool_call_tokens=tool_call_tokens,
        )

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.tracker.end(run_id)  # the stream was closed or failed: account what was produced


def _tool_call_tokens(message: Any) -> int:
    """Output tokens of the tool calls a reply carries (the core rule,
    :func:`lean_plugins.agents.reply_tool_call_tokens`; 0 for none)."""
    return reply_tool_call_tokens(getattr(message, "tool_calls", None) or [])


# -- the enforcing wrapper ----------------------------------------------------------------------
class BudgetedText(str):
    """The text of a budgeted LLM or string chain; a ``str`` with the budget's verdict."""

    stop_reason: str
    output_budget: dict[str, Any]

    def __new__(cls, text: str, result: BudgetResult | dict[str, Any]) -> BudgetedText:
        obj = super().__new__(cls, text)
        meta = result.to_metadata() if isinstance(result, BudgetResult) else dict(result)
        obj.stop_reason = meta["stop_reason"]
        obj.output_budget = meta
        return obj


def find_model(runnable: Runnable) -> BaseLanguageModel | None:
    """The language model inside ``runnable`` (itself, a binding of it, or a chain step)."""
    if isinstance(runnable, BaseLanguageModel):
        return runnable
    if isinstance(runnable, RunnableBinding):
        return find_model(runnable.bound)
    if isinstance(runnable, RunnableSequence):
        return next((m for m in map(find_model, runnable.steps) if m is not None), None)
    return None


def _with_handler(config: RunnableConfig | None, handler: BaseCallbackHandler) -> RunnableConfig:
    """``config`` with ``handler`` added to its callbacks (inherited by the steps)."""
    config = ensure_config(config)
    callbacks = config.get("callbacks")
    if callbacks is None:
        config["callbacks"] = [handler]
    elif isinstance(callbacks, list):
        config["callbacks"] = [*callbacks, handler]
    else:  # a callback manager
        manager = callbacks.copy()
        manager.add_handler(handler, inherit=True)
        config["callbacks"] = manager
    return config


def _swap_model(runnable: Runnable, model: BaseLanguageModel, new: Runnable) -> Runnable:
    """``runnable`` with ``model`` (found by :func:`find_model`) replaced by ``new``."""
    if runnable is model:
        return new
    if isinstance(runnable, RunnableBinding):
        return runnable.model_copy(update={"bound": _swap_model(runnable.bound, model, new)})
    if isinstance(runnable, RunnableSequence):
        steps = [_swap_model(step, model, new) for step in runnable.steps]
        return RunnableSequence(*steps, name=runnable.name)
    return runnable


def _first_prompt_template(runnable: Runnable) -> BasePromptTemplate | None:
    if isinstance(runnable, BasePromptTemplate):
        return runnable
    if isinstance(runnable, RunnableSequence):
        return _first_prompt_template(runnable.first)
    return None


class _Wrapper(Runnable[Any, Any]):
    """A runnable around ``self.runnable``, typed like it."""

    runnable: Runnable

    @property
    def InputType(self) -> Any:
        return self.runnable.InputType

    @property
    def OutputType(self) -> Any:
        return self.runnable.OutputType


def _route(runnable: Runnable, route: str | None, budget: OutputBudget) -> str | None:
    """The route budgets are learned under: given, the budget's, or the chain's template identity."""
    template = _first_prompt_template(runnable)
    return route or budget.route or (route_for_template(template.pretty_repr()) if template else None)


def _observers(model: BaseLanguageModel) -> dict[str, Any]:
    """The model's own callbacks, tags, metadata and verbosity, for its budgeted wrapper.

    The wrapper calls the model's ``_stream`` / ``_generate`` directly (to close the stream at
    the budget), so the model's callback manager never runs: handlers attached to the model
    instance (``Model(callbacks=[meter])``) would miss every budgeted call. The wrapper runs
    them instead, once per call, as the model would have."""
    return {"callbacks": model.callbacks, "tags": model.tags, "metadata": model.metadata, "verbose": model.verbose}


def with_output_budget(
    runnable: Runnable,
    budget: OutputBudget | int,
    *,
    route: str | None = None,
    raise_on_stop: bool = False,
    tokenizer: str | Tokenizer | None = None,
) -> Runnable:
    """Give ``runnable`` (a chat model, an LLM, or a chain around one) an output budget.

    ``budget``: an :class:`OutputBudget` (fixed or predicted) or an int of tokens. ``route``:
    the name the budget is learned under (default: the chain's prompt template identity).
    Each call sets the model's max-tokens field to its budget where the model has one, stops the
    stream at the budget, and returns the kept text with ``stop_reason``.

    A chat model (or ``model.bind_tools(...)``) becomes a :class:`BudgetedChatModel` (a
    binding of one when tools were bound first): a chat model itself, tool calls and usage kept.
    A text-completion LLM, or a chain around any model, becomes a :class:`BudgetedChain`: the
    model inside it replaced by its budgeted version (:class:`BudgetedTextLLM` or
    :class:`BudgetedChatModel`), a text output returned as a :class:`BudgetedText`.
    """
    if not isinstance(budget, OutputBudget):
        budget = OutputBudget(budget)
    raise_on_stop = raise_on_stop or budget.raise_on_stop
    target, binding = runnable, None
    if isinstance(runnable, RunnableBinding) and isinstance(runnable.bound, BaseChatModel):
        target, binding = runnable.bound, runnable
    if isinstance(target, BaseChatModel):
        wrapped = BudgetedChatModel(
            model=target,
            budget=budget,
            route=route or budget.route,
            raise_on_stop=raise_on_stop,
            tokenizer=tokenizer,
            cache=target.cache,
            **_observers(target),
        )
        if binding is None:
            return wrapped
        return RunnableBinding(bound=wrapped, kwargs=binding.kwargs, config=binding.config)
    model = find_model(runnable)
    if model is None:
        raise ConfigurationError(
            f"with_output_budget found no language model in {type(runnable).__name__}: pass a chat "
            "model, an LLM, or a chain (prompt | model | parser) that contains one."
        )
    # a text-completion LLM, or a chain around a model: budget the model inside it
    route = _route(runnable, route, budget)
    wrapper_class = BudgetedChatModel if isinstance(model, BaseChatModel) else BudgetedTextLLM
    wrapped = wrapper_class(
        model=model,
        budget=budget,
        route=route,
        raise_on_stop=raise_on_stop,
        tokenizer=tokenizer,
        cache=model.cache,
        **_observers(model),
    )
    return BudgetedChain(_swap_model(runnable, model, wrapped), route=route)


class _Verdicts(BaseCallbackHandler):
    """Collects the budget's verdict of each budgeted model call in one chain run."""

    def __init__(self) -> None:
        self.verdicts: list[dict[str, Any]] = []

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        for generations in response.generations:
            for generation in generations:
                message = getattr(generation, "message", None)
                meta = (getattr(message, "response_metadata", None) or {}).get("output_budget")
                meta = meta or (generation.generation_info or {}).get("output_budget")
                if meta:
                    self.verdicts.append(meta)


class BudgetedChain(_Wrapper):
    """A chain whose chat model is a :class:`BudgetedChatModel`; build it with
    :func:`with_output_budget`. Runs the chain as it is (streaming, the model's cache, tool
    calls all kept); a text output comes back as a :class:`BudgetedText` with the verdict."""

    def __init__(self, runnable: Runnable, *, route: str | None = None) -> None:
        self.runnable = runnable
        self.route = route

    @staticmethod
    def _answer(output: Any, verdicts: _Verdicts) -> Any:
        if isinstance(output, str) and verdicts.verdicts:
            return BudgetedText(output, verdicts.verdicts[-1])
        return output

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        verdicts = _Verdicts()
        return self._answer(self.runnable.invoke(input, _with_handler(config, verdicts), **kwargs), verdicts)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        verdicts = _Verdicts()
        output = await self.runnable.ainvoke(input, _with_handler(config, verdicts), **kwargs)
        return self._answer(output, verdicts)

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        yield from self.runnable.stream(input, config, **kwargs)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        async for chunk in self.runnable.astream(input, config, **kwargs):
            yield chunk


# -- the chat model wrapper ---------------------------------------------------------------------
_DECISION_KEYS = ("finish_reason", "stop_reason")


def _chat_model_name(model: BaseChatModel) -> str | None:
    for name in ("model_name", "model", "model_id"):
        value = getattr(model, name, None)
        if isinstance(value, str):
            return value
    return None


def _can_stream(model: BaseChatModel, kwargs: dict[str, Any], *, async_api: bool) -> bool:
    sync = type(model)._stream is not BaseChatModel._stream
    if async_api and not sync and type(model)._astream is BaseChatModel._astream:
        return False
    return (sync or async_api) and not model._streaming_disabled(**kwargs)


def _pass_through(chunk: ChatGenerationChunk, text: str) -> AIMessageChunk:
    """``chunk``'s message with only the kept ``text`` as content; tool-call chunks, usage and
    metadata kept (the provider's finish reason is left for the last chunk, decided here)."""
    message = chunk.message
    meta = {k: v for k, v in (message.response_metadata or {}).items() if k not in _DECISION_KEYS}
    update: dict[str, Any] = {"content": text, "response_metadata": meta}
    if getattr(message, "chunk_position", None) == "last":
        update["chunk_position"] = None
    return message.model_copy(update=update)  # type: ignore[return-value]


def _begin_call(
    wrapper: Any, prompt: str, input_tokens: int, run_manager: Any
) -> tuple[Any, BudgetedCall, dict[str, Any]]:
    """One call of a budgeted model (``wrapper.model`` under ``wrapper.budget``): the model
    capped at the call's budget, the call, and the extra call arguments (a local model gets
    the run as its stopping criterion)."""
    for handler in getattr(run_manager, "handlers", None) or []:
        if isinstance(handler, OutputBudgetCallbackHandler) and handler.stop_stream:
            raise ConfigurationError(
                "An OutputBudgetCallbackHandler with stop_stream=True is passed to a budgeted "
                "model: its stop would throw the answer away. The budget is already "
                "with_output_budget(...)'s; pass the handler with stop_stream=False to only "
                "account calls, or drop it."
            )
    model, budget = wrapper.model, wrapper.budget
    route = wrapper.route or budget.route
    tokens = budget.budget_for(prompt, route=route)
    local = is_local_model(model)
    run = budget.start(
        prompt,
        route=route,
        budget=tokens,
        model=budget.model or _chat_model_name(model),
        # a local model reports its own prompt count; a provider's is counted unless reported
        input_tokens=0 if local else input_tokens,
        tokenizer=wrapper.tokenizer,
    )
    update = capped_limits(type(model).model_fields, dict(model), tokens)
    inner = model.model_copy(update=update) if update else model
    extra = {"stopping_criteria": [run]} if local else {}
    return inner, BudgetedCall(run, criterion=local, capped=bool(update)), extra


def _verdict(result: BudgetResult, provider_reason: Any) -> dict[str, Any]:
    """What a budgeted answer's metadata says about how it ended."""
    return {
        "finish_reason": "length" if result.stopped else (provider_reason or "stop"),
        "stop_reason": result.stop_reason,
        "output_budget": result.to_metadata(),
    }


class _BudgetSettings(BaseModel):
    """What a budgeted model adds to the model it wraps (``model``, a field of each wrapper)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    budget: OutputBudget = Field(description="The fixed or predicted per-call output budget.")
    route: str | None = Field(default=None, description="Route name the budgets are learned under.")
    raise_on_stop: bool = Field(
        default=False, description="Raise BudgetExceededError (with partial_text) at a budget stop."
    )
    tokenizer: Any = Field(
        default=None, description="Counts streamed text (default: the budget's; cl100k_base)."
    )

    @property
    def _llm_type(self) -> str:
        return f"budgeted-{self.model._llm_type}"  # type: ignore[attr-defined]


class BudgetedChatModel(_BudgetSettings, BaseChatModel):
    """A chat model whose every call stops at its output budget; build it with
    :func:`with_output_budget`.

    It is a ``BaseChatModel``: it goes wherever a chat model goes (``bind_tools``,
    ``with_structured_output``, agents, ``with_retry``, ``with_fallbacks``), callbacks see one
    run that ends with ``on_llm_end`` also when the budget stops it, and the model's cache (or
    the global one, ``set_llm_cache``) serves it, keyed with the budget. Messages keep the
    model's tool calls, tool-call chunks, usage and response metadata; only the text is cut.
    ``response_metadata["stop_reason"]`` says why the answer ended (``natural``, ``budget``,
    ``soft_budget``, ``confidence``), ``["finish_reason"]`` is ``"length"`` for a budget stop,
    and ``["output_budget"]`` holds the budget, the tokens used and generated, and their unit.
    """

    model: BaseChatModel = Field(description="The chat model that generates.")

    @classmethod
    def class_name(cls) -> str:
        return "BudgetedChatModel"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        budget = self.budget
        return {
            "model_name": _chat_model_name(self.model),
            "output_budget": budget.max_tokens,
            "predicted": budget.predictor is not None,
            "route": self.route or budget.route,
            "soft_window": budget.soft_window,
            "confidence_threshold": budget.confidence_threshold,
            "wrapped": self.model._get_llm_string(),
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        return self.model._get_ls_params(stop=stop, **kwargs)

    def get_num_tokens(self, text: str) -> int:
        return self.model.get_num_tokens(text)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Any = None) -> int:
        return self.model.get_num_tokens_from_messages(messages, tools=tools)

    # -- what the model is bound to -------------------------------------------------------------
    def _rebound(self, bound: Runnable) -> Runnable:
        """``bound`` (the wrapped model's ``bind_tools`` / ``bind`` result) around this wrapper."""
        if isinstance(bound, RunnableBinding) and bound.bound is self.model:
            return RunnableBinding(bound=self, kwargs=bound.kwargs, config=bound.config)
        raise ConfigurationError(
            f"{type(self.model).__name__}.bind_tools returned {type(bound).__name__}, not a binding of "
            "the model, so the budget cannot wrap it: bind the tools first and pass the result to "
            "with_output_budget(model.bind_tools(tools), budget)."
        )

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """The wrapped model's ``bind_tools``, the budget kept."""
        return self._rebound(self.model.bind_tools(tools, **kwargs))

    # -- one call -------------------------------------------------------------------------------
    def _should_stream(self, *, async_api: bool, **kwargs: Any) -> bool:
        # LangChain's stream() skips the cache: with a cache in effect, stream() goes through
        # invoke() (one chunk), so a budgeted repeat is served from the cache.
        if self.cache is not False and (isinstance(self.cache, BaseCache) or get_llm_cache() is not None):
            return False
        return super()._should_stream(async_api=async_api, **kwargs)

    def _begin(
        self, messages: list[BaseMessage], kwargs: dict[str, Any], run_manager: Any
    ) -> tuple[BaseChatModel, BudgetedCall, dict[str, Any]]:
        prompt = next((_message_text(m) for m in reversed(messages) if m.type == "human"), "")
        input_tokens = sum(count_tokens(_message_text(m)) for m in messages)
        return _begin_call(self, prompt, input_tokens, run_manager)

    def _last_chunk(self, call: BudgetedCall, merged: AIMessageChunk | None) -> ChatGenerationChunk:
        """The closing chunk: the rest of the kept text, the budget's verdict, the usage."""
        usage = merged.usage_metadata if merged is not None else None
        meta = (merged.response_metadata if merged is not None else None) or {}
        result = call.finish(
            output_tokens=(usage or {}).get("output_tokens"),
            input_tokens=(usage or {}).get("input_tokens"),
            finish_reason=meta.get("finish_reason") or meta.get("stop_reason"),
            cached=is_cache_hit(meta),
            tool_call_tokens=_tool_call_tokens(merged),
        )
        if self.raise_on_stop and result.stopped:
            raise result.exceeded_error()
        response_metadata = _verdict(result, meta.get("finish_reason") or meta.get("stop_reason"))
        message = AIMessageChunk(content=call.take(), response_metadata=response_metadata, chunk_position="last")
        if usage is None:  # the stream was closed before the provider's usage: ours, one unit
            run = call.run
            input_tokens = run.input_tokens if run.input_tokens is not None else 0
            message.usage_metadata = {
                "input_tokens": input_tokens,
                "output_tokens": result.tokens_generated,
                "total_tokens": input_tokens + result.tokens_generated,
            }
        return ChatGenerationChunk(message=message)

    def _whole(self, call: BudgetedCall, result: ChatResult) -> ChatGenerationChunk:
        """A model that cannot stream: its answer judged whole, cut to the budget."""
        message = result.generations[0].message
        text = _message_text(message)
        chunk = AIMessageChunk(
            content="",
            id=message.id,
            tool_call_chunks=[
                {"name": t["name"], "args": json.dumps(t["args"]), "id": t["id"], "index": i, "type": "tool_call_chunk"}
                for i, t in enumerate(getattr(message, "tool_calls", None) or [])
            ],
            usage_metadata=getattr(message, "usage_metadata", None),
            response_metadata=dict(message.response_metadata or {}),
            additional_kwargs=dict(message.additional_kwargs or {}),
        )
        usage = chunk.usage_metadata or {}
        calls = _tool_call_tokens(message)
        call.finish(text, output_tokens=usage.get("output_tokens"), tool_call_tokens=calls)
        return ChatGenerationChunk(message=chunk)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        inner, call, extra = self._begin(messages, kwargs, run_manager)
        merged: AIMessageChunk | None = None
        if not _can_stream(inner, kwargs, async_api=False):
            whole = self._whole(call, inner._generate(messages, stop=stop, **kwargs, **extra))
            merged = whole.message  # type: ignore[assignment]
            out = [_pass_through(whole, "")]
        else:
            out = []
            stream = inner._stream(messages, stop=stop, **kwargs, **extra)
            try:
                for chunk in stream:
                    merged = chunk.message if merged is None else merged + chunk.message  # type: ignore[operator]
                    piece = _pass_through(chunk, call.step(chunk.text))
                    if run_manager and piece.content:
                        run_manager.on_llm_new_token(piece.text, chunk=ChatGenerationChunk(message=piece))
                    yield ChatGenerationChunk(message=piece)
                    if call.should_close and not kwargs.get("tools"):
                        break  # with tools bound the cut stops only text: a tool call may follow
            finally:
                stream.close()  # at the budget: stop the provider's stream (and its billing)
            if merged is None:  # the stream gave nothing (a model that streams only text): whole
                whole = self._whole(call, inner._generate(messages, stop=stop, **kwargs, **extra))
                merged = whole.message  # type: ignore[assignment]
                out = [_pass_through(whole, "")]
        last = self._last_chunk(call, merged)
        if run_manager and last.text:
            run_manager.on_llm_new_token(last.text, chunk=last)
        yield from (ChatGenerationChunk(message=m) for m in out)
        yield last

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        inner, call, extra = self._begin(messages, kwargs, run_manager)
        merged: AIMessageChunk | None = None
        out = []
        if not _can_stream(inner, kwargs, async_api=True):
            whole = self._whole(call, await inner._agenerate(messages, stop=stop, **kwargs, **extra))
            merged = whole.message  # type: ignore[assignment]
            out = [_pass_through(whole, "")]
        else:
            stream = inner._astream(messages, stop=stop, **kwargs, **extra)
            try:
                async for chunk in stream:
                    merged = chunk.message if merged is None else merged + chunk.message  # type: ignore[operator]
                    piece = _pass_through(chunk, call.step(chunk.text))
                    if run_manager and piece.content:
                        await run_manager.on_llm_new_token(piece.text, chunk=ChatGenerationChunk(message=piece))
                    yield ChatGenerationChunk(message=piece)
                    if call.should_close and not kwargs.get("tools"):
                        break  # with tools bound the cut stops only text: a tool call may follow
            finally:
                await stream.aclose()
            if merged is None:  # the stream gave nothing (a model that streams only text): whole
                whole = self._whole(call, await inner._agenerate(messages, stop=stop, **kwargs, **extra))
                merged = whole.message  # type: ignore[assignment]
                out = [_pass_through(whole, "")]
        last = self._last_chunk(call, merged)
        if run_manager and last.text:
            await run_manager.on_llm_new_token(last.text, chunk=last)
        for m in out:
            yield ChatGenerationChunk(message=m)
        yield last

    @staticmethod
    def _collect(chunks: list[ChatGenerationChunk]) -> ChatResult:
        merged = chunks[0]
        for chunk in chunks[1:]:
            merged = merged + chunk
        return ChatResult(generations=[ChatGeneration(message=message_chunk_to_message(merged.message))])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._collect(list(self._stream(messages, stop=stop, run_manager=run_manager, **kwargs)))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        chunks = [c async for c in self._astream(messages, stop=stop, run_manager=run_manager, **kwargs)]
        return self._collect(chunks)


class BudgetedTextLLM(_BudgetSettings, BaseLLM):
    """A text-completion LLM whose every call stops at its output budget; build it with
    :func:`with_output_budget`. The same call as :class:`BudgetedChatModel` (capped model,
    stream closed at the budget, a model that cannot stream cut whole, callbacks ending with
    ``on_llm_end``, the cache keyed with the budget); the verdict is in the generation's
    ``generation_info`` and, through :func:`with_output_budget`, on the :class:`BudgetedText`."""

    model: BaseLLM = Field(description="The LLM that generates.")

    @classmethod
    def class_name(cls) -> str:
        return "BudgetedTextLLM"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": _chat_model_name(self.model),
            "output_budget": self.budget.settings(),
            "route": self.route,
            "wrapped": f"{type(self.model).__name__}:{sorted(self.model._identifying_params.items())}",
        }

    def get_num_tokens(self, text: str) -> int:
        return self.model.get_num_tokens(text)

    def _last(self, call: BudgetedCall, info: dict[str, Any], usage: dict[str, Any]) -> GenerationChunk:
        result = call.finish(
            output_tokens=usage.get("completion_tokens"),
            input_tokens=usage.get("prompt_tokens"),
            finish_reason=info.get("finish_reason"),
            cached=is_cache_hit(info),
        )
        if self.raise_on_stop and result.stopped:
            raise result.exceeded_error()
        return GenerationChunk(text=call.take(), generation_info=_verdict(result, info.get("finish_reason")))

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        inner, call, extra = _begin_call(self, prompt, count_tokens(prompt), run_manager)
        info: dict[str, Any] = {}
        usage: dict[str, Any] = {}
        if type(inner)._stream is BaseLLM._stream:  # cannot stream: judged whole, cut to the budget
            result = inner._generate([prompt], stop=stop, **kwargs, **extra)
            generation = result.generations[0][0]
            info = dict(generation.generation_info or {})
            usage = dict((result.llm_output or {}).get("token_usage") or {})
            call.finish(generation.text, output_tokens=usage.get("completion_tokens"), finish_reason=info.get("finish_reason"))
        else:
            stream = inner._stream(prompt, stop=stop, **kwargs, **extra)
            try:
                for chunk in stream:
                    info.update(chunk.generation_info or {})
                    piece = call.step(chunk.text)
                    if piece:
                        out = GenerationChunk(text=piece)
                        if run_manager:
                            run_manager.on_llm_new_token(piece, chunk=out)
                        yield out
                    if call.should_close:
                        break
            finally:
                stream.close()  # at the budget: stop the provider's stream (and its billing)
        last = self._last(call, info, usage)
        if run_manager and last.text:
            run_manager.on_llm_new_token(last.text, chunk=last)
        yield last

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        generations = []
        for prompt in prompts:
            chunks = list(self._stream(prompt, stop=stop, run_manager=run_manager, **kwargs))
            merged = chunks[0]
            for chunk in chunks[1:]:
                merged = merged + chunk
            generations.append([Generation(text=merged.text, generation_info=merged.generation_info)])
        return LLMResult(generations=generations)
