"""Trust of the agent middleware: what a cache may serve to a tool-calling request, which
request a cache entry belongs to, and how hits are told from model calls.

Real parts throughout: ``langchain.agents.create_agent``, LangChain's own
``ContextEditingMiddleware``, the core cache (with its semantic verifier where the rule is
about paraphrases) and LangChain's ``BaseCache`` path; the only fake is the paid model
(``agent_fakes.ScriptedChatModel``, a real ``BaseChatModel`` that calls tools with the
arguments it reads from what it was sent).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent
from langchain.agents.middleware import ContextEditingMiddleware
from langchain.agents.middleware.context_editing import ClearToolUsesEdit
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from lean_plugins.langchain import LeanCache as LangChainLeanCache
from lean_plugins.langchain.cache import served_from_cache
from lean_plugins.langchain.middleware import (
    LeanBudgetMiddleware,
    LeanCacheMiddleware,
    LeanPrefixMiddleware,
)

from lean_plugins.cache import LeanCache as CoreLeanCache
from lean_plugins.ledger import Ledger, is_cache_hit
from tests.integrations.langchain.agent_fakes import (
    ScriptedChatModel,
    recording_tool_results,
    search_then_answer,
)
from tests.integrations.langchain.test_middleware import ANSWER, GOAL, RESULT, ask, final, search


@tool
def lookup(key: str) -> str:
    """Look a key up in the registry."""
    return f"registry entry for {key!r}: 42"


def calls_of(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (c["name"], json.dumps(c["args"], sort_keys=True))
        for m in result["messages"] if isinstance(m, AIMessage) for c in m.tool_calls
    ]  # fmt: skip


# -- 1. a request with tools bound is served on an exact repeat only ------------------------------
def test_tool_call_is_not_served_to_a_case_or_punctuation_variant(tmp_path: Any) -> None:
    # The semantic cache with its verifier serves case- and punctuation-only variants of a
    # plain question (prose_equal); with tools bound the answer may be a tool call whose
    # arguments copy the question, so that rule must not apply.
    cache = CoreLeanCache(path=tmp_path / "semantic")
    llm = ScriptedChatModel(policy=search_then_answer({}, tool="lookup"))
    agent = create_agent(llm, [lookup], middleware=[LeanCacheMiddleware(cache, namespace="registry")])
    first = ask(agent, "look up key x!")
    assert calls_of(first) == [("lookup", json.dumps({"query": "look up key x!"}))]
    served = len(llm.calls)
    second = ask(agent, "look up key x?")
    assert calls_of(second) == [("lookup", json.dumps({"query": "look up key x?"}))]
    assert len(llm.calls) == served + 2  # both steps asked the model
    for variant in ("Look up key x!", "look up key x!!", "look  up key x!"):
        result = ask(agent, variant)
        assert calls_of(result) == [("lookup", json.dumps({"query": variant}))]
    # an exact repeat is still served, every step of it
    served = len(llm.calls)
    again = ask(agent, "look up key x!")
    assert len(llm.calls) == served and calls_of(again) == calls_of(first)


def test_tool_call_key_holds_every_message_exactly(tmp_path: Any) -> None:
    cache = CoreLeanCache(path=tmp_path / "exact", mode="exact", guard=False, verifier=False)
    middleware = LeanCacheMiddleware(cache, namespace="valley")
    llm = ScriptedChatModel(policy=search_then_answer({GOAL: ANSWER}))
    agent = create_agent(llm, [search], middleware=[middleware])
    ask(agent)
    served = len(llm.calls)
    # whitespace inside the question reaches the tool call's arguments: not the same request
    spaced = GOAL.replace("the bridge", "the  bridge")
    result = ask(agent, spaced)
    assert calls_of(result) == [("search", json.dumps({"query": spaced}))]
    assert len(llm.calls) == served + 2


# -- 3. an entry belongs to the middleware that stored it ------------------------------------------
def _clearing() -> ContextEditingMiddleware:
    """LangChain's context editing, clearing every tool result (a request-editing middleware)."""
    return ContextEditingMiddleware(edits=[ClearToolUsesEdit(trigger=1, keep=0)])


def test_bare_instances_do_not_share_entries() -> None:
    # Agent 1 sends the model its requests with the tool results cleared (ContextEditing inside
    # its cache), so its model cannot find the answer; agent 2 sends them whole. Agent 2's
    # cache must not serve agent 1's answer for the same request as each cache sees it.
    edited_llm, whole_llm = (ScriptedChatModel(policy=search_then_answer({GOAL: ANSWER})) for _ in range(2))
    edited = create_agent(edited_llm, [search], middleware=[LeanCacheMiddleware(), _clearing()])
    whole = create_agent(whole_llm, [search], middleware=[LeanCacheMiddleware()])
    assert final(ask(edited)) == "Not found in the result."
    result = ask(whole)
    assert final(result).startswith(ANSWER)
    assert len(whole_llm.calls) == 2


def test_one_store_two_instances_kept_apart_unless_one_namespace_is_named(tmp_path: Any) -> None:
    cache = CoreLeanCache(path=tmp_path / "shared", mode="exact", guard=False, verifier=False)
    edited_llm, whole_llm = (ScriptedChatModel(policy=search_then_answer({GOAL: ANSWER})) for _ in range(2))
    ask(create_agent(edited_llm, [search], middleware=[LeanCacheMiddleware(cache), _clearing()]))
    result = ask(create_agent(whole_llm, [search], middleware=[LeanCacheMiddleware(cache)]))
    assert final(result).startswith(ANSWER) and len(whole_llm.calls) == 2
    # A named namespace is shared on purpose (another process, a rebuilt agent with the same
    # middleware inside the cache): the rebuilt agent is served without the model.
    first = ScriptedChatModel(policy=search_then_answer({GOAL: ANSWER}))
    ask(create_agent(first, [search], middleware=[LeanCacheMiddleware(cache, namespace="valley")]))
    rebuilt = ScriptedChatModel(policy=search_then_answer({GOAL: ANSWER}))
    again = ask(create_agent(rebuilt, [search], middleware=[LeanCacheMiddleware(cache, namespace="valley")]))
    assert rebuilt.calls == [] and final(again).startswith(ANSWER)


def test_cache_inside_context_editing_keys_the_edited_request(tmp_path: Any) -> None:
    # With the editing middleware outside the cache, the cache sees (and keys) the request as
    # the model receives it: the cleared results. A repeat is served from it.
    cache = CoreLeanCache(path=tmp_path / "inner", mode="exact", guard=False, verifier=False)
    seen: list[str] = []
    llm = ScriptedChatModel(policy=recording_tool_results(search_then_answer({GOAL: ANSWER}), seen))
    agent = create_agent(llm, [search], middleware=[_clearing(), LeanCacheMiddleware(cache, namespace="inner")])
    assert final(ask(agent)) == "Not found in the result."
    assert seen and RESULT not in seen  # the model was sent the cleared result
    served = len(llm.calls)
    assert final(ask(agent)) == "Not found in the result." and len(llm.calls) == served


# -- 6. a model's own LangChain cache hit is a hit for the middleware too --------------------------
def test_base_cache_hits_are_not_booked_as_calls_or_spent(tmp_path: Any) -> None:
    core = CoreLeanCache(path=tmp_path / "model-cache", mode="exact", guard=False, verifier=False)
    llm = ScriptedChatModel(policy=search_then_answer({GOAL: ANSWER}), cache=LangChainLeanCache(core), cache_read_tokens=30)
    budget = LeanBudgetMiddleware(step_tokens=60, run_tokens=1000)
    agent = create_agent(llm, [search], middleware=[budget, LeanPrefixMiddleware()])
    ask(agent)
    served = len(llm.calls)
    with Ledger() as ledger:
        result = ask(agent)
    assert len(llm.calls) == served  # both steps served by the model's own cache
    answers = [m for m in result["messages"] if isinstance(m, AIMessage)]
    assert answers and all(served_from_cache(m) and not is_cache_hit(m.response_metadata) for m in answers)
    assert ledger.select("llm")["events"] == 0  # never booked as a model call
    assert ledger.select("prefix cache")["events"] == 0  # the provider did not read its cache again
    assert ledger.select("cache", "hit")["events"] == 2  # booked once, by the cache
    # the run's budget is not spent by the hits
    state = {"messages": result["messages"], "lean_run_output_tokens": 0}
    assert budget.after_model(state, None) is None
