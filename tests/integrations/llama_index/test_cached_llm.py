"""lean_plugins.llama_index.CachedLLM: complete / chat / async / streaming from the cache, and
as Settings.llm under a real VectorStoreIndex query engine with MiniLM embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gptcache")
pytest.importorskip("llama_index.core")

from lean_plugins.llama_index import CachedLLM
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.llms import ChatMessage, CompletionResponse, MockLLM

from lean_plugins.cache import LeanCache
from lean_plugins.embeddings import get_encoder
from lean_plugins.ledger import Ledger


class CountingMockLLM(MockLLM):
    """MockLLM that counts the calls that reach it (what a paid API would bill)."""

    calls: int = 0

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        return super().complete(prompt, formatted=formatted, **kwargs)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        self.calls += 1
        return super().stream_complete(prompt, formatted=formatted, **kwargs)


class MiniLMEmbedding(BaseEmbedding):
    """The shared all-MiniLM-L6-v2 encoder as a LlamaIndex embedding."""

    def _get_text_embedding(self, text: str) -> list[float]:
        return get_encoder().encode(text).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)


@pytest.fixture
def inner() -> CountingMockLLM:
    return CountingMockLLM(max_tokens=8)


@pytest.fixture
def llm(tmp_path: Path, inner: CountingMockLLM) -> CachedLLM:
    return CachedLLM(llm=inner, cache=LeanCache(path=tmp_path / "li"))


def test_complete_is_served_from_cache(llm: CachedLLM, inner: CountingMockLLM) -> None:
    first = llm.complete("How tall is the Eiffel Tower?")
    assert llm.complete("How tall is the Eiffel Tower?").text == first.text
    assert llm.complete("What is the height of the Eiffel Tower?").text == first.text
    assert inner.calls == 1
    llm.complete("How tall is the Berlin TV Tower?")
    assert inner.calls == 2


def test_stream_is_cached_once_complete_and_a_hit_streams(llm: CachedLLM, inner: CountingMockLLM) -> None:
    streamed = list(llm.stream_complete("Tell me a story"))
    assert len(streamed) > 1
    text = "".join(c.delta for c in streamed)
    again = list(llm.stream_complete("Tell me a story"))
    assert inner.calls == 1
    assert len(again) > 1 and "".join(c.delta for c in again) == again[-1].text == text
    assert llm.complete("Tell me a story").text == text and inner.calls == 1


def test_interrupted_stream_is_not_cached(llm: CachedLLM, inner: CountingMockLLM) -> None:
    stream = llm.stream_complete("Tell me a long story")
    next(stream)
    stream.close()
    llm.complete("Tell me a long story")
    assert inner.calls == 2


def test_chat_and_stream_chat(tmp_path: Path) -> None:
    inner = MockLLM(max_tokens=6, is_chat_model=True)
    llm = CachedLLM(llm=inner, cache=LeanCache(path=tmp_path))
    messages = [ChatMessage(role="user", content="How tall is Mount Everest?")]
    first = llm.chat(messages)
    with Ledger() as ledger:
        hit = llm.chat([ChatMessage(role="user", content="What is the height of Mount Everest?")])
        streamed = list(llm.stream_chat(messages))
    assert hit.message.content == first.message.content
    assert streamed[-1].message.content == first.message.content and len(streamed) > 1
    assert [e.kind for e in ledger.events if e.layer == "cache"] == ["hit", "hit"]


async def test_async_complete_chat_and_streams(llm: CachedLLM, inner: CountingMockLLM) -> None:
    first = await llm.acomplete("How tall is the Eiffel Tower?")
    assert (await llm.acomplete("How tall is the Eiffel Tower?")).text == first.text
    chunks = [c async for c in await llm.astream_complete("How tall is the Eiffel Tower?")]
    assert chunks[-1].text == first.text
    assert inner.calls == 1
    messages = [ChatMessage(role="user", content="Name a primary colour.")]
    reply = await llm.achat(messages)
    chat_chunks = [c async for c in await llm.astream_chat(messages)]
    assert chat_chunks[-1].message.content == reply.message.content


def test_tenants_and_models_do_not_share(tmp_path: Path) -> None:
    cache = LeanCache(path=tmp_path)
    a = CachedLLM(llm=MockLLM(max_tokens=3), cache=cache, tenant="a")
    b = CachedLLM(llm=MockLLM(max_tokens=3), cache=cache, tenant="b")
    other_model = CachedLLM(llm=MockLLM(max_tokens=5), cache=cache, tenant="a")
    a.complete("q")
    with Ledger() as ledger:
        b.complete("q")
        other_model.complete("q")
        a.complete("q")
    assert len([e for e in ledger.events if e.layer == "cache"]) == 1


@pytest.mark.slow
def test_cached_llm_as_settings_llm_under_a_vector_store_query_engine(tmp_path: Path) -> None:
    inner = CountingMockLLM(max_tokens=12)
    previous_llm, previous_embed = Settings._llm, Settings._embed_model
    Settings.llm = CachedLLM(llm=inner, cache=LeanCache(path=tmp_path))
    Settings.embed_model = MiniLMEmbedding()
    try:
        docs = [
            Document(text="Mount Everest is 8,849 metres tall and lies on the border of Nepal and China."),
            Document(text="The Amazon is the largest rainforest on Earth, mostly in Brazil."),
            Document(text="Paris is the capital and largest city of France."),
        ]
        engine = VectorStoreIndex.from_documents(docs).as_query_engine(similarity_top_k=1)
        with Ledger() as ledger:
            first = engine.query("How tall is Mount Everest?")
            second = engine.query("How tall is Mount Everest?")
            other = engine.query("How tall is the Eiffel Tower?")
        assert str(first) == str(second) and str(first)
        assert inner.calls == 2, "the repeated query must be answered from the cache"
        assert str(other)
        hits = [e for e in ledger.events if e.layer == "cache"]
        assert len(hits) == 1 and hits[0].input_before > 20  # the whole retrieved-context prompt
    finally:
        Settings._llm, Settings._embed_model = previous_llm, previous_embed
