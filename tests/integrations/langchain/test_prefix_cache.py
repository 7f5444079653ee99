"""LangChain: the prefix-cache tokens a chat model reports reach the ledger's `prefix cache` row."""

from __future__ import annotations

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from lean_plugins.langchain import PrefixCacheCallbackHandler

from lean_plugins.ledger import Ledger


def _reply(read: int, write: int) -> AIMessage:
    # What langchain-anthropic / langchain-openai put on a response (a paid API, so faked).
    return AIMessage(
        content="ok",
        usage_metadata={
            "input_tokens": 3000,
            "output_tokens": 2,
            "total_tokens": 3002,
            "input_token_details": {"cache_read": read, "cache_creation": write},
        },
        response_metadata={"model_name": "claude-sonnet-4-20250514"},
    )


@pytest.mark.parametrize("streamed", [False, True])
async def test_chain_books_cache_reads_and_writes(streamed: bool) -> None:
    model = GenericFakeChatModel(messages=iter([_reply(0, 2048), _reply(2048, 0)]))
    chain = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{q}")]) | model
    handler = PrefixCacheCallbackHandler()
    with Ledger("t") as ledger:
        for q in ("a", "b"):
            config = {"callbacks": [handler]}
            if streamed:
                [chunk async for chunk in chain.astream({"q": q}, config=config)]
            else:
                chain.invoke({"q": q}, config=config)
    row = ledger.summary().by_layer("prefix cache")
    if streamed:  # the fake model streams no usage: nothing to book, nothing invented
        assert row is None
        return
    assert row.events == 2
    assert row.dollars_saved == pytest.approx(2048 * (3.00 - 0.30) / 1e6 - 2048 * (3.75 - 3.00) / 1e6)
