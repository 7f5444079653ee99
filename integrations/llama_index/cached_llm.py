"""LlamaIndex LLM wrapper that serves ``complete`` / ``chat`` (sync, async, streaming) from a
:class:`lean_plugins.cache.LeanCache`.

``Settings.llm = CachedLLM(llm=OpenAI(...))`` puts the cache under every query engine. A hit
streams the cached text in word-sized chunks; a stream is cached once it has completed (an
interrupted stream is not cached). Chat replies that carry more than text (tool calls, extra
kwargs, images) pass through uncached, since the cache stores text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import Field, PrivateAttr

from lean_plugins.cache import LeanCache, namespace_for
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
from llama_index.core.llms.llm import LLM

_CHUNK = re.compile(r"\s*\S+|\s+$")


def _chunks(text: str) -> list[str]:
    return _CHUNK.findall(text) or [""]


def _chat_key(messages: Sequence[ChatMessage]) -> str:
    return "\n".join(f"{m.role.value}: {m.content or ''}" for m in messages)


def _text_only(message: ChatMessage) -> bool:
    return not message.additional_kwargs and all(isinstance(b, TextBlock) for b in message.blocks)


class CachedLLM(LLM):
    """Any LlamaIndex LLM behind an exact + semantic response cache.

    The namespace of every entry is a hash of the wrapped LLM's class, its metadata (model
    name, context window, ...), the call's extra keyword arguments and ``tenant``, so two
    models, or two tenants, never share answers.
    """

    llm: LLM = Field(description="The LLM whose responses are cached.")
    cache: Any = Field(
        default=None,
        description="The core lean_plugins.cache.LeanCache; default: a local one in the user cache dir.",
    )
    tenant: str | None = Field(default=None, description="Tenant id mixed into the cache namespace.")
    _model_id: str = PrivateAttr(default="")

    def __init__(
        self, llm: LLM, cache: LeanCache | None = None, tenant: str | None = None, **kwargs: Any
    ) -> None:
        cache = cache if cache is not None else LeanCache()
        # The tenant's entries are stored apart, so a tenant's clear() removes only its own.
        cache = cache if tenant is None else cache.for_tenant(tenant)
        super().__init__(llm=llm, cache=cache, tenant=tenant, **kwargs)
        meta = llm.metadata.model_dump(mode="json")
        self._model_id = f"{llm.class_name()}:{json.dumps(meta, sort_keys=True)}"

    @classmethod
    def class_name(cls) -> str:
        return "CachedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return self.llm.metadata

    # -- keys ------------------------------------------------------------------------------------
    def _namespace(self, kind: str, kwargs: dict[str, Any]) -> str:
        extra = json.dumps(kwargs, sort_keys=True, default=repr) if kwargs else ""
        digest = hashlib.sha256(f"{kind}\x00{extra}".encode()).hexdigest()[:16]
        return namespace_for(f"{self._model_id}\x00{digest}", self.tenant)

    def _lookup(self, prompt: str, namespace: str) -> str | None:
        hit = self.cache.lookup(
            prompt, namespace=namespace, model=self.llm.metadata.model_name, tenant=self.tenant
        )
        return None if hit is None else hit.response

    async def _alookup(self, prompt: str, namespace: str) -> str | None:
        hit = await self.cache.alookup(
            prompt, namespace=namespace, model=self.llm.metadata.model_name, tenant=self.tenant
        )
        return None if hit is None else hit.response

    @staticmethod
    def _chat_response(text: str, delta: str | None = None) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)

    # -- completion ------------------------------------------------------------------------------
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        namespace = self._namespace("complete", kwargs)
        cached = self._lookup(prompt, namespace)
        if cached is not None:
            return CompletionResponse(text=cached)
        response = self.llm.complete(prompt, formatted=formatted, **kwargs)
        self.cache.put(prompt, response.text, namespace=namespace)
        return response

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        namespace = self._namespace("complete", kwargs)
        cached = self._lookup(prompt, namespace)

        def gen() -> CompletionResponseGen:
            if cached is not None:
                text = ""
                for piece in _chunks(cached):
                    text += piece
                    yield CompletionResponse(text=text, delta=piece)
                return
            text = ""
            for chunk in self.llm.stream_complete(prompt, formatted=formatted, **kwargs):
                text += chunk.delta or ""
                yield CompletionResponse(text=text, delta=chunk.delta, raw=chunk.raw)
            self.cache.put(prompt, text, namespace=namespace)

        return gen()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        namespace = self._namespace("complete", kwargs)
        cached = await self._alookup(prompt, namespace)
        if cached is not None:
            return CompletionResponse(text=cached)
        response = await self.llm.acomplete(prompt, formatted=formatted, **kwargs)
        await self.cache.aput(prompt, response.text, namespace=namespace)
        return response

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        namespace = self._namespace("complete", kwargs)
        cached = await self._alookup(prompt, namespace)

        async def gen() -> CompletionResponseAsyncGen:
            text = ""
            if cached is not None:
                for piece in _chunks(cached):
                    text += piece
                    yield CompletionResponse(text=text, delta=piece)
                return
            async for chunk in await self.llm.astream_complete(prompt, formatted=formatted, **kwargs):
                text += chunk.delta or ""
                yield CompletionResponse(text=text, delta=chunk.delta, raw=chunk.raw)
            await self.cache.aput(prompt, text, namespace=namespace)

        return gen()

    # -- chat ------------------------------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        namespace, key = self._namespace("chat", kwargs), _chat_key(messages)
        cached = self._lookup(key, namespace)
        if cached is not None:
            return self._chat_response(cached)
        response = self.llm.chat(messages, **kwargs)
        if _text_only(response.message):
            self.cache.put(key, response.message.content or "", namespace=namespace)
        return response

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        namespace, key = self._namespace("chat", kwargs), _chat_key(messages)
        cached = self._lookup(key, namespace)

        def gen() -> ChatResponseGen:
            text = ""
            if cached is not None:
                for piece in _chunks(cached):
                    text += piece
                    yield self._chat_response(text, piece)
                return
            last = None
            for last in self.llm.stream_chat(messages, **kwargs):
                text += last.delta or ""
                yield last
            if last is None or _text_only(last.message):
                self.cache.put(key, text, namespace=namespace)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        namespace, key = self._namespace("chat", kwargs), _chat_key(messages)
        cached = await self._alookup(key, namespace)
        if cached is not None:
            return self._chat_response(cached)
        response = await self.llm.achat(messages, **kwargs)
        if _text_only(response.message):
            await self.cache.aput(key, response.message.content or "", namespace=namespace)
        return response

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        namespace, key = self._namespace("chat", kwargs), _chat_key(messages)
        cached = await self._alookup(key, namespace)

        async def gen() -> ChatResponseAsyncGen:
            text = ""
            if cached is not None:
                for piece in _chunks(cached):
                    text += piece
                    yield self._chat_response(text, piece)
                return
            last = None
            async for last in await self.llm.astream_chat(messages, **kwargs):
                text += last.delta or ""
                yield last
            if last is None or _text_only(last.message):
                await self.cache.aput(key, text, namespace=namespace)

        return gen()
