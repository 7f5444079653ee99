"""LangChain output budget: handler and wrapper inside real LangChain models and chains."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import FakeStreamingListLLM, GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from lean_plugins.langchain import OutputBudgetCallbackHandler, with_output_budget

from lean_plugins.budget import BudgetPredictor, OutputBudget, UsageAccountant
from lean_plugins.errors import BudgetExceededError
from lean_plugins.ledger import Ledger
from lean_plugins.tokens import encode
from tests.budget_helpers import ANSWER, first_tokens

N_FULL = len(encode(ANSWER))


class TokenRecorder(BaseCallbackHandler):
    """Records what the model really streamed (to compare with the accounting)."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


def chat_model(answer: str = ANSWER) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=itertools.repeat(answer))


@pytest.mark.parametrize("n", [1, 3, 10, 25, 57, N_FULL - 1, N_FULL, N_FULL + 3])
def test_chat_model_partial_text_is_the_first_n_tokens(n: int) -> None:
    budgeted = with_output_budget(chat_model(), OutputBudget(n, soft_window=0.0))
    recorder = TokenRecorder()
    with Ledger() as ledger:
        message = budgeted.invoke("Who were the Normans?", config={"callbacks": [recorder]})
    assert isinstance(message, AIMessage)
    assert len(encode(message.content)) <= n, "never one token over budget"
    produced = len(encode("".join(recorder.tokens)))
    if n >= N_FULL:
        assert message.content == ANSWER and message.response_metadata["stop_reason"] == "natural"
    else:
        assert message.content == first_tokens(ANSWER, n)
        assert message.response_metadata["stop_reason"] == "budget"
        if n < N_FULL - 5:
            assert produced < N_FULL, "the stream was closed, not read to its end"
    meta = message.response_metadata["output_budget"]
    assert meta["tokens_used"] == len(encode(message.content)) and meta["budget"] == n
    # accounting == what the model actually produced before it was stopped
    assert ledger.totals("llm")["output_after"] == produced == meta["tokens_generated"]
    assert ledger.totals("budget")["output_after"] == produced


def test_streamed_chunks_are_the_kept_text_and_end_with_the_stop_reason() -> None:
    budgeted = with_output_budget(chat_model(), OutputBudget(30))
    chunks = list(budgeted.stream("Who were the Normans?"))
    text = "".join(c.content for c in chunks)
    assert text == budgeted.invoke("Who were the Normans?").content
    assert chunks[-1].response_metadata["stop_reason"] in ("budget", "soft_budget")
    assert len(encode(text)) <= 30 and ANSWER.startswith(text)


def test_soft_stop_ends_on_a_sentence() -> None:
    first = ANSWER.index("France.") + len("France.")
    n = len(encode(ANSWER[:first])) + 2  # the sentence end lies in the final 15%
    message = with_output_budget(chat_model(), n).invoke("Who were the Normans?")
    assert message.response_metadata["stop_reason"] == "soft_budget"
    assert message.content == ANSWER[:first]


def test_llm_returns_budgeted_text() -> None:
    llm = FakeStreamingListLLM(responses=[ANSWER])
    with Ledger() as ledger:
        text = with_output_budget(llm, OutputBudget(12, soft_window=0.0)).invoke("Normans?")
    assert isinstance(text, str) and text == first_tokens(ANSWER, 12)
    assert text.stop_reason == "budget" and text.output_budget["tokens_used"] == 12
    # this fake builds the whole answer before streaming it: all of it was produced
    assert ledger.totals("llm")["output_after"] == N_FULL


def test_chain_route_is_the_template_identity_and_budget_is_learned() -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "Answer in one sentence: {question}")])
    predictor = BudgetPredictor(min_samples=5, floor=4)
    budget = OutputBudget(300, predictor=predictor, record_usage=False)
    chain = with_output_budget(prompt | chat_model("Rollo led them.") | StrOutputParser(), budget)
    assert chain.route and chain.route.startswith("template:")
    for _ in range(6):
        out = chain.invoke({"question": "Who led the Normans?"})
        assert out == "Rollo led them." and out.stop_reason == "natural"
    assert predictor.samples(chain.route) == 6
    learned = budget.budget_for("Who led the Normans?", route=chain.route)
    assert 4 <= learned < 10
    long_chain = with_output_budget(prompt | chat_model() | StrOutputParser(), budget, route=chain.route)
    out = long_chain.invoke({"question": "Who led the Normans?"})
    assert out.stop_reason in ("budget", "soft_budget") and len(encode(out)) <= learned


SEEN_MAX_TOKENS: list[int | None] = []


class FakeChatWithMaxTokens(GenericFakeChatModel):
    """A provider-like fake with a ``max_tokens`` field; records the value each call saw."""

    max_tokens: int | None = None

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        SEEN_MAX_TOKENS.append(self.max_tokens)
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def test_wrapper_sets_the_provider_max_tokens_up_front() -> None:
    model = FakeChatWithMaxTokens(messages=itertools.repeat(ANSWER), max_tokens=1000)
    SEEN_MAX_TOKENS.clear()
    with_output_budget(model, 17).invoke("q")
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model | StrOutputParser()
    with_output_budget(chain, 23).invoke({"q": "x"})
    with_output_budget(model.bind(stop=["zzz"]), 9).invoke("q")
    assert SEEN_MAX_TOKENS == [17, 23, 9]
    assert model.max_tokens == 1000, "the user's model is not modified"


def test_raise_on_stop_when_asked() -> None:
    budgeted = with_output_budget(chat_model(), OutputBudget(8, soft_window=0.0), raise_on_stop=True)
    with pytest.raises(BudgetExceededError) as info:
        budgeted.invoke("q")
    assert info.value.partial_text == first_tokens(ANSWER, 8)


async def test_async_invoke_and_stream() -> None:
    budgeted = with_output_budget(chat_model(), OutputBudget(15, soft_window=0.0))
    message = await budgeted.ainvoke("Who were the Normans?")
    assert message.content == first_tokens(ANSWER, 15)
    chunks = [c async for c in budgeted.astream("Who were the Normans?")]
    assert "".join(c.content for c in chunks) == message.content
    llm_text = await with_output_budget(FakeStreamingListLLM(responses=[ANSWER]), 6).ainvoke("q")
    assert llm_text == first_tokens(ANSWER, 6)


async def test_concurrent_async_calls_keep_their_own_budgets() -> None:
    import asyncio

    accountant = UsageAccountant()
    calls = [
        with_output_budget(chat_model(), OutputBudget(n, soft_window=0.0, accountant=accountant))
        for n in range(3, 23)
    ]
    with Ledger() as ledger:
        messages = await asyncio.gather(*(c.ainvoke("Who were the Normans?") for c in calls))
    assert [m.content for m in messages] == [first_tokens(ANSWER, n) for n in range(3, 23)]
    generated = sum(m.response_metadata["output_budget"]["tokens_generated"] for m in messages)
    assert accountant.totals().calls == 20
    assert accountant.totals().output_tokens == generated == ledger.totals("llm")["output_after"]


def test_batch_and_user_callbacks_are_kept() -> None:
    recorder = TokenRecorder()
    budgeted = with_output_budget(chat_model(), OutputBudget(5, soft_window=0.0))
    outs = budgeted.batch(["a", "b", "c"], config={"callbacks": [recorder]})
    assert [o.content for o in outs] == [first_tokens(ANSWER, 5)] * 3
    assert recorder.tokens


# -- the handler on its own ---------------------------------------------------------------------
def test_handler_stops_a_stream_and_keeps_the_text_on_the_exception() -> None:
    handler = OutputBudgetCallbackHandler(OutputBudget(20, soft_window=0.0))
    with pytest.raises(BudgetExceededError) as info:
        for _ in chat_model().stream("q", config={"callbacks": [handler]}):
            pass
    assert info.value.partial_text == first_tokens(ANSWER, 20)
    assert handler.last_result.stop_reason == "budget" and handler.last_result.tokens_used == 20


def test_handler_accounts_non_streamed_calls_with_provider_usage() -> None:
    usage = {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
    model = GenericFakeChatModel(messages=iter([AIMessage(content="Rollo led them.", usage_metadata=usage)]))
    accountant = UsageAccountant()
    handler = OutputBudgetCallbackHandler(OutputBudget(100, model="gpt-4o-mini", accountant=accountant))
    with Ledger() as ledger:
        model.invoke("Who led the Normans?", config={"callbacks": [handler]})
    assert handler.last_result.stop_reason == "natural"
    totals = accountant.totals(model="gpt-4o-mini")
    assert (totals.input_tokens, totals.output_tokens) == (11, 7)
    assert ledger.totals("llm")["output_after"] == 7


def test_handler_counts_exactly_over_many_streamed_calls() -> None:
    accountant = UsageAccountant()
    handler = OutputBudgetCallbackHandler(
        OutputBudget(40, soft_window=0.0, accountant=accountant), stop_stream=False
    )
    produced = 0
    for _ in range(5):
        recorder = TokenRecorder()
        list(chat_model().stream("q", config={"callbacks": [handler, recorder]}))
        produced += len(encode("".join(recorder.tokens)))
    # not stopped (stop_stream=False): every produced token is counted, the kept text is 40
    assert accountant.totals().output_tokens == produced == 5 * N_FULL
    assert all(r.stop_reason == "budget" and r.tokens_used == 40 for r in handler.results)


def test_a_cache_hit_is_accounted_as_avoided() -> None:
    cached_answer = AIMessage(content="Rollo led them.", response_metadata={"cache_hit": True})
    model = GenericFakeChatModel(messages=iter([cached_answer]))
    accountant = UsageAccountant()
    handler = OutputBudgetCallbackHandler(OutputBudget(100, model="gpt-4o-mini", accountant=accountant))
    with Ledger() as ledger:
        model.invoke("Who led the Normans?", config={"callbacks": [handler]})
    totals = accountant.totals()
    assert totals.cached_calls == 1 and totals.output_tokens == 0 and totals.dollars == 0
    assert totals.avoided_output_tokens == len(encode("Rollo led them.")) and totals.avoided_dollars > 0
    assert [e.kind for e in ledger.events] == ["cache_hit"]
