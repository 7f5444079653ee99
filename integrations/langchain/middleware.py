"""LangChain v1 agent middleware: the lean layers inside ``create_agent``'s loop.

One small middleware per concern, each usable alone, in any order, with LangChain's built-ins
(``SummarizationMiddleware``, ``ContextEditingMiddleware``, ``ModelCallLimitMiddleware``, ...),
sync and async, invoked or streamed::

    from langchain.agents import create_agent
    from lean_plugins.langchain.middleware import (
        LeanBudgetMiddleware, LeanCacheMiddleware, LeanCompressMiddleware, LeanPrefixMiddleware,
    )

    agent = create_agent(model, tools, system_prompt=..., middleware=[
        LeanBudgetMiddleware(step_tokens=256, run_tokens=2048),  # 4. output budget per step and run
        LeanCacheMiddleware(),                                   # 5. model calls cached (whole request)
        LeanCompressMiddleware(),                                # 1. long tool results compressed
        LeanPrefixMiddleware(),                                  # stable prefix, cache breakpoints
    ])

The first in the list is the outermost (LangChain's rule). That order is the recommended one:
the budget outside the cache puts the budget in the cache key, so an answer it cut is cached
and replayed, and its saving booked again on a replay; the cache outside the compressor keys
on the original tool results and skips compressing on a hit; the prefix layout innermost marks
the request as it is finally sent.

What each books in the savings ledger, once per model call: ``compress`` (tool-result tokens
before and after, at the agent model's price), ``cache / hit`` (the avoided call's input and
output tokens), ``budget / stop`` and ``llm / call`` (through the core output budget),
``prefix cache`` (cached tokens the provider reports). The domain logic is in
:mod:`lean_plugins.agents` and the layers' own core modules; this module only translates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import Annotated, Any, Literal, NotRequired

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.load import dumpd, dumps
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration
from langchain_core.tracers.context import register_configure_hook
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.channels.untracked_value import UntrackedValue
from lean_plugins.langchain.budget import BudgetedChatModel, _chat_model_name, with_output_budget
from lean_plugins.langchain.cache import LeanCache, served_from_cache
from lean_plugins.langchain.question_cache import _plain_settings

from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ModelRequest,
    ModelResponse,
    PrivateStateAttr,
    hook_config,
)
from lean_plugins.agents import (
    AgentBudget,
    ToolResultCompressor,
    agent_step_budget,
    check_baseline_tokens,
    compact_history,
    content_text,
    context_fingerprint,
    exact_request_key,
    provider_side_tools,
    received_as_keyed,
    replayed_budget_event,
    reply_output_tokens,
    request_tokens,
)
from lean_plugins.cache import namespace_for
from lean_plugins.cache.keys import request_key
from lean_plugins.cache.question import callers_on_stack
from lean_plugins.errors import ConfigurationError
from lean_plugins.ledger import is_cache_hit, mark_cache_hit, record
from lean_plugins.prompts.prefix_cache import record_prefix_cache

__all__ = [
    "LeanBudgetMiddleware",
    "LeanCacheMiddleware",
    "LeanCompressMiddleware",
    "LeanPrefixMiddleware",
    "plain_messages",
    "tool_schemas",
]

Handler = Callable[[ModelRequest], ModelResponse]
AsyncHandler = Callable[[ModelRequest], Awaitable[ModelResponse]]


# -- translation: LangChain objects to the plain data the core takes ------------------------------
def plain_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """Messages as the core's plain dicts (role, content, tool calls)."""
    out = []
    for m in messages:
        item: dict[str, Any] = {"role": m.type, "content": m.content}
        calls = getattr(m, "tool_calls", None)
        if calls:
            item["tool_calls"] = [{"name": c["name"], "args": c["args"], "id": c.get("id")} for c in calls]
        out.append(item)
    return out


_SCHEMAS: dict[int, tuple[Any, tuple[Any, ...], dict[str, Any]]] = {}


def _schema(tool: Any) -> dict[str, Any]:
    # Converted once per tool object (every step sends the same tools); a tool whose schema
    # source changes (a new args_schema) is converted again. Keyed by id, checked by a weak
    # reference, so a new tool at a reused address is not mistaken for the old one.
    source = (getattr(tool, "name", None), getattr(tool, "description", None), getattr(tool, "args_schema", None))
    seen = _SCHEMAS.get(id(tool))
    if seen is not None and seen[0]() is tool and seen[1] == source:
        return seen[2]
    schema = convert_to_openai_tool(tool)
    try:
        _SCHEMAS[id(tool)] = (weakref.ref(tool, lambda _r, key=id(tool): _SCHEMAS.pop(key, None)), source, schema)
    except TypeError:  # not weak-referenceable: converted each time
        pass
    return schema


def tool_schemas(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """Bound tools as OpenAI function-format dicts (a provider's built-in tool dict as is)."""
    return [t if isinstance(t, dict) else _schema(t) for t in tools]


def _sent(request: ModelRequest) -> list[BaseMessage]:
    return [request.system_message, *request.messages] if request.system_message else list(request.messages)


#: Message fields that reach the model, besides the role and the content (the cache key holds them).
_SENT_FIELDS = ("name", "tool_call_id", "status", "additional_kwargs")


def _key_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """Messages as the cache key's plain dicts: every field that reaches the model."""
    out = []
    for m in messages:
        item: dict[str, Any] = {"role": m.type, "content": m.content}
        for name in _SENT_FIELDS:
            value = getattr(m, name, None)
            if value:
                item[name] = value
        calls = getattr(m, "tool_calls", None)
        if calls:
            item["tool_calls"] = [{"name": c["name"], "args": c["args"], "id": c.get("id")} for c in calls]
        out.append(item)
    return out


def _request_tokens(request: ModelRequest) -> int:
    return request_tokens(plain_messages(_sent(request)), tool_schemas(request.tools))


def _answer(response: ModelResponse | AIMessage) -> AIMessage | None:
    result = [response] if isinstance(response, AIMessage) else getattr(response, "result", [])
    return next((m for m in reversed(result) if isinstance(m, AIMessage)), None)


def _reply_tokens(answer: AIMessage) -> int:
    """Output tokens of a reply: the provider's count when reported, else its text plus its
    tool calls (:func:`lean_plugins.agents.reply_output_tokens`, the rule the output budget
    books the same reply by)."""
    output = (answer.usage_metadata or {}).get("output_tokens")
    if output is not None:
        return int(output)
    return reply_output_tokens(content_text(answer.content), answer.tool_calls)


def _served_from_cache(message: AIMessage) -> bool:
    """True when a cache served ``message``: a lean cache (the cache-hit mark of
    :mod:`lean_plugins.ledger`) or the model's own LangChain ``BaseCache`` (LangChain's mark,
    :func:`lean_plugins.langchain.cache.served_from_cache`). Either way nothing was spent and
    the cache booked the hit already."""
    return is_cache_hit(message.response_metadata) or served_from_cache(message)


def _goal(messages: Sequence[BaseMessage]) -> str | None:
    """The pending user goal: the text of the latest human message."""
    for m in reversed(messages):
        if isinstance(m, HumanMessage):
            return content_text(m.content) or None
    return None


def _model_name(request: ModelRequest) -> str | None:
    model = request.model.model if isinstance(request.model, BudgetedChatModel) else request.model
    return _chat_model_name(model)


# -- 1. compression of tool results ---------------------------------------------------------------
class LeanCompressMiddleware(AgentMiddleware):
    """Compresses long tool results in each model request, for the pending user goal.

    Only the request sent to the model changes: the agent's state keeps every tool result as
    the tool returned it (nothing is lost; a later step, another middleware or the user reads
    the original). Tool-call ids, tool names and statuses are kept; JSON stays JSON with its
    keys, numbers and short strings untouched; fenced code is kept, unfenced source code is
    kept or cut by whole top-level blocks; a failed call (``status="error"``) or a stack trace
    keeps every line but whole middle frames; numbers are protected
    (:class:`lean_plugins.agents.ToolResultCompressor`). Each result is compressed once per
    goal and resent the same on later steps, so a provider's prefix cache keeps hitting.

    Args:
        compressor: a :class:`~lean_plugins.agents.ToolResultCompressor` (or a core
            ``LeanCompressor``, wrapped in one); default: a new one.
        rate: share of a long result's prose to keep (when ``compressor`` is not a
            ``ToolResultCompressor``).
        min_tokens: results shorter than this are sent as they are.
        tenant: recorded with each ledger event.
    """

    def __init__(
        self,
        compressor: Any = None,
        *,
        rate: float | None = None,
        min_tokens: int | None = None,
        tenant: str | None = None,
    ) -> None:
        super().__init__()
        if compressor is not None and not callable(getattr(compressor, "compress", None)):
            raise ConfigurationError(
                f"LeanCompressMiddleware: compressor must be a ToolResultCompressor or a core LeanCompressor "
                f"(something with .compress), got {compressor!r}; e.g. "
                "LeanCompressMiddleware(ToolResultCompressor(LeanCompressor(...))) or leave it out for the default."
            )
        if isinstance(compressor, ToolResultCompressor):
            if rate is not None or min_tokens is not None:
                raise ConfigurationError(
                    "LeanCompressMiddleware: rate and min_tokens belong to the ToolResultCompressor you "
                    "passed; set them there (ToolResultCompressor(rate=..., min_tokens=...))."
                )
            self.compressor = compressor
        else:
            settings = {k: v for k, v in (("rate", rate), ("min_tokens", min_tokens)) if v is not None}
            self.compressor = ToolResultCompressor(compressor, **settings)
        self.tenant = tenant

    def _pending(self, request: ModelRequest) -> bool:
        """True when some tool result of the request is not compressed yet (work for a thread)."""
        goal = _goal(request.messages)
        return any(
            isinstance(m, ToolMessage)
            and self.compressor.cached(content_text(m.content), goal, error=m.status == "error") is None
            for m in request.messages
        )

    def _edit(self, request: ModelRequest) -> ModelRequest:
        goal = _goal(request.messages)
        edited: list[BaseMessage] = []
        before = after = results = 0
        for m in request.messages:
            if isinstance(m, ToolMessage) and _compressible(m.content):
                # A failed call (status="error") keeps every line but whole middle stack frames.
                done = self.compressor.compress(content_text(m.content), goal, error=m.status == "error")
                if done.changed:
                    before += done.original_tokens
                    after += done.tokens
                    results += 1
                    m = m.model_copy(update={"content": _replace_text(m.content, done.text)})
            edited.append(m)
        if not results:
            return request
        record(
            layer="compress",
            kind="tool_result",
            input_before=before,
            input_after=after,
            model=_model_name(request),
            tenant=self.tenant,
            meta={"tool_results": results, "query": goal is not None},
        )
        return request.override(messages=edited)

    def wrap_model_call(self, request: ModelRequest, handler: Handler) -> ModelResponse:
        return handler(self._edit(request))

    async def awrap_model_call(self, request: ModelRequest, handler: AsyncHandler) -> ModelResponse:
        # The compressor is CPU work: off the event loop when there is any to do.
        edited = await asyncio.to_thread(self._edit, request) if self._pending(request) else self._edit(request)
        return await handler(edited)


def _compressible(content: Any) -> bool:
    """A string, or a list of text parts only (other parts, e.g. images, are left alone)."""
    if isinstance(content, str):
        return True
    return isinstance(content, list) and bool(content) and all(
        isinstance(p, dict) and p.get("type") == "text" for p in content
    )


def _replace_text(content: Any, text: str) -> Any:
    """New content with ``text``: a string stays a string; text parts become one part that
    keeps the last part's other keys (a cache breakpoint, for one)."""
    if isinstance(content, str):
        return text
    return [{**content[-1], "type": "text", "text": text}]


# -- 5. the model-call cache ------------------------------------------------------------------------
logger = logging.getLogger("lean_plugins.cache")


class _ReceivedRequests(BaseCallbackHandler):
    """Sees each chat model call started while a cache's ``handler(request)`` runs: the
    messages the model received and which model (its serialised form). Every cache around the
    call gets a copy (nested caches each check their own key)."""

    raise_error = False
    run_inline = True

    def __init__(self, sinks: list[list[tuple[Any, Any]]]) -> None:
        self.sinks = sinks

    def on_chat_model_start(self, serialized: Any, messages: list[list[BaseMessage]], **kw: Any) -> None:
        # Which model object: the one whose generate/stream is running (handlers run inline).
        callers = callers_on_stack(BaseChatModel, _MODEL_CALLS)
        seen = (callers[0][0] if callers else serialized, [list(batch) for batch in messages])
        for sink in self.sinks:
            sink.append(seen)

    def on_llm_start(self, serialized: Any, prompts: list[str], **kw: Any) -> None:
        for sink in self.sinks:  # a completion model received text, not the keyed messages
            sink.append((serialized, None))


_MODEL_CALLS = frozenset({"generate", "agenerate", "stream", "astream"})


_received: ContextVar[_ReceivedRequests | None] = ContextVar("lean_cache_received", default=None)
# LangChain adds the handler in the context variable to every run configured while it is set
# (how get_usage_metadata_callback works), so the model call inside handler(request) is seen
# however the middleware inside the cache reaches it.
register_configure_hook(_received, inheritable=True)


@contextlib.contextmanager
def _watch_received() -> Iterator[list[tuple[Any, Any]]]:
    seen: list[tuple[Any, Any]] = []
    outer = _received.get()
    token = _received.set(_ReceivedRequests([*(outer.sinks if outer is not None else ()), seen]))
    try:
        yield seen
    finally:
        _received.reset(token)


class LeanCacheMiddleware(AgentMiddleware):
    """Serves a model call from the cache when the same request was answered before.

    The key is the request as this middleware sees it (what its ``wrap_model_call`` is
    handed): every message with its tool calls and ids, the bound tools, tool choice, response
    format and model settings, the model's identity (its ``llm_string`` and its declared
    str/number/bool fields) and the run's ``runtime.context``
    (:func:`lean_plugins.agents.context_fingerprint`; a context with no plain value is
    neither served nor stored).

    Middleware after this one in the list may rebuild the request from what the key does not
    hold (a ``@dynamic_prompt`` reading the context, a router swapping the model): on a miss
    the model call is watched, and the answer is stored only when the keyed model received
    the keyed messages (:func:`lean_plugins.agents.received_as_keyed`); otherwise one warning
    says to place this middleware after the one that edits the request.

    * With tools bound (the answer is, or may be, a tool call) an entry is served only to a
      request equal in every character (:func:`lean_plugins.agents.exact_request_key`): no
      case, punctuation, whitespace or paraphrase forgiveness, since a tool call's arguments
      may copy any of them. A missed hit costs a call; a wrong tool argument is a wrong action.
    * Without tools, the LLM-level cache's rule (:func:`lean_plugins.cache.keys.request_key`):
      a paraphrase only of a plain final question after identical earlier messages.
    * A request that binds a provider-side tool (a tool dict such as ``{"type": "web_search"}``,
      :func:`lean_plugins.agents.provider_side_tools`) is neither served nor stored: the
      provider fetches its results during the call, so a replay would be stale.

    Entries belong to one ``namespace``: middleware inside this one (LangChain's
    ``ContextEditingMiddleware``, a compressor) may change the request before the model
    receives it, so an entry is right only for a cache with the same middleware inside it.
    Without ``namespace`` each instance has its own (a bare ``LeanCacheMiddleware()`` also
    its own temporary store), so two instances never serve each other's entries; name a
    namespace to reuse entries across processes or rebuilt agents, and give one name only to
    caches with the same middleware inside them.

    A hit returns the cached message (tool calls and ids kept, a new message id) marked as a
    hit and booked as ``cache / hit``; structured-output replies are not cached. An answer
    cut by an output budget is cached only when the budget is part of the key (a
    :class:`LeanBudgetMiddleware` outside this one).

    Args:
        cache: a :class:`lean_plugins.langchain.LeanCache` or a core
            :class:`lean_plugins.cache.LeanCache`; default: a store of this instance's own,
            in a temporary folder removed at exit.
        namespace: the name entries are stored under (default: this instance's own, unique).
        tenant: tenant id mixed into every namespace.
    """

    def __init__(self, cache: Any = None, *, namespace: str | None = None, tenant: str | None = None) -> None:
        super().__init__()
        if cache is None:
            cache = LeanCache(_private_store(), tenant=tenant)
        elif not isinstance(cache, LeanCache):
            from lean_plugins.cache import LeanCache as CoreLeanCache

            if not isinstance(cache, CoreLeanCache):
                raise ConfigurationError(
                    f"LeanCacheMiddleware: cache must be a lean_plugins.cache.LeanCache or a "
                    f"lean_plugins.langchain.LeanCache, got {type(cache).__name__} {cache!r}; for a store at a "
                    "path pass LeanCacheMiddleware(lean_plugins.cache.LeanCache(path=...))."
                )
            cache = LeanCache(cache, tenant=tenant)
        elif tenant is not None and cache.tenant != tenant:
            raise ConfigurationError(
                f"LeanCacheMiddleware: the LeanCache passed is for tenant {cache.tenant!r}, not {tenant!r}; "
                "pass LeanCache(tenant=...) or the core cache."
            )
        if namespace is not None and (not isinstance(namespace, str) or not namespace):
            raise ConfigurationError(f"LeanCacheMiddleware: namespace must be a non-empty str, got {namespace!r}.")
        self.cache = cache
        self.namespace = namespace if namespace is not None else f"instance-{uuid.uuid4().hex}"
        self._warned = False

    def _key(self, request: ModelRequest) -> tuple[str, dict[str, Any]] | None:
        """The key of ``request``, or ``None`` when it cannot have one (a run context with
        no plain value, or a provider-side tool bound: its results are fetched during the
        call, not in the request): such a request is neither served nor stored."""
        context = context_fingerprint(getattr(getattr(request, "runtime", None), "context", None))
        if context is None or provider_side_tools(request.tools):
            return None
        params: dict[str, Any] = {**request.model_settings}
        if request.tools:
            params["tools"] = tool_schemas(request.tools)
        if request.tool_choice is not None:
            params["tool_choice"] = request.tool_choice
        if request.response_format is not None:
            params["response_format"] = repr(request.response_format)
        llm_string = f"{request.model._get_llm_string(**params)}\x00{_scalar_settings(_unwrapped(request.model))}"
        messages = _key_messages(_sent(request))
        key = exact_request_key(messages) if request.tools else request_key(compact_history(messages))
        return key.text, {
            "namespace": namespace_for(
                f"{llm_string}\x00middleware={self.namespace}\x00context={context}", self.cache.tenant
            ),
            "model": _model_name(request),
            "tenant": self.cache.tenant,
            "scope": key.scope,
            "semantic": key.semantic,
        }

    def _hit(self, hit: Any) -> ModelResponse | None:
        generations = LeanCache._hit(hit)
        if not generations:
            return None
        message = getattr(generations[0], "message", None)
        if not isinstance(message, AIMessage):
            return None
        # A new id (LangGraph's add_messages would replace an earlier message with the same id),
        # and the cache-hit mark that tells the other layers nothing was spent.
        update = {"id": f"lean-cache-{uuid.uuid4()}", "response_metadata": mark_cache_hit(message.response_metadata)}
        return ModelResponse(result=[message.model_copy(update=update)])

    def _storable(self, request: ModelRequest, response: ModelResponse | AIMessage) -> AIMessage | None:
        answer = _answer(response)
        if answer is None or _served_from_cache(answer):
            return None
        if isinstance(response, ModelResponse) and (response.structured_response is not None or len(response.result) != 1):
            return None
        cut = (answer.response_metadata.get("output_budget") or {}).get("stop_reason") not in (None, "natural")
        if cut and not isinstance(request.model, BudgetedChatModel):
            return None  # cut by a budget the key does not hold
        return answer

    def _received_as_keyed(self, request: ModelRequest, received: list[tuple[Any, Any]]) -> bool:
        """True when every model call made inside ``handler(request)`` got the keyed messages
        (up to the request-only edits :func:`lean_plugins.agents.received_as_keyed` allows)
        from the keyed model (or the model a :class:`LeanBudgetMiddleware` wraps). Otherwise
        middleware after this one edited the request from something the key does not hold (a
        dynamic prompt, a model router): the answer is not stored, and one warning says so."""
        if not received:
            return False  # no model answered (a middleware replied itself): nothing to store
        keyed = _key_messages(_sent(request))
        same = all(
            batches is not None and len(batches) == 1 and _is_model(serialized, request.model)
            and received_as_keyed(keyed, _key_messages(batches[0]))
            for serialized, batches in received
        )  # fmt: skip
        if not same and not self._warned:
            self._warned = True
            logger.warning(
                "LeanCacheMiddleware: a middleware after it in the list changed the request (system prompt, "
                "messages or model) before the model received it, so answers are not cached. Place "
                "LeanCacheMiddleware after the middleware that edits the request (later in the middleware list)."
            )
        return same

    def _value(self, answer: AIMessage) -> tuple[str, int]:
        return dumps([ChatGeneration(message=answer)]), _reply_tokens(answer)

    def _served(self, request: ModelRequest, hit: Any, model: str | None) -> ModelResponse | None:
        """The response of a hit, booked as ``cache / hit`` with the whole request's input
        tokens (tool schemas and every message: what the avoided call would have been sent)."""
        found = self._hit(hit)
        if found is not None:
            output = hit.output_tokens if hit.output_tokens is not None else _reply_tokens(found.result[0])
            record(
                layer="cache",
                kind="hit",
                input_before=_request_tokens(request),
                output_before=int(output),
                model=model,
                tenant=self.cache.tenant,
                meta={"match": hit.match, "similarity": round(hit.similarity, 4), "agent": True},
            )
        return found

    def wrap_model_call(self, request: ModelRequest, handler: Handler) -> ModelResponse | AIMessage:
        key = self._key(request)
        if key is None:
            return handler(request)
        text, kwargs = key
        found = self._served(request, self.cache.cache.lookup(text, record=False, **kwargs), kwargs["model"])
        if found is not None:
            return found
        with _watch_received() as received:
            response = handler(request)
        answer = self._storable(request, response)
        if answer is not None and self._received_as_keyed(request, received):
            value, output = self._value(answer)
            self.cache.cache.put(text, value, namespace=kwargs["namespace"], output_tokens=output,
                                 scope=kwargs["scope"], semantic=kwargs["semantic"])  # fmt: skip
        return response

    async def awrap_model_call(self, request: ModelRequest, handler: AsyncHandler) -> ModelResponse | AIMessage:
        key = self._key(request)
        if key is None:
            return await handler(request)
        text, kwargs = key
        hit = await self.cache.cache.alookup(text, record=False, **kwargs)
        found = self._served(request, hit, kwargs["model"])
        if found is not None:
            return found
        with _watch_received() as received:
            response = await handler(request)
        answer = self._storable(request, response)
        if answer is not None and self._received_as_keyed(request, received):
            value, output = self._value(answer)
            await self.cache.cache.aput(text, value, namespace=kwargs["namespace"], output_tokens=output,
                                        scope=kwargs["scope"], semantic=kwargs["semantic"])  # fmt: skip
        return response


def _unwrapped(model: Any) -> Any:
    return model.model if isinstance(model, BudgetedChatModel) else model


def _scalar_settings(model: Any) -> str:
    """The model's declared fields holding a str, number or bool (with_cache's plain settings,
    less lists and dicts): a custom model left on LangChain's default ``_identifying_params``
    (``language="de"``) keys on them too. Lists and dicts are left out, since a model may log
    its calls in one (the key would change on every call)."""
    settings = json.loads(_plain_settings(model)) if isinstance(model, BaseLanguageModel) else {}
    return json.dumps({k: v for k, v in settings.items() if not isinstance(v, (list, dict))}, sort_keys=True)


def _is_model(called: Any, model: Any) -> bool:
    """True when the model object that was called (or, when it could not be told, its
    serialised form) is ``model``, or ``model`` wrapped by a :class:`LeanBudgetMiddleware`
    inside the cache (whose cut answers are not stored)."""
    if not isinstance(called, BaseChatModel):
        return called == _serialised(model)
    if called is model:
        return True
    return isinstance(called, BudgetedChatModel) and _is_model(called.model, model)


def _serialised(model: Any) -> Any:
    """A model as callbacks name it (``on_chat_model_start``'s ``serialized``)."""
    return model._serialized if hasattr(type(model), "_serialized") else dumpd(model)


def _private_store() -> Any:
    """A core cache in a temporary folder of its own, removed when it is collected or at exit."""
    import shutil
    import tempfile

    from lean_plugins.cache import LeanCache as CoreLeanCache
    from lean_plugins.cache.lean_cache import _OPEN_CACHES

    folder = tempfile.mkdtemp(prefix="lean-agent-cache-")
    core = CoreLeanCache(path=folder)
    # nothing to persist in a folder removed at exit: skip the exit flush, which would run
    # after the removal and fail ("Cache flush failed ... could not open")
    _OPEN_CACHES.discard(core)
    weakref.finalize(core, shutil.rmtree, folder, True)
    return core


# -- 4. output budget per step and per run --------------------------------------------------------
_budget_log = logging.getLogger("lean_plugins.budget")


class LeanBudgetState(AgentState):
    """Agent state with the output tokens generated so far in this run (private, per run)."""

    lean_run_output_tokens: NotRequired[Annotated[int, UntrackedValue, PrivateStateAttr]]


class LeanBudgetMiddleware(AgentMiddleware[LeanBudgetState]):
    """Stops each model call at its output budget and the run at the run's budget.

    Each step's model is the core output budget's (:func:`lean_plugins.langchain.with_output_budget`):
    its max-tokens field set to the step's budget, its stream closed there, the text kept,
    tool calls and usage kept. The step's budget is ``step_tokens``, or what is left of
    ``run_tokens`` if less (:class:`lean_plugins.agents.AgentBudget`); when the run's budget
    is spent the agent ends with a message saying so (``exit_behavior="end"``, like
    ``ModelCallLimitMiddleware``) or raises :class:`lean_plugins.errors.BudgetExceededError`
    (``"error"``). Calls are booked as ``budget / stop`` and ``llm / call``; a cached answer
    (served by a cache inside this middleware) spends nothing, and the part of it this budget
    had cut is booked again as the budget's.

    The step's budget also caps the provider's max-tokens, which counts tool calls too: keep
    ``step_tokens`` above the longest tool call the agent makes (a call longer than the budget
    would be cut by the provider and is booked as a budget stop).

    Args:
        step_tokens: output tokens per model call (``None``: only the run's limit).
        run_tokens: output tokens per run, all steps together (``None``: only the step's).
        baseline_tokens: ledger only (never changes what is generated): what a cut answer
            would have cost without the budget, stated by the caller. Default ``None``: a
            cut claims no saving (the tokens the model had not generated yet are unknown; the
            model's own max-tokens field is a cap, not a cost), the event still says it was
            cut (:func:`lean_plugins.agents.agent_step_budget`, the rule of both adapters).
        exit_behavior: ``"end"`` or ``"error"`` when the run's budget is spent.
        tenant: recorded with each ledger event.
    """

    state_schema = LeanBudgetState

    def __init__(
        self,
        step_tokens: int | None = None,
        run_tokens: int | None = None,
        *,
        baseline_tokens: int | None = None,
        exit_behavior: Literal["end", "error"] = "end",
        tenant: str | None = None,
    ) -> None:
        super().__init__()
        if exit_behavior not in ("end", "error"):
            raise ConfigurationError(f"exit_behavior must be 'end' or 'error', got {exit_behavior!r}.")
        self.budget = AgentBudget(step_tokens, run_tokens)
        if step_tokens is not None and run_tokens is not None and run_tokens < step_tokens:
            raise ConfigurationError(
                f"LeanBudgetMiddleware: run_tokens ({run_tokens}) is less than step_tokens ({step_tokens}), "
                "so every step would get the run's budget instead: set run_tokens >= step_tokens, or "
                "leave step_tokens out to limit only the run."
            )
        check_baseline_tokens(baseline_tokens, "LeanBudgetMiddleware")
        self.baseline_tokens = baseline_tokens
        self._warned_cut = False
        self.exit_behavior = exit_behavior
        self.tenant = tenant

    @hook_config(can_jump_to=["end"])
    def before_model(self, state: LeanBudgetState, runtime: Any) -> dict[str, Any] | None:
        used = state.get("lean_run_output_tokens", 0)
        if not self.budget.exhausted(used):
            return None
        message = self.budget.stop_message(used)
        if self.exit_behavior == "error":
            from lean_plugins.errors import BudgetExceededError

            raise BudgetExceededError(message, partial_text="", tokens_used=used)
        return {"jump_to": "end", "messages": [AIMessage(content=message)]}

    @hook_config(can_jump_to=["end"])
    async def abefore_model(self, state: LeanBudgetState, runtime: Any) -> dict[str, Any] | None:
        return self.before_model(state, runtime)

    def after_model(self, state: LeanBudgetState, runtime: Any) -> dict[str, Any] | None:
        last = state["messages"][-1] if state.get("messages") else None
        if not isinstance(last, AIMessage) or _served_from_cache(last):
            return None
        return {"lean_run_output_tokens": state.get("lean_run_output_tokens", 0) + _reply_tokens(last)}

    async def aafter_model(self, state: LeanBudgetState, runtime: Any) -> dict[str, Any] | None:
        return self.after_model(state, runtime)

    def _budgeted(self, request: ModelRequest) -> tuple[ModelRequest, int | None]:
        used = request.state.get("lean_run_output_tokens", 0) if request.state else 0
        step = self.budget.for_step(used) or 1  # 0 (spent) ends the run in before_model
        baseline = self.baseline_tokens
        budget = agent_step_budget(step, request.model, baseline, model=_chat_model_name(request.model), tenant=self.tenant)
        return request.override(model=with_output_budget(request.model, budget)), baseline

    def _replayed(self, request: ModelRequest, response: Any, baseline: int | None) -> None:
        answer = _answer(response)
        if answer is not None and _served_from_cache(answer):
            meta = answer.response_metadata.get("output_budget")
            replayed_budget_event(meta, baseline, _chat_model_name(request.model), self.tenant)
        elif answer is not None and request.tools and not answer.tool_calls:
            self._warn_cut_tool_step(answer)

    def _warn_cut_tool_step(self, answer: AIMessage) -> None:
        """A step with tools bound that the budget (or the provider's max-tokens, set to it)
        cut before any tool call: a tool call may have been coming after the text, so the cut
        text must not pass silently as the agent's answer. Said in the log and marked on the
        message (``response_metadata["lean_budget_cut_before_tool_call"]``)."""
        if answer.response_metadata.get("stop_reason") in (None, "natural"):
            return
        answer.response_metadata["lean_budget_cut_before_tool_call"] = True
        if self._warned_cut:  # said once per middleware; every such message is marked
            return
        self._warned_cut = True
        _budget_log.warning(
            "LeanBudgetMiddleware: a step with tools bound was cut at its budget (%s tokens) before any "
            "tool call; if the model was about to call a tool, that call was lost and the cut text ends "
            "the run. Raise step_tokens above the model's longest preamble plus tool call.",
            (answer.response_metadata.get("output_budget") or {}).get("budget"),
        )

    def wrap_model_call(self, request: ModelRequest, handler: Handler) -> ModelResponse | AIMessage:
        budgeted, baseline = self._budgeted(request)
        response = handler(budgeted)
        self._replayed(request, response, baseline)
        return response

    async def awrap_model_call(self, request: ModelRequest, handler: AsyncHandler) -> ModelResponse | AIMessage:
        budgeted, baseline = self._budgeted(request)
        response = await handler(budgeted)
        self._replayed(request, response, baseline)
        return response


# -- prefix layout and provider cache breakpoints --------------------------------------------------
Breakpoints = Literal["auto", "anthropic", "none"]


class LeanPrefixMiddleware(AgentMiddleware):
    """Keeps the stable prefix first and marks where a provider may cache it.

    The tool schemas are sent in one fixed order (by name), so middleware that changes the
    tool list (or a dict's order) does not move the prefix; with ``breakpoints="anthropic"``
    (``"auto"``: when the model is Anthropic's) the system message (the end of the stable
    prefix) and the latest message (the conversation so far, which the next step resends)
    get a ``cache_control`` breakpoint. OpenAI caches prefixes without marks. The
    prefix-cache tokens a provider reports are booked in the ledger (``prefix cache``).

    Args:
        breakpoints: ``"auto"``, ``"anthropic"`` or ``"none"``.
        ttl: Anthropic's cache lifetime, ``"5m"`` (default) or ``"1h"``.
        sort_tools: send tool schemas sorted by name.
        tenant: recorded with each ledger event.
    """

    def __init__(
        self,
        *,
        breakpoints: Breakpoints = "auto",
        ttl: Literal["5m", "1h"] = "5m",
        sort_tools: bool = True,
        tenant: str | None = None,
    ) -> None:
        super().__init__()
        if breakpoints not in ("auto", "anthropic", "none"):
            raise ConfigurationError(f"breakpoints must be 'auto', 'anthropic' or 'none', got {breakpoints!r}.")
        if ttl not in ("5m", "1h"):
            raise ConfigurationError(f"ttl must be '5m' or '1h' (Anthropic's two cache lifetimes), got {ttl!r}.")
        self.breakpoints = breakpoints
        self.ttl = ttl
        self.sort_tools = sort_tools
        self.tenant = tenant

    def _marks(self, request: ModelRequest) -> bool:
        if self.breakpoints != "auto":
            return self.breakpoints == "anthropic"
        model = request.model.model if isinstance(request.model, BudgetedChatModel) else request.model
        return "anthropic" in str(getattr(model, "_llm_type", "")).lower()

    def _mark(self, message: BaseMessage) -> BaseMessage:
        content = message.content
        control = {"type": "ephemeral"} if self.ttl == "5m" else {"type": "ephemeral", "ttl": self.ttl}
        if isinstance(content, str):
            if not content:
                return message
            return message.model_copy(update={"content": [{"type": "text", "text": content, "cache_control": control}]})
        if isinstance(content, list) and content and isinstance(content[-1], dict):
            return message.model_copy(update={"content": [*content[:-1], {**content[-1], "cache_control": control}]})
        return message

    def _layout(self, request: ModelRequest) -> ModelRequest:
        changes: dict[str, Any] = {}
        if self.sort_tools and len(request.tools) > 1:
            changes["tools"] = sorted(request.tools, key=_tool_name)
        if self._marks(request):
            if request.system_message is not None:
                changes["system_message"] = self._mark(request.system_message)
            if request.messages:
                changes["messages"] = [*request.messages[:-1], self._mark(request.messages[-1])]
        return request.override(**changes) if changes else request

    def _book(self, request: ModelRequest, response: Any) -> None:
        answer = _answer(response)
        if answer is not None and answer.usage_metadata and not _served_from_cache(answer):
            record_prefix_cache(answer.usage_metadata, model=_model_name(request), tenant=self.tenant)

    def wrap_model_call(self, request: ModelRequest, handler: Handler) -> ModelResponse | AIMessage:
        response = handler(self._layout(request))
        self._book(request, response)
        return response

    async def awrap_model_call(self, request: ModelRequest, handler: AsyncHandler) -> ModelResponse | AIMessage:
        response = await handler(self._layout(request))
        self._book(request, response)
        return response


def _tool_name(tool: Any) -> str:
    if isinstance(tool, dict):
        return str(tool.get("name") or (tool.get("function") or {}).get("name") or "")
    return str(getattr(tool, "name", ""))

