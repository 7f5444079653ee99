"""``LeanChatModel``: a LangChain chat model served by a local (pruned) causal LM."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from lean_plugins.langchain._local import LocalModelSettings, message_dicts, usage
from pydantic import ConfigDict

_ROLES = {
    "system": "system",
    "human": "user",
    "ai": "assistant",
    "tool": "user",
    "function": "user",
    "chat": "user",
}


class LeanChatModel(LocalModelSettings, BaseChatModel):
    """Chat with a local dense or pruned model (``lean-plugins prune`` output, any HF causal LM).

    Uses the tokenizer's chat template when it has one, otherwise ``Role: text`` lines. The
    leading system message's KV cache is kept and reused across calls (``prefix_cache``).

    Example:
        ```python
        from lean_plugins.langchain import LeanChatModel

        chat = LeanChatModel(model="./my-pruned-model", max_tokens=128)
        chat.invoke("Tell me a story.").content
        ```
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    prefix_cache: bool = True
    """Keep the KV cache of the leading system message(s) and reuse it on later calls."""

    @property
    def _llm_type(self) -> str:
        return "lean-local-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self.identifying_params()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="lean_plugins",
            ls_model_name=kwargs.get("model", self.model_name),
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        if (max_tokens := kwargs.get("max_tokens", self.max_tokens)) is not None:
            params["ls_max_tokens"] = max_tokens
        if stops := (stop or self.stop):
            params["ls_stop"] = list(stops)
        return params

    def _call_args(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[list[int], dict[str, Any]]:
        llm = self.local_llm()
        ids, prefix = llm.chat_prompt_ids(message_dicts(messages, _ROLES))
        args = self.generation_kwargs(stop, kwargs)
        args["stop"] = args["stop"] + llm.chat_stop_sequences()
        if self.prefix_cache and prefix:
            args["prefix"] = prefix
        return ids, args

    def _response_metadata(self, result: Any) -> dict[str, Any]:
        return {"model_name": self.model_name, "finish_reason": result.finish_reason}

    def _message(self, text: str, result: Any) -> AIMessage:
        return AIMessage(
            content=text, usage_metadata=usage(result), response_metadata=self._response_metadata(result)
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        ids, args = self._call_args(messages, stop, kwargs)
        result = self.local_llm().generate(ids, **args)
        return ChatResult(generations=[ChatGeneration(message=self._message(result.text, result))])

    def _last_chunk(self, text: str, result: Any) -> ChatGenerationChunk:
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=text,
                usage_metadata=usage(result),
                response_metadata=self._response_metadata(result),
                chunk_position="last",
            )
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        ids, args = self._call_args(messages, stop, kwargs)
        for piece in self.local_llm().stream(ids, **args):
            chunk = (
                self._last_chunk(piece.text, piece.result)
                if piece.result
                else ChatGenerationChunk(message=AIMessageChunk(content=piece.text))
            )
            if run_manager and piece.text:
                run_manager.on_llm_new_token(piece.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        ids, args = self._call_args(messages, stop, kwargs)
        async for piece in self.local_llm().astream(ids, **args):
            chunk = (
                self._last_chunk(piece.text, piece.result)
                if piece.result
                else ChatGenerationChunk(message=AIMessageChunk(content=piece.text))
            )
            if run_manager and piece.text:
                await run_manager.on_llm_new_token(piece.text, chunk=chunk)
            yield chunk

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        ids, args = self._call_args(messages, stop, kwargs)
        result = await self.local_llm().agenerate(ids, **args)
        return ChatResult(generations=[ChatGeneration(message=self._message(result.text, result))])

    def get_num_tokens(self, text: str) -> int:
        return self.local_llm().count_tokens(text)
