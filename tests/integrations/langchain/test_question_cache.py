"""``with_cache`` around a real RAG chain: retriever over MiniLM vectors, prompt, chat model."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from lean_plugins.langchain import CachedRunnable, with_cache

from lean_plugins.cache import LeanCache
from lean_plugins.demo.knowledge import load_knowledge_base
from lean_plugins.demo.langchain_parts import MiniLMEmbeddings, StandInChatModel
from lean_plugins.demo.standin import CallLog
from lean_plugins.ledger import Ledger, is_cache_hit
from lean_plugins.tokens import count_tokens

PROMPT = ChatPromptTemplate.from_messages(
    [("system", "Answer from the context.\n{context}"), ("human", "{question}")]
)


@pytest.fixture(scope="module")
def sections():
    return load_knowledge_base()


@pytest.fixture(scope="module")
def store(sections):
    docs = [Document(page_content=s.text, metadata={"title": s.title}) for s in sections]
    return InMemoryVectorStore.from_documents(docs, MiniLMEmbeddings())


def rag_chain(store, log: CallLog, retrieved: list[str], *, k: int = 2, max_tokens: int = 256):
    retriever = store.as_retriever(search_kwargs={"k": k})

    def join(docs: list[Document]) -> str:
        retrieved.append(docs[0].metadata.get("title"))
        return "\n\n".join(d.page_content for d in docs)

    model = StandInChatModel(call_log=log, max_tokens=max_tokens)
    return {"context": retriever | join, "question": RunnablePassthrough()} | PROMPT | model | StrOutputParser()


@pytest.fixture()
def cache(tmp_path) -> LeanCache:
    return LeanCache(tmp_path / "cache")


def test_a_hit_skips_retrieval_and_the_model_and_books_what_it_avoided(store, cache) -> None:
    log, retrieved = CallLog(), []
    chain = with_cache(rag_chain(store, log, retrieved), cache=cache)
    assert isinstance(chain, CachedRunnable)
    first = chain.invoke("How long is a year on Mars?")
    assert "687 Earth days" in first and len(log.calls) == 1 and len(retrieved) == 1
    with Ledger() as ledger:
        assert chain.invoke("How long is a year on Mars?") == first
        assert chain.invoke("What is the length of a year on Mars?") == first  # a paraphrase
    assert len(log.calls) == 1 and len(retrieved) == 1  # neither retrieval nor the model ran
    events = ledger.events
    assert [e.layer for e in events] == ["cache", "cache"]
    assert events[0].input_before == log.calls[0].input_tokens  # the whole RAG prompt
    assert events[0].output_before == count_tokens(first)


def test_questions_that_need_another_answer_miss(store, cache) -> None:
    log, retrieved = CallLog(), []
    chain = with_cache(rag_chain(store, log, retrieved), cache=cache)
    chain.invoke("How long is a year on Mars?")
    chain.invoke("How long is a day on Mars?")
    chain.invoke("How long is a year on Venus?")
    assert len(log.calls) == 3


def test_two_chains_never_share_and_an_equal_rebuilt_chain_does(store, sections, cache) -> None:
    log = CallLog()
    base = with_cache(rag_chain(store, log, []), cache=cache)
    base.invoke("How old is the Sun?")
    assert len(log.calls) == 1
    with_cache(rag_chain(store, log, [], k=1), cache=cache).invoke("How old is the Sun?")
    with_cache(rag_chain(store, log, [], max_tokens=8), cache=cache).invoke("How old is the Sun?")
    other_docs = [Document(page_content=s.text) for s in sections[:3]]
    other_store = InMemoryVectorStore.from_documents(other_docs, MiniLMEmbeddings())
    with_cache(rag_chain(other_store, log, []), cache=cache).invoke("How old is the Sun?")
    with_cache(rag_chain(store, log, []), cache=cache, tenant="acme").invoke("How old is the Sun?")
    assert len(log.calls) == 5  # top-k, model settings, documents and tenant each: own namespace
    # The same chain built again (new store ids, new objects) reads the same entries.
    same_store = InMemoryVectorStore.from_documents(
        [Document(page_content=s.text, metadata={"title": s.title}) for s in sections], MiniLMEmbeddings()
    )
    with_cache(rag_chain(same_store, log, []), cache=cache).invoke("How old is the Sun?")
    assert len(log.calls) == 5


def test_key_picks_the_question_from_a_dict_input(store, cache) -> None:
    log = CallLog()
    inner = rag_chain(store, log, [])
    chain = with_cache(RunnableLambda(lambda x: x["question"]) | inner, key="question", cache=cache)
    chain.invoke({"question": "How old is the Sun?", "language": "English"})
    chain.invoke({"question": "How old is the Sun?", "language": "English"})
    assert len(log.calls) == 1
    # The input's other fields can change the answer: they are part of the namespace.
    chain.invoke({"question": "How old is the Sun?", "language": "German"})
    assert len(log.calls) == 2
    by_callable = with_cache(inner, key=lambda q: q.strip(), cache=cache)
    by_callable.invoke("  How hot is Venus?  ")
    assert len(log.calls) == 3
    with pytest.raises(TypeError, match="dict input with a 'question' field"):
        chain.invoke("How old is the Sun?")
    with pytest.raises(TypeError, match="key='field'"):
        with_cache(inner, cache=cache).invoke({"question": "How old is the Sun?"})


def test_messages_with_tool_calls_come_back_whole(cache) -> None:
    calls = []

    def model(question: str) -> AIMessage:
        calls.append(question)
        return AIMessage(
            content="",
            tool_calls=[{"name": "lookup_planet", "args": {"planet": "Mars", "field": "year"}, "id": "call_1"}],
        )

    chain = with_cache(RunnableLambda(model), cache=cache)
    first = chain.invoke("Look up the length of a year on Mars")
    again = chain.invoke("Look up the length of a year on Mars")
    assert len(calls) == 1 and isinstance(again, AIMessage)
    assert again.tool_calls == first.tool_calls
    assert is_cache_hit(again.response_metadata) and not is_cache_hit(first.response_metadata)
    streamed = list(chain.stream("Look up the length of a year on Mars"))
    assert len(calls) == 1 and streamed[0].tool_calls[0]["args"] == {"planet": "Mars", "field": "year"}


def test_a_hit_streams_and_a_cut_stream_is_not_cached(store, cache) -> None:
    log = CallLog()
    chain = with_cache(rag_chain(store, log, []), cache=cache)
    stream = chain.stream("How many moons does Mars have?")
    next(stream)
    stream.close()  # the user stopped reading
    pieces = list(chain.stream("How many moons does Mars have?"))
    assert len(log.calls) == 2  # the cut stream was not cached
    again = list(chain.stream("How many moons does Mars have?"))
    assert len(log.calls) == 2 and len(again) > 1 and "".join(again) == "".join(pieces)


def test_async_and_batch(store, cache) -> None:
    log = CallLog()
    chain = with_cache(rag_chain(store, log, []), cache=cache)

    async def run():
        first = await chain.ainvoke("How old is the Sun?")
        again = await chain.abatch(["How old is the Sun?", "How hot is Venus?"])
        streamed = [p async for p in chain.astream("How hot is Venus?")]
        return first, again, streamed

    first, again, streamed = asyncio.run(run())
    assert again[0] == first and "".join(streamed) == again[1]
    assert len(log.calls) == 2
    assert chain.batch(["How old is the Sun?", "How hot is Venus?"]) == again
    assert len(log.calls) == 2


def test_documents_added_after_wrapping_move_to_a_new_namespace(sections, cache) -> None:
    docs = [Document(page_content=s.text, metadata={"title": s.title}) for s in sections[:2]]
    store = InMemoryVectorStore.from_documents(docs, MiniLMEmbeddings())
    log = CallLog()
    chain = with_cache(rag_chain(store, log, []), cache=cache)
    chain.invoke("How old is the Sun?")
    chain.invoke("How old is the Sun?")
    assert len(log.calls) == 1
    store.add_documents([Document(page_content=sections[2].text, metadata={"title": sections[2].title})])
    chain.invoke("How old is the Sun?")  # the store changed: the chain runs again
    assert len(log.calls) == 2
