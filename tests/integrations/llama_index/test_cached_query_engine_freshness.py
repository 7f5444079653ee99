"""``CachedQueryEngine`` is fresh by construction: a hit is served only while the retrieval its
answer was made from returns nodes with the same content.

Real parts: ``VectorStoreIndex`` over MiniLM vectors with its default docstore and vector store,
``index.as_query_engine()``, the demo's stand-in LLM (answers with the context sentence closest
to the question).
"""

from __future__ import annotations

import asyncio

import pytest
from lean_plugins.llama_index import CachedQueryEngine
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import TextNode

from lean_plugins.cache import LeanCache
from lean_plugins.demo.llama_index_parts import MiniLMEmbedding, StandInLLM
from lean_plugins.demo.standin import CallLog
from tests.freshness_facts import EDITED_MARS, FACTS


@pytest.fixture(scope="module")
def embedding():
    return MiniLMEmbedding()


@pytest.fixture()
def index(embedding):
    return VectorStoreIndex([TextNode(id_=k, text=v) for k, v in FACTS.items()], embed_model=embedding)


@pytest.fixture()
def cache(tmp_path) -> LeanCache:
    return LeanCache(tmp_path / "cache")


def cached(index, cache, log: CallLog, **kwargs) -> CachedQueryEngine:
    return CachedQueryEngine(index.as_query_engine(llm=StandInLLM(call_log=log), similarity_top_k=1, **kwargs), cache=cache)


def test_a_node_edited_in_the_docstore_under_its_id_is_noticed(index, cache) -> None:
    log = CallLog()
    engine = cached(index, cache, log)
    assert "687" in str(engine.query("How long is a year on Mars?")) and len(log.calls) == 1
    assert "687" in str(engine.query("How long is a year on Mars?")) and len(log.calls) == 1
    # A paraphrase still hits: the entry's retrieval still returns the same node.
    assert "687" in str(engine.query("What is the length of a year on Mars?")) and len(log.calls) == 1
    index.docstore.add_documents([TextNode(id_="mars", text=EDITED_MARS)], allow_update=True)
    response = engine.query("How long is a year on Mars?")
    assert "700" in str(response) and len(log.calls) == 2
    assert "700" in response.source_nodes[0].node.get_content()
    assert "700" in str(engine.query("What is the length of a year on Mars?"))
    assert "700" in str(engine.query("How long is a year on Mars?")) and len(log.calls) <= 3


def test_a_deleted_node_is_noticed_and_unrelated_entries_stay(index, cache) -> None:
    log = CallLog()
    engine = cached(index, cache, log)
    engine.query("How long is a year on Mars?")
    engine.query("How long is a day on Venus?")
    index.delete_nodes(["mars"])
    assert "687" not in str(engine.query("How long is a year on Mars?")) and len(log.calls) == 3
    assert "243" in str(engine.query("How long is a day on Venus?")) and len(log.calls) == 3


def test_async_and_streaming_see_the_edit(index, cache) -> None:
    log = CallLog()
    engine = cached(index, cache, log)
    streaming = cached(index, cache, log, streaming=True)

    async def run() -> None:
        assert "687" in str(await engine.aquery("How long is a year on Mars?"))
        assert "687" in str(await engine.aquery("How long is a year on Mars?")) and len(log.calls) == 1
        index.docstore.add_documents([TextNode(id_="mars", text=EDITED_MARS)], allow_update=True)
        assert "700" in str(await engine.aquery("How long is a year on Mars?")) and len(log.calls) == 2

    asyncio.run(run())
    response = streaming.query("How long is a year on Mars?")
    assert "700" in "".join(response.response_gen)


def test_an_engine_built_later_checks_entries_before_its_first_run(index, cache) -> None:
    log = CallLog()
    cached(index, cache, log).query("How long is a year on Mars?")
    index.docstore.add_documents([TextNode(id_="mars", text=EDITED_MARS)], allow_update=True)
    assert "700" in str(cached(index, cache, log).query("How long is a year on Mars?")) and len(log.calls) == 2
