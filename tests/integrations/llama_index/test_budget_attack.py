"""Issue 27 on the LlamaIndex side: ``with_output_budget(llm, n)`` in a tool-calling step closed
the stream at the budget, so a tool call written after a preamble longer than ``n`` was lost;
and a cut booked the LLM's max-tokens setting as saved. The LLM is the function-calling fake of
``test_budget.py`` (a provider fake: it streams ``ANSWER`` word by word, then calls the tool)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from lean_plugins.llama_index import with_output_budget
from llama_index.core.llms import ChatMessage
from llama_index.core.tools import FunctionTool

from lean_plugins.ledger import Ledger
from lean_plugins.tokens import count_tokens
from tests.budget_helpers import ANSWER, first_tokens
from tests.integrations.llama_index.test_budget import _tool_fake, weather


def _ignores_max_tokens() -> Any:
    base = type(_tool_fake())

    class IgnoresMaxTokens(base):  # type: ignore[misc, valid-type]
        """A provider that does not map the max-tokens field: it writes its whole reply."""

        def stream_chat(self, messages: Any, tools: Any = None, **kwargs: Any) -> Any:
            return base(max_tokens=None).stream_chat(messages, tools=tools, **kwargs)

    return IgnoresMaxTokens(max_tokens=200)


def test_a_tool_call_after_a_preamble_longer_than_the_step_is_kept() -> None:
    assert count_tokens(ANSWER) > 10
    tool = FunctionTool.from_defaults(fn=weather)
    budgeted = with_output_budget(_ignores_max_tokens(), 10)
    with Ledger() as ledger:
        response = budgeted.chat_with_tools([tool], user_msg="Weather in Paris?")
    assert response.message.content == first_tokens(ANSWER, 10)  # the text is still cut
    calls = budgeted.get_tool_calls_from_response(response)
    assert [(c.tool_name, c.tool_kwargs) for c in calls] == [("weather", {"city": "Paris"})]
    # the stream was read to its end (the model generated it all): no saving is claimed
    assert ledger.totals("budget")["output_before"] == ledger.totals("budget")["output_after"]
    answer = budgeted.predict_and_call([tool], user_msg="Weather in Paris?")
    assert str(answer) == "sunny in Paris"


def test_async_and_streamed_tool_steps_keep_the_call() -> None:
    tool = FunctionTool.from_defaults(fn=weather)
    budgeted = with_output_budget(_ignores_max_tokens(), 10)
    response = asyncio.run(budgeted.achat_with_tools([tool], user_msg="Weather in Paris?"))
    assert [c.tool_name for c in budgeted.get_tool_calls_from_response(response)] == ["weather"]
    last = list(budgeted.stream_chat_with_tools([tool], user_msg="Weather in Paris?"))[-1]
    assert [c.tool_name for c in budgeted.get_tool_calls_from_response(last)] == ["weather"]


def test_without_tools_the_stream_is_still_closed_at_the_budget() -> None:
    llm = _ignores_max_tokens()
    budgeted = with_output_budget(llm, 10)
    response = budgeted.chat([ChatMessage(role="user", content="q")])
    assert response.message.content == first_tokens(ANSWER, 10)
    assert response.additional_kwargs["stop_reason"] == "budget"


@pytest.mark.parametrize("stated", [None, 200])
def test_a_cut_books_the_llm_max_tokens_only_when_stated(stated: int | None) -> None:
    """The LLM's max_tokens (200) is a cap, not what the cut answer would have cost."""
    from llama_index.core.llms import ChatMessage

    from lean_plugins.agents import agent_step_budget

    llm = _tool_fake()  # honours max_tokens: cut by the provider at the budget
    budget = 10 if stated is None else agent_step_budget(10, llm, stated)
    with Ledger() as ledger:
        response = with_output_budget(llm, budget).chat([ChatMessage(role="user", content="q")])
    assert response.additional_kwargs["stop_reason"] == "budget"
    totals = ledger.totals("budget")
    assert totals["output_before"] == (totals["output_after"] if stated is None else 200)
