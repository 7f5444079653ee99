"""LlamaIndex LLM wrapper that serves ``complete`` / ``chat`` (sync, async, streaming) from a
:class:`lean_plugins.cache.LeanCache`.

``Settings.llm = CachedLLM(llm=OpenAI(...))`` puts the cache under every query engine. A hit
streams the cached text in word-sized chunks; a stream is cached once it has completed (an
interrupted stream is not cached). Chat replies that carry more than text (tool calls, extra
kwargs, images) pass through uncached, since the cache stores text.

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
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field, PrivateAttr

from lean_plugins.cache import LeanCache, namespace_for
from lean_plugins.cache.keys import RequestKey, canonical_json, completion_key, request_key
from lean_plugins.errors import ConfigurationError
from lean_plugins.ledger import mark_cache_hit
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


#: Configuration fields that never change an answer and may hold secrets.
_SECRET_FIELD = re.compile(
    r"^(?:.*_)?(?:api_?key|key|secret|password|passwd|token|credentials?|auth|authorization)$|headers?$",
    re.IGNORECASE,
)
_NOT_ANSWER_FIELDS = frozenset({"callback_manager", "callbacks", "max_retries", "timeout", "reuse_client"})


def _without_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _without_secrets(v)
            for k, v in value.items()
            if not (isinstance(k, str) and (_SECRET_FIELD.search(k) or k in _NOT_ANSWER_FIELDS))
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


def llm_identity(llm: LLM, private: dict[str, Any] | None = None) -> str:
    """What identifies ``llm``'s answers: its class, its own serialised configuration without
    secrets (``to_dict()``), its plain private settings (``private``, default: as they are
    now), and its metadata."""
    try:
        config = llm.to_dict()
    except Exception:  # a field that does not serialise: fall back to the raw field values
        config = {name: getattr(llm, name, None) for name in type(llm).model_fields}
    meta = llm.metadata.model_dump(mode="json")
    return canonical_json({"class": llm.class_name(), "config": _without_secrets(config),
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
    texts = (d["content"] if isinstance(d["content"], str) else canonical_json(d["content"]) for d in dicts)
    tokens = sum(count_tokens(text) for text in texts)
    return _Request(request_key(dicts), tokens)


def _completion_key(prompt: str) -> _Request:
    if not isinstance(prompt, str):
        raise TypeError(f"CachedLLM: prompt must be a str, got {type(prompt).__name__}.")
    return _Request(completion_key(prompt), count_tokens(prompt))


def _text_only(message: ChatMessage) -> bool:
    return not message.additional_kwargs and all(isinstance(b, TextBlock) for b in message.blocks)


class CachedLLM(FunctionCallingLLM):
    """Any LlamaIndex LLM behind an exact + semantic response cache.

    The namespace of every entry is a hash of the wrapped LLM's class, its own configuration
    without secrets (``llm.to_dict()``: model, temperature, system prompt, ...), its plain
    private settings, its metadata, the call's keyword arguments (tool specs included) and
    ``tenant``, so two models, two settings of one model, or two tenants never share answers.
    Paraphrases are served only for a plain final user question after identical earlier
    messages (see the module docstring).

    Tool calling (``chat_with_tools``, function-calling agents) goes through the wrapped LLM's
    own tool handling when it is a ``FunctionCallingLLM``; replies that call tools are passed
    through uncached.
    """

    llm: LLM = Field(description="The LLM whose responses are cached.")
    cache: Any = Field(
        default=None,
        description="The core lean_plugins.cache.LeanCache; default: a local one in the user cache dir.",
    )
    tenant: str | None = Field(default=None, description="Tenant id mixed into the cache namespace.")
    _private_settings: dict[str, Any] = PrivateAttr(default_factory=dict)

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
    def _namespace(self, kind: str, kwargs: dict[str, Any]) -> str:
        # Computed per call: the wrapped LLM's fields (temperature, system prompt) may change.
        raw = f"{llm_identity(self.llm, self._private_settings)}\x00{kind}\x00{canonical_json(kwargs)}"
        return namespace_for(hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest(), self.tenant)

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

    def _put_kwargs(self, request: _Request, namespace: str) -> dict[str, Any]:
        return {"namespace": namespace, "scope": request.key.scope, "semantic": request.key.semantic}

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

    # -- completion ------------------------------------------------------------------------------
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        request = _completion_key(prompt)
        namespace = self._namespace("complete", {**kwargs, "formatted": formatted})
        cached = self._lookup(request, namespace)
        if cached is not None:
            return CompletionResponse(text=cached, additional_kwargs=mark_cache_hit())
        response = self.llm.complete(prompt, formatted=formatted, **kwargs)
        self._put(request, response.text, namespace)
        return response

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        request = _completion_key(prompt)
        namespace = self._namespace("complete", {**kwargs, "formatted": formatted})
        cached = self._lookup(request, namespace)

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
                self._put(request, text, namespace)

        return gen()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        request = _completion_key(prompt)
        namespace = self._namespace("complete", {**kwargs, "formatted": formatted})
        cached = await self._alookup(request, namespace)
        if cached is not None:
            return CompletionResponse(text=cached, additional_kwargs=mark_cache_hit())
        response = await self.llm.acomplete(prompt, formatted=formatted, **kwargs)
        await self._aput(request, response.text, namespace)
        return response

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        request = _completion_key(prompt)
        namespace = self._namespace("complete", {**kwargs, "formatted": formatted})
        cached = await self._alookup(request, namespace)

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
                await self._aput(request, text, namespace)

        return gen()

    # -- chat ------------------------------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        request, namespace = _chat_key(messages), self._namespace("chat", kwargs)
        cached = self._lookup(request, namespace)
        if cached is not None:
            return self._chat_response(cached)
        response = self.llm.chat(messages, **kwargs)
        if _text_only(response.message):
            self._put(request, response.message.content or "", namespace)
        return response

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        request, namespace = _chat_key(messages), self._namespace("chat", kwargs)
        cached = self._lookup(request, namespace)

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
                self._put(request, text, namespace)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        request, namespace = _chat_key(messages), self._namespace("chat", kwargs)
        cached = await self._alookup(request, namespace)
        if cached is not None:
            return self._chat_response(cached)
        response = await self.llm.achat(messages, **kwargs)
        if _text_only(response.message):
            await self._aput(request, response.message.content or "", namespace)
        return response

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        request, namespace = _chat_key(messages), self._namespace("chat", kwargs)
        cached = await self._alookup(request, namespace)

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
                await self._aput(request, text, namespace)

        return gen()
