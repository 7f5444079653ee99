"""Trust of the lean layers inside LlamaIndex agents: ``CachedLLM`` as a ``FunctionAgent``'s
LLM hits on repeated questions and caches its tool-calling replies exactly (exact repeats of
the whole request only), and an output budget's cuts are booked in the ledger as the LangChain
middleware books them.

Real parts: ``FunctionAgent``, the core cache, the budget, and LangChain's ``create_agent``
for the comparison; the only fake is the paid model (``ScriptedFunctionLLM``, a real
``FunctionCallingLLM``, and ``ScriptedChatModel`` on the LangChain side), which calls tools
with arguments copied from what it was sent.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("llama_index.core.agent.workflow")

from lean_plugins.llama_index import CachedLLM, with_output_budget
from llama_index.core.agent.workflow import AgentStream, FunctionAgent, ToolCall
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel

from lean_plugins.cache import LeanCache
from lean_plugins.ledger import Ledger, is_cache_hit
from tests.integrations.langchain.agent_fakes import search_then_answer
from tests.integrations.llama_index.agent_fakes import ScriptedFunctionLLM
from tests.integrations.llama_index.test_agents import ANSWER, GOAL, search

OTHER = "Who built the chapel on the hill?"


@pytest.fixture
def cache(tmp_path: Any) -> LeanCache:
    return LeanCache(path=tmp_path / "cache", mode="exact", guard=False, verifier=False)


def scripted(**kwargs: Any) -> ScriptedFunctionLLM:
    return ScriptedFunctionLLM(policy=search_then_answer({GOAL: ANSWER}), **kwargs)


async def run(agent: FunctionAgent, goal: str = GOAL) -> tuple[str, list[tuple[str, str, dict[str, Any]]]]:
    handler = agent.run(user_msg=goal)
    calls = [(e.tool_id, e.tool_name, e.tool_kwargs) async for e in handler.stream_events() if type(e) is ToolCall]
    return str(await handler), calls


def agent_for(llm: Any, streaming: bool = False) -> FunctionAgent:
    return FunctionAgent(tools=[FunctionTool.from_defaults(search)], llm=llm, streaming=streaming)


# -- 2. a question asked again after another one is served -----------------------------------------
@pytest.mark.parametrize("budgeted", [False, True])
async def test_question_asked_again_after_another_is_served(cache: LeanCache, budgeted: bool) -> None:
    # The scripted LLM keeps a record of its calls in a field, as recording or counting LLMs
    # do: state the LLM changes itself on every call is not configuration, and must not move
    # the cache's namespace.
    inner = scripted(max_tokens=150)
    agent = agent_for(CachedLLM(with_output_budget(inner, 60) if budgeted else inner, cache=cache))
    first, first_calls = await run(agent)
    await run(agent, OTHER)
    served = len(inner.calls)
    again, again_calls = await run(agent)
    assert len(inner.calls) == served  # both steps served by the cache
    assert again == first and again_calls == first_calls


async def test_a_changed_setting_still_changes_the_namespace(cache: LeanCache) -> None:
    inner = scripted()
    agent = agent_for(CachedLLM(inner, cache=cache))
    await run(agent)
    served = len(inner.calls)
    inner.max_tokens = 77  # the user changes a setting: its answers are not the old ones
    await run(agent)
    assert len(inner.calls) == served + 2


# -- 5. tool-calling replies cached, exactly ---------------------------------------------------------
@pytest.mark.parametrize("streaming", [False, True])
async def test_tool_calling_replies_are_cached_and_replayed_exactly(cache: LeanCache, streaming: bool) -> None:
    inner = scripted()
    agent = agent_for(CachedLLM(inner, cache=cache), streaming=streaming)
    with Ledger() as ledger:
        first, first_calls = await run(agent)
        served = len(inner.calls)
        again, again_calls = await run(agent)
    assert served == 2 and len(inner.calls) == served  # the tool-calling step too
    assert first.startswith(ANSWER) and again == first
    assert again_calls == first_calls == [("call-1", "search", {"query": GOAL})]
    assert ledger.select("cache", "hit")["events"] == 2


async def test_tool_calling_reply_not_served_to_a_variant(tmp_path: Any) -> None:
    # The semantic cache serves case- and punctuation-only variants of a plain question; a
    # request with tools bound is served on an exact repeat only (the tool call copies it).
    cache = LeanCache(path=tmp_path / "semantic")
    inner = ScriptedFunctionLLM(policy=search_then_answer({}))
    agent = agent_for(CachedLLM(inner, cache=cache))
    await run(agent, "look up key x!")
    for variant in ("look up key x?", "Look up key x!", "look up  key x!"):
        _, calls = await run(agent, variant)
        assert calls == [("call-1", "search", {"query": variant})]
    served = len(inner.calls)
    _, calls = await run(agent, "look up key x!")
    assert len(inner.calls) == served and calls == [("call-1", "search", {"query": "look up key x!"})]


class FunctionCall(BaseModel):
    """A provider SDK's typed tool call (as OpenAI's ``ChatCompletionMessageToolCall``)."""

    id: str
    name: str
    arguments: str


class TypedToolCallLLM(ScriptedFunctionLLM):
    """Puts its tool calls in ``additional_kwargs`` as typed objects, as provider SDKs do."""

    @staticmethod
    def _message(text: str, calls: list[dict[str, Any]]) -> ChatMessage:
        typed = [FunctionCall(id=c["id"], name=c["name"], arguments=repr(c["args"])) for c in calls]
        return ChatMessage(role=MessageRole.ASSISTANT, content=text, additional_kwargs={"tool_calls": typed} if typed else {})


def test_typed_tool_calls_come_back_as_the_same_objects(cache: LeanCache) -> None:
    inner = TypedToolCallLLM(policy=search_then_answer({GOAL: ANSWER}))
    cached = CachedLLM(inner, cache=cache)
    tool = FunctionTool.from_defaults(search)
    miss = cached.chat_with_tools([tool], user_msg=GOAL)
    hit = cached.chat_with_tools([tool], user_msg=GOAL)
    assert len(inner.calls) == 1 and is_cache_hit(hit.additional_kwargs)
    assert hit.message == miss.message
    assert isinstance(hit.message.additional_kwargs["tool_calls"][0], FunctionCall)
    # and a reply whose extras cannot be stored exactly is passed through, never altered
    odd = ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content="", additional_kwargs={"tool_calls": (1, 2)}))
    from lean_plugins.llama_index.cached_llm import encode_reply

    assert encode_reply(odd) is None


# -- 4. budget cuts booked alike in both frameworks ------------------------------------------------
def _budget_bookings(ledger: Ledger) -> list[tuple[str, int, bool]]:
    """The budget's events: (stop reason, output tokens saved, replayed)."""
    return [
        (e.meta.get("stop_reason"), e.output_before - e.output_after, bool(e.meta.get("replayed")))
        for e in ledger.events if e.layer == "budget"
    ]  # fmt: skip


async def test_budget_cuts_are_booked_as_the_langchain_middleware_books_them(tmp_path: Any) -> None:
    pytest.importorskip("langchain.agents")
    from langchain.agents import create_agent
    from lean_plugins.langchain.middleware import LeanBudgetMiddleware, LeanCacheMiddleware

    from lean_plugins.cache import LeanCache as CoreLeanCache
    from tests.integrations.langchain.agent_fakes import ScriptedChatModel
    from tests.integrations.langchain.test_middleware import ask
    from tests.integrations.langchain.test_middleware import search as lc_search

    # One scenario: the model's own max-tokens is 150, each step's budget 40, the cache outside
    # the budget; the question asked twice (the second time from the cache).
    lc_cache = CoreLeanCache(path=tmp_path / "lc", mode="exact", guard=False, verifier=False)
    lc_model = ScriptedChatModel(policy=search_then_answer({GOAL: ANSWER}), max_tokens=150)
    lc_agent = create_agent(lc_model, [lc_search], middleware=[LeanBudgetMiddleware(step_tokens=40), LeanCacheMiddleware(lc_cache)])
    with Ledger() as langchain_ledger:
        ask(lc_agent)
        ask(lc_agent)
    li_cache = LeanCache(path=tmp_path / "li", mode="exact", guard=False, verifier=False)
    li_inner = scripted(max_tokens=150)
    li_agent = agent_for(CachedLLM(with_output_budget(li_inner, 40), cache=li_cache))
    with Ledger() as llama_ledger:
        await run(li_agent)
        await run(li_agent)
    assert len(lc_model.calls) == len(li_inner.calls) == 2
    # A cut claims no saving unless a baseline is stated (agents.agent_step_budget: the model's
    # max-tokens is a cap, not a cost), and its replay from the cache books nothing more for the
    # budget (the cache books the whole call it avoided).
    expected = [("natural", 0, False), ("budget", 0, False)]
    assert _budget_bookings(langchain_ledger) == _budget_bookings(llama_ledger) == expected
    for ledger in (langchain_ledger, llama_ledger):
        assert ledger.select("cache", "hit")["events"] == 2 and ledger.select("llm")["events"] == 2


async def test_streamed_cut_answer_replayed_with_its_verdict(cache: LeanCache) -> None:
    inner = scripted(max_tokens=150)
    agent = agent_for(CachedLLM(with_output_budget(inner, 40), cache=cache), streaming=True)
    first, _ = await run(agent)
    with Ledger() as ledger:
        handler = agent.run(user_msg=GOAL)
        pieces = [e.delta async for e in handler.stream_events() if isinstance(e, AgentStream)]
        answer = str(await handler)
    assert answer == first and "".join(pieces).strip() == first.strip()
    assert len(inner.calls) == 2
    assert _budget_bookings(ledger) == []  # the replayed cut claims no budget saving (none was stated)
    assert ledger.select("cache", "hit")["events"] >= 1
    assert ledger.select("llm")["events"] == 0


def test_sync_streamed_tool_call_cached(cache: LeanCache) -> None:
    inner = scripted()
    cached = CachedLLM(inner, cache=cache)
    tool = FunctionTool.from_defaults(search)
    miss = list(cached.stream_chat_with_tools([tool], user_msg=GOAL))
    hit = list(cached.stream_chat_with_tools([tool], user_msg=GOAL))
    assert len(inner.calls) == 1 and len(hit) == 1 and is_cache_hit(hit[0].additional_kwargs)
    assert hit[0].message.additional_kwargs == miss[-1].message.additional_kwargs
    assert cached.get_tool_calls_from_response(hit[0])[0].tool_kwargs == {"query": GOAL}
