"""LlamaIndex LeanLocalLLM's async methods run generation off the event loop."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("torch")

from llama_index.core.base.llms.types import ChatMessage

from lean_plugins.generation import GenerationStep
from tests.budget_helpers import STORY_START, stories_llm_fixture

core_llm = pytest.fixture(scope="module", name="core_llm")(stories_llm_fixture)


@pytest.fixture(scope="module")
def llm(core_llm):
    from lean_plugins.llama_index import LeanLocalLLM

    return LeanLocalLLM(client=core_llm, model="stories260K", max_new_tokens=40)


async def _ticks_seen_while_generating(call) -> list[int]:
    """Run ``call(criterion)`` beside a coroutine that counts its turns on the loop; return the
    count the model saw at each generated token (the criterion runs inside generation)."""
    ticks = 0
    seen: list[int] = []

    def criterion(step: GenerationStep) -> bool:
        seen.append(ticks)
        return False

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # let the ticker start
    try:
        await call(criterion)
    finally:
        task.cancel()
    return seen


async def test_async_methods_leave_the_event_loop_free(llm) -> None:
    async def complete(criterion) -> None:
        await llm.acomplete(STORY_START, stopping_criteria=[criterion])

    async def stream_complete(criterion) -> None:
        async for _ in await llm.astream_complete(STORY_START, stopping_criteria=[criterion]):
            pass

    async def chat(criterion) -> None:
        await llm.achat([ChatMessage(role="user", content=STORY_START)], stopping_criteria=[criterion])

    async def stream_chat(criterion) -> None:
        messages = [ChatMessage(role="user", content=STORY_START)]
        async for _ in await llm.astream_chat(messages, stopping_criteria=[criterion]):
            pass

    for call in (complete, stream_complete, chat, stream_chat):
        seen = await _ticks_seen_while_generating(call)
        assert len(seen) > 5, f"{call.__name__}: the model generated"
        # Old code ran the model on the loop: the ticker never ran while tokens were generated.
        assert seen[-1] > seen[0], f"{call.__name__}: another coroutine ran during generation"


async def test_async_answers_equal_the_sync_ones(llm) -> None:
    assert (await llm.acomplete(STORY_START)).text == llm.complete(STORY_START).text
    streamed = [r async for r in await llm.astream_complete(STORY_START)]
    assert "".join(r.delta for r in streamed) == streamed[-1].text == llm.complete(STORY_START).text
    assert streamed[-1].raw["usage"]["completion_tokens"] > 0
    messages = [ChatMessage(role="user", content=STORY_START)]
    sync_chat = llm.chat(messages).message.content
    assert (await llm.achat(messages)).message.content == sync_chat
    chunks = [r async for r in await llm.astream_chat(messages)]
    assert chunks[-1].message.content == sync_chat and "".join(c.delta for c in chunks) == sync_chat
