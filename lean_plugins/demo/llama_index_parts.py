"""LlamaIndex pieces of the demo: MiniLM embeddings and the stand-in as a real ``CustomLLM``."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.types import (
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import Field, PrivateAttr

from lean_plugins.demo.standin import (
    STANDIN_MODEL_ID,
    CallLog,
    StandInAnswerer,
    truncate_answer,
)
from lean_plugins.tokens import encode, get_tokenizer


class MiniLMEmbedding(BaseEmbedding):
    """LlamaIndex embeddings from the shared all-MiniLM-L6-v2 encoder (offline)."""

    model_name: str = "all-MiniLM-L6-v2"

    @classmethod
    def class_name(cls) -> str:
        return "LeanPluginsMiniLMEmbedding"

    def _embed(self, texts: list[str]) -> list[list[float]]:
        from lean_plugins.embeddings import get_encoder

        return get_encoder().encode(texts).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query])[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)


class StandInLLM(CustomLLM):
    """The demo's offline stand-in as a LlamaIndex LLM (not a language model).

    Completion-style: it answers with the context sentence most similar to the question (see
    :mod:`lean_plugins.demo.standin`). ``max_tokens`` truncates like a provider's setting.
    Every real call is written to ``call_log`` with real cl100k counts; ``raw["usage"]`` holds
    them too.
    """

    model_name: str = Field(default=STANDIN_MODEL_ID, description="Model identity.")
    max_tokens: int | None = Field(default=256, description="Longest answer in cl100k tokens.")
    context_window: int = Field(default=128_000, description="Tokens the model accepts.")
    _call_log: CallLog = PrivateAttr(default_factory=CallLog)
    _answerer: StandInAnswerer = PrivateAttr(default_factory=StandInAnswerer)

    def __init__(self, call_log: CallLog | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if call_log is not None:
            self._call_log = call_log

    @classmethod
    def class_name(cls) -> str:
        return "LeanPluginsStandInLLM"

    @property
    def call_log(self) -> CallLog:
        return self._call_log

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_tokens or 256,
            is_chat_model=False,
            model_name=self.model_name,
        )

    def _answer(self, prompt: str, kwargs: dict[str, Any]) -> str:
        max_tokens = kwargs.get("max_tokens", kwargs.get("max_new_tokens", self.max_tokens))
        return truncate_answer(self._answerer.answer(prompt), max_tokens)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        text = self._answer(prompt, kwargs)
        record = self._call_log.add(prompt, text)
        usage = {"input_tokens": record.input_tokens, "output_tokens": record.output_tokens}
        return CompletionResponse(text=text, raw={"usage": usage, "model": self.model_name})

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text = self._answer(prompt, kwargs)
        tokenizer = get_tokenizer()

        def gen() -> CompletionResponseGen:
            sent = ""
            try:
                for token_id in encode(text):
                    piece = tokenizer.decode([token_id])
                    sent += piece
                    yield CompletionResponse(text=sent, delta=piece)
            finally:
                # A consumer that stops early has received only what was yielded.
                self._call_log.add(prompt, sent)

        return gen()
