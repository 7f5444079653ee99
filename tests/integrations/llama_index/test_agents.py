"""The lean layers inside LlamaIndex agents: ``FunctionAgent`` and ``AgentWorkflow`` with
compressed tool outputs, the cached and budgeted LLMs as their FunctionCallingLLM, streamed
and not. The LLM is a real ``FunctionCallingLLM`` (``agent_fakes.ScriptedFunctionLLM``) that
answers only from what it was sent; the compressor and the cache are the real ones."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("llama_index.core.agent.workflow")

from lean_plugins.llama_index import CachedLLM, with_output_budget
from lean_plugins.llama_index.tools import LeanCompressedTool, compress_tool_outputs
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent, ToolCallResult
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.tools import FunctionTool
from pydantic import Field

from lean_plugins.agents import ToolResultCompressor
from lean_plugins.cache import LeanCache
from lean_plugins.ledger import Ledger
from lean_plugins.tokens import count_tokens
from tests.core.test_agents import long_text
from tests.integrations.llama_index.agent_fakes import ScriptedFunctionLLM, search_then_answer

GOAL = "Who completed the bridge over the Tarn river?"
ANSWER = "Alma Verhoeven"
RESULT = long_text(4, answer_at=2)


def search(query: str) -> str:
    """Search the valley archive; returns long passages."""
    return RESULT


def short_search(query: str) -> str:
    """Search; a short answer."""
    return f"{ANSWER} completed it in 1887."


@pytest.fixture(scope="module")
def compressor() -> ToolResultCompressor:
    from lean_plugins.compress import LeanCompressor

    return ToolResultCompressor(LeanCompressor(record_ledger=False), rate=0.33, min_tokens=60)


@pytest.fixture
def cache(tmp_path: Any) -> LeanCache:
    return LeanCache(path=tmp_path / "cache", mode="exact", guard=False, verifier=False)


def llm(**kwargs: Any) -> ScriptedFunctionLLM:
    return ScriptedFunctionLLM(policy=search_then_answer({GOAL: ANSWER}), **kwargs)


async def run(agent: Any, goal: str = GOAL) -> tuple[str, list[ToolCallResult]]:
    handler = agent.run(user_msg=goal)
    results = [ev async for ev in handler.stream_events() if isinstance(ev, ToolCallResult)]
    return str(await handler), results


@pytest.mark.parametrize("streaming", [False, True])
async def test_function_agent_with_compressed_tool_outputs(compressor: ToolResultCompressor, streaming: bool) -> None:
    plain_llm, lean_llm = llm(), llm()
    plain_answer, _ = await run(FunctionAgent(tools=[FunctionTool.from_defaults(search)], llm=plain_llm, streaming=streaming))
    tools = compress_tool_outputs([FunctionTool.from_defaults(search)], compressor, model="gpt-4o-mini")
    with Ledger() as ledger:
        answer, results = await run(FunctionAgent(tools=tools, llm=lean_llm, streaming=streaming))
    assert answer.startswith(ANSWER) and plain_answer.startswith(ANSWER)
    saved = plain_llm.calls[1]["input_tokens"] - lean_llm.calls[1]["input_tokens"]
    assert saved > 0.4 * count_tokens(RESULT)  # the step that read the output was sent less
    output = results[0].tool_output
    assert output.raw_output == RESULT and output.content != RESULT  # nothing lost
    assert results[0].tool_id.startswith("call-")
    event = ledger.select("compress", "tool_output")
    assert event["events"] == 1 and event["input_before"] - event["input_after"] == saved


async def test_cached_and_budgeted_llm_inside_function_agent(compressor: ToolResultCompressor, cache: LeanCache) -> None:
    inner = llm(max_tokens=150)
    lean = CachedLLM(with_output_budget(inner, 40), cache=cache)
    agent = FunctionAgent(tools=compress_tool_outputs([FunctionTool.from_defaults(search)], compressor), llm=lean)
    with Ledger() as ledger:
        first, _ = await run(agent)
        served = len(inner.calls)
        again, _ = await run(agent)
    assert first.startswith(ANSWER) and count_tokens(first) <= 40
    assert again == first
    # Both steps are served by the cache: the tool-calling reply and the final answer.
    assert len(inner.calls) == served
    assert ledger.select("cache", "hit")["events"] == 2


async def test_agent_workflow_runs_the_lean_agent(compressor: ToolResultCompressor) -> None:
    inner = llm(max_tokens=150)
    agent = FunctionAgent(
        name="researcher",
        description="Answers questions about the valley archive.",
        tools=compress_tool_outputs([FunctionTool.from_defaults(search)], compressor),
        llm=with_output_budget(inner, 40),
    )
    workflow = AgentWorkflow(agents=[agent], root_agent="researcher")
    answer, results = await run(workflow)
    assert answer.startswith(ANSWER) and count_tokens(answer) <= 40
    assert results[0].tool_output.raw_output == RESULT


def test_short_outputs_pass_errors_propagate_and_sync_call(compressor: ToolResultCompressor) -> None:
    short = LeanCompressedTool(FunctionTool.from_defaults(short_search), compressor)
    with Ledger() as ledger:
        out = short.call(query="bridge")
    assert out.content == short_search("bridge") and ledger.events == []
    long_tool = LeanCompressedTool(FunctionTool.from_defaults(search), compressor, goal=GOAL)
    out = long_tool.call(query="anything")
    assert ANSWER in out.content and count_tokens(out.content) < count_tokens(RESULT)
    assert long_tool.metadata.name == "search"

    def broken(query: str) -> str:
        """Fails."""
        raise RuntimeError("archive offline " * 80)

    failing = LeanCompressedTool(FunctionTool.from_defaults(broken), compressor)
    with pytest.raises(RuntimeError, match="archive offline"):  # the agent reports it, as without the wrapper
        failing.call(query="x")


async def test_function_agent_books_tool_call_steps_once_the_same_in_budget_and_cache(cache: LeanCache) -> None:
    """The fake reports no output usage: each step is booked as its text plus its tool calls
    (canonical JSON: name, arguments, id), by the budget on the miss and by the cache on the
    repeat, once each (issue 27, b07)."""
    inner = llm()
    lean = CachedLLM(with_output_budget(inner, 200), cache=cache)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(short_search)], llm=lean)
    with Ledger() as first_ledger:
        first, results = await run(agent)
    calls = [{"args": r.tool_kwargs, "id": r.tool_id, "name": r.tool_name} for r in results]
    step_tokens = count_tokens(json.dumps(calls, sort_keys=True, separators=(",", ":"))) + count_tokens(first)
    spent = first_ledger.select("llm")
    # Old code: the budget booked the tool-calling step as its (empty) text, 0 tokens.
    assert (spent["events"], spent["output_after"]) == (2, step_tokens)
    served = len(inner.calls)
    with Ledger() as again_ledger:
        again, _ = await run(agent)
    assert again == first and len(inner.calls) == served
    hits = again_ledger.select("cache", "hit")
    assert (hits["events"], hits["output_before"]) == (2, step_tokens)
    assert again_ledger.select("llm")["events"] == 0


class WebSearchLLM(ScriptedFunctionLLM):
    """A function-calling LLM with provider-side tools of its own, as the OpenAI Responses
    LLM's ``built_in_tools`` (the provider would run them during the call)."""

    built_in_tools: list[dict[str, Any]] = Field(default_factory=lambda: [{"type": "web_search_preview"}])


async def test_a_call_binding_a_provider_side_tool_is_neither_served_nor_stored(cache: LeanCache) -> None:
    inner = WebSearchLLM(policy=search_then_answer({GOAL: ANSWER}))
    lean = CachedLLM(with_output_budget(inner, 200), cache=cache)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(short_search)], llm=lean)
    first, _ = await run(agent)
    served = len(inner.calls)
    with Ledger() as ledger:
        again, _ = await run(agent)
    # Old code: both steps replayed from the cache, the provider's fresh search never ran.
    assert again == first and len(inner.calls) == 2 * served
    assert ledger.select("cache", "hit")["events"] == 0
    # tool dicts passed with the call count too; the same calls without them are cached
    plain = llm()
    cached = CachedLLM(plain, cache=cache)
    messages = [ChatMessage(role="user", content=GOAL)]
    function = {"type": "function", "function": {"name": "search", "parameters": {}}}
    for tools, calls in (([function, {"type": "web_search"}], 2), ([function], 1)):
        plain.calls.clear()
        cached.chat(messages, tools=tools)
        cached.chat(messages, tools=tools)
        assert len(plain.calls) == calls
