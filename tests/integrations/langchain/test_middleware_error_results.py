"""LeanCompressMiddleware with a failed tool call (``ToolMessage(status="error")``, issue 27 F3):
the model is sent the exception and its details verbatim, only whole middle stack frames
dropped; a tool error without frames is sent as it is. A real ``create_agent`` loop with a real
tool raising ``ToolException`` (``handle_tool_error=True``); the chat model is the scripted fake
(a paid API's stand-in)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent
from langchain_core.messages import ToolMessage
from langchain_core.tools import StructuredTool, ToolException
from lean_plugins.langchain.middleware import LeanCompressMiddleware

from lean_plugins.agents import ToolResultCompressor
from tests.core.test_agents import long_text
from tests.core.test_agents_compress_attack import DETAIL, EXCEPTION, python_traceback
from tests.integrations.langchain.agent_fakes import (
    ScriptedChatModel,
    recording_tool_results,
    search_then_answer,
)

GOAL = "Why did the invoice import fail?"


@pytest.fixture(scope="module")
def compressor() -> ToolResultCompressor:
    from lean_plugins.compress import LeanCompressor

    return ToolResultCompressor(LeanCompressor(record_ledger=False), rate=0.33, min_tokens=60)


def failing_tool(message: str) -> Any:
    def import_invoices(query: str) -> str:
        """Import the invoice batch."""
        raise ToolException(message)

    return StructuredTool.from_function(import_invoices, name="search", handle_tool_error=True)


def run(compressor: ToolResultCompressor, message: str) -> tuple[list[str], dict[str, Any]]:
    seen: list[str] = []
    llm = ScriptedChatModel(policy=recording_tool_results(search_then_answer({}), seen))
    agent = create_agent(llm, [failing_tool(message)], middleware=[LeanCompressMiddleware(compressor)])
    return seen, agent.invoke({"messages": [{"role": "user", "content": GOAL}]})


def test_failed_call_keeps_the_exception_and_drops_whole_frames(compressor: ToolResultCompressor) -> None:
    trace = python_traceback(20)
    seen, result = run(compressor, trace)
    state = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert state.status == "error" and state.content == trace  # the state keeps it whole
    sent = seen[0]
    assert EXCEPTION in sent and DETAIL in sent and "frames omitted]" in sent and len(sent) < len(trace)
    original = set(trace.splitlines())
    assert all(line in original or line.strip().endswith("frames omitted]") for line in sent.splitlines())


def test_failed_call_without_frames_is_sent_as_it_is(compressor: ToolResultCompressor) -> None:
    message = long_text(4)
    seen, _ = run(compressor, message)
    assert seen == [message]
