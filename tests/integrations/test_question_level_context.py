"""The question-level caches (LangChain ``with_cache``, LlamaIndex ``CachedQueryEngine``) reach
the core LeanCache, which applies its context rules (lean_plugins.cache.keys.split_prompt):
two long prompts that share >= 300 words and differ in one instruction, or two instructions
about one pasted email, are never served each other's answer. Real SQLite + FAISS + MiniLM."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("gptcache")

from lean_plugins.cache import LeanCache
from tests.cache_prompts import EMAIL_PAIRS, LONG_PAIRS

PAIRS = [LONG_PAIRS[0], LONG_PAIRS[1], EMAIL_PAIRS[0]]
IDS = ["long", "long-paragraph", "email-following"]


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=IDS)
def test_with_cache_never_serves_a_long_prompt_another_ones_answer(tmp_path: Path, first: str, second: str) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.runnables import RunnableLambda
    from lean_plugins.langchain import with_cache

    calls: list[str] = []
    chain = with_cache(RunnableLambda(lambda q: calls.append(q) or f"answer {len(calls)}"), cache=LeanCache(path=tmp_path))
    # Old code: the second prompt was served the first one's answer (the core compared whole prompts).
    assert (chain.invoke(first), chain.invoke(second)) == ("answer 1", "answer 2")
    assert chain.invoke(first) == "answer 1" and len(calls) == 2, "an exact repeat is still served"


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=IDS)
def test_cached_query_engine_never_serves_a_long_query_another_ones_answer(
    tmp_path: Path, first: str, second: str
) -> None:
    pytest.importorskip("llama_index.core")
    from lean_plugins.llama_index import CachedQueryEngine
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    from lean_plugins.demo.llama_index_parts import StandInLLM
    from lean_plugins.demo.standin import CallLog

    log = CallLog()
    index = VectorStoreIndex.from_documents([Document(text="Plans can be cancelled or upgraded at any time.")],
                                            embed_model=MockEmbedding(embed_dim=8))
    engine = CachedQueryEngine(index.as_query_engine(llm=StandInLLM(call_log=log)), cache=LeanCache(path=tmp_path))
    engine.query(first)
    engine.query(second)
    # Old code: one model call, the second query served the first one's answer.
    assert len(log.calls) == 2
    engine.query(first)
    assert len(log.calls) == 2, "an exact repeat is still served"
