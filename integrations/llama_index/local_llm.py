"""``LeanLocalLLM`` for LlamaIndex: a ``CustomLLM`` served by a local (pruned) causal LM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lean_plugins._optional import require_extra
from lean_plugins.pruning import LeanLocalLLM as CoreLocalLLM
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
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM


class LeanLocalLLM(CustomLLM):
    """A local dense or pruned model (``lean-plugins prune`` output, any HF causal LM).

    The async methods (``acomplete``, ``astream_complete``, ``achat``, ``astream_chat``) run
    generation in a worker thread, so the event loop stays free while the model works.
    ``max_new_tokens`` can be set per call (``llm.complete(prompt, max_new_tokens=64)``); stop
    sequences with ``stop=[...]``. Usage counts are in ``response.raw``.

    Example:
        ```python
        from llama_index.core import Settings
        from lean_plugins.llama_index import LeanLocalLLM

        Settings.llm = LeanLocalLLM(model="./my-pruned-model", max_new_tokens=128)
        ```
    """

    model: str = Field(description="Model folder (dense or pruned) or hub name.")
    device: str = Field(default="auto", description="auto: CUDA when available, else CPU.")
    dtype: str = Field(default="auto", description="auto: bfloat16 on GPU, float32 on CPU.")
    attention: str = Field(default="auto", description="auto, flash_attention_2, sdpa or eager.")
    max_new_tokens: int = Field(default=256, description="Default maximum of generated tokens.", gt=0)
    temperature: float = Field(default=0.0, description="0 means greedy decoding.", ge=0)
    stop: list[str] = Field(default_factory=list, description="Default stop sequences.")
    context_window: int | None = Field(
        default=None,
        description="Context window reported to LlamaIndex (default: the model's max_position_embeddings).",
    )
    prefix_cache: bool = Field(default=True, description="Reuse the KV cache of the leading system message.")
    _client: Any = PrivateAttr(default=None)

    def __init__(self, client: CoreLocalLLM | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if client is None:  # fail here, where the user wrote it, not at the first call
            require_extra("local")
        self._client = client

    @classmethod
    def class_name(cls) -> str:
        return "LeanLocalLLM"

    @property
    def local_llm(self) -> CoreLocalLLM:
        if self._client is None:
            self._client = CoreLocalLLM.shared(
                self.model, device=self.device, dtype=self.dtype, attention=self.attention
            )
        return self._client

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window or self.local_llm.context_window,
            num_output=self.max_new_tokens,
            is_chat_model=self.local_llm.has_chat_template,
            model_name=self.model,
        )

    def _args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {
            "max_new_tokens": kwargs.get("max_new_tokens", kwargs.get("max_tokens", self.max_new_tokens)),
            "stop": list(self.stop) + list(kwargs.get("stop") or []),
            "temperature": kwargs.get("temperature", self.temperature),
            "stopping_criteria": kwargs.get("stopping_criteria"),
        }

    @staticmethod
    def _raw(result: Any) -> dict[str, Any]:
        return {
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.total_tokens,
            },
            "finish_reason": result.finish_reason,
            "cached_prefix_tokens": result.cached_prefix_tokens,
        }

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        result = self.local_llm.generate(prompt, **self._args(kwargs))
        return CompletionResponse(text=result.text, raw=self._raw(result))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            text = ""
            for piece in self.local_llm.stream(prompt, **self._args(kwargs)):
                text += piece.text
                raw = self._raw(piece.result) if piece.result else None
                yield CompletionResponse(text=text, delta=piece.text, raw=raw)

        return gen()

    def _chat_call(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]
    ) -> tuple[list[int], dict[str, Any]]:
        llm = self.local_llm
        dicts = [
            {
                "role": m.role.value if isinstance(m.role, MessageRole) else str(m.role),
                "content": m.content or "",
            }
            for m in messages
        ]
        ids, prefix = llm.chat_prompt_ids(dicts)
        args = self._args(kwargs)
        args["stop"] += llm.chat_stop_sequences()
        if self.prefix_cache and prefix:
            args["prefix"] = prefix
        return ids, args

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        ids, args = self._chat_call(messages, kwargs)
        result = self.local_llm.generate(ids, **args)
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=result.text), raw=self._raw(result)
        )

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        ids, args = self._chat_call(messages, kwargs)

        def gen() -> ChatResponseGen:
            text = ""
            for piece in self.local_llm.stream(ids, **args):
                text += piece.text
                raw = self._raw(piece.result) if piece.result else None
                yield ChatResponse(
                    message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=piece.text, raw=raw
                )

        return gen()

    # -- async: generation in a worker thread, the event loop stays free -----------------------
    @staticmethod
    def _chat_response(text: str, delta: str | None, raw: dict[str, Any] | None) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta, raw=raw)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        result = await self.local_llm.agenerate(prompt, **self._args(kwargs))
        return CompletionResponse(text=result.text, raw=self._raw(result))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        args = self._args(kwargs)

        async def gen() -> CompletionResponseAsyncGen:
            text = ""
            async for piece in self.local_llm.astream(prompt, **args):
                text += piece.text
                raw = self._raw(piece.result) if piece.result else None
                yield CompletionResponse(text=text, delta=piece.text, raw=raw)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        ids, args = self._chat_call(messages, kwargs)
        result = await self.local_llm.agenerate(ids, **args)
        return self._chat_response(result.text, None, self._raw(result))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        ids, args = self._chat_call(messages, kwargs)

        async def gen() -> ChatResponseAsyncGen:
            text = ""
            async for piece in self.local_llm.astream(ids, **args):
                text += piece.text
                yield self._chat_response(text, piece.text, self._raw(piece.result) if piece.result else None)

        return gen()
