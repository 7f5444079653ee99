"""lean_plugins.langchain.LeanCache: LangChain's standard cache suites plus real model runs."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("gptcache")
pytest.importorskip("langchain_tests")

from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.language_models import FakeListChatModel, FakeListLLM
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, Generation
from langchain_tests.integration_tests import AsyncCacheTestSuite, SyncCacheTestSuite
from lean_plugins.langchain import LeanCache

from lean_plugins.ledger import Ledger
from lean_plugins.tokens import count_tokens


class TestLeanCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, tmp_path: Path) -> LeanCache:
        return LeanCache(path=tmp_path / "lc")


class TestLeanCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, tmp_path: Path) -> LeanCache:
        return LeanCache(path=tmp_path / "lc")


@pytest.fixture
def lc_cache(tmp_path: Path):
    cache = LeanCache(path=tmp_path / "lc")
    previous = get_llm_cache()
    yield cache
    set_llm_cache(previous)


def test_global_cache_serves_an_llm_repeat_and_a_paraphrase(lc_cache: LeanCache) -> None:
    set_llm_cache(lc_cache)
    llm = FakeListLLM(responses=["first answer", "second answer", "third answer"])
    assert llm.invoke("How tall is the Eiffel Tower?") == "first answer"
    assert llm.invoke("How tall is the Eiffel Tower?") == "first answer"
    assert llm.invoke("What is the height of the Eiffel Tower?") == "first answer"
    assert llm.invoke("How tall is the Berlin TV Tower?") == "second answer"


def test_per_model_cache_keeps_chat_generations_and_separates_models(lc_cache: LeanCache) -> None:
    chat_a = FakeListChatModel(responses=["Paris.", "unused"], cache=lc_cache)
    chat_b = FakeListChatModel(responses=["from model b"], cache=lc_cache, sleep=0.0)
    question = [HumanMessage("How tall is the Eiffel Tower?")]
    first = chat_a.invoke(question)
    again = chat_a.invoke([HumanMessage("how tall is the Eiffel Tower")])
    assert isinstance(again, AIMessage) and again.content == first.content == "Paris."
    # Different model parameters, different llm_string: a different namespace.
    assert chat_b.invoke(question).content == "from model b"


async def test_async_chat_model_uses_the_cache(lc_cache: LeanCache) -> None:
    chat = FakeListChatModel(responses=["Paris.", "unused"], cache=lc_cache)
    question = [HumanMessage("How tall is the Eiffel Tower?")]
    assert (await chat.ainvoke(question)).content == "Paris."
    assert (await chat.ainvoke(question)).content == "Paris."


def test_stores_full_generations_as_json_and_records_the_saving(lc_cache: LeanCache) -> None:
    gens = [
        ChatGeneration(
            message=AIMessage("The capital is Paris.", response_metadata={"x": 1}), generation_info={"a": 2}
        ),
        Generation(text="second"),
    ]
    lc_cache.update("How tall is the Eiffel Tower?", '{"model_name": "gpt-4o-mini"}', gens)
    with Ledger() as ledger:
        assert lc_cache.lookup("How tall is the Eiffel Tower?", '{"model_name": "gpt-4o-mini"}') == gens
    (event,) = [e for e in ledger.events if e.layer == "cache"]
    assert event.model == "gpt-4o-mini"
    assert event.output_before == count_tokens("The capital is Paris.") + count_tokens("second") == 6
    assert lc_cache.lookup("How tall is the Eiffel Tower?", '{"model_name": "gpt-4o"}') is None


def test_tenants_are_isolated(tmp_path: Path) -> None:
    a = LeanCache(path=tmp_path, tenant="a")
    b = LeanCache(cache=a.cache, tenant="b")
    a.update("q", "llm", [Generation(text="for a")])
    assert b.lookup("q", "llm") is None
    assert a.lookup("q", "llm") == [Generation(text="for a")]
    b.clear(llm_string="llm")
    assert a.lookup("q", "llm") == [Generation(text="for a")]
