"""LangChain standard tests for LeanChatModel, run on the converted stories260K model."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("torch")
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from lean_plugins.langchain import LeanChatModel, LeanLLM

from lean_plugins.ledger import Ledger
from tests.stories260k import stories_dir


class _LocalChatModelSettings:
    @property
    def chat_model_class(self) -> type[LeanChatModel]:
        return LeanChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": str(stories_dir())}

    # A small local text model: no tools, no structured output, text only.
    has_tool_calling = False
    has_tool_choice = False
    has_structured_output = False
    supports_json_mode = False
    supports_image_inputs = False
    supports_image_urls = False
    supports_pdf_inputs = False
    supports_audio_inputs = False
    supports_video_inputs = False
    supports_anthropic_inputs = False
    supports_image_tool_message = False
    supports_pdf_tool_message = False
    supports_model_override = False
    returns_usage_metadata = True


class TestLeanChatModelUnit(_LocalChatModelSettings, ChatModelUnitTests):
    pass


class TestLeanChatModelIntegration(_LocalChatModelSettings, ChatModelIntegrationTests):
    pass


def test_stop_and_max_tokens_are_honoured_per_call() -> None:
    chat = LeanChatModel(model=str(stories_dir()), max_tokens=40)
    full = chat.invoke("Tell me a story.").content
    word = full.split()[3]
    cut = chat.invoke("Tell me a story.", stop=[word])
    assert (
        cut.content == full[: full.index(word)] and cut.response_metadata["finish_reason"] == "stop_sequence"
    )
    short = chat.invoke("Tell me a story.", max_tokens=5)
    assert short.usage_metadata["output_tokens"] == 5


def test_system_prompt_kv_cache_is_reused_and_ledger_counts() -> None:
    chat = LeanChatModel(model=str(stories_dir()), max_tokens=8)
    system = SystemMessage("You are a storyteller who tells short stories about animals in the forest.")
    chat.local_llm().clear_prefix_cache()
    with Ledger() as ledger:
        first = chat.invoke([system, HumanMessage("A story about a fox.")])
        second = chat.invoke([system, HumanMessage("A story about a bear.")])
    events = ledger.events
    assert [e.meta["cached_prefix_tokens"] for e in events][1] > 10
    assert events[0].input_before == first.usage_metadata["input_tokens"]
    assert events[1].output_before == second.usage_metadata["output_tokens"]
    assert isinstance(second, AIMessage)


async def test_llm_stream_async_and_stop() -> None:
    llm = LeanLLM(model=str(stories_dir()), max_tokens=30)
    text = llm.invoke("Once upon a time")
    word = text.split()[4]
    assert llm.invoke("Once upon a time", stop=[word]) == text[: text.index(word)]
    chunks = [c async for c in llm.astream("Once upon a time")]
    assert "".join(chunks) == text == await llm.ainvoke("Once upon a time")
    assert llm.get_num_tokens("Once upon a time") == 4
