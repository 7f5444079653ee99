"""lean_plugins.llama_index.CachedLLM: complete / chat / async / streaming from the cache, and
as Settings.llm under a real VectorStoreIndex query engine with MiniLM embeddings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import PrivateAttr

pytest.importorskip("gptcache")
pytest.importorskip("llama_index.core")

from lean_plugins.llama_index import (
    CachedLLM,
    OutputBudgetCallbackHandler,
    OutputBudgetHandler,
    with_output_budget,
)
from lean_plugins.llama_index.cached_llm import _advance, llm_identity
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.types import CompletionResponseGen, LLMMetadata
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import ChatMessage, CompletionResponse, MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from lean_plugins.budget import OutputBudget
from lean_plugins.cache import LeanCache
from lean_plugins.embeddings import get_encoder
from lean_plugins.ledger import Ledger
from tests.cache_prompts import EMAIL_PAIRS, LONG_PAIRS, RAG_FRANCE, RAG_GERMANY


class CountingMockLLM(MockLLM):
    """MockLLM that counts the calls that reach it (what a paid API would bill).

    The count is private state, not a field: fields are the LLM's configuration, which is
    part of the cache key."""

    _calls: int = PrivateAttr(default=0)

    @property
    def calls(self) -> int:
        return self._calls

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._calls += 1
        return super().complete(prompt, formatted=formatted, **kwargs)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        self._calls += 1
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


# -- keys hold everything that changes the answer (issue 13) ----------------------------------------
class TunableMockLLM(CountingMockLLM):
    """A MockLLM with the generation settings a provider's LLM has (not all in LLMMetadata)."""

    temperature: float = 0.0
    top_p: float = 1.0
    api_key: str = "sk-test-secret"

    def __init__(
        self, temperature: float = 0.0, top_p: float = 1.0, api_key: str = "sk-test-secret", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)  # MockLLM's __init__ names its own fields only
        self.temperature, self.top_p, self.api_key = temperature, top_p, api_key


def _calls_for(variants: list[CachedLLM], prompt: str) -> int:
    for llm in variants:
        llm.complete(prompt)
    return sum(llm.llm.calls for llm in variants)


def test_namespace_holds_the_wrapped_llms_own_configuration(tmp_path: Path) -> None:
    cache = LeanCache(path=tmp_path)
    variants = [
        CachedLLM(llm=TunableMockLLM(max_tokens=4), cache=cache),
        CachedLLM(llm=TunableMockLLM(max_tokens=4, temperature=0.9), cache=cache),
        CachedLLM(llm=TunableMockLLM(max_tokens=4, top_p=0.5), cache=cache),
        CachedLLM(llm=TunableMockLLM(max_tokens=4, system_prompt="Answer in French."), cache=cache),
    ]
    assert _calls_for(variants, "How long is a day on Mars?") == len(variants)
    # A changed field of the same wrapped object is a different configuration too.
    variants[0].llm.temperature = 0.7
    variants[0].complete("How long is a day on Mars?")
    assert variants[0].llm.calls == 2
    # The API key is not part of the identity (rotating it keeps the cache), and never stored raw.
    rotated = CachedLLM(llm=TunableMockLLM(max_tokens=4, temperature=0.9, api_key="sk-other"), cache=cache)
    rotated.complete("How long is a day on Mars?")
    assert rotated.llm.calls == 0
    assert "sk-test-secret" not in llm_identity(variants[0].llm)


def test_per_call_arguments_are_in_the_key(llm: CachedLLM, inner: CountingMockLLM) -> None:
    llm.complete("How long is a day on Mars?")
    llm.complete("How long is a day on Mars?", temperature=0.5)
    llm.complete("How long is a day on Mars?", formatted=True)
    assert inner.calls == 3


def test_chat_keys_hold_roles_tool_calls_and_blocks(tmp_path: Path) -> None:
    inner = MockLLM(max_tokens=6, is_chat_model=True)
    llm = CachedLLM(llm=inner, cache=LeanCache(path=tmp_path))

    def turn(args: str, call_id: str = "call_1") -> list[ChatMessage]:
        call = {"id": call_id, "type": "function", "function": {"name": "weather", "arguments": args}}
        return [
            ChatMessage(role="user", content="What is the weather?"),
            ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [call]}),
            ChatMessage(role="tool", content="18 C", additional_kwargs={"tool_call_id": call_id}),
            ChatMessage(role="user", content="Should I take a coat?"),
        ]

    with Ledger() as ledger:
        llm.chat(turn('{"city": "Paris"}'))
        llm.chat(turn('{"city": "Rome"}'))
        llm.chat(turn('{"city": "Paris"}', call_id="call_2"))
        llm.chat([ChatMessage(role="user", content="What is the weather?\nassistant: 18 C"),
                  ChatMessage(role="user", content="Should I take a coat?")])
        llm.chat(turn('{"city": "Paris"}'))  # the only repeat
    assert len([e for e in ledger.events if e.layer == "cache"]) == 1


def test_a_query_engine_prompt_is_matched_on_its_query_within_identical_context(
    llm: CachedLLM, inner: CountingMockLLM
) -> None:
    template = (
        "Context information is below.\n---------------------\n{context}\n---------------------\n"
        "Given the context information and not prior knowledge, answer the query.\nQuery: {q}\nAnswer: "
    )
    context = "A day on Mars lasts 24 hours and 37 minutes, but a year on Mars lasts 687 Earth days."
    llm.complete(template.format(context=context, q="How long is a day on Mars?"))
    llm.complete(template.format(context=context, q="How long is a day on Mars?"))
    assert inner.calls == 1
    # a paraphrase of the query, within the same context: the core's rule (keys.split_prompt)
    llm.complete(template.format(context=context, q="What is the length of a day on Mars?"))
    assert inner.calls == 1
    llm.complete(template.format(context=context, q="How long is a year on Mars?"))
    assert inner.calls == 2
    llm.complete(template.format(context=context.replace("37", "40"), q="How long is a day on Mars?"))
    assert inner.calls == 3


@pytest.mark.parametrize(
    ("first", "second"),
    [LONG_PAIRS[0], LONG_PAIRS[2], *EMAIL_PAIRS, (RAG_FRANCE, RAG_GERMANY)],
    ids=["long", "long-instruction-first", "email-following", "email-this", "email-paragraph", "rag-one-string"],
)
def test_long_prompts_pasted_text_and_other_questions_are_never_served_each_others_answer(
    llm: CachedLLM, inner: CountingMockLLM, first: str, second: str
) -> None:
    # Old code: "Summarize ..." / "Reply politely to the following email: ..." (a 56-word
    # single-line message) was served at the LLM level.
    llm.complete(first)
    llm.complete(second)
    assert inner.calls == 2
    llm.chat([ChatMessage(role="user", content=first)])
    llm.chat([ChatMessage(role="user", content=second)])
    assert inner.calls == 4
    llm.complete(second)
    assert inner.calls == 4, "an exact repeat is still served"


def test_bad_prompts_are_the_callers_error(llm: CachedLLM, inner: CountingMockLLM) -> None:
    with pytest.raises(TypeError, match="must be a str"):
        llm.complete(None)  # type: ignore[arg-type]
    llm.complete("How old is the Sun?")
    llm.complete("How old is the Sun?")
    assert inner.calls == 1


@pytest.mark.slow
def test_zero_config_query_engine_never_serves_another_questions_answer(tmp_path: Path) -> None:
    """``CachedLLM`` as ``Settings.llm`` under ``VectorStoreIndex(...).as_query_engine()`` over
    the demo knowledge base, with no cache settings, at ``similarity_top_k`` 1 and 2."""
    from lean_plugins.demo.knowledge import load_knowledge_base
    from lean_plugins.demo.llama_index_parts import StandInLLM
    from tests.cache_rag_questions import QUESTIONS

    previous_llm, previous_embed = Settings._llm, Settings._embed_model
    inner = StandInLLM()
    Settings.llm = CachedLLM(llm=inner, cache=LeanCache(path=tmp_path))
    Settings.embed_model = MiniLMEmbedding()
    try:
        index = VectorStoreIndex.from_documents([Document(text=s.text) for s in load_knowledge_base()])
        for top_k in (1, 2):
            engine = index.as_query_engine(similarity_top_k=top_k)
            served, answers = [], {}
            for question in QUESTIONS:
                calls = len(inner.call_log.calls)
                answers[question] = str(engine.query(question))
                if len(inner.call_log.calls) == calls:
                    served.append(question)
            assert served == [], f"top_k={top_k}: served another question's answer for {served}"
            calls = len(inner.call_log.calls)
            assert str(engine.query(QUESTIONS[0])) == answers[QUESTIONS[0]]  # an exact repeat is a hit
            assert len(inner.call_log.calls) == calls
    finally:
        Settings._llm, Settings._embed_model = previous_llm, previous_embed


# -- streams of running text (issue 26) -----------------------------------------------------------
class RunningTextLLM(CustomLLM):
    """Streams the running text only (``delta`` None), as some LLMs do; counts its calls."""

    answer: str = "Rollo led the Normans into Normandy."
    _calls: int = PrivateAttr(default=0)

    @property
    def calls(self) -> int:
        return self._calls

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="running-text")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self._calls += 1
        return CompletionResponse(text=self.answer)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        self._calls += 1

        def gen() -> CompletionResponseGen:
            text = ""
            for word in self.answer.split(" "):
                text = f"{text} {word}" if text else word
                yield CompletionResponse(text=text, delta=None)

        return gen()


def test_a_stream_of_running_text_is_rebuilt_and_cached_whole(tmp_path: Path) -> None:
    inner = RunningTextLLM()
    llm = CachedLLM(llm=inner, cache=LeanCache(path=tmp_path, mode="exact"))
    pieces = list(llm.stream_complete("Who led the Normans?"))
    # Old code: every piece was '' (rebuilt from delta only), and '' was cached and served.
    assert pieces[-1].text == inner.answer and "".join(p.delta for p in pieces) == inner.answer
    assert llm.complete("Who led the Normans?").text == inner.answer and inner.calls == 1
    question = [ChatMessage(role="user", content="Who founded Normandy?")]
    streamed = list(llm.stream_chat(question))  # CustomLLM streams chat from stream_complete
    assert streamed[-1].message.content == inner.answer
    assert llm.chat(question).message.content == inner.answer and inner.calls == 2


async def test_an_async_stream_of_running_text_is_rebuilt_and_cached_whole(tmp_path: Path) -> None:
    inner = RunningTextLLM()
    llm = CachedLLM(llm=inner, cache=LeanCache(path=tmp_path, mode="exact"))
    pieces = [p async for p in await llm.astream_complete("Who led the Normans?")]
    assert pieces[-1].text == inner.answer and "".join(p.delta for p in pieces) == inner.answer
    assert (await llm.acomplete("Who led the Normans?")).text == inner.answer
    question = [ChatMessage(role="user", content="Who founded Normandy?")]
    streamed = [r async for r in await llm.astream_chat(question)]
    assert streamed[-1].message.content == inner.answer
    assert (await llm.achat(question)).message.content == inner.answer and inner.calls == 2


@pytest.mark.parametrize(
    ("text", "delta", "running", "expected"),
    [
        ("Rollo", " led", "Rollo led", ("Rollo led", " led")),  # a delta: used as it is
        ("Rollo", None, "Rollo led", ("Rollo led", " led")),  # running text only
        ("Rollo", "", "Rollo led", ("Rollo led", " led")),  # an empty delta beside the running text
        ("Rollo led", "", "", ("Rollo led", "")),  # an empty piece (usage, finish reason)
        ("Rollo led", None, "Rolf led", ("Rolf led", "Rolf led")),  # a running text that restarts
    ],
)
def test_a_streamed_piece_advances_the_answer(text: str, delta: str | None, running: str, expected: tuple) -> None:
    assert _advance(text, delta, running) == expected


def test_an_empty_stream_is_never_cached(tmp_path: Path) -> None:
    inner = RunningTextLLM(answer="")
    llm = CachedLLM(llm=inner, cache=LeanCache(path=tmp_path, mode="exact"))
    list(llm.stream_complete("Say nothing."))
    llm.complete("Say nothing.")
    assert inner.calls == 2


# -- the output budget's handlers book each real call once (issue 26) -------------------------------
class ScriptedStreamLLM(RunningTextLLM):
    """Streams word by word with deltas, like a provider."""

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        self._calls += 1

        def gen() -> CompletionResponseGen:
            text = ""
            for piece in re.findall(r"\S+\s*", self.answer):
                text += piece
                yield CompletionResponse(text=text, delta=piece)

        return gen()


@pytest.fixture(params=["event handler", "callback handler"])
def budget_handler(request: pytest.FixtureRequest):
    """The README's handler registration: the instrumentation dispatcher, or Settings'
    CallbackManager (which every LLM built afterwards takes)."""
    budget = OutputBudget(100, record_usage=True)
    if request.param == "event handler":
        handler = OutputBudgetHandler(budget)
        get_dispatcher().add_event_handler(handler)
        yield handler
        get_dispatcher().event_handlers.remove(handler)
    else:
        handler = OutputBudgetCallbackHandler(budget)
        previous = Settings._callback_manager
        Settings.callback_manager = CallbackManager([handler])
        yield handler
        Settings._callback_manager = previous


def _llm_events(ledger: Ledger) -> list[str]:
    return [e.kind for e in ledger.events if e.layer == "llm"]


@pytest.mark.parametrize("order", ["cache(budget(llm))", "budget(cache(llm))"])
def test_a_budgeted_cached_llm_books_each_real_call_once(tmp_path: Path, budget_handler: Any, order: str) -> None:
    inner = ScriptedStreamLLM()
    cache = LeanCache(path=tmp_path, mode="exact")
    if order == "cache(budget(llm))":
        llm = CachedLLM(with_output_budget(inner, 50), cache=cache)
    else:
        llm = with_output_budget(CachedLLM(inner, cache=cache), 50)
    question = [ChatMessage(role="user", content="Who founded Normandy?")]
    with Ledger() as ledger:
        llm.complete("Who led the Normans?")
        llm.complete("Who led the Normans?")
        list(llm.stream_complete("Where is Normandy?"))
        llm.chat(question)
        list(llm.stream_chat(question))
    # Old code: 3 real calls booked 6 times in the ledger.
    assert inner.calls == 3 and len(_llm_events(ledger)) == 3
    assert [e.kind for e in ledger.events if e.layer == "cache"] == ["hit", "hit"]


async def test_async_budgeted_cached_llm_books_each_real_call_once(tmp_path: Path, budget_handler: Any) -> None:
    inner = ScriptedStreamLLM()
    llm = CachedLLM(with_output_budget(inner, 50), cache=LeanCache(path=tmp_path, mode="exact"))
    with Ledger() as ledger:
        await llm.acomplete("Who led the Normans?")
        [r async for r in await llm.astream_complete("Where is Normandy?")]
        await llm.acomplete("Who led the Normans?")
    assert inner.calls == 2 and len(_llm_events(ledger)) == 2
    assert [e.kind for e in ledger.events if e.layer == "cache"] == ["hit"]


def test_a_budgeted_cached_llm_under_a_query_engine_books_each_real_call_once(
    tmp_path: Path, budget_handler: Any
) -> None:
    from llama_index.core.embeddings import MockEmbedding

    inner = ScriptedStreamLLM()
    llm = CachedLLM(with_output_budget(inner, 50), cache=LeanCache(path=tmp_path, mode="exact"))
    index = VectorStoreIndex.from_documents(
        [Document(text="Rollo led the Normans into Normandy in 911.")], embed_model=MockEmbedding(embed_dim=8)
    )
    engine = index.as_query_engine(llm=llm)
    with Ledger() as ledger:
        first = engine.query("Who led the Normans?")
        again = engine.query("Who led the Normans?")
    assert str(first) == str(again) == inner.answer
    assert inner.calls == 1 and len(_llm_events(ledger)) == 1
    assert [e.kind for e in ledger.events if e.layer == "cache"] == ["hit"]
