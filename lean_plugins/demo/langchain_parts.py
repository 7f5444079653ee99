"""LangChain pieces of the demo: MiniLM embeddings and the stand-in as a real chat model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from lean_plugins.demo.standin import (
    STANDIN_MODEL_ID,
    CallLog,
    StandInAnswerer,
    truncate_answer,
)
from lean_plugins.tokens import encode, get_tokenizer


class MiniLMEmbeddings(Embeddings):
    """LangChain embeddings from the shared all-MiniLM-L6-v2 encoder (offline)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        from lean_plugins.embeddings import get_encoder

        return get_encoder().encode(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def _prompt_text(messages: list[BaseMessage]) -> str:
    return "\n".join(m.text for m in messages)


def _stop_at(text: str, stop: list[str] | None) -> str:
    for word in stop or ():
        cut = text.find(word)
        if cut >= 0:
            text = text[:cut]
    return text


class StandInChatModel(BaseChatModel):
    """The demo's offline stand-in as a LangChain chat model (not a language model).

    Answers with the context sentence most similar to the question (see
    :mod:`lean_plugins.demo.standin`); ``usage_metadata`` holds real cl100k counts of the
    messages received and the text returned. Every real call is written to ``call_log``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_name: str = STANDIN_MODEL_ID
    """Model identity (part of LangChain's cache key)."""
    max_tokens: int | None = 256
    """Longest answer in cl100k tokens, as a provider's ``max_tokens``."""
    call_log: CallLog = Field(default_factory=CallLog, exclude=True)
    """Where every real call is recorded."""
    answerer: StandInAnswerer = Field(default_factory=StandInAnswerer, exclude=True)

    @property
    def _llm_type(self) -> str:
        return STANDIN_MODEL_ID

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "max_tokens": self.max_tokens}

    def _respond(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[str, str]:
        prompt = _prompt_text(messages)
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        text = _stop_at(truncate_answer(self.answerer.answer(prompt), max_tokens), stop)
        return prompt, text

    def _usage(self, prompt: str, text: str) -> UsageMetadata:
        record = self.call_log.add(prompt, text)
        return UsageMetadata(
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            total_tokens=record.input_tokens + record.output_tokens,
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        prompt, text = self._respond(messages, stop, kwargs)
        message = AIMessage(
            content=text,
            usage_metadata=self._usage(prompt, text),
            response_metadata={"model_name": self.model_name},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        prompt, text = self._respond(messages, stop, kwargs)
        tokenizer = get_tokenizer()
        sent: list[str] = []
        try:
            for token_id in encode(text):
                piece = tokenizer.decode([token_id])
                sent.append(piece)
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
                if run_manager:
                    run_manager.on_llm_new_token(piece, chunk=chunk)
                yield chunk
        finally:
            # A consumer that stops the stream early has received only what was yielded.
            received = "".join(sent)
            usage = self._usage(prompt, received)
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="", usage_metadata=usage, response_metadata={"model_name": self.model_name}
            )
        )
