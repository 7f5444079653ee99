"""A ``return_direct`` tool's output is the user's final answer: ``compress_tool_outputs`` and
``LeanCompressedTool`` pass it through unchanged (issue 27, F5), in a real ``FunctionAgent``
driven by the scripted function-calling LLM of ``agent_fakes`` (no paid API)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from lean_plugins.llama_index.tools import LeanCompressedTool, compress_tool_outputs
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.tools import FunctionTool

from lean_plugins.agents import ToolResultCompressor
from lean_plugins.ledger import Ledger
from tests.core.test_agents import long_text
from tests.integrations.llama_index.agent_fakes import ScriptedFunctionLLM

GOAL = "Give me the restart runbook"
REPORT = long_text(4, answer_at=2)


def runbook(query: str) -> str:
    """Return the full restart runbook to the user verbatim."""
    return REPORT


def call_runbook(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    if messages[-1]["role"] == "human":
        return {"tool_calls": [{"name": "runbook", "args": {"query": GOAL}, "id": "call-1"}]}
    return {"text": "The model was asked again: a return_direct tool should have ended the run."}


@pytest.fixture(scope="module")
def compressor() -> ToolResultCompressor:
    from lean_plugins.compress import LeanCompressor

    return ToolResultCompressor(LeanCompressor(record_ledger=False), rate=0.33, min_tokens=60)


def test_the_same_text_would_be_compressed_from_an_ordinary_tool(compressor: ToolResultCompressor) -> None:
    # The control: without return_direct the wrapper does shorten this output.
    plain = LeanCompressedTool(FunctionTool.from_defaults(runbook), compressor, goal=GOAL)
    assert plain.call(query=GOAL).content != REPORT


async def test_return_direct_output_reaches_the_user_whole(compressor: ToolResultCompressor) -> None:
    tools = compress_tool_outputs([FunctionTool.from_defaults(runbook, return_direct=True)], compressor, model="gpt-4o-mini")
    with Ledger() as ledger:
        answer = await FunctionAgent(tools=tools, llm=ScriptedFunctionLLM(policy=call_runbook)).run(user_msg=GOAL)
    assert str(answer) == REPORT
    assert ledger.events == []  # nothing compressed, nothing booked


def test_a_directly_wrapped_return_direct_tool_passes_through(compressor: ToolResultCompressor) -> None:
    wrapped = LeanCompressedTool(FunctionTool.from_defaults(runbook, return_direct=True), compressor, goal=GOAL)
    assert wrapped.metadata.return_direct
    with Ledger() as ledger:
        assert wrapped.call(query=GOAL).content == REPORT
    assert ledger.events == []
