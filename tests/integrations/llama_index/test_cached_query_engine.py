"""``CachedQueryEngine`` around ``VectorStoreIndex(...).as_query_engine()`` with real parts."""

from __future__ import annotations

import asyncio

import pytest
from lean_plugins.llama_index import CachedQueryEngine
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.response.schema import AsyncStreamingResponse, Response, StreamingResponse

from lean_plugins.cache import LeanCache
from lean_plugins.demo.knowledge import load_knowledge_base
from lean_plugins.demo.llama_index_parts import MiniLMEmbedding, StandInLLM
from lean_plugins.demo.standin import CallLog
from lean_plugins.ledger import Ledger, is_cache_hit
from lean_plugins.tokens import count_tokens


@pytest.fixture(scope="module")
def sections():
    return load_knowledge_base()


def build_index(sections):
    docs = [Document(text=s.text, metadata={"title": s.title}) for s in sections]
    return VectorStoreIndex.from_documents(docs, embed_model=MiniLMEmbedding())


@pytest.fixture(scope="module")
def index(sections):
    return build_index(sections)


@pytest.fixture()
def cache(tmp_path) -> LeanCache:
    return LeanCache(tmp_path / "cache")


def engine(index, log: CallLog, *, top_k: int = 2, max_tokens: int = 256, streaming: bool = False):
    llm = StandInLLM(call_log=log, max_tokens=max_tokens)
    return index.as_query_engine(llm=llm, similarity_top_k=top_k, streaming=streaming)


def test_a_hit_returns_the_answer_with_its_sources_and_skips_everything(index, cache) -> None:
    log = CallLog()
    cached = CachedQueryEngine(engine(index, log), cache=cache)
    first = cached.query("How long is a year on Mars?")
    assert "687 Earth days" in str(first) and len(log.calls) == 1
    with Ledger() as ledger:
        again = cached.query("How long is a year on Mars?")
        paraphrase = cached.query("What is the length of a year on Mars?")
    assert len(log.calls) == 1
    for hit in (again, paraphrase):
        assert isinstance(hit, Response) and hit.response == first.response
        assert is_cache_hit(hit.metadata) and not is_cache_hit(first.metadata)
        assert [(n.node.node_id, n.node.get_content(), n.node.metadata, n.score) for n in hit.source_nodes] == [
            (n.node.node_id, n.node.get_content(), n.node.metadata, n.score) for n in first.source_nodes
        ]
    events = ledger.events
    assert [e.layer for e in events] == ["cache", "cache"]
    assert events[0].input_before == log.calls[0].input_tokens
    assert events[0].output_before == count_tokens(first.response)


def test_questions_that_need_another_answer_miss(index, cache) -> None:
    log = CallLog()
    cached = CachedQueryEngine(engine(index, log), cache=cache)
    for question in ("How long is a year on Mars?", "How long is a day on Mars?", "How long is a year on Venus?"):
        cached.query(question)
    assert len(log.calls) == 3


def test_two_engines_never_share_and_an_equal_rebuilt_engine_does(index, sections, cache) -> None:
    log = CallLog()
    CachedQueryEngine(engine(index, log), cache=cache).query("How old is the Sun?")
    CachedQueryEngine(engine(index, log, top_k=1), cache=cache).query("How old is the Sun?")
    CachedQueryEngine(engine(index, log, max_tokens=8), cache=cache).query("How old is the Sun?")
    CachedQueryEngine(engine(build_index(sections[:3]), log), cache=cache).query("How old is the Sun?")
    CachedQueryEngine(engine(index, log), cache=cache, tenant="acme").query("How old is the Sun?")
    assert len(log.calls) == 5
    # The same documents indexed again (new node ids) and the same settings: same entries.
    CachedQueryEngine(engine(build_index(sections), log), cache=cache).query("How old is the Sun?")
    assert len(log.calls) == 5


def test_streaming_engine_streams_hits_and_caches_only_complete_streams(index, cache) -> None:
    log = CallLog()
    cached = CachedQueryEngine(engine(index, log, streaming=True), cache=cache)
    cut = cached.query("How many moons does Mars have?")
    assert isinstance(cut, StreamingResponse)
    next(cut.response_gen)
    cut.response_gen.close()  # the user stops reading here
    full = cached.query("How many moons does Mars have?")
    text = "".join(full.response_gen)
    assert len(log.calls) == 2  # the cut stream was not cached
    hit = cached.query("How many moons does Mars have?")
    pieces = list(hit.response_gen)
    assert isinstance(hit, StreamingResponse) and len(pieces) > 1 and "".join(pieces) == text
    assert len(log.calls) == 2 and hit.source_nodes


def test_aquery_hits_and_misses(index, cache) -> None:
    log = CallLog()
    cached = CachedQueryEngine(engine(index, log), cache=cache)

    async def run():
        first = await cached.aquery("How hot is Venus?")
        again = await cached.aquery("How hot is Venus?")
        return first, again

    first, again = asyncio.run(run())
    assert str(first) == str(again) and len(log.calls) == 1


def test_async_streaming_hit(index, cache) -> None:
    log = CallLog()
    cached = CachedQueryEngine(engine(index, log, streaming=True), cache=cache)
    "".join(cached.query("How hot is Venus?").response_gen)

    async def run():
        hit = await cached.aquery("How hot is Venus?")
        assert isinstance(hit, AsyncStreamingResponse)
        return "".join([p async for p in hit.async_response_gen()])

    assert "465 degrees Celsius" in asyncio.run(run()) and len(log.calls) == 1


def test_bad_input_names_the_fix(cache) -> None:
    with pytest.raises(TypeError, match="as_query_engine"):
        CachedQueryEngine("not an engine", cache=cache)  # type: ignore[arg-type]


def test_prompts_are_the_engines_and_updating_them_changes_the_namespace(index, cache) -> None:
    from llama_index.core import PromptTemplate

    log = CallLog()
    inner = engine(index, log)
    cached = CachedQueryEngine(inner, cache=cache)
    key = "response_synthesizer:text_qa_template"
    assert set(cached.get_prompts()) == set(inner.get_prompts())
    cached.query("How old is the Sun?")
    cached.update_prompts({key: PromptTemplate("Context:\n{context_str}\nAnswer briefly: {query_str}?\n")})
    assert "Answer briefly" in inner.get_prompts()[key].get_template()
    cached.query("How old is the Sun?")  # another prompt: not the old answer
    assert len(log.calls) == 2


def test_an_insert_into_the_index_moves_to_a_new_namespace(sections, cache) -> None:
    index = build_index(sections[:2])
    log = CallLog()
    cached = CachedQueryEngine(engine(index, log), cache=cache)
    cached.query("How old is the Sun?")
    cached.query("How old is the Sun?")
    assert len(log.calls) == 1
    index.insert(Document(text=sections[2].text))
    cached.query("How old is the Sun?")  # the index changed: the engine runs again
    assert len(log.calls) == 2


def test_a_bundle_with_its_own_retrieval_strings_is_its_own_entry(index, cache) -> None:
    from llama_index.core.schema import QueryBundle

    log = CallLog()
    cached = CachedQueryEngine(engine(index, log), cache=cache)
    cached.query(QueryBundle("How many moons does it have?", custom_embedding_strs=["Mars moons"]))
    cached.query(QueryBundle("How many moons does it have?", custom_embedding_strs=["Uranus moons"]))
    cached.query(QueryBundle("How many moons does it have?", custom_embedding_strs=["Mars moons"]))
    assert len(log.calls) == 2
