"""Red-team findings: what a user who follows README.md, docs/cache.md and docs/budget.md can do
to get a wrong answer served, or lose a tool call, from the cache and the output budget.

Each test is the smallest real reproduction (real SQLite + FAISS cache in ``tmp_path``, real
LangChain / LlamaIndex objects; fakes only for provider models). A test marked ``xfail(strict)``
is a known defect: it flips to a failure (XPASS) when the defect is fixed, so the mark must then
be removed.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

pytest.importorskip("gptcache")

from langchain_core.language_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField, RunnableLambda
from lean_plugins.langchain import with_cache, with_output_budget

from lean_plugins.budget import OutputBudget
from lean_plugins.cache import LeanCache

QUESTION = "What is the capital of France?"


# -- cache: wrong answers served ------------------------------------------------------------------
def test_with_cache_does_not_serve_one_configurable_alternative_for_another(tmp_path: Path) -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    model_a = FakeListChatModel(responses=["answer from model A"])
    model_b = FakeListChatModel(responses=["answer from model B"])
    model = model_a.configurable_alternatives(ConfigurableField(id="llm"), default_key="a", b=model_b)
    chain = with_cache(
        prompt | model | StrOutputParser(), key="question", cache=LeanCache(path=tmp_path / "c", mode="exact")
    )
    assert chain.invoke({"question": QUESTION}) == "answer from model A"
    answer = chain.invoke({"question": QUESTION}, config={"configurable": {"llm": "b"}})
    assert answer == "answer from model B"


def test_with_cache_key_field_keeps_the_other_input_fields_apart(tmp_path: Path) -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "Answer in {language}: {question}")])
    chain = with_cache(
        prompt | RunnableLambda(lambda value: value.to_string()),
        key="question",
        cache=LeanCache(path=tmp_path / "c", mode="exact"),
    )
    assert chain.invoke({"question": "Say hello", "language": "French"}) == "Human: Answer in French: Say hello"
    answer = chain.invoke({"question": "Say hello", "language": "German"})
    assert answer == "Human: Answer in German: Say hello"


def test_cache_does_not_serve_a_soft_yolk_answer_for_a_hard_yolk_question(tmp_path: Path) -> None:
    cache = LeanCache(path=tmp_path / "c")
    cache.put("How long should I boil an egg for a soft yolk?", "About 6 minutes.", namespace="eggs")
    assert cache.lookup("How long should I boil an egg for a hard yolk?", namespace="eggs") is None


# -- budget: tool calls lost -----------------------------------------------------------------------
TOOL_CALL = {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}


def test_budget_keeps_a_tool_call_only_reply(tmp_path: Path) -> None:
    def model() -> GenericFakeChatModel:
        # repeat(): the fake can answer the whole-answer call the budget falls back to.
        return GenericFakeChatModel(messages=itertools.repeat(AIMessage(content="", tool_calls=[TOOL_CALL])))

    assert model().invoke("Weather in Paris?").tool_calls == [TOOL_CALL]
    reply = with_output_budget(model(), OutputBudget(100)).invoke("Weather in Paris?")
    assert reply.tool_calls == [TOOL_CALL]


# -- cache: the pipeline changed after it was wrapped -----------------------------------------------
def test_with_cache_does_not_serve_an_answer_made_before_documents_were_added(tmp_path: Path) -> None:
    from langchain_core.documents import Document
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_core.vectorstores import InMemoryVectorStore

    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents([Document("Venus has no moons at all.")])
    chain = with_cache(
        store.as_retriever(search_kwargs={"k": 5})
        | RunnableLambda(lambda docs: " | ".join(sorted(d.page_content for d in docs))),
        cache=LeanCache(path=tmp_path / "c", mode="exact"),
    )
    assert chain.invoke("Does Jupiter have moons?") == "Venus has no moons at all."
    store.add_documents([Document("Jupiter has 95 known moons.")])
    assert "Jupiter has 95 known moons." in chain.invoke("Does Jupiter have moons?")


@pytest.fixture(scope="module")
def planets_index():
    from llama_index.core import Document, VectorStoreIndex

    from lean_plugins.demo.llama_index_parts import MiniLMEmbedding

    docs = [Document(text="Mars has two moons, Phobos and Deimos."), Document(text="Venus has no moons at all.")]
    return VectorStoreIndex.from_documents(docs, embed_model=MiniLMEmbedding())


def _planets_engine(index, tmp_path: Path):
    from lean_plugins.llama_index import CachedQueryEngine

    from lean_plugins.demo.llama_index_parts import StandInLLM
    from lean_plugins.demo.standin import CallLog

    log = CallLog()
    engine = index.as_query_engine(llm=StandInLLM(call_log=log), similarity_top_k=1)
    return CachedQueryEngine(engine, cache=LeanCache(tmp_path / "c")), log


def test_cached_query_engine_keys_on_the_query_bundles_retrieval_strings(planets_index, tmp_path: Path) -> None:
    from llama_index.core.schema import QueryBundle

    cached, _ = _planets_engine(planets_index, tmp_path)
    mars = cached.query(QueryBundle("How many moons does it have?", custom_embedding_strs=["Mars moons"]))
    assert "Phobos" in str(mars)
    venus = cached.query(QueryBundle("How many moons does it have?", custom_embedding_strs=["Venus moons"]))
    assert "Venus" in str(venus)


@pytest.mark.xfail(
    strict=True,
    reason="the engine itself, built by as_query_engine() before index.insert(), keeps the node ids "
    "of that time and answers 'Venus' again (CachedQueryEngine does re-run it after the insert: "
    "tests/integrations/llama_index/test_cached_query_engine.py)",
)
def test_cached_query_engine_does_not_serve_an_answer_made_before_an_insert(tmp_path: Path) -> None:
    from llama_index.core import Document, VectorStoreIndex

    from lean_plugins.demo.llama_index_parts import MiniLMEmbedding

    index = VectorStoreIndex.from_documents(
        [Document(text="Venus has no moons at all.")], embed_model=MiniLMEmbedding()
    )
    cached, _ = _planets_engine(index, tmp_path)
    assert "Venus" in str(cached.query("Does Jupiter have moons?"))
    index.insert(Document(text="Jupiter has 95 known moons."))
    assert "Jupiter has 95 known moons" in str(cached.query("Does Jupiter have moons?"))


# -- cache: functions that differ only in state the description cannot see -------------------------
def _with_default(lang: str):
    def translate(question: str, lang: str = lang) -> str:
        return f"{question} -> {lang}"

    return translate


class _Translator:
    def __init__(self, lang: str) -> None:
        self.lang = lang

    def __call__(self, question: str) -> str:
        return f"{question} -> {self.lang}"

    def run(self, question: str) -> str:
        return f"{question} -> {self.lang}"


@pytest.mark.parametrize(
    "make",
    [_with_default, lambda lang: _Translator(lang), lambda lang: _Translator(lang).run],
    ids=["default-argument", "callable-object", "bound-method"],
)
def test_with_cache_tells_functions_apart_by_their_state(make, tmp_path: Path) -> None:
    cache = LeanCache(path=tmp_path / "c", mode="exact")
    assert with_cache(RunnableLambda(make("fr")), cache=cache).invoke("hello") == "hello -> fr"
    assert with_cache(RunnableLambda(make("de")), cache=cache).invoke("hello") == "hello -> de"


# -- LlamaIndex: CachedLLM around tool-calling and custom LLMs ------------------------------------
def test_cached_budgeted_function_calling_llm_still_calls_tools(tmp_path: Path) -> None:
    from lean_plugins.llama_index import CachedLLM
    from lean_plugins.llama_index import with_output_budget as li_with_output_budget
    from llama_index.core.tools import FunctionTool

    from tests.integrations.llama_index.test_budget import _tool_fake, weather

    llm = CachedLLM(li_with_output_budget(_tool_fake(), 200), cache=LeanCache(path=tmp_path / "c"))
    reply = llm.chat_with_tools([FunctionTool.from_defaults(weather)], user_msg="What is the weather in Paris?")
    calls = llm.get_tool_calls_from_response(reply, error_on_no_tool_call=False)
    assert [call.tool_name for call in calls] == ["weather"]


def test_cached_llm_tells_llms_apart_by_their_private_settings(tmp_path: Path) -> None:
    from lean_plugins.llama_index import CachedLLM
    from llama_index.core.llms import CompletionResponse, LLMMetadata
    from llama_index.core.llms.callbacks import llm_completion_callback
    from llama_index.core.llms.custom import CustomLLM
    from pydantic import PrivateAttr

    class PersonaLLM(CustomLLM):
        _persona: str = PrivateAttr(default="pirate")

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="persona")

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: object) -> CompletionResponse:
            return CompletionResponse(text=f"the {self._persona} answers")

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: object):
            raise NotImplementedError

    cache = LeanCache(path=tmp_path / "c")
    pirate, robot = PersonaLLM(), PersonaLLM()
    robot._persona = "robot"
    assert CachedLLM(pirate, cache=cache).complete(QUESTION).text == "the pirate answers"
    assert CachedLLM(robot, cache=cache).complete(QUESTION).text == "the robot answers"


def test_with_cache_callable_key_keeps_conversations_apart(tmp_path: Path) -> None:
    from langchain_core.messages import HumanMessage

    def answer(value: dict) -> str:
        return "about " + value["messages"][0].content.split()[-1].rstrip(".")

    chain = with_cache(
        RunnableLambda(answer),
        key=lambda value: value["messages"][-1].content,
        cache=LeanCache(path=tmp_path / "c", mode="exact"),
    )

    def conversation(city: str) -> dict:
        return {"messages": [HumanMessage(f"Tell me about {city}."), AIMessage(f"{city} is old."), HumanMessage("How old is it?")]}

    assert chain.invoke(conversation("Rome")) == "about Rome"
    assert chain.invoke(conversation("Athens")) == "about Athens"


def test_cache_does_not_serve_a_trillions_answer_for_billions(tmp_path: Path) -> None:
    cache = LeanCache(path=tmp_path / "c")
    cache.put("What is the GDP of the US in trillions?", "About 27 trillion dollars.", namespace="gdp")
    assert cache.lookup("What is the GDP of the US in billions?", namespace="gdp") is None
