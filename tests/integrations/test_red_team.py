"""Red-team findings: what a user who follows README.md, docs/cache.md and docs/budget.md can do
to get a wrong answer served, or lose a tool call, from the cache and the output budget.

Each test is the smallest real reproduction (real SQLite + FAISS cache in ``tmp_path``, real
LangChain / LlamaIndex objects; fakes only for provider models). A test marked ``xfail(strict)``
is a known defect: it flips to a failure (XPASS) when the defect is fixed, so the mark must then
be removed.
"""

from __future__ import annotations

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
@pytest.mark.xfail(
    strict=True,
    reason="with_cache keys on the wrapped chain as built; config['configurable'] (another model "
    "chosen at run time) is not in the key, so model A's answer is served for model B",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="with_cache(key='question') drops the input's other fields from the key: the answer "
    "made for language=French is served for language=German",
)
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


@pytest.mark.xfail(
    strict=True,
    reason="the semantic guard has no soft/hard antonym: 'soft yolk' is served for 'hard yolk'",
)
def test_cache_does_not_serve_a_soft_yolk_answer_for_a_hard_yolk_question(tmp_path: Path) -> None:
    cache = LeanCache(path=tmp_path / "c")
    cache.put("How long should I boil an egg for a soft yolk?", "About 6 minutes.", namespace="eggs")
    assert cache.lookup("How long should I boil an egg for a hard yolk?", namespace="eggs") is None


# -- budget: tool calls lost -----------------------------------------------------------------------
TOOL_CALL = {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}


@pytest.mark.xfail(
    strict=True,
    reason="BudgetedChatModel._stream trusts the inner model's _stream: a model whose stream "
    "yields nothing (GenericFakeChatModel with a tool-call-only reply) gives an empty answer, "
    "the tool call that model.invoke returns is dropped",
)
def test_budget_keeps_a_tool_call_only_reply(tmp_path: Path) -> None:
    def model() -> GenericFakeChatModel:
        return GenericFakeChatModel(messages=iter([AIMessage(content="", tool_calls=[TOOL_CALL])]))

    assert model().invoke("Weather in Paris?").tool_calls == [TOOL_CALL]
    reply = with_output_budget(model(), OutputBudget(100)).invoke("Weather in Paris?")
    assert reply.tool_calls == [TOOL_CALL]
