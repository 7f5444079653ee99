"""LangChain's own model cache (``set_llm_cache(LeanCache())``) on tool-calling requests.

A served tool call acts: one whose arguments copied "key x!" must never answer "key x?".
With tools bound, LangChain's cache serves only an exact repeat of the whole request
(:func:`lean_plugins.agents.exact_request_key`); a reply that calls a tool is never matched by
meaning, even where the tools are not visible in the call's arguments. The model is a real
``BaseChatModel`` whose replies copy the user's words (no paid API is involved).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from lean_plugins.langchain import LeanCache

from tests.integrations.langchain.agent_fakes import ScriptedChatModel, last_user_text


@tool
def lookup(key: str) -> str:
    """Look up a key in the key-value store."""
    return f"value of {key}"


def _copying_policy(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    """Call ``lookup`` with the user's words as the key when tools are bound, else answer."""
    goal = last_user_text(messages)
    if tools:
        return {"text": "", "tool_calls": [{"name": "lookup", "args": {"key": goal}, "id": "call-1"}]}
    return {"text": f"You asked: {goal}", "tool_calls": []}


@pytest.fixture
def global_cache(tmp_path: Path):
    cache = LeanCache(path=tmp_path / "lc")
    previous = get_llm_cache()
    set_llm_cache(cache)
    yield cache
    set_llm_cache(previous)


@pytest.mark.parametrize(
    "variant",
    ["look up key x?", "Look up key x!", "look up key x!!", "look up  key x!", "please look up key x!"],
)
def test_a_tool_call_is_served_only_to_the_identical_request(global_cache: LeanCache, variant: str) -> None:
    model = ScriptedChatModel(policy=_copying_policy).bind_tools([lookup])
    first = model.invoke([HumanMessage("look up key x!")])
    assert first.tool_calls[0]["args"] == {"key": "look up key x!"}
    again = model.invoke([HumanMessage(variant)])
    assert again.tool_calls[0]["args"] == {"key": variant}  # the model was asked, its own call came back
    assert model.invoke([HumanMessage("look up key x!")]).tool_calls == first.tool_calls  # an exact repeat is served
    assert len(model.bound.calls) == 2


async def test_async_tool_calls_follow_the_same_rule(global_cache: LeanCache) -> None:
    model = ScriptedChatModel(policy=_copying_policy).bind_tools([lookup])
    await model.ainvoke([HumanMessage("look up key x!")])
    served = await model.ainvoke([HumanMessage("Look up key x?")])
    assert served.tool_calls[0]["args"] == {"key": "Look up key x?"}
    await model.ainvoke([HumanMessage("look up key x!")])
    assert len(model.bound.calls) == 2


def test_a_reply_calling_a_tool_is_never_matched_by_meaning(global_cache: LeanCache) -> None:
    # Tools given to the model some other way than the call's arguments: the cache cannot see
    # them in the llm_string, but the stored reply calls a tool, so it is kept for exact repeats.
    model = ScriptedChatModel(policy=lambda messages, tools: _copying_policy(messages, [{"name": "lookup"}]))
    model.invoke([HumanMessage("Please look up the key named alpha.")])
    other = model.invoke([HumanMessage("Please look up the key called alpha.")])
    assert other.tool_calls[0]["args"] == {"key": "Please look up the key called alpha."}
    assert len(model.calls) == 2


def test_requests_without_tools_still_get_paraphrase_hits(global_cache: LeanCache) -> None:
    model = ScriptedChatModel(policy=_copying_policy)
    first = model.invoke([HumanMessage("How tall is the Eiffel Tower?")]).content
    assert model.invoke([HumanMessage("What is the height of the Eiffel Tower?")]).content == first
    assert len(model.calls) == 1
