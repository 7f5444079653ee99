"""``LeanLLM``: a LangChain text-completion LLM served by a local (pruned) causal LM."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LLM
from langchain_core.outputs import GenerationChunk
from lean_plugins.langchain._local import LocalModelSettings


class LeanLLM(LocalModelSettings, LLM):
    """Complete text with a local dense or pruned model; ``stop`` and ``max_tokens`` honoured,
    usage in ``generation_info`` of the last streamed chunk.

    Example:
        ```python
        from lean_plugins.langchain import LeanLLM

        llm = LeanLLM(model="./my-pruned-model", max_tokens=64)
        llm.invoke("Once upon a time")
        ```
    """

    @property
    def _llm_type(self) -> str:
        return "lean-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self.identifying_params()

    # LangChain keys a text LLM's cache on its identifying params and ``stop`` only, not on the
    # call's keyword arguments; a per-call ``max_tokens`` or ``temperature`` therefore becomes a
    # copy of the model with that setting, so it is in the key (a short answer is never served
    # for a long one).
    def generate(
        self, prompts: list[str], stop: list[str] | None = None, callbacks: Any = None, **kwargs: Any
    ) -> Any:
        settings = self.pop_call_settings(kwargs)
        if settings:
            return self.model_copy(update=settings).generate(prompts, stop, callbacks, **kwargs)
        return super().generate(prompts, stop, callbacks, **kwargs)

    async def agenerate(
        self, prompts: list[str], stop: list[str] | None = None, callbacks: Any = None, **kwargs: Any
    ) -> Any:
        settings = self.pop_call_settings(kwargs)
        if settings:
            return await self.model_copy(update=settings).agenerate(prompts, stop, callbacks, **kwargs)
        return await super().agenerate(prompts, stop, callbacks, **kwargs)

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        return self.local_llm().generate(prompt, **self.generation_kwargs(stop, kwargs)).text

    async def _acall(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        result = await self.local_llm().agenerate(prompt, **self.generation_kwargs(stop, kwargs))
        return result.text

    @staticmethod
    def _chunk(piece: Any) -> GenerationChunk:
        info = None
        if piece.result is not None:
            r = piece.result
            info = {
                "finish_reason": r.finish_reason,
                "usage": {
                    "input_tokens": r.prompt_tokens,
                    "output_tokens": r.completion_tokens,
                    "total_tokens": r.total_tokens,
                },
            }
        return GenerationChunk(text=piece.text, generation_info=info)

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        for piece in self.local_llm().stream(prompt, **self.generation_kwargs(stop, kwargs)):
            chunk = self._chunk(piece)
            if run_manager and piece.text:
                run_manager.on_llm_new_token(piece.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        async for piece in self.local_llm().astream(prompt, **self.generation_kwargs(stop, kwargs)):
            chunk = self._chunk(piece)
            if run_manager and piece.text:
                await run_manager.on_llm_new_token(piece.text, chunk=chunk)
            yield chunk

    def get_num_tokens(self, text: str) -> int:
        return self.local_llm().count_tokens(text)
