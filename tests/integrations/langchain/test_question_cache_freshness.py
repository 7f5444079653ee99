"""``with_cache`` is fresh by construction: a hit is served only while what its answer was made
from still holds (the retrieved documents' content, the conversation so far).

Real parts: ``InMemoryVectorStore`` (and FAISS) over MiniLM vectors, the demo's stand-in chat
model (answers with the context sentence closest to the question), LangChain's own
``RunnableWithMessageHistory`` and ``InMemoryChatMessageHistory``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_core.vectorstores import InMemoryVectorStore
from lean_plugins.langchain import with_cache

from lean_plugins.cache import LeanCache
from lean_plugins.demo.langchain_parts import MiniLMEmbeddings, StandInChatModel
from lean_plugins.demo.standin import CallLog
from tests.freshness_facts import EDITED_MARS, FACTS

PROMPT = ChatPromptTemplate.from_messages(
    [("system", "Use the following pieces of context to answer the user's question.\n{context}"),
     ("human", "{question}")]
)  # fmt: skip


# The README's quick-start shape: a module-level retriever read by a function of the chain.
retriever: Any = None


def context(question: str) -> str:
    return "\n".join(d.page_content for d in retriever.invoke(question))


def new_store(embeddings) -> InMemoryVectorStore:
    store = InMemoryVectorStore(embeddings)
    store.add_documents([Document(id=k, page_content=v) for k, v in FACTS.items()])
    return store


@pytest.fixture(scope="module")
def embeddings():
    return MiniLMEmbeddings()


@pytest.fixture()
def cache(tmp_path) -> LeanCache:
    return LeanCache(tmp_path / "cache")


@pytest.fixture()
def global_chain(embeddings, cache):
    """``with_cache({"context": RunnableLambda(context), ...} | prompt | llm | parser)`` with the
    module-level ``retriever`` over a fresh store; yields (chain, store, call log)."""
    global retriever
    store = new_store(embeddings)
    retriever = store.as_retriever(search_kwargs={"k": 1})
    log = CallLog()
    chain = {"context": RunnableLambda(context), "question": RunnablePassthrough()} | PROMPT
    chain = with_cache(chain | StandInChatModel(call_log=log) | StrOutputParser(), cache=cache)
    yield chain, store, log
    retriever = None


def test_a_document_edited_in_place_is_noticed_through_a_global_retriever(global_chain) -> None:
    chain, store, log = global_chain
    assert "687" in chain.invoke("How long is a year on Mars?") and len(log.calls) == 1
    assert "687" in chain.invoke("How long is a year on Mars?") and len(log.calls) == 1  # a hit
    # A paraphrase still hits: the entry's retrieval (run with the question it was made for)
    # still returns the same document.
    assert "687" in chain.invoke("What is the length of a year on Mars?") and len(log.calls) == 1
    store.add_documents([Document(id="mars", page_content=EDITED_MARS)])  # same id, new text
    assert "700" in chain.invoke("How long is a year on Mars?") and len(log.calls) == 2
    assert "700" in chain.invoke("What is the length of a year on Mars?")
    assert "700" in chain.invoke("How long is a year on Mars?") and len(log.calls) <= 3


def test_a_deleted_document_is_noticed_through_a_global_retriever(global_chain) -> None:
    chain, store, log = global_chain
    assert "687" in chain.invoke("How long is a year on Mars?")
    store.delete(["mars"])
    answer = chain.invoke("How long is a year on Mars?")
    assert len(log.calls) == 2 and "687" not in answer
    # An unrelated document's change leaves other entries served.
    assert "243" in chain.invoke("How long is a day on Venus?") and len(log.calls) == 3
    store.add_documents([Document(id="sun", page_content="The Sun is a G2V star.")])
    assert "243" in chain.invoke("How long is a day on Venus?") and len(log.calls) == 3


def test_async_sees_the_edit_too(global_chain) -> None:
    chain, store, log = global_chain

    async def run() -> None:
        assert "687" in await chain.ainvoke("How long is a year on Mars?")
        assert "687" in await chain.ainvoke("How long is a year on Mars?") and len(log.calls) == 1
        store.add_documents([Document(id="mars", page_content=EDITED_MARS)])
        assert "700" in await chain.ainvoke("How long is a year on Mars?") and len(log.calls) == 2
        pieces = [p async for p in chain.astream("How long is a year on Mars?")]
        assert "700" in "".join(pieces) and len(log.calls) == 2

    asyncio.run(run())


def test_a_retriever_step_and_a_faiss_store_are_checked_too(embeddings, cache) -> None:
    pytest.importorskip("faiss")
    from langchain_community.vectorstores import FAISS

    store = FAISS.from_documents(
        [Document(page_content=v) for v in FACTS.values()], embeddings, ids=list(FACTS)
    )
    log = CallLog()
    step = store.as_retriever(search_kwargs={"k": 1}) | (lambda docs: "\n".join(d.page_content for d in docs))
    chain = with_cache(
        {"context": step, "question": RunnablePassthrough()} | PROMPT | StandInChatModel(call_log=log) | StrOutputParser(),
        cache=cache,
    )
    assert "687" in chain.invoke("How long is a year on Mars?")
    assert "687" in chain.invoke("How long is a year on Mars?") and len(log.calls) == 1
    store.delete(["mars"])
    store.add_documents([Document(page_content=EDITED_MARS)], ids=["mars"])
    assert "700" in chain.invoke("How long is a year on Mars?") and len(log.calls) == 2


def test_a_chain_built_in_another_process_checks_entries_before_its_first_run(embeddings, cache) -> None:
    """Entries made by one chain object are checked by an equal chain built later (as another
    process would): it finds the global retriever when it is wrapped, without running first."""
    global retriever
    store = new_store(embeddings)
    retriever = store.as_retriever(search_kwargs={"k": 1})
    log = CallLog()

    def build():
        chain = {"context": RunnableLambda(context), "question": RunnablePassthrough()} | PROMPT
        return with_cache(chain | StandInChatModel(call_log=log) | StrOutputParser(), cache=cache)

    try:
        build().invoke("How long is a year on Mars?")
        assert "687" in build().invoke("How long is a year on Mars?") and len(log.calls) == 1
        store.add_documents([Document(id="mars", page_content=EDITED_MARS)])
        assert "700" in build().invoke("How long is a year on Mars?") and len(log.calls) == 2
    finally:
        retriever = None


# -- conversations ------------------------------------------------------------------------------
class NameModel(BaseChatModel):
    """A rule-based chat model: remembers the name the user last gave ("My name is X",
    "call me X") and says it when asked; counts its calls."""

    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "name-model"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
        self.calls += 1
        name = None
        for m in messages:
            if isinstance(m, HumanMessage):
                found = re.search(r"(?:my name is|call me) (\w+)", m.text, re.I)
                name = found.group(1) if found else name
        last = messages[-1].text
        if "what is my name" in last.lower():
            text = f"Your name is {name}." if name else "I don't know your name."
        elif "tesla" in " ".join(m.text.lower() for m in messages) and last.strip() == "no":
            text = "Then keep your Tesla shares."
        elif "apple" in " ".join(m.text.lower() for m in messages) and last.strip() == "no":
            text = "Then keep your Apple shares."
        else:
            text = f"Noted: {last}"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def history_chain(model: NameModel, sessions: dict[str, InMemoryChatMessageHistory]):
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{question}")])

    def session(session_id: str) -> InMemoryChatMessageHistory:
        return sessions.setdefault(session_id, InMemoryChatMessageHistory())

    return RunnableWithMessageHistory(
        prompt | model | StrOutputParser(), session, input_messages_key="question", history_messages_key="history"
    )


def test_a_history_runnable_keys_on_the_history(cache) -> None:
    model, sessions = NameModel(), {}
    chain = with_cache(history_chain(model, sessions), key="question", cache=cache)
    config = {"configurable": {"session_id": "u1"}}
    chain.invoke({"question": "My name is Bob."}, config)
    assert chain.invoke({"question": "What is my name?"}, config) == "Your name is Bob."
    chain.invoke({"question": "Actually, call me Alice."}, config)
    assert chain.invoke({"question": "What is my name?"}, config) == "Your name is Alice."
    assert model.calls == 4
    assert [m.text for m in sessions["u1"].messages][-2:] == ["What is my name?", "Your name is Alice."]


def test_a_hit_is_written_into_the_history(cache) -> None:
    model, sessions = NameModel(), {}
    chain = with_cache(history_chain(model, sessions), key="question", cache=cache)
    first = chain.invoke({"question": "What is my name?"}, {"configurable": {"session_id": "a"}})
    # Another conversation at the same point (no history yet) asks the same: served, and its
    # history records the turn as if the model had answered.
    second = chain.invoke({"question": "What is my name?"}, {"configurable": {"session_id": "b"}})
    assert first == second == "I don't know your name." and model.calls == 1
    assert [(m.type, m.text) for m in sessions["b"].messages] == [
        ("human", "What is my name?"),
        ("ai", "I don't know your name."),
    ]
    # The same session asking again has a longer history now: the model answers.
    chain.invoke({"question": "What is my name?"}, {"configurable": {"session_id": "a"}})
    assert model.calls == 2 and len(sessions["a"].messages) == 4

    async def run() -> None:
        await chain.ainvoke({"question": "What is my name?"}, {"configurable": {"session_id": "c"}})

    asyncio.run(run())
    assert model.calls == 2 and len(sessions["c"].messages) == 2


def test_a_history_runnable_inside_the_chain_is_refused_with_the_fix(cache) -> None:
    inner = history_chain(NameModel(), {})
    with pytest.raises(ValueError, match="Wrap the history runnable itself"):
        with_cache(inner | RunnableLambda(str.upper), key="question", cache=cache)


def test_a_callable_key_keeps_every_earlier_message_whole(cache) -> None:
    model = NameModel()
    chain = with_cache(model | StrOutputParser(), key=lambda x: x[-1].content, cache=cache)

    def conversation(company: str) -> list[BaseMessage]:
        return [
            HumanMessage(f"Should I sell my {company} shares now?"),
            AIMessage("Do you need the money soon?"),
            HumanMessage("no"),
        ]

    assert chain.invoke(conversation("Tesla")) == "Then keep your Tesla shares."
    # "no" is inside "now": the earlier question must stay part of the key, whole.
    assert chain.invoke(conversation("Apple")) == "Then keep your Apple shares."
    assert model.calls == 2
    assert chain.invoke(conversation("Tesla")) == "Then keep your Tesla shares." and model.calls == 2
    # An earlier message equal to the follow-up stays too: only the last one is the question.
    twice = [HumanMessage("no"), AIMessage("Do you need the money soon?"), HumanMessage("no")]
    chain.invoke(twice)
    assert model.calls == 3


store_read_directly: Any = None


def search_directly(question: str) -> str:
    return "\n".join(d.page_content for d in store_read_directly.similarity_search(question, k=1))


def test_a_store_searched_without_a_retriever_is_named_in_a_warning(embeddings, cache, caplog) -> None:
    global store_read_directly
    store_read_directly = new_store(embeddings)
    try:
        with caplog.at_level("WARNING", logger="lean_plugins.cache"):
            with_cache({"context": RunnableLambda(search_directly), "question": RunnablePassthrough()} | PROMPT
                       | StandInChatModel() | StrOutputParser(), cache=cache)  # fmt: skip
        assert "search_directly searches a InMemoryVectorStore directly" in caplog.text
        caplog.clear()
        with caplog.at_level("WARNING", logger="lean_plugins.cache"):  # the README's shape: no warning
            with_cache({"context": RunnableLambda(context), "question": RunnablePassthrough()} | PROMPT
                       | StandInChatModel() | StrOutputParser(), cache=cache)  # fmt: skip
        assert "directly" not in caplog.text
    finally:
        store_read_directly = None
