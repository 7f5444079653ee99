"""Issue 27, found by a user-style attack on LeanBudgetMiddleware and the middleware
constructors: a step budget that dropped a tool call written after a long preamble,
``baseline_tokens`` that capped generation, a ledger that claimed the model's max-tokens gap
for a cut, and bad constructor arguments that failed mid-agent.

The model is the real ``BaseChatModel`` of the agent tests (``agent_fakes.ScriptedChatModel``);
:class:`IgnoresMaxTokens` is one that, like some providers, does not map the max-tokens field.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from lean_plugins.langchain.middleware import (
    LeanBudgetMiddleware,
    LeanCacheMiddleware,
    LeanCompressMiddleware,
)

from lean_plugins.errors import ConfigurationError
from lean_plugins.ledger import Ledger
from lean_plugins.tokens import count_tokens
from tests.integrations.langchain.agent_fakes import ScriptedChatModel

PREAMBLE = (
    "I'll help you with that. To give you an accurate answer about the current conditions, I first need to "
    "look up the latest weather report for the city you mentioned, and then I will summarise the temperature "
    "and the sky for you. Let me also check whether there are any weather warnings in effect for the area today."
)
RAN: list[str] = []


@tool
def get_weather(city: str) -> str:
    """Weather for a city."""
    RAN.append(city)
    return f"{city}: 21C sunny"


def preamble_then_call(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    if messages[-1]["role"] == "human":
        return {"text": PREAMBLE, "tool_calls": [{"name": "get_weather", "args": {"city": "Oslo"}, "id": "toolu_01"}]}
    return {"text": "It is " + str(messages[-1]["content"])}


class IgnoresMaxTokens(ScriptedChatModel):
    """A provider that does not map the max-tokens field: it writes its whole reply."""

    def _reply(self, messages: Any, tools: Any) -> Any:
        saved, self.max_tokens = self.max_tokens, None
        try:
            return super()._reply(messages, tools)
        finally:
            self.max_tokens = saved


def final(result: dict[str, Any]) -> AIMessage:
    return result["messages"][-1]


@pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke"])
def test_a_tool_call_after_a_preamble_longer_than_the_step_runs(mode: str) -> None:
    assert count_tokens(PREAMBLE) > 48
    RAN.clear()
    agent = create_agent(
        IgnoresMaxTokens(policy=preamble_then_call), [get_weather], middleware=[LeanBudgetMiddleware(step_tokens=48)]
    )
    inputs = {"messages": [{"role": "user", "content": "Weather in Oslo?"}]}
    with Ledger() as ledger:
        if mode == "invoke":
            result = agent.invoke(inputs)
        elif mode == "stream":
            result = list(agent.stream(inputs, stream_mode="values"))[-1]
        else:
            result = asyncio.run(agent.ainvoke(inputs))
    assert RAN == ["Oslo"]
    assert final(result).content == "It is Oslo: 21C sunny"
    step = next(m for m in result["messages"] if isinstance(m, AIMessage) and m.tool_calls)
    assert count_tokens(step.content) <= 48  # the preamble's text is still cut
    # the stream was read to its end (the model generated it all): no saving is claimed
    assert ledger.totals("budget")["output_before"] == ledger.totals("budget")["output_after"]


WORDS = " ".join(f"w{i}" for i in range(30))


def answer_words(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    return {"text": WORDS}


@pytest.mark.parametrize("baseline", [None, 1000, 20, 2])
def test_baseline_tokens_is_ledger_only(baseline: int | None) -> None:
    llm = ScriptedChatModel(policy=answer_words)
    agent = create_agent(llm, [], middleware=[LeanBudgetMiddleware(step_tokens=100, baseline_tokens=baseline)])
    result = agent.invoke({"messages": [{"role": "user", "content": "q"}]})
    assert final(result).content == WORDS
    assert final(result).response_metadata["stop_reason"] == "natural"


@pytest.mark.parametrize("bad", [-1, 0, True, "100", 10.5])
def test_bad_baseline_tokens_is_a_configuration_error(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="baseline_tokens"):
        LeanBudgetMiddleware(step_tokens=100, baseline_tokens=bad)


def test_run_tokens_below_step_tokens_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="run_tokens >= step_tokens"):
        LeanBudgetMiddleware(step_tokens=100, run_tokens=10)
    assert LeanBudgetMiddleware(step_tokens=100, run_tokens=100).budget.run_tokens == 100


def test_a_cut_books_no_saving_unless_the_caller_states_the_baseline() -> None:
    """The model's max_tokens (4096) is a cap, not what the answer would have cost: a cut
    answer (30 words, 10 kept) must not book the 4086-token gap."""
    inputs = {"messages": [{"role": "user", "content": "go"}]}
    plain = ScriptedChatModel(policy=answer_words, max_tokens=4096)
    create_agent(plain, []).invoke(inputs)
    lean = ScriptedChatModel(policy=answer_words, max_tokens=4096)
    with Ledger() as ledger:
        result = create_agent(lean, [], middleware=[LeanBudgetMiddleware(step_tokens=10)]).invoke(inputs)
    assert final(result).response_metadata["stop_reason"] in ("budget", "soft_budget")
    saved = ledger.totals("budget")["output_before"] - ledger.totals("budget")["output_after"]
    assert saved == 0
    assert saved <= plain.calls[-1]["output_tokens"] - lean.calls[-1]["output_tokens"]
    stated = ScriptedChatModel(policy=answer_words, max_tokens=4096)
    with Ledger() as ledger:
        create_agent(stated, [], middleware=[LeanBudgetMiddleware(step_tokens=10, baseline_tokens=30)]).invoke(inputs)
    assert ledger.totals("budget")["output_before"] == 30


@pytest.mark.parametrize(
    ("make", "fix"),
    [
        (lambda: LeanCompressMiddleware(compressor="llmlingua"), "ToolResultCompressor"),
        (lambda: LeanCacheMiddleware(cache="/tmp/x"), "LeanCache"),
        (lambda: LeanCacheMiddleware(cache={}), "LeanCache"),
    ],
)
def test_bad_constructor_arguments_fail_at_construction(make: Any, fix: str) -> None:
    with pytest.raises(ConfigurationError, match=fix):
        make()


class CutsAtMaxTokens(ScriptedChatModel):
    """A provider that honours max-tokens: cut in the preamble, the tool call is never written."""

    def _reply(self, messages: Any, tools: Any) -> Any:
        text, calls, inputs, segments = super()._reply(messages, tools)
        cut = self.max_tokens is not None and count_tokens(text) >= self.max_tokens
        return text, [] if cut else calls, inputs, segments


def test_a_provider_cut_before_a_tool_call_is_not_silent(caplog: pytest.LogCaptureFixture) -> None:
    RAN.clear()
    agent = create_agent(
        CutsAtMaxTokens(policy=preamble_then_call), [get_weather], middleware=[LeanBudgetMiddleware(step_tokens=48)]
    )
    with caplog.at_level("WARNING", logger="lean_plugins.budget"):
        result = agent.invoke({"messages": [{"role": "user", "content": "Weather in Oslo?"}]})
    assert RAN == []  # the provider never wrote the call: nothing can run it
    assert final(result).response_metadata["lean_budget_cut_before_tool_call"] is True
    assert "before any tool call" in caplog.text and "Raise step_tokens" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lean_plugins.budget"):
        agent = create_agent(
            CutsAtMaxTokens(policy=preamble_then_call), [get_weather], middleware=[LeanBudgetMiddleware(step_tokens=200)]
        )
        result = agent.invoke({"messages": [{"role": "user", "content": "Weather in Oslo?"}]})
    assert "lean_budget_cut_before_tool_call" not in final(result).response_metadata and not caplog.text


def test_a_bare_cache_middleware_exits_without_a_flush_failure() -> None:
    """Its temporary store is removed at exit; the exit flush used to run after the removal."""
    import subprocess
    import sys

    script = (
        "from langchain.agents import create_agent\n"
        "from lean_plugins.langchain.middleware import LeanCacheMiddleware\n"
        "from tests.integrations.langchain.agent_fakes import ScriptedChatModel\n"
        "llm = ScriptedChatModel(policy=lambda m, t: {'text': 'hello there'})\n"
        "agent = create_agent(llm, [], middleware=[LeanCacheMiddleware()])\n"
        "agent.invoke({'messages': [{'role': 'user', 'content': 'hi'}]})\n"
        "print('done')\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "done" in run.stdout, run.stderr[-2000:]
    assert "flush failed" not in run.stderr
