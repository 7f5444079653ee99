"""CachedLLM's namespace and fields the wrapped LLM changes itself (issue 27, F8b): a call log
(a list) is state and leaves the namespace; a plain setting such as ``model`` stays in it even
after the LLM changed it itself (a fallback), so a later change by the user is a new namespace.
The LLM is the scripted fake (no paid API here)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from lean_plugins.llama_index import CachedLLM
from llama_index.core.base.llms.types import ChatMessage
from pydantic import Field

from lean_plugins.cache import LeanCache as CoreLeanCache
from tests.integrations.llama_index.agent_fakes import ScriptedFunctionLLM

MESSAGES = [ChatMessage(role="user", content="hello there")]


class FallbackLLM(ScriptedFunctionLLM):
    """Switches its own ``model`` to a backup on its first call (as router LLMs do after a
    rate limit), and answers naming the model that wrote the answer."""

    model: str = Field(default="primary", description="The model that answers.")


def fallback_llm() -> FallbackLLM:
    llm = FallbackLLM(policy=lambda m, t: {"text": ""})

    def policy(messages: Any, tools: Any) -> dict[str, Any]:
        if llm.model == "primary":
            llm.model = "backup"
        return {"text": f"[{llm.model}] hi"}

    llm.policy = policy
    return llm


@pytest.fixture
def cache(tmp_path: Any) -> CoreLeanCache:
    return CoreLeanCache(path=tmp_path / "cache", mode="exact", guard=False, verifier=False)


def test_user_setting_the_model_after_the_llm_changed_it_is_a_miss(cache: CoreLeanCache) -> None:
    llm = fallback_llm()
    cached = CachedLLM(llm, cache)
    assert cached.chat(MESSAGES).message.content == "[backup] hi"
    assert cached.chat(MESSAGES).message.content == "[backup] hi"  # stored under model=backup: a hit
    assert len(llm.calls) == 1
    llm.model = "premium"
    assert cached.chat(MESSAGES).message.content == "[premium] hi"
    assert len(llm.calls) == 2
    llm.model = "backup"
    assert cached.chat(MESSAGES).message.content == "[backup] hi"
    assert len(llm.calls) == 2  # served


def test_call_log_is_state_and_a_repeat_is_served(cache: CoreLeanCache) -> None:
    llm = ScriptedFunctionLLM(policy=lambda m, t: {"text": "ANSWER"})
    cached = CachedLLM(llm, cache)
    cached.chat(MESSAGES)
    cached.chat(MESSAGES)
    assert len(llm.calls) == 1  # the call log (a list field) changed, yet the repeat is a hit
