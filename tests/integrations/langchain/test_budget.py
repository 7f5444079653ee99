"""LangChain output budget: handler and wrapper inside real LangChain models and chains."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import FakeStreamingListLLM, GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from lean_plugins.langchain import OutputBudgetCallbackHandler, with_output_budget
from lean_plugins.langchain.cache import served_from_cache
from pydantic import Field

from lean_plugins.budget import BudgetPredictor, OutputBudget, UsageAccountant
from lean_plugins.errors import BudgetExceededError
from lean_plugins.ledger import Ledger
from lean_plugins.tokens import count_tokens, encode
from tests.budget_helpers import ANSWER, first_tokens
from tests.integrations.langchain.budget_fakes import NoUsageToolModel, StreamingNoUsageToolModel

N_FULL = len(encode(ANSWER))


class TokenRecorder(BaseCallbackHandler):
    """Records what the model really streamed (to compare with the accounting)."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


class RecordingChatModel(GenericFakeChatModel):
    """The fake chat model, recording what it really streamed (the budget may close it)."""

    streamed: list[str] = Field(default_factory=list)

    def _stream(self, *args: Any, **kwargs: Any) -> Any:
        for chunk in super()._stream(*args, **kwargs):
            self.streamed.append(chunk.text)
            yield chunk


def chat_model(answer: str = ANSWER) -> RecordingChatModel:
    return RecordingChatModel(messages=itertools.repeat(answer))


@pytest.mark.parametrize("n", [1, 3, 10, 25, 57, N_FULL - 1, N_FULL, N_FULL + 3])
def test_chat_model_partial_text_is_the_first_n_tokens(n: int) -> None:
    model = chat_model()
    budgeted = with_output_budget(model, OutputBudget(n, soft_window=0.0))
    recorder = TokenRecorder()
    with Ledger() as ledger:
        message = budgeted.invoke("Who were the Normans?", config={"callbacks": [recorder]})
    assert isinstance(message, AIMessage)
    assert len(encode(message.content)) <= n, "never one token over budget"
    assert "".join(recorder.tokens) == message.content, "callbacks see the kept text only"
    produced = len(encode("".join(model.streamed)))
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
    # a model that sent no usage: the budget's own count, in the call's unit
    assert message.usage_metadata["output_tokens"] == produced and meta["unit"] == "cl100k_base"


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
    # the budget is predicted from what the model is sent (the rendered question)
    learned = budget.budget_for("Answer in one sentence: Who led the Normans?", route=chain.route)
    assert 4 <= learned < 10
    long_chain = with_output_budget(prompt | chat_model() | StrOutputParser(), budget, route=chain.route)
    out = long_chain.invoke({"question": "Who led the Normans?"})
    assert out.stop_reason in ("budget", "soft_budget") and len(encode(out)) <= learned


def test_a_chain_around_a_chat_model_keeps_tool_calls_and_the_cache(tmp_path) -> None:
    from lean_plugins.langchain import LeanCache

    from tests.integrations.langchain.budget_fakes import ToolCallingFake

    model = ToolCallingFake(answer=ANSWER, cache=LeanCache(path=tmp_path, mode="exact"))
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    chain = with_output_budget(prompt | model.bind_tools([weather]), OutputBudget(12, soft_window=0.0))
    first, again = chain.invoke({"q": "Normans?"}), chain.invoke({"q": "Normans?"})
    # Old code: the chain wrapper rebuilt AIMessage(content=text) and always streamed (no cache).
    assert first.content == again.content == first_tokens(ANSWER, 12)
    assert first.tool_calls[0]["name"] == again.tool_calls[0]["name"] == "weather"
    assert len(model.calls) == 1 and served_from_cache(again)
    text_chain = with_output_budget(prompt | model | StrOutputParser(), 12)
    streamed = "".join(text_chain.stream({"q": "Normans?"}))
    assert streamed == text_chain.invoke({"q": "Normans?"}) == first_tokens(ANSWER, 12)


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
def test_a_handler_passed_in_config_keeps_the_answer() -> None:
    # Old default (stop_stream=True): the stream raised OutputBudgetStop and the text was lost.
    handler = OutputBudgetCallbackHandler(OutputBudget(20, soft_window=0.0))
    text = "".join(c.content for c in chat_model().stream("q", config={"callbacks": [handler]}))
    assert text == ANSWER
    assert handler.last_result.stop_reason == "budget" and handler.last_result.text == first_tokens(ANSWER, 20)


def test_a_stopping_handler_in_a_budgeted_model_config_is_a_set_up_error() -> None:
    from lean_plugins.errors import ConfigurationError

    handler = OutputBudgetCallbackHandler(OutputBudget(20), stop_stream=True)
    with pytest.raises(ConfigurationError, match="with_output_budget"):
        with_output_budget(chat_model(), 10).invoke("q", config={"callbacks": [handler]})


def test_handler_stops_a_stream_and_keeps_the_text_on_the_exception() -> None:
    handler = OutputBudgetCallbackHandler(OutputBudget(20, soft_window=0.0), stop_stream=True)
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


# -- a chat model that stays a chat model (issue 14) ----------------------------------------------
def weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


def test_budgeted_chat_model_keeps_tool_calls_usage_and_metadata() -> None:
    from langchain_core.language_models import BaseChatModel

    from tests.integrations.langchain.budget_fakes import ToolCallingFake

    model = ToolCallingFake(answer=ANSWER)
    # bind first, wrap second; and wrap first, bind second
    for budgeted in (
        with_output_budget(model.bind_tools([weather]), OutputBudget(20, soft_window=0.0)),
        with_output_budget(model, OutputBudget(20, soft_window=0.0)).bind_tools([weather]),
    ):
        message = budgeted.invoke("Who were the Normans, and the weather in Paris?")
        assert message.content == first_tokens(ANSWER, 20)
        assert message.tool_calls == [{"name": "weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}]
        assert message.usage_metadata["output_tokens"] > 0 and message.usage_metadata["input_tokens"] > 0
        meta = message.response_metadata
        assert meta["stop_reason"] == "budget" and meta["finish_reason"] == "length"
        assert meta["model_name"] == "gpt-4o-mini"
        # the provider stopped at the max_tokens the budget set: its own count is the unit
        assert meta["output_budget"]["unit"] == "provider" and meta["output_budget"]["tokens_used"] == 20
        assert model.calls[-1]["tools"], "the model saw the bound tools"
        assert model.calls[-1]["generated"] != ANSWER, "the stream was closed at the budget"
    wrapped = with_output_budget(model, 20)
    assert isinstance(wrapped, BaseChatModel)
    assert wrapped.get_num_tokens("Who were the Normans?") == model.get_num_tokens("Who were the Normans?")
    structured = wrapped.with_structured_output(weather)
    assert structured.invoke("weather in Paris?") == {"city": "Paris"}
    assert wrapped.with_retry().invoke("q").response_metadata["stop_reason"] == "budget"
    assert wrapped.with_fallbacks([model]).invoke("q").response_metadata["stop_reason"] == "budget"


def test_streamed_chunks_keep_tool_call_chunks_and_end_with_the_verdict() -> None:
    from tests.integrations.langchain.budget_fakes import ToolCallingFake

    model = ToolCallingFake(answer="Rollo led them.")
    chunks = list(with_output_budget(model, 50).bind_tools([weather]).stream("q"))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert merged.content == "Rollo led them." and merged.tool_call_chunks[0]["name"] == "weather"
    assert merged.response_metadata["finish_reason"] == "stop", "one finish reason, not two concatenated"
    assert chunks[-1].response_metadata["stop_reason"] == "natural"
    assert merged.usage_metadata["output_tokens"] == len(encode("Rollo led them."))


def test_a_model_that_cannot_stream_never_shows_text_beyond_the_budget() -> None:
    from tests.integrations.langchain.budget_fakes import NonStreamingFake

    model = NonStreamingFake(answer=ANSWER)
    budgeted = with_output_budget(model, OutputBudget(7, soft_window=0.0))
    chunks = list(budgeted.stream("Who were the Normans?"))
    assert "".join(c.content for c in chunks) == first_tokens(ANSWER, 7)
    message = budgeted.invoke("Who were the Normans?")
    assert isinstance(message, AIMessage) and message.content == first_tokens(ANSWER, 7)
    assert (model.calls[-1]["streamed"] is False and model.max_tokens == 7) or model.max_tokens is None
    assert message.response_metadata["output_budget"]["tokens_generated"] == N_FULL


def test_callbacks_see_a_budget_stop_as_the_end_of_the_call() -> None:
    class Events(BaseCallbackHandler):
        def __init__(self) -> None:
            self.seen: list[str] = []

        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            self.seen.append("end:" + response.generations[0][0].message.response_metadata["stop_reason"])

        def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
            self.seen.append(f"error:{type(error).__name__}")

    events = Events()
    budgeted = with_output_budget(chat_model(), OutputBudget(10, soft_window=0.0))
    list(budgeted.stream("q", config={"callbacks": [events]}))
    budgeted.invoke("q", config={"callbacks": [events]})
    assert events.seen == ["end:budget", "end:budget"]


def test_a_cache_hit_is_booked_once_as_avoided(tmp_path) -> None:
    from lean_plugins.langchain import LeanCache

    model = GenericFakeChatModel(messages=itertools.repeat("Rollo led them."), cache=LeanCache(path=tmp_path, mode="exact"))
    accountant = UsageAccountant()
    handler = OutputBudgetCallbackHandler(OutputBudget(100, model="gpt-4o-mini", accountant=accountant))
    with Ledger() as ledger:
        for _ in range(2):
            model.invoke("Who led the Normans?", config={"callbacks": [handler]})
    # Old code: the hit was also booked as a paid "llm call" (2 calls, 0 cached).
    assert [(e.layer, e.kind) for e in ledger.events] == [("budget", "stop"), ("llm", "call"), ("cache", "hit")]
    totals = accountant.totals()
    assert (totals.calls, totals.cached_calls) == (2, 1)
    assert totals.output_tokens == totals.avoided_output_tokens == len(encode("Rollo led them."))


def test_budget_and_cache_compose_and_the_key_includes_the_budget(tmp_path) -> None:
    from lean_plugins.langchain import LeanCache

    from tests.integrations.langchain.budget_fakes import ToolCallingFake

    model = ToolCallingFake(answer=ANSWER, cache=LeanCache(path=tmp_path, mode="exact"))
    budgeted = with_output_budget(model, OutputBudget(15, soft_window=0.0))
    with Ledger() as ledger:
        first = budgeted.invoke("Who were the Normans?")
        again = budgeted.invoke("Who were the Normans?")
        streamed = "".join(c.content for c in budgeted.stream("Who were the Normans?"))
        other = with_output_budget(model, OutputBudget(25, soft_window=0.0)).invoke("Who were the Normans?")
    # Old code: the wrapper always streamed, LangChain's stream() skips the cache: 4 model calls.
    assert len(model.calls) == 2, "the repeat and the stream were served from the cache"
    assert first.content == again.content == streamed == first_tokens(ANSWER, 15)
    assert again.response_metadata["stop_reason"] == "budget" and served_from_cache(again)
    assert other.content == first_tokens(ANSWER, 25), "another budget is another key"
    assert ledger.totals("cache")["events"] == 2 and ledger.totals("budget")["events"] == 2


def test_the_global_cache_serves_a_budgeted_model(tmp_path) -> None:
    from langchain_core.globals import get_llm_cache, set_llm_cache
    from lean_plugins.langchain import LeanCache

    from tests.integrations.langchain.budget_fakes import ToolCallingFake

    model = ToolCallingFake(answer=ANSWER)
    previous = get_llm_cache()
    set_llm_cache(LeanCache(path=tmp_path, mode="exact"))
    try:
        budgeted = with_output_budget(model, OutputBudget(10, soft_window=0.0))
        answers = [budgeted.invoke("Who were the Normans?").content for _ in range(2)]
        answers.append("".join(c.content for c in budgeted.stream("Who were the Normans?")))
    finally:
        set_llm_cache(previous)
    assert answers == [first_tokens(ANSWER, 10)] * 3 and len(model.calls) == 1


def test_an_accounting_handler_in_config_does_not_count_a_budgeted_call_twice() -> None:
    accountant = UsageAccountant()
    handler = OutputBudgetCallbackHandler(OutputBudget(100, accountant=accountant))
    budget = OutputBudget(10, accountant=accountant)
    with_output_budget(chat_model(), budget).invoke("q", config={"callbacks": [handler]})
    assert accountant.totals().calls == 1 and handler.last_result is None


def test_a_streaming_text_llm_is_cut_and_its_callbacks_end_normally() -> None:
    from langchain_core.language_models import BaseLLM
    from langchain_core.outputs import Generation, GenerationChunk, LLMResult

    class WordLLM(BaseLLM):
        streamed: list[str] = Field(default_factory=list)
        max_tokens: int | None = None

        @property
        def _llm_type(self) -> str:
            return "words"

        def _generate(self, prompts, stop=None, run_manager=None, **kwargs):
            return LLMResult(generations=[[Generation(text=ANSWER)] for _ in prompts])

        def _stream(self, prompt, stop=None, run_manager=None, **kwargs):
            for i, word in enumerate(ANSWER.split(" ")):
                piece = word if i == 0 else " " + word
                self.streamed.append(piece)
                yield GenerationChunk(text=piece)

    class Events(BaseCallbackHandler):
        def __init__(self) -> None:
            self.seen: list[str] = []

        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            self.seen.append("end:" + response.generations[0][0].generation_info["stop_reason"])

        def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
            self.seen.append(f"error:{type(error).__name__}")

    llm, events = WordLLM(), Events()
    budgeted = with_output_budget(llm, OutputBudget(9, soft_window=0.0))
    text = budgeted.invoke("q", config={"callbacks": [events]})
    streamed = "".join(budgeted.stream("q", config={"callbacks": [events]}))
    assert text == streamed == first_tokens(ANSWER, 9) and text.stop_reason == "budget"
    # Old code: the wrapper closed the LLM's own run, so tracers saw on_llm_error(GeneratorExit).
    assert events.seen == ["end:budget", "end:budget"]
    assert len("".join(llm.streamed)) < 2 * len(ANSWER), "both streams were closed at the budget"


async def test_a_tool_call_only_reply_survives_every_path() -> None:
    call = {"name": "weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}

    def budgeted() -> Any:
        model = GenericFakeChatModel(messages=itertools.repeat(AIMessage(content="", tool_calls=[call])))
        return with_output_budget(model, OutputBudget(100))

    # This fake streams only text: its stream of a tool-call-only reply is empty, so the
    # wrapper asks for the whole answer (old code: an empty answer, the tool call lost).
    assert budgeted().invoke("q").tool_calls == [call]
    assert (await budgeted().ainvoke("q")).tool_calls == [call]
    chunks = list(budgeted().stream("q"))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert merged.tool_call_chunks[0]["name"] == "weather" and merged.content == ""


# -- a tool-calling reply the provider reports no usage for (b07) --------------------------------
TOOL_TEXT = "Let me look that up in the archive."
TOOL_CALL = {"name": "search", "args": {"query": "the bridge over the Tarn"}, "id": "call-7"}
#: The reply's output tokens, counted here without the code under test: its text plus its tool
#: call as canonical JSON (name, arguments, id), as LlamaIndex's adapters book the same reply.
TOOL_REPLY_TOKENS = count_tokens(TOOL_TEXT) + count_tokens(
    json.dumps([TOOL_CALL], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
)


def _no_usage_tool_model(streams: bool) -> NoUsageToolModel:
    model = StreamingNoUsageToolModel if streams else NoUsageToolModel
    return model(responses=[AIMessage(content=TOOL_TEXT, tool_calls=[TOOL_CALL])])


@pytest.mark.parametrize("streams", [False, True])
def test_budget_books_a_tool_call_reply_as_text_plus_calls(streams: bool) -> None:
    budgeted = with_output_budget(_no_usage_tool_model(streams), 200)
    with Ledger() as ledger:
        reply = budgeted.invoke("Who built the bridge?")
    assert [(c["name"], c["args"], c["id"]) for c in reply.tool_calls] == [("search", TOOL_CALL["args"], "call-7")]
    booked = ledger.select("llm")
    # Old code: the text only (count_tokens(TOOL_TEXT)).
    assert (booked["events"], booked["output_after"]) == (1, TOOL_REPLY_TOKENS)
    assert reply.usage_metadata["output_tokens"] == TOOL_REPLY_TOKENS


def test_handler_books_a_tool_call_reply_as_the_budget_does() -> None:
    handler = OutputBudgetCallbackHandler(200)
    with Ledger() as ledger:
        _no_usage_tool_model(False).invoke("Who built the bridge?", config={"callbacks": [handler]})
    assert ledger.select("llm")["output_after"] == TOOL_REPLY_TOKENS
    assert handler.last_result.tokens_generated == TOOL_REPLY_TOKENS
