"""LeanCacheMiddleware never serves one request's answer to another that middleware inside it
turns into a different model request (issue 27): a per-user dynamic prompt reading the run
context, one instance shared by agents with different prompts, a router swapping the model,
and custom chat models whose declared fields are not in their ``_identifying_params``.

Real ``create_agent`` and LangChain middleware; the chat model is the scripted fake (no
paid API here)."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, dynamic_prompt, wrap_model_call
from lean_plugins.langchain.middleware import LeanCacheMiddleware

from lean_plugins.agents import context_fingerprint, received_as_keyed
from lean_plugins.cache import LeanCache as CoreLeanCache
from lean_plugins.ledger import is_cache_hit
from tests.integrations.langchain.agent_fakes import ScriptedChatModel

QUESTION = {"messages": [{"role": "user", "content": "What is my balance?"}]}


@dataclass
class User:
    name: str


@dataclass
class Tier:
    tier: str


@pytest.fixture
def cache(tmp_path: Any) -> CoreLeanCache:
    return CoreLeanCache(path=tmp_path / "cache", mode="exact", guard=False, verifier=False)


def echo_system(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    """Answers with the system prompt it received (what the user sees depends on it)."""
    system = [m["content"] for m in messages if m["role"] == "system"]
    return {"text": f"[{system[0] if system else 'no system'}]"}


@dynamic_prompt
def per_user(request: ModelRequest) -> str:
    user = request.runtime.context.name
    return f"Talking to {user}; balance {'$10' if user == 'alice' else '$9999'}."


def final(result: dict[str, Any]) -> Any:
    return result["messages"][-1]


@pytest.mark.parametrize("cache_first", [True, False], ids=["cache-outside-prompt", "cache-inside-prompt"])
def test_per_user_prompt_never_serves_another_users_answer(cache: CoreLeanCache, cache_first: bool) -> None:
    llm = ScriptedChatModel(policy=echo_system)
    middleware = [LeanCacheMiddleware(cache), per_user] if cache_first else [per_user, LeanCacheMiddleware(cache)]
    agent = create_agent(llm, [], middleware=middleware, context_schema=User)
    alice = final(agent.invoke(QUESTION, context=User("alice")))
    bob = final(agent.invoke(QUESTION, context=User("bob")))
    assert "$10" in alice.content and "$9999" in bob.content
    assert len(llm.calls) == 2
    again = final(agent.invoke(QUESTION, context=User("alice")))
    assert "$10" in again.content
    if not cache_first:  # the cache sees the prompt: alice's repeat is a hit
        assert is_cache_hit(again.response_metadata) and len(llm.calls) == 2


def test_edit_after_the_cache_is_not_stored_and_warns_once(cache: CoreLeanCache, caplog: Any) -> None:
    llm = ScriptedChatModel(policy=echo_system)
    agent = create_agent(llm, [], middleware=[LeanCacheMiddleware(cache), per_user], context_schema=User)
    with caplog.at_level(logging.WARNING, logger="lean_plugins.cache"):
        for _ in range(2):
            answer = final(agent.invoke(QUESTION, context=User("alice")))
            assert not is_cache_hit(answer.response_metadata)
    assert len(llm.calls) == 2  # nothing stored: the model received a prompt the key lacks
    warnings = [r.getMessage() for r in caplog.records if "LeanCacheMiddleware" in r.getMessage()]
    assert len(warnings) == 1 and "later in the middleware list" in warnings[0]


def test_async_per_user_prompt(cache: CoreLeanCache) -> None:
    llm = ScriptedChatModel(policy=echo_system)
    agent = create_agent(llm, [], middleware=[LeanCacheMiddleware(cache), per_user], context_schema=User)

    async def run() -> tuple[Any, Any]:
        alice = await agent.ainvoke(QUESTION, context=User("alice"))
        bob = await agent.ainvoke(QUESTION, context=User("bob"))
        return final(alice), final(bob)

    alice, bob = asyncio.run(run())
    assert "$10" in alice.content and "$9999" in bob.content


def test_same_context_without_prompt_edits_is_a_hit(cache: CoreLeanCache) -> None:
    llm = ScriptedChatModel(policy=echo_system)
    agent = create_agent(llm, [], system_prompt="Be brief.", middleware=[LeanCacheMiddleware(cache)], context_schema=User)
    agent.invoke(QUESTION, context=User("alice"))
    again = final(agent.invoke(QUESTION, context=User("alice")))
    other = final(agent.invoke(QUESTION, context=User("bob")))
    assert is_cache_hit(again.response_metadata)
    assert not is_cache_hit(other.response_metadata)  # the context is in the key
    assert len(llm.calls) == 2


def test_context_without_a_plain_value_is_neither_served_nor_stored(cache: CoreLeanCache) -> None:
    @dataclass
    class WithClient:
        name: str
        lock: Any

    llm = ScriptedChatModel(policy=echo_system)
    agent = create_agent(llm, [], system_prompt="Be brief.", middleware=[LeanCacheMiddleware(cache)], context_schema=WithClient)
    for _ in range(2):
        answer = final(agent.invoke(QUESTION, context=WithClient("alice", threading.Lock())))
        assert not is_cache_hit(answer.response_metadata)
    assert len(llm.calls) == 2


def test_one_instance_shared_by_agents_with_different_prompts(cache: CoreLeanCache) -> None:
    @dynamic_prompt
    def french(request: ModelRequest) -> str:
        return "Answer in French."

    @dynamic_prompt
    def german(request: ModelRequest) -> str:
        return "Answer in German."

    shared = LeanCacheMiddleware(cache)
    first = create_agent(ScriptedChatModel(policy=echo_system), [], middleware=[shared, french])
    second = create_agent(ScriptedChatModel(policy=echo_system), [], middleware=[shared, german])
    assert "French" in final(first.invoke(QUESTION)).content
    assert "German" in final(second.invoke(QUESTION)).content


def test_router_after_the_cache_swapping_the_model(cache: CoreLeanCache) -> None:
    big = ScriptedChatModel(policy=lambda m, t: {"text": "BIG answer"}, model_name="big")

    @wrap_model_call
    def route(request: ModelRequest, handler: Any) -> Any:
        if request.runtime.context.tier == "premium":
            request = request.override(model=big)
        return handler(request)

    small = ScriptedChatModel(policy=lambda m, t: {"text": "small answer"})
    agent = create_agent(small, [], middleware=[LeanCacheMiddleware(cache), route], context_schema=Tier)
    # The same context twice: the key holds it, yet the model the cache keyed on never answered.
    assert final(agent.invoke(QUESTION, context=Tier("premium"))).content == "BIG answer"
    assert final(agent.invoke(QUESTION, context=Tier("premium"))).content == "BIG answer"
    assert len(big.calls) == 2 and not small.calls
    assert final(agent.invoke(QUESTION, context=Tier("free"))).content == "small answer"


class Language(ScriptedChatModel):
    """A custom model on LangChain's default ``_identifying_params`` with an answer-changing field."""

    language: str = "en"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {}


def test_custom_model_declared_fields_are_in_a_shared_namespace_key(cache: CoreLeanCache) -> None:
    answers = {"en": "Hello!", "de": "Hallo!"}
    for language in ("en", "de", "en"):
        llm = Language(language=language, policy=lambda m, t, lang=language: {"text": answers[lang]})
        agent = create_agent(llm, [], middleware=[LeanCacheMiddleware(cache, namespace="prod")])
        assert final(agent.invoke(QUESTION)).content == answers[language]
    # The third agent (en again, a rebuilt model) is served from the shared namespace.
    assert not llm.calls


def test_context_fingerprint_rule() -> None:
    assert context_fingerprint(None) == ""
    assert context_fingerprint(User("alice")) == context_fingerprint(User("alice"))
    assert context_fingerprint(User("alice")) != context_fingerprint(User("bob"))
    assert context_fingerprint({"b": 1, "a": [1, 2]}) == context_fingerprint({"a": [1, 2], "b": 1})
    assert context_fingerprint({"client": object()}) is None


def test_received_as_keyed_rule() -> None:
    keyed = [{"role": "system", "content": "S"}, {"role": "human", "content": "q"},
             {"role": "tool", "content": "long result", "tool_call_id": "1"}]  # fmt: skip
    shortened = [keyed[0], {"role": "human", "content": [{"type": "text", "text": "q", "cache_control": {}}]},
                 {"role": "tool", "content": "short", "tool_call_id": "1"}]  # fmt: skip
    assert received_as_keyed(keyed, shortened)
    assert not received_as_keyed(keyed, [{"role": "system", "content": "S2"}, *keyed[1:]])
    assert not received_as_keyed(keyed, keyed[1:])
    assert not received_as_keyed(keyed, [*keyed[:2], {**keyed[2], "tool_call_id": "2"}])


def test_custom_model_max_tokens_field_is_in_the_key(cache: CoreLeanCache) -> None:
    """``max_tokens`` is a setting, not a secret (a name holding "token" is not a token)."""
    for limit, expected_calls in ((None, 1), (3, 1), (None, 0)):
        llm = Language(max_tokens=limit, policy=lambda m, t: {"text": "one two three four five six seven"})
        agent = create_agent(llm, [], middleware=[LeanCacheMiddleware(cache, namespace="prod")])
        agent.invoke(QUESTION)
        assert len(llm.calls) == expected_calls


def test_streamed_runs_store_when_the_model_got_the_keyed_request(cache: CoreLeanCache) -> None:
    """The model call is watched when streamed too (sync and async): the cache after the
    prompt stores, and the repeat is served."""
    llm = ScriptedChatModel(policy=echo_system)
    agent = create_agent(llm, [], middleware=[per_user, LeanCacheMiddleware(cache)], context_schema=User)
    for _ in range(2):
        list(agent.stream(QUESTION, context=User("alice"), stream_mode="messages"))
    assert len(llm.calls) == 1

    async def run() -> None:
        for _ in range(2):
            [c async for c in agent.astream(QUESTION, context=User("bob"), stream_mode="messages")]

    asyncio.run(run())
    assert len(llm.calls) == 2
