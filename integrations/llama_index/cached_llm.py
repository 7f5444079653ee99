"""LlamaIndex LLM wrapper that serves ``complete`` / ``chat`` (sync, async, streaming) from a
:class:`lean_plugins.cache.LeanCache`.

``Settings.llm = CachedLLM(llm=OpenAI(...))`` puts the cache under every query engine. A hit
streams the cached text in word-sized chunks; a stream is cached once it has completed (an
interrupted stream is not cached). Without tools bound, chat replies that carry more than text
(extra kwargs, images) pass through uncached, since those entries are text. With tools bound
(``chat_with_tools``, ``FunctionAgent``) the reply is cached whole, tool calls included, and
served on an exact repeat of the whole request only (see :class:`CachedLLM`).

Keys: the namespace hashes the wrapped LLM's own configuration (``llm.to_dict()`` without
secrets: model, temperature, system prompt, max tokens, ...), its metadata, the call's keyword
arguments and the tenant. Within it a request is keyed by
:func:`lean_plugins.cache.keys.request_key` on the full messages (roles, content blocks,
``additional_kwargs`` with tool calls): an exact match needs the whole request equal, and a
paraphrase is served only when every earlier message is identical; the core cache applies its
context rules to the final user text (:func:`lean_plugins.cache.keys.split_prompt`). A query
engine's prompt (``Context information is below ... Query: ...``) is matched on its query,
within identical retrieved context; long prompts and pasted text on exact repeats only. For
paraphrase hits across retrievals, cache at the question level.

A streamed answer is rebuilt from each response's ``delta``, or from its running text when an
LLM sends only that; an empty answer is never cached.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from lean_plugins.llama_index.budget import provider_usage, reply_tool_calls
from pydantic import BaseModel, Field, PrivateAttr

from lean_plugins.agents import (
    exact_request_key,
    provider_side_tools,
    replayed_budget_event,
    reply_output_tokens,
)
from lean_plugins.cache import LeanCache, namespace_for
from lean_plugins.cache.keys import SECRET_FIELD, RequestKey, canonical_json, completion_key, request_key
from lean_plugins.errors import ConfigurationError
from lean_plugins.ledger import mark_cache_hit, record
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
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection

_CHUNK = re.compile(r"\s*\S+|\s+$")


def _chunks(text: str) -> list[str]:
    return _CHUNK.findall(text) or [""]


def _advance(text: str, delta: str | None, running: str | None) -> tuple[str, str]:
    """The answer so far and the new piece after one streamed response: its ``delta`` when it
    has one, else what its running text (``text`` / ``message.content``, all some LLMs send)
    adds; a running text that does not continue ours replaces it (when no delta was sent)."""
    if delta:
        return text + delta, delta
    running = running or ""
    if running.startswith(text):
        return running, running[len(text) :]
    if delta is not None or not running:  # an empty piece (usage, a finish reason): nothing new
        return text, ""
    return running, running


_NOT_ANSWER_FIELDS = frozenset({"callback_manager", "callbacks", "max_retries", "timeout", "reuse_client"})


def _without_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _without_secrets(v)
            for k, v in value.items()
            if not (isinstance(k, str) and (SECRET_FIELD.search(k) or k in _NOT_ANSWER_FIELDS))
        }
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    return value


_PLAIN = (str, int, float, bool, type(None))


def _plain_private_settings(llm: LLM) -> dict[str, Any]:
    """The wrapped LLM's private attributes that are plain values (a persona, a mode, a path):
    ``to_dict()`` leaves private attributes out, yet they can change the answer. Clients,
    locks and other objects are skipped (they are not settings and have no stable value)."""
    private = getattr(llm, "__pydantic_private__", None) or {}
    out: dict[str, Any] = {}
    for name, value in private.items():
        if isinstance(value, _PLAIN) or (
            isinstance(value, (list, tuple)) and all(isinstance(v, _PLAIN) for v in value)
        ):
            out[name] = list(value) if isinstance(value, tuple) else value
    return _without_secrets({k.lstrip("_"): v for k, v in out.items()})


def llm_config(llm: LLM) -> dict[str, Any]:
    """``llm``'s own serialised configuration (``to_dict()``) without secrets."""
    try:
        config = llm.to_dict()
    except Exception:  # a field that does not serialise: fall back to the raw field values
        config = {name: getattr(llm, name, None) for name in type(llm).model_fields}
    return _without_secrets(config)


def llm_identity(
    llm: LLM, private: dict[str, Any] | None = None, state: Collection[str] = (), config: dict[str, Any] | None = None
) -> str:
    """What identifies ``llm``'s answers: its class, its own serialised configuration without
    secrets (``config``, default :func:`llm_config` now) less the ``state`` fields (those the
    LLM changes itself as it is used: a call log, a counter), its plain private settings
    (``private``, default: as they are now), and its metadata."""
    config = llm_config(llm) if config is None else config
    meta = llm.metadata.model_dump(mode="json")
    return canonical_json({"class": llm.class_name(),
                           "config": {k: v for k, v in config.items() if k not in state},
                           "private": _plain_private_settings(llm) if private is None else private,
                           "metadata": meta})  # fmt: skip


def chat_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """LlamaIndex chat messages as plain dicts: role, text or every content block, and
    ``additional_kwargs`` (where tool calls, tool-call ids and names live)."""
    out = []
    for m in messages:
        if all(isinstance(b, TextBlock) for b in m.blocks):
            content: Any = m.content or ""
        else:
            content = [b.model_dump(mode="json") for b in m.blocks]
        out.append({"role": m.role.value, "content": content, "additional_kwargs": dict(m.additional_kwargs)})
    return out


@dataclass(frozen=True)
class _Request:
    """One call as the cache sees it: its key, and its input tokens (what a hit saves)."""

    key: RequestKey
    input_tokens: int


def _chat_key(messages: Sequence[ChatMessage]) -> _Request:
    dicts = chat_messages(messages)
    return _Request(request_key(dicts), _input_tokens(dicts))


def _completion_key(prompt: str) -> _Request:
    if not isinstance(prompt, str):
        raise TypeError(f"CachedLLM: prompt must be a str, got {type(prompt).__name__}.")
    return _Request(completion_key(prompt), count_tokens(prompt))


def _text_only(message: ChatMessage) -> bool:
    return not message.additional_kwargs and all(isinstance(b, TextBlock) for b in message.blocks)


def _input_tokens(dicts: Sequence[dict[str, Any]]) -> int:
    texts = (d["content"] if isinstance(d["content"], str) else canonical_json(d["content"]) for d in dicts)
    return sum(count_tokens(text) for text in texts)


def _tools_bound(kwargs: dict[str, Any]) -> bool:
    """True when the call binds tools (``chat_with_tools`` passes them as ``tools``; older
    function-calling APIs as ``functions``): its answer may be a tool call."""
    return bool(kwargs.get("tools") or kwargs.get("functions"))


@dataclass(frozen=True)
class _Call:
    """One call's namespace and the wrapped LLM's configuration it was computed from."""

    kind: str
    kwargs: dict[str, Any]
    config: dict[str, Any]
    namespace: str


# -- replies stored whole (requests with tools bound) -----------------------------------------------
#: The verdict keys of a response's own ``additional_kwargs`` kept with a reply (a budget's);
#: usage and raw provider data belong to the original call, not to a replay.
_REPLY_EXTRAS = ("stop_reason", "output_budget")
_TYPED = "__lean_typed__"


class _NotStorable(Exception):
    pass


def _encode_value(value: Any) -> Any:
    """``value`` as JSON data that :func:`_decode_value` turns back into an equal value:
    plain JSON as it is, pydantic models (a provider SDK's typed tool calls) by their class
    and fields; anything else is not storable."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, list):
        return [_encode_value(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value) and _TYPED not in value:
        return {k: _encode_value(v) for k, v in value.items()}
    if isinstance(value, BaseModel):
        cls = type(value)
        return {_TYPED: f"{cls.__module__}:{cls.__qualname__}", "data": value.model_dump(mode="json")}
    raise _NotStorable(type(value).__name__)


def _decode_value(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
    if isinstance(value, dict) and _TYPED in value:
        module, _, qualname = value[_TYPED].partition(":")
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            raise _NotStorable(value[_TYPED])  # only pydantic models are rebuilt, by validation
        return cls.model_validate(value["data"])
    if isinstance(value, dict):
        return {k: _decode_value(v) for k, v in value.items()}
    return value


def encode_reply(response: ChatResponse) -> str | None:
    """A chat reply as the cache stores it: the message whole (role, content blocks,
    ``additional_kwargs`` with its tool calls) and the budget's verdict; ``None`` when it
    would not come back exactly equal (then it is not cached)."""
    message = response.message
    try:
        data = {
            "message": message.model_dump(mode="json", exclude={"additional_kwargs"}),
            "additional_kwargs": _encode_value(dict(message.additional_kwargs)),
            "extras": _encode_value({k: response.additional_kwargs[k] for k in _REPLY_EXTRAS if k in response.additional_kwargs}),
        }
        text = json.dumps(data, ensure_ascii=False)
    except (_NotStorable, TypeError, ValueError):
        return None
    back = decode_reply(text)
    return text if back is not None and back.message == message else None


def decode_reply(text: str) -> ChatResponse | None:
    """The reply :func:`encode_reply` stored, marked as served from the cache (``None`` for an
    entry that does not decode)."""
    try:
        data = json.loads(text)
        message = ChatMessage.model_validate(data["message"])
        message.additional_kwargs = _decode_value(data["additional_kwargs"])
        extras = _decode_value(data.get("extras") or {})
    except (_NotStorable, ImportError, AttributeError, KeyError, TypeError, ValueError):
        return None
    return ChatResponse(message=message, additional_kwargs=mark_cache_hit(extras))


def reply_tokens(response: ChatResponse) -> int:
    """Output tokens of a reply: the provider's count when reported, else its text plus its
    tool calls (:func:`lean_plugins.agents.reply_output_tokens`, the rule the output budget
    books the same reply by)."""
    _, reported = provider_usage(response)
    if isinstance(reported, int):
        return reported
    return reply_output_tokens(response.message.content or "", reply_tool_calls(response.message))


class CachedLLM(FunctionCallingLLM):
    """Any LlamaIndex LLM behind an exact + semantic response cache.

    The namespace of every entry is a hash of the wrapped LLM's class, its own configuration
    without secrets (``llm.to_dict()``: model, temperature, system prompt, ...), its plain
    private settings, its metadata, the call's keyword arguments (tool specs included) and
    ``tenant``, so two models, two settings of one model, or two tenants never share answers.
    Paraphrases are served only for a plain final user question after identical earlier
    messages (see the module docstring).

    Tool calling (``chat_with_tools``, ``FunctionAgent``, ``AgentWorkflow``) goes through the
    wrapped LLM's own tool handling when it is a ``FunctionCallingLLM``. A request with tools
    bound is answered from the cache only on an exact repeat of every character of the whole
    request (:func:`lean_plugins.agents.exact_request_key`: a tool call's arguments may copy
    any of it), and its reply comes back whole: text, content blocks and ``additional_kwargs``
    with the tool calls, typed objects included (a reply that cannot be stored exactly is
    passed through uncached). A call that binds a provider-side tool (a tool dict such as
    ``{"type": "web_search"}`` in ``tools``, or the wrapped LLM's ``built_in_tools``) is
    passed through, neither served nor stored: the provider fetches its results during the
    call (:func:`lean_plugins.agents.provider_side_tools`).

    List and dict fields of the wrapped LLM that it changes itself during a call (a call log)
    are its state, not its configuration: they are left out of the namespace from then on, so
    a question asked again is served. Plain fields (str, number, bool) always count, also when
    the LLM changes one itself (its ``model`` after a fallback: the answer is stored under the
    model that wrote it, and a later change by the user is a new namespace); a counter field
    it bumps on every call therefore makes every call a miss, never a wrong answer.
    """

    llm: LLM = Field(description="The LLM whose responses are cached.")
    cache: Any = Field(
        default=None,
        description="The core lean_plugins.cache.LeanCache; default: a local one in the user cache dir.",
    )
    tenant: str | None = Field(default=None, description="Tenant id mixed into the cache namespace.")
    _private_settings: dict[str, Any] = PrivateAttr(default_factory=dict)
    _state_fields: set[str] = PrivateAttr(default_factory=set)

    def __init__(
        self, llm: LLM, cache: LeanCache | None = None, tenant: str | None = None, **kwargs: Any
    ) -> None:
        cache = cache if cache is not None else LeanCache()
        # The tenant's entries are stored apart, so a tenant's clear() removes only its own.
        cache = cache if tenant is None else cache.for_tenant(tenant)
        super().__init__(llm=llm, cache=cache, tenant=tenant, **kwargs)
        # Private attributes are read once, here: they may hold settings (a persona) that
        # to_dict() leaves out, but also counters that move on every call and must not move
        # the namespace with them.
        self._private_settings = _plain_private_settings(llm)

    @classmethod
    def class_name(cls) -> str:
        return "CachedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return self.llm.metadata

    # -- tool calling: the wrapped LLM's own -----------------------------------------------------
    def _tool_llm(self) -> FunctionCallingLLM:
        if not isinstance(self.llm, FunctionCallingLLM):
            raise ConfigurationError(
                f"{type(self.llm).__name__} does not call tools (it is not a FunctionCallingLLM), so "
                "its cached version cannot either: wrap a function-calling LLM."
            )
        return self.llm

    def _prepare_chat_with_tools(self, tools: Sequence[Any], **kwargs: Any) -> dict[str, Any]:
        return self._tool_llm()._prepare_chat_with_tools(tools, **kwargs)

    def _validate_chat_with_tools_response(
        self, response: ChatResponse, tools: Sequence[Any], **kwargs: Any
    ) -> ChatResponse:
        return self._tool_llm()._validate_chat_with_tools_response(response, tools, **kwargs)

    def get_tool_calls_from_response(self, response: ChatResponse, **kwargs: Any) -> list[ToolSelection]:
        return self._tool_llm().get_tool_calls_from_response(response, **kwargs)

    # -- keys ------------------------------------------------------------------------------------
    def _provider_tools(self, kwargs: dict[str, Any]) -> list[str]:
        """The provider-side tools the call binds (:func:`lean_plugins.agents.provider_side_tools`):
        tool dicts passed as ``tools``, or the wrapped LLM's own ``built_in_tools`` (the OpenAI
        Responses LLM's web search, file search, ...). Their results are fetched during the
        call, not in the request, so such a call is neither served nor stored."""
        llm: Any = self.llm
        while isinstance(getattr(llm, "llm", None), LLM):  # a budgeted LLM inside: the one it wraps
            llm = llm.llm
        built_in = getattr(llm, "built_in_tools", None) or []
        return provider_side_tools([*(kwargs.get("tools") or []), *built_in])

    def _namespace_of(self, config: dict[str, Any], kind: str, kwargs: dict[str, Any]) -> str:
        identity = llm_identity(self.llm, self._private_settings, self._state_fields, config)
        raw = f"{identity}\x00{kind}\x00{canonical_json(kwargs)}"
        return namespace_for(hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest(), self.tenant)

    def _begin(self, kind: str, kwargs: dict[str, Any]) -> _Call:
        """A call's lookup namespace, computed per call (the wrapped LLM's settings may change
        between calls), with the configuration it was computed from."""
        config = llm_config(self.llm)
        return _Call(kind, kwargs, config, self._namespace_of(config, kind, kwargs))

    def _namespace(self, kind: str, kwargs: dict[str, Any]) -> str:
        return self._begin(kind, kwargs).namespace

    def _settled(self, call: _Call) -> str:
        """The namespace a call's answer is stored under. A list or dict field the wrapped LLM
        changed during the call is its state (a call log): left out from now on. A plain value
        it changed (its own ``model`` after a fallback) stays a setting: the answer is stored
        under the value it was made with, and a later change by the user still counts."""
        after = llm_config(self.llm)
        changed = {k for k in call.config.keys() | after.keys() if call.config.get(k) != after.get(k)}
        known = set(self._state_fields)
        self._state_fields |= {
            k for k in changed if not (isinstance(call.config.get(k), _PLAIN) and isinstance(after.get(k), _PLAIN))
        }
        if changed <= known:
            return call.namespace
        return self._namespace_of(after, call.kind, call.kwargs)

    def _lookup_kwargs(self, request: _Request, namespace: str) -> dict[str, Any]:
        return {
            "namespace": namespace,
            "model": self.llm.metadata.model_name,
            "tenant": self.tenant,
            "scope": request.key.scope,
            "semantic": request.key.semantic,
            "input_tokens": request.input_tokens,
        }

    @staticmethod
    def _hit(hit: Any) -> str | None:
        """The cached text of a core cache hit (``None`` on a miss)."""
        return None if hit is None else hit.response

    def _lookup(self, request: _Request, namespace: str) -> str | None:
        return self._hit(self.cache.lookup(request.key.text, **self._lookup_kwargs(request, namespace)))

    async def _alookup(self, request: _Request, namespace: str) -> str | None:
        return self._hit(await self.cache.alookup(request.key.text, **self._lookup_kwargs(request, namespace)))

    def _put_kwargs(self, request: _Request, namespace: str, output_tokens: int | None = None) -> dict[str, Any]:
        return {"namespace": namespace, "scope": request.key.scope, "semantic": request.key.semantic,
                "output_tokens": output_tokens}  # fmt: skip

    def _put(self, request: _Request, text: str, namespace: str) -> None:
        self.cache.put(request.key.text, text, **self._put_kwargs(request, namespace))

    async def _aput(self, request: _Request, text: str, namespace: str) -> None:
        await self.cache.aput(request.key.text, text, **self._put_kwargs(request, namespace))

    @staticmethod
    def _chat_response(text: str, delta: str | None = None) -> ChatResponse:
        """A response served from the cache, marked so (the cache-hit contract of lean_plugins.ledger)."""
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
            delta=delta,
            additional_kwargs=mark_cache_hit(),
        )

    @staticmethod
    def _streamed(chunk: CompletionResponse, text: str, delta: str) -> CompletionResponse:
        """A streamed piece of a miss as the caller sees it: the answer so far and the new
        piece, with the wrapped LLM's own extras (a budget's verdict, usage) and raw response."""
        return CompletionResponse(text=text, delta=delta, raw=chunk.raw, additional_kwargs=chunk.additional_kwargs)

    # -- replies of requests with tools bound -----------------------------------------------------
    def _tool_request(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> tuple[_Request, _Call]:
        dicts = chat_messages(messages)
        request = _Request(exact_request_key(dicts), _input_tokens(dicts))
        return request, self._begin("chat+tools", kwargs)

    def _served_reply(self, request: _Request, hit: Any) -> ChatResponse | None:
        """The reply of a hit (``None``: a miss, or an entry that does not decode), booked as
        ``cache / hit``; the part of it an output budget had cut is booked as the budget's, as
        on the original call (:func:`lean_plugins.agents.replayed_budget_event`)."""
        reply = None if hit is None else decode_reply(hit.response)
        if reply is None:
            return None
        model = self.llm.metadata.model_name
        if self.cache.record_hits:
            record(
                layer="cache",
                kind="hit",
                input_before=request.input_tokens,
                output_before=hit.output_tokens if hit.output_tokens is not None else reply_tokens(reply),
                model=model,
                tenant=self.tenant,
                meta={"match": hit.match, "similarity": round(hit.similarity, 4), "agent": True},
            )
        budget = getattr(self.llm, "budget", None)  # a budgeted LLM inside: its cut replayed
        baseline = getattr(budget, "max_tokens", None)
        replayed_budget_event(reply.additional_kwargs.get("output_budget"), baseline, model, self.tenant)
        return reply

    def _reply_entry(self, response: ChatResponse | None) -> tuple[str, int] | None:
        value = None if response is None else encode_reply(response)
        return None if value is None else (value, reply_tokens(response))

    def _put_reply(self, request: _Request, call: _Call, response: ChatResponse | None) -> None:
        entry = self._reply_entry(response)
        if entry is not None:
            self.cache.put(request.key.text, entry[0], **self._put_kwargs(request, self._settled(call), entry[1]))

    async def _aput_reply(self, request: _Request, call: _Call, response: ChatResponse | None) -> None:
        entry = self._reply_entry(response)
        if entry is not None:
            await self.cache.aput(request.key.text, entry[0], **self._put_kwargs(request, self._settled(call), entry[1]))

    def _tool_chat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> ChatResponse:
        request, call = self._tool_request(messages, kwargs)
        hit = self.cache.lookup(request.key.text, record=False, **self._lookup_kwargs(request, call.namespace))
        served = self._served_reply(request, hit)
        if served is not None:
            return served
        response = self.llm.chat(messages, **kwargs)
        self._put_reply(request, call, response)
        return response

    async def _atool_chat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> ChatResponse:
        request, call = self._tool_request(messages, kwargs)
        hit = await self.cache.alookup(request.key.text, record=False, **self._lookup_kwargs(request, call.namespace))
        served = self._served_reply(request, hit)
        if served is not None:
            return served
        response = await self.llm.achat(messages, **kwargs)
        await self._aput_reply(request, call, response)
        return response

    def _tool_stream_chat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> ChatResponseGen:
        request, call = self._tool_request(messages, kwargs)
        hit = self.cache.lookup(request.key.text, record=False, **self._lookup_kwargs(request, call.namespace))
        served = self._served_reply(request, hit)

        def gen() -> ChatResponseGen:
            if served is not None:  # one piece: the whole reply
                yield served.model_copy(update={"delta": served.message.content or ""})
                return
            last = None
            for last in self.llm.stream_chat(messages, **kwargs):
                yield last
            self._put_reply(request, call, last)  # the last response holds the whole reply

        return gen()

    async def _atool_stream_chat(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> ChatResponseAsyncGen:
        request, call = self._tool_request(messages, kwargs)
        hit = await self.cache.alookup(request.key.text, record=False, **self._lookup_kwargs(request, call.namespace))
        served = self._served_reply(request, hit)

        async def gen() -> ChatResponseAsyncGen:
            if served is not None:
                yield served.model_copy(update={"delta": served.message.content or ""})
                return
            last = None
            async for last in await self.llm.astream_chat(messages, **kwargs):
                yield last
            await self._aput_reply(request, call, last)

        return gen()

    # -- completion ------------------------------------------------------------------------------
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if self._provider_tools(kwargs):
            return self.llm.complete(prompt, formatted=formatted, **kwargs)
        request = _completion_key(prompt)
        call = self._begin("complete", {**kwargs, "formatted": formatted})
        cached = self._lookup(request, call.namespace)
        if cached is not None:
            return CompletionResponse(text=cached, additional_kwargs=mark_cache_hit())
        response = self.llm.complete(prompt, formatted=formatted, **kwargs)
        self._put(request, response.text, self._settled(call))
        return response

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        if self._provider_tools(kwargs):
            return self.llm.stream_complete(prompt, formatted=formatted, **kwargs)
        request = _completion_key(prompt)
        call = self._begin("complete", {**kwargs, "formatted": formatted})
        cached = self._lookup(request, call.namespace)

        def gen() -> CompletionResponseGen:
            if cached is not None:
                text = ""
                for piece in _chunks(cached):
                    text += piece
                    yield CompletionResponse(text=text, delta=piece, additional_kwargs=mark_cache_hit())
                return
            text = ""
            for chunk in self.llm.stream_complete(prompt, formatted=formatted, **kwargs):
                text, delta = _advance(text, chunk.delta, chunk.text)
                yield self._streamed(chunk, text, delta)
            if text:  # an empty answer is never cached
                self._put(request, text, self._settled(call))

        return gen()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if self._provider_tools(kwargs):
            return await self.llm.acomplete(prompt, formatted=formatted, **kwargs)
        request = _completion_key(prompt)
        call = self._begin("complete", {**kwargs, "formatted": formatted})
        cached = await self._alookup(request, call.namespace)
        if cached is not None:
            return CompletionResponse(text=cached, additional_kwargs=mark_cache_hit())
        response = await self.llm.acomplete(prompt, formatted=formatted, **kwargs)
        await self._aput(request, response.text, self._settled(call))
        return response

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        if self._provider_tools(kwargs):
            return await self.llm.astream_complete(prompt, formatted=formatted, **kwargs)
        request = _completion_key(prompt)
        call = self._begin("complete", {**kwargs, "formatted": formatted})
        cached = await self._alookup(request, call.namespace)

        async def gen() -> CompletionResponseAsyncGen:
            text = ""
            if cached is not None:
                for piece in _chunks(cached):
                    text += piece
                    yield CompletionResponse(text=text, delta=piece, additional_kwargs=mark_cache_hit())
                return
            async for chunk in await self.llm.astream_complete(prompt, formatted=formatted, **kwargs):
                text, delta = _advance(text, chunk.delta, chunk.text)
                yield self._streamed(chunk, text, delta)
            if text:  # an empty answer is never cached
                await self._aput(request, text, self._settled(call))

        return gen()

    # -- chat ------------------------------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        if self._provider_tools(kwargs):
            return self.llm.chat(messages, **kwargs)
        if _tools_bound(kwargs):
            return self._tool_chat(messages, kwargs)
        request, call = _chat_key(messages), self._begin("chat", kwargs)
        cached = self._lookup(request, call.namespace)
        if cached is not None:
            return self._chat_response(cached)
        response = self.llm.chat(messages, **kwargs)
        if _text_only(response.message):
            self._put(request, response.message.content or "", self._settled(call))
        return response

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        if self._provider_tools(kwargs):
            return self.llm.stream_chat(messages, **kwargs)
        if _tools_bound(kwargs):
            return self._tool_stream_chat(messages, kwargs)
        request, call = _chat_key(messages), self._begin("chat", kwargs)
        cached = self._lookup(request, call.namespace)

        def gen() -> ChatResponseGen:
            text = ""
            if cached is not None:
                for piece in _chunks(cached):
                    text += piece
                    yield self._chat_response(text, piece)
                return
            last = None
            for last in self.llm.stream_chat(messages, **kwargs):
                text, _ = _advance(text, last.delta, last.message.content)
                yield last
            if text and last is not None and _text_only(last.message):  # an empty answer is never cached
                self._put(request, text, self._settled(call))

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        if self._provider_tools(kwargs):
            return await self.llm.achat(messages, **kwargs)
        if _tools_bound(kwargs):
            return await self._atool_chat(messages, kwargs)
        request, call = _chat_key(messages), self._begin("chat", kwargs)
        cached = await self._alookup(request, call.namespace)
        if cached is not None:
            return self._chat_response(cached)
        response = await self.llm.achat(messages, **kwargs)
        if _text_only(response.message):
            await self._aput(request, response.message.content or "", self._settled(call))
        return response

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        if self._provider_tools(kwargs):
            return await self.llm.astream_chat(messages, **kwargs)
        if _tools_bound(kwargs):
            return await self._atool_stream_chat(messages, kwargs)
        request, call = _chat_key(messages), self._begin("chat", kwargs)
        cached = await self._alookup(request, call.namespace)

        async def gen() -> ChatResponseAsyncGen:
            text = ""
            if cached is not None:
                for piece in _chunks(cached):
                    text += piece
                    yield self._chat_response(text, piece)
                return
            last = None
            async for last in await self.llm.astream_chat(messages, **kwargs):
                text, _ = _advance(text, last.delta, last.message.content)
                yield last
            if text and last is not None and _text_only(last.message):  # an empty answer is never cached
                await self._aput(request, text, self._settled(call))

        return gen()
