"""The lean agent middleware inside LangChain v1's ``create_agent``: each alone, composed in
both orders and with LangChain's built-ins, sync, async and streamed.

The model is a real ``BaseChatModel`` (``agent_fakes.ScriptedChatModel``) that emits tool
calls and answers only from what it was sent; the compressor is the real LeanCompressor (the
embedded model, offline); the cache is the real core cache in a temporary folder.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent
from langchain.agents.middleware import ContextEditingMiddleware, ModelCallLimitMiddleware
from langchain.agents.middleware.context_editing import ClearToolUsesEdit
from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage
from langchain_core.tools import tool
from lean_plugins.langchain.middleware import (
    LeanBudgetMiddleware,
    LeanCacheMiddleware,
    LeanCompressMiddleware,
    LeanPrefixMiddleware,
)

from lean_plugins.agents import ToolResultCompressor
from lean_plugins.cache import LeanCache as CoreLeanCache
from lean_plugins.errors import BudgetExceededError, ConfigurationError
from lean_plugins.ledger import Ledger, is_cache_hit
from lean_plugins.tokens import count_tokens
from tests.core.test_agents import long_text
from tests.integrations.langchain.agent_fakes import (
    ScriptedChatModel,
    recording_tool_results,
    search_then_answer,
    tool_text,
)
from tests.integrations.langchain.budget_fakes import NoUsageToolModel

GOAL = "Who completed the bridge over the Tarn river?"
ANSWER = "Alma Verhoeven"
SYSTEM = "You answer questions about the valley with the search tool. Quote your source."
RESULT = long_text(4, answer_at=2)


@tool
def search(query: str) -> str:
    """Search the valley archive; returns long passages."""
    return RESULT


@tool
def archive_index(topic: str) -> str:
    """The archive's index entry for a topic."""
    return "index"


@pytest.fixture(scope="module")
def compressor() -> ToolResultCompressor:
    from lean_plugins.compress import LeanCompressor

    return ToolResultCompressor(LeanCompressor(record_ledger=False), rate=0.33, min_tokens=60)


@pytest.fixture
def cache(tmp_path: Any) -> CoreLeanCache:
    return CoreLeanCache(path=tmp_path / "cache", mode="exact", guard=False, verifier=False)


def model(**kwargs: Any) -> ScriptedChatModel:
    return ScriptedChatModel(policy=search_then_answer({GOAL: ANSWER}), **kwargs)


def agent_with(llm: ScriptedChatModel, middleware: list[Any], tools: list[Any] | None = None) -> Any:
    return create_agent(llm, tools or [search], system_prompt=SYSTEM, middleware=middleware)


def ask(agent: Any, goal: str = GOAL) -> dict[str, Any]:
    return agent.invoke({"messages": [{"role": "user", "content": goal}]})


def tool_calls(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (c["name"], json.dumps(c["args"], sort_keys=True), c["id"])
        for m in result["messages"] if isinstance(m, AIMessage) for c in m.tool_calls
    ]  # fmt: skip


def final(result: dict[str, Any]) -> str:
    return tool_text({"content": result["messages"][-1].content})


# -- each middleware alone ------------------------------------------------------------------------
def test_plain_agent_baseline() -> None:
    llm = model()
    result = ask(agent_with(llm, []))
    assert final(result).startswith(ANSWER)
    assert [c[0] for c in tool_calls(result)] == ["search"]


def test_compress_alone_sends_less_keeps_the_answer_and_the_state(compressor: ToolResultCompressor) -> None:
    plain, lean = model(), model()
    plain_result = ask(agent_with(plain, []))
    with Ledger() as ledger:
        result = ask(agent_with(lean, [LeanCompressMiddleware(compressor)]))
    assert final(result).startswith(ANSWER)
    assert tool_calls(result) == tool_calls(plain_result)
    # the second step (the one that reads the tool result) was sent far fewer tokens
    saved = plain.calls[1]["input_tokens"] - lean.calls[1]["input_tokens"]
    assert saved > 0.4 * count_tokens(RESULT)
    # the state keeps the tool result as the tool returned it, with its id
    tool_message = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert tool_message.content == RESULT and tool_message.tool_call_id == "call-1"
    event = ledger.select("compress", "tool_result")
    assert event["events"] == 1
    assert event["input_before"] - event["input_after"] == saved  # booked exactly what was saved
    assert ledger.keys("compress") == [("gpt-4o-mini", None)]  # at the agent model's price


def test_compress_keeps_json_tool_results_json(compressor: ToolResultCompressor) -> None:
    payload = {"hits": [{"id": f"doc-{i}", "score": 3.5 - i, "text": long_text(2, answer_at=i)} for i in range(3)]}

    @tool
    def search(query: str) -> str:
        """Search the valley archive; returns JSON hits."""
        return json.dumps(payload, indent=2)

    seen: list[str] = []
    llm = ScriptedChatModel(policy=recording_tool_results(search_then_answer({GOAL: ANSWER}), seen))
    result = ask(agent_with(llm, [LeanCompressMiddleware(compressor)], [search]))
    sent = json.loads(seen[0])
    assert [(h["id"], h["score"]) for h in sent["hits"]] == [(h["id"], h["score"]) for h in payload["hits"]]
    assert count_tokens(seen[0]) < count_tokens(json.dumps(payload, indent=2))
    assert final(result).startswith(ANSWER)


def test_short_tool_results_are_not_touched(compressor: ToolResultCompressor) -> None:
    @tool
    def search(query: str) -> str:
        """Search; a short answer."""
        return f"{ANSWER} completed it in 1887 (id br-7)."

    llm = model()
    with Ledger() as ledger:
        result = ask(agent_with(llm, [LeanCompressMiddleware(compressor)], [search]))
    assert final(result).startswith(ANSWER)
    assert ledger.select("compress")["events"] == 0


def test_cache_alone_serves_the_repeat_without_the_model(cache: CoreLeanCache) -> None:
    llm = model()
    agent = agent_with(llm, [LeanCacheMiddleware(cache)])
    first = ask(agent)
    served = len(llm.calls)
    with Ledger() as ledger:
        again = ask(agent)
    assert len(llm.calls) == served  # both steps served by the cache
    assert final(again) == final(first) and tool_calls(again) == tool_calls(first)
    answers = [m for m in again["messages"] if isinstance(m, AIMessage)]
    assert all(is_cache_hit(m.response_metadata) for m in answers)
    assert len({m.id for m in again["messages"]}) == len(again["messages"])  # fresh ids
    hits = ledger.select("cache", "hit")
    assert hits["events"] == 2
    assert hits["input_before"] == sum(c["input_tokens"] for c in llm.calls)  # the whole requests
    assert hits["output_before"] == sum(c["output_tokens"] for c in llm.calls)


def test_cache_misses_on_another_goal_tool_set_or_model(cache: CoreLeanCache) -> None:
    llm = model()
    ask(agent_with(llm, [LeanCacheMiddleware(cache)]))
    n = len(llm.calls)
    ask(agent_with(llm, [LeanCacheMiddleware(cache)]), "Who built the chapel on the hill?")
    assert len(llm.calls) == n + 2
    ask(agent_with(llm, [LeanCacheMiddleware(cache)], [search, archive_index]))  # other tools bound
    assert len(llm.calls) == n + 4
    other = model(max_tokens=77)  # another model setting
    ask(agent_with(other, [LeanCacheMiddleware(cache)]))
    assert len(other.calls) == 2


def test_budget_alone_cuts_the_answer_keeps_tool_calls_and_books_the_baseline() -> None:
    llm = model(max_tokens=120)
    with Ledger() as ledger:
        # baseline_tokens states what a cut answer would have cost (this model runs to its
        # max_tokens); without it a cut claims no saving (test_middleware_budget_attack.py)
        result = ask(agent_with(llm, [LeanBudgetMiddleware(step_tokens=40, baseline_tokens=120)]))
    answer = result["messages"][-1]
    assert final(result).startswith(ANSWER) and count_tokens(final(result)) <= 40
    assert answer.response_metadata["stop_reason"] in ("budget", "soft_budget")
    assert [c[0] for c in tool_calls(result)] == ["search"]
    stops = [e for e in ledger.events if e.layer == "budget" and e.meta.get("stop_reason") != "natural"]
    assert [(e.output_before, e.output_after) for e in stops] == [(120, llm.calls[-1]["output_tokens"])]
    assert ledger.select("llm")["events"] == 2  # each call booked once


def test_budget_run_limit_ends_the_run_with_a_message() -> None:
    llm = model()
    result = ask(agent_with(llm, [LeanBudgetMiddleware(run_tokens=10)]))
    assert len(llm.calls) == 1  # the tool-call step spent the run's budget
    assert "Output budget of this run spent" in final(result)
    with pytest.raises(BudgetExceededError):
        ask(agent_with(model(), [LeanBudgetMiddleware(run_tokens=10, exit_behavior="error")]))


def test_prefix_sorts_tools_marks_breakpoints_and_books_provider_cache() -> None:
    seen: list[list[str]] = []
    answer = search_then_answer({GOAL: ANSWER})

    def policy(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
        seen.append([t["function"]["name"] for t in tools])
        return answer(messages, tools)

    llm = ScriptedChatModel(policy=policy, cache_read_tokens=50)
    with Ledger() as ledger:
        result = ask(agent_with(llm, [LeanPrefixMiddleware(breakpoints="anthropic")], [search, archive_index]))
    assert final(result).startswith(ANSWER)
    assert seen[0] == ["archive_index", "search"]
    marks = [[s.breakpoint for s in call["segments"]] for call in llm.calls]
    # tools, system (marked), then the conversation with its latest message marked
    assert marks[0] == [False, True, True] and marks[1] == [False, True, False, False, True]
    assert ledger.select("prefix cache", "read")["input_before"] == 100  # 50 per call, booked once each
    auto = ScriptedChatModel(policy=search_then_answer({GOAL: ANSWER}))
    ask(agent_with(auto, [LeanPrefixMiddleware()]))  # "auto": not an Anthropic model, no marks
    assert not any(s.breakpoint for call in auto.calls for s in call["segments"])


def test_bad_settings_raise_clear_errors(compressor: ToolResultCompressor) -> None:
    with pytest.raises(ConfigurationError):
        LeanBudgetMiddleware()
    with pytest.raises(ConfigurationError):
        LeanBudgetMiddleware(10, exit_behavior="stop")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        LeanPrefixMiddleware(breakpoints="openai")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        LeanCompressMiddleware(compressor, rate=0.5)


# -- composed ------------------------------------------------------------------------------------
def lean_stack(compressor: ToolResultCompressor, cache: CoreLeanCache, order: str) -> list[Any]:
    layers = {
        "budget": LeanBudgetMiddleware(step_tokens=40),
        "cache": LeanCacheMiddleware(cache),
        "compress": LeanCompressMiddleware(compressor),
        "prefix": LeanPrefixMiddleware(breakpoints="anthropic"),
    }
    names = ["budget", "cache", "compress", "prefix"]
    return [layers[n] for n in (names if order == "recommended" else names[::-1])]


@pytest.mark.parametrize("order", ["recommended", "reversed"])
def test_all_four_in_either_order_with_builtins(compressor: ToolResultCompressor, cache: CoreLeanCache, order: str) -> None:
    plain = model(max_tokens=150)
    plain_result = ask(agent_with(plain, []))
    llm = model(max_tokens=150)
    builtins = [ModelCallLimitMiddleware(run_limit=5), ContextEditingMiddleware(edits=[ClearToolUsesEdit(trigger=100_000)])]
    agent = agent_with(llm, [builtins[0], *lean_stack(compressor, cache, order), builtins[1]])
    with Ledger() as ledger:
        first = ask(agent)
        again = ask(agent)
    for result in (first, again):
        assert final(result).startswith(ANSWER)
        assert tool_calls(result) == tool_calls(plain_result)
    # The repeat is served by the cache; with the budget inside the cache (reversed) the
    # budget is not in the key, so its cut answer is not cached and the last step is asked again.
    assert len(llm.calls) == (2 if order == "recommended" else 3)
    lean_in = sum(c["input_tokens"] for c in llm.calls)
    assert lean_in < sum(c["input_tokens"] for c in plain.calls)
    layers = {e.layer for e in ledger.events}
    assert {"compress", "cache", "budget", "llm"} <= layers


async def test_async_invoke_matches_sync(compressor: ToolResultCompressor, cache: CoreLeanCache, tmp_path: Any) -> None:
    sync_llm, async_llm = model(max_tokens=150), model(max_tokens=150)
    sync_result = ask(agent_with(sync_llm, lean_stack(compressor, cache, "recommended")))
    other = CoreLeanCache(path=tmp_path / "async", mode="exact", guard=False, verifier=False)
    agent = agent_with(async_llm, lean_stack(compressor, other, "recommended"))
    with Ledger() as ledger:
        result = await agent.ainvoke({"messages": [{"role": "user", "content": GOAL}]})
        again = await agent.ainvoke({"messages": [{"role": "user", "content": GOAL}]})
    assert final(result) == final(sync_result) and tool_calls(result) == tool_calls(sync_result)
    assert final(again) == final(result)
    assert [c["input_tokens"] for c in async_llm.calls] == [c["input_tokens"] for c in sync_llm.calls]
    assert ledger.select("cache", "hit")["events"] == 2


def test_stream_messages_and_a_cached_stream(compressor: ToolResultCompressor, cache: CoreLeanCache) -> None:
    llm = model(max_tokens=150)
    agent = agent_with(llm, lean_stack(compressor, cache, "recommended"))
    pieces = [
        chunk.content for chunk, meta in agent.stream({"messages": [{"role": "user", "content": GOAL}]}, stream_mode="messages")
        if isinstance(chunk, AIMessageChunk) and meta.get("langgraph_node") == "model"
    ]  # fmt: skip
    streamed = "".join(p for p in pieces if isinstance(p, str))
    assert len(pieces) > 3 and streamed.startswith(ANSWER)  # token by token, cut by the budget
    assert count_tokens(streamed) <= 40
    served = len(llm.calls)
    updates = list(agent.stream({"messages": [{"role": "user", "content": GOAL}]}, stream_mode="updates"))
    assert len(llm.calls) == served  # the repeat streams from the cache
    answers = [m for u in updates for v in u.values() if v for m in v.get("messages", []) if isinstance(m, AIMessage)]
    assert answers and tool_text({"content": answers[-1].content}).startswith(ANSWER)
    assert is_cache_hit(answers[-1].response_metadata)


async def test_astream_with_compression(compressor: ToolResultCompressor, cache: CoreLeanCache) -> None:
    llm = model(max_tokens=150)
    agent = agent_with(llm, [LeanCompressMiddleware(compressor), LeanBudgetMiddleware(step_tokens=40)])
    text = ""
    async for chunk, _meta in agent.astream({"messages": [{"role": "user", "content": GOAL}]}, stream_mode="messages"):
        if isinstance(chunk, AIMessageChunk) and isinstance(chunk.content, str):
            text += chunk.content
    assert text.startswith(ANSWER)
    assert llm.calls[1]["input_tokens"] < count_tokens(RESULT)


def test_readme_agent_quick_starts_name_real_parts() -> None:
    """The README's agent quick starts (they need an API key to run) compile, and every
    lean_plugins name they import exists."""
    import ast
    import importlib
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    section = readme.split("<!-- quickstart:agents -->", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("\n```", 1)[0] for b in section.split("```python\n")[1:]]
    assert len(blocks) == 2
    for block in blocks:
        tree = compile(block, "README agents", "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lean_plugins"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name}"


# -- a tool-calling step the provider reports no usage for (issue 27, b07) -------------------------
@pytest.mark.parametrize("budget", [False, True], ids=["cache", "budget+cache"])
def test_tool_call_steps_without_usage_are_booked_as_text_plus_calls(cache: CoreLeanCache, budget: bool) -> None:
    call = {"name": "search", "args": {"query": GOAL}, "id": "call-1"}
    replies = [AIMessage(content="Let me search the archive.", tool_calls=[call]), AIMessage(content=f"{ANSWER} did.")]
    # counted here without the code under test: each reply's text, plus the tool call as
    # canonical JSON (name, arguments, id)
    expected = sum(count_tokens(m.content) for m in replies) + count_tokens(
        json.dumps([call], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    )
    llm = NoUsageToolModel(responses=replies)
    budgeting = [LeanBudgetMiddleware(step_tokens=200)] if budget else []
    agent = agent_with(llm, [*budgeting, LeanCacheMiddleware(cache)])
    with Ledger() as first_ledger:
        first = ask(agent)
    with Ledger() as again_ledger:
        again = ask(agent)
    assert tool_calls(again) == tool_calls(first) == [("search", json.dumps(call["args"]), "call-1")]
    if budget:  # the budget books the spent calls; old code: their text only
        spent = first_ledger.select("llm")
        assert (spent["events"], spent["output_after"]) == (2, expected)
    hits = again_ledger.select("cache", "hit")  # old code: the text only
    assert (hits["events"], hits["output_before"]) == (2, expected)


# -- provider-side tools: their results are fetched during the call (issue 27) ---------------------
@pytest.mark.parametrize(
    "provider_tool",
    [{"type": "web_search"}, {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}, {"google_search": {}}],
    ids=["openai", "anthropic", "gemini"],
)
def test_a_request_binding_a_provider_side_tool_is_neither_served_nor_stored(
    cache: CoreLeanCache, provider_tool: dict[str, Any]
) -> None:
    llm = model()
    agent = agent_with(llm, [LeanCacheMiddleware(cache)], [search, provider_tool])
    first = ask(agent)
    served = len(llm.calls)
    with Ledger() as ledger:
        again = ask(agent)
    # Old code: the exact repeat was replayed, so the provider's fresh search never ran.
    assert len(llm.calls) == 2 * served
    assert final(again) == final(first)
    assert ledger.select("cache", "hit")["events"] == 0
    # the same agent without the provider-side tool is cached as before
    plain = agent_with(llm, [LeanCacheMiddleware(cache)], [search])
    ask(plain)
    n = len(llm.calls)
    ask(plain)
    assert len(llm.calls) == n
