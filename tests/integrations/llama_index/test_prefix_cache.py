"""LlamaIndex: the prefix-cache tokens in an LLM response's raw usage reach the ledger."""

from __future__ import annotations

from typing import Any

import pytest
from lean_plugins.llama_index import PrefixCacheEventHandler
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, LLMMetadata
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from lean_plugins.ledger import Ledger


class RawUsageLLM(CustomLLM):
    """Stands in for a paid API: answers with the raw usage an OpenAI response carries."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="gpt-4o")

    def _raw(self) -> dict[str, Any]:
        return {"model": "gpt-4o-2024-08-06", "usage": {"prompt_tokens": 2006, "prompt_tokens_details": {"cached_tokens": 1920}}}

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="ok", raw=self._raw())

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):  # type: ignore[override]
        yield CompletionResponse(text="ok", delta="ok", raw=self._raw())

    @llm_chat_callback()
    def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
        return ChatResponse(message=ChatMessage(role="assistant", content="ok"), raw=self._raw())


@pytest.fixture
def handler():
    handler = PrefixCacheEventHandler()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(handler)
    yield handler
    dispatcher.event_handlers.remove(handler)


@pytest.mark.parametrize("call", ["complete", "chat"])
def test_llm_call_books_cached_tokens(handler, call: str) -> None:
    llm = RawUsageLLM()
    with Ledger("t") as ledger:
        if call == "complete":
            llm.complete("hi")
        else:
            llm.chat([ChatMessage(role="user", content="hi")])
    row = ledger.summary().by_layer("prefix cache")
    assert row is not None and row.events == 1
    assert row.dollars_saved == pytest.approx(1920 * (2.50 - 1.25) / 1e6)
