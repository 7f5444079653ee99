"""LlamaIndex output budget: event handler, CallbackManager handler and the enforcing wrapper."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from lean_plugins.llama_index import OutputBudgetCallbackHandler, OutputBudgetHandler, with_output_budget
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import MockLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.llms.mock import MockFunctionCallingLLM

from lean_plugins.budget import OutputBudget, UsageAccountant
from lean_plugins.errors import BudgetExceededError
from lean_plugins.ledger import Ledger
from lean_plugins.tokens import count_tokens, encode
from tests.budget_helpers import ANSWER, first_tokens

N_FULL = len(encode(ANSWER))


class ScriptedLLM(CustomLLM):
    """Streams a fixed answer word by word (like a provider) and records what it produced."""

    answer: str = ANSWER
    produced: list[str] = []
    extra: dict = {}

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="scripted")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.produced.append(self.answer)
        return CompletionResponse(text=self.answer, additional_kwargs=self.extra)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> Iterator[CompletionResponse]:
            text = ""
            for piece in (p for p in re.split(r"(\s)", self.answer) if p):
                text += piece
                self.produced.append(piece)
                yield CompletionResponse(text=text, delta=piece)

        return gen()


@pytest.fixture
def event_handler():
    handlers: list[OutputBudgetHandler] = []

    def add(budget) -> OutputBudgetHandler:
        handler = OutputBudgetHandler(budget)
        get_dispatcher().add_event_handler(handler)
        handlers.append(handler)
        return handler

    yield add
    dispatcher = get_dispatcher()
    for handler in handlers:
        dispatcher.event_handlers.remove(handler)


@pytest.mark.parametrize("n", [1, 4, 19, 50, N_FULL - 1, N_FULL, N_FULL + 2])
def test_complete_keeps_exactly_the_first_n_tokens(n: int) -> None:
    llm = ScriptedLLM(produced=[])
    budgeted = with_output_budget(llm, OutputBudget(n, soft_window=0.0))
    with Ledger() as ledger:
        response = budgeted.complete("Who were the Normans?")
    assert len(encode(response.text)) <= n, "never one token over budget"
    produced = len(encode("".join(llm.produced)))
    if n >= N_FULL:
        assert response.text == ANSWER and response.additional_kwargs["stop_reason"] == "natural"
    else:
        assert response.text == first_tokens(ANSWER, n)
        assert response.additional_kwargs["stop_reason"] == "budget"
    if n < N_FULL - 5:
        assert produced < N_FULL, "the inner stream was closed at the budget"
    assert ledger.totals("llm")["output_after"] == produced
    assert response.additional_kwargs["output_budget"]["tokens_generated"] == produced


def test_stream_deltas_add_up_to_the_kept_text() -> None:
    budgeted = with_output_budget(ScriptedLLM(produced=[]), 40)
    responses = list(budgeted.stream_complete("Who were the Normans?"))
    text = "".join(r.delta for r in responses)
    assert text == responses[-1].text and ANSWER.startswith(text)
    assert responses[-1].additional_kwargs["stop_reason"] in ("budget", "soft_budget")
    assert len(encode(text)) <= 40


def test_chat_and_soft_stop() -> None:
    first = ANSWER.index("France.") + len("France.")
    n = len(encode(ANSWER[:first])) + 2
    budgeted = with_output_budget(ScriptedLLM(produced=[]), n)
    response = budgeted.chat([ChatMessage(role="user", content="Who were the Normans?")])
    assert response.message.content == ANSWER[:first]
    assert response.additional_kwargs["stop_reason"] == "soft_budget"


def test_mock_llm_gets_its_max_tokens_set_up_front() -> None:
    mock = MockLLM(max_tokens=200)
    budgeted = with_output_budget(mock, OutputBudget(12, soft_window=0.0))
    with Ledger() as ledger:
        response = budgeted.complete("anything")
    # the provider itself stopped at 12 (MockLLM writes max_tokens words "text")
    assert response.text == " ".join(["text"] * 12)
    assert response.additional_kwargs["stop_reason"] == "budget"
    assert ledger.totals("llm")["output_after"] == 12
    assert mock.max_tokens == 200, "the user's LLM is not modified"


async def test_async_paths() -> None:
    budgeted = with_output_budget(ScriptedLLM(produced=[]), OutputBudget(9, soft_window=0.0))
    response = await budgeted.acomplete("q")
    assert response.text == first_tokens(ANSWER, 9)
    chat = await budgeted.achat([ChatMessage(role="user", content="q")])
    assert chat.message.content == first_tokens(ANSWER, 9)
    deltas = [r.delta async for r in await budgeted.astream_complete("q")]
    assert "".join(deltas) == first_tokens(ANSWER, 9)


def test_raise_on_stop_when_asked() -> None:
    budgeted = with_output_budget(
        ScriptedLLM(produced=[]), OutputBudget(5, soft_window=0.0), raise_on_stop=True
    )
    with pytest.raises(BudgetExceededError) as info:
        budgeted.complete("q")
    assert info.value.partial_text == first_tokens(ANSWER, 5)


def test_query_engine_with_a_budgeted_llm() -> None:
    docs = [Document(text="The Normans gave their name to Normandy, a region in France.")]
    index = VectorStoreIndex.from_documents(docs, embed_model=MockEmbedding(embed_dim=8))
    budgeted = with_output_budget(ScriptedLLM(produced=[]), OutputBudget(15, soft_window=0.0))
    engine = index.as_query_engine(llm=budgeted)
    response = engine.query("Who were the Normans?")
    assert str(response) == first_tokens(ANSWER, 15)


def test_threads_share_one_accountant() -> None:
    accountant = UsageAccountant()
    budgeted = with_output_budget(
        ScriptedLLM(produced=[]), OutputBudget(7, soft_window=0.0, model="gpt-4o-mini", accountant=accountant)
    )
    texts: list[str] = []

    def worker() -> None:
        for _ in range(10):
            texts.append(budgeted.complete("q").text)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert texts == [first_tokens(ANSWER, 7)] * 40
    assert accountant.totals(model="gpt-4o-mini").calls == 40


# -- handlers (accounting) ----------------------------------------------------------------------
def test_event_handler_accounts_streamed_whole_and_closed_calls(event_handler) -> None:
    accountant = UsageAccountant()
    handler = event_handler(OutputBudget(30, soft_window=0.0, accountant=accountant))
    llm = ScriptedLLM(produced=[])
    llm.complete("q")
    assert handler.last_result.tokens_generated == N_FULL
    assert handler.last_result.stop_reason == "budget" and handler.last_result.tokens_used == 30
    for _ in llm.stream_complete("q"):
        pass
    assert handler.last_result.tokens_generated == N_FULL
    llm.produced.clear()
    stream = llm.stream_complete("q")
    for i, _ in enumerate(stream):
        if i == 10:
            break
    stream.close()
    produced = len(encode("".join(llm.produced)))
    assert handler.last_result.tokens_generated == produced < N_FULL
    assert accountant.totals().output_tokens == 2 * N_FULL + produced
    assert accountant.totals().calls == 3


def test_event_handler_skips_calls_the_wrapper_accounts(event_handler) -> None:
    accountant = UsageAccountant()
    handler = event_handler(OutputBudget(1000, accountant=accountant))
    budgeted = with_output_budget(ScriptedLLM(produced=[]), OutputBudget(10, accountant=accountant))
    budgeted.complete("q")
    assert handler.last_result is None
    assert accountant.totals().calls == 1


def test_callback_manager_handler_accounts_chat_and_completion() -> None:
    accountant = UsageAccountant()
    handler = OutputBudgetCallbackHandler(OutputBudget(100, model="gpt-4o-mini", accountant=accountant))
    mock = MockLLM(max_tokens=25, callback_manager=CallbackManager([handler]))
    completion = mock.complete("Tell me about the Normans")
    streamed = list(mock.stream_chat([ChatMessage(role="user", content="Tell me")]))
    # a CallbackManager sees a streamed call once, at its end, with the last response
    expected = len(encode(completion.text)) + len(encode(streamed[-1].message.content))
    totals = accountant.totals(model="gpt-4o-mini")
    assert totals.calls == 2 and totals.output_tokens == expected
    assert [r.stop_reason for r in handler.results] == ["natural", "natural"]


def test_a_cache_hit_is_accounted_as_avoided(event_handler) -> None:
    accountant = UsageAccountant()
    event_handler(OutputBudget(1000, model="gpt-4o-mini", accountant=accountant))
    ScriptedLLM(produced=[], answer="Rollo led them.", extra={"cache_hit": True}).complete("q")
    totals = accountant.totals()
    assert totals.cached_calls == 1 and totals.output_tokens == 0
    assert totals.avoided_output_tokens == len(encode("Rollo led them."))


# -- budget and cache together (issue 14) -------------------------------------------------------
def _cached(llm: Any, tmp_path: Any) -> Any:
    from lean_plugins.llama_index import CachedLLM

    from lean_plugins.cache import LeanCache

    return CachedLLM(llm, cache=LeanCache(path=tmp_path, mode="exact"))


@pytest.mark.parametrize("order", ["budget(cache(llm))", "cache(budget(llm))"])
def test_budget_and_cache_compose_in_either_order(order: str, tmp_path: Any) -> None:
    llm = ScriptedLLM(produced=[])
    ledger = Ledger()
    accountant = UsageAccountant(ledger)  # a view over the ledger the requests book into
    budget = OutputBudget(12, soft_window=0.0, accountant=accountant)
    if order == "budget(cache(llm))":
        budgeted = with_output_budget(_cached(llm, tmp_path), budget)
    else:
        budgeted = _cached(with_output_budget(llm, budget), tmp_path)
    with ledger:
        texts = [budgeted.complete("Who were the Normans?").text for _ in range(3)]
        streamed = "".join(r.delta for r in budgeted.stream_complete("Who were the Normans?"))
    # Old code: the budget closed the cache's stream, so a cut answer was never cached (3 calls).
    assert texts == [first_tokens(ANSWER, 12)] * 3 and streamed == texts[0]
    assert llm.produced and "".join(llm.produced) != ANSWER, "one model call, closed at the budget"
    assert len(encode("".join(llm.produced))) < N_FULL
    totals = accountant.totals()
    # Old code: 3 paid calls, no cached one.
    assert (totals.calls, totals.cached_calls) == (4, 3)
    assert [e.layer for e in ledger.events] == ["budget", "llm", "cache", "cache", "cache"]


def test_a_cut_answer_is_cached_under_its_budget(tmp_path: Any) -> None:
    llm = ScriptedLLM(produced=[])
    cached = _cached(llm, tmp_path)
    short = with_output_budget(cached, OutputBudget(8, soft_window=0.0, record_usage=False))
    long = with_output_budget(cached, OutputBudget(30, soft_window=0.0, record_usage=False))
    assert short.complete("q").text == first_tokens(ANSWER, 8)
    assert long.complete("q").text == first_tokens(ANSWER, 30), "another budget is another key"
    assert short.complete("q").text == first_tokens(ANSWER, 8)
    assert sum(1 for p in llm.produced if p == "The") == 2, "two model calls for two budgets"


async def test_async_budget_over_a_cache(tmp_path: Any) -> None:
    llm = ScriptedLLM(produced=[])
    budgeted = with_output_budget(_cached(llm, tmp_path), OutputBudget(9, soft_window=0.0, record_usage=False))
    first = await budgeted.acomplete("q")
    again = [r async for r in await budgeted.astream_complete("q")]
    assert first.text == again[-1].text == first_tokens(ANSWER, 9)
    assert again[-1].additional_kwargs["cache_hit"] is True


# -- tool calling through the budget (issue 14) -------------------------------------------------
def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def _tool_fake() -> Any:
    from llama_index.core.base.llms.types import ChatResponse, MessageRole
    from llama_index.core.llms.function_calling import FunctionCallingLLM
    from llama_index.core.llms.llm import ToolSelection

    class ToolFake(FunctionCallingLLM, CustomLLM):
        """A function-calling provider fake: streams ANSWER, then calls the first tool bound."""

        max_tokens: int | None = None

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name="tool-fake", is_function_calling_model=True, is_chat_model=True)

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            return CompletionResponse(text=ANSWER)

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
            raise NotImplementedError

        def stream_chat(self, messages: Any, tools: Any = None, **kwargs: Any) -> Any:
            words = first_tokens(ANSWER, self.max_tokens).split(" ") if self.max_tokens else ANSWER.split(" ")

            def gen() -> Any:
                text = ""
                for i, word in enumerate(words):
                    piece = word if i == 0 else " " + word
                    text += piece
                    extra = {}
                    if tools and i == len(words) - 1:
                        extra = {"tool_calls": [{"id": "call_1", "name": tools[0], "args": {"city": "Paris"}}]}
                    message = ChatMessage(role=MessageRole.ASSISTANT, content=text, additional_kwargs=extra)
                    yield ChatResponse(message=message, delta=piece)

            return gen()

        def chat(self, messages: Any, **kwargs: Any) -> Any:
            return list(self.stream_chat(messages, **kwargs))[-1]

        def _prepare_chat_with_tools(self, tools: Any, user_msg: Any = None, chat_history: Any = None, **kwargs: Any) -> dict:
            messages = [*(chat_history or []), ChatMessage(role="user", content=str(user_msg))]
            return {"messages": messages, "tools": [t.metadata.name for t in tools]}

        def get_tool_calls_from_response(self, response: Any, error_on_no_tool_call: bool = True, **kwargs: Any) -> list:
            calls = response.message.additional_kwargs.get("tool_calls", [])
            return [ToolSelection(tool_id=c["id"], tool_name=c["name"], tool_kwargs=c["args"]) for c in calls]

    return ToolFake(max_tokens=200)


def test_tool_calls_go_through_the_budget() -> None:
    from llama_index.core.tools import FunctionTool

    tool = FunctionTool.from_defaults(fn=weather)
    budgeted = with_output_budget(_tool_fake(), OutputBudget(10, soft_window=0.0, record_usage=False))
    response = budgeted.chat_with_tools([tool], user_msg="Weather in Paris, and who were the Normans?")
    assert response.message.content == first_tokens(ANSWER, 10)
    assert response.additional_kwargs["stop_reason"] == "budget"
    # Old code: BudgetedLLM was not a FunctionCallingLLM, and its reply dropped the tool calls.
    calls = budgeted.get_tool_calls_from_response(response)
    assert [(c.tool_name, c.tool_kwargs) for c in calls] == [("weather", {"city": "Paris"})]
    answer = budgeted.predict_and_call([tool], user_msg="Weather in Paris?")
    assert str(answer) == "sunny in Paris"


def test_a_budgeted_llm_that_cannot_call_tools_says_so() -> None:
    from llama_index.core.tools import FunctionTool

    from lean_plugins.errors import ConfigurationError

    budgeted = with_output_budget(ScriptedLLM(produced=[]), 10)
    with pytest.raises(ConfigurationError, match="FunctionCallingLLM"):
        budgeted.chat_with_tools([FunctionTool.from_defaults(fn=weather)], user_msg="q")


# -- a tool-calling reply the provider reports no usage for (b07) --------------------------------
TOOL_TEXT = "Let me look that up in the archive."
TOOL_CALL = {"name": "search", "args": {"query": "the bridge over the Tarn"}, "id": "call-7"}
#: The reply's output tokens, counted here without the code under test: its text plus its tool
#: call as canonical JSON (name, arguments, id), the form it has as input on the next step.
TOOL_REPLY_TOKENS = count_tokens(TOOL_TEXT) + count_tokens(
    json.dumps([TOOL_CALL], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
)


def search(query: str) -> str:
    """Search the archive."""
    return f"nothing on {query}"


def _calls_in_additional_kwargs() -> Any:
    """Tool calls in ``additional_kwargs["tool_calls"]``, no usage reported."""
    from tests.integrations.llama_index.agent_fakes import ScriptedFunctionLLM

    return ScriptedFunctionLLM(policy=lambda messages, tools: {"text": TOOL_TEXT, "tool_calls": [TOOL_CALL]})


def _calls_in_blocks() -> Any:
    """Tool calls as ``ToolCallBlock`` s (LlamaIndex's own function-calling test LLM), no usage."""

    def reply(messages: Any, **kwargs: Any) -> ChatMessage:
        block = ToolCallBlock(tool_call_id=TOOL_CALL["id"], tool_name=TOOL_CALL["name"], tool_kwargs=TOOL_CALL["args"])
        return ChatMessage(role="assistant", blocks=[TextBlock(text=TOOL_TEXT), block])

    return MockFunctionCallingLLM(response_generator=reply)


TOOL_FAKES = {"additional_kwargs": _calls_in_additional_kwargs, "blocks": _calls_in_blocks}


@pytest.mark.parametrize("form", sorted(TOOL_FAKES))
@pytest.mark.parametrize("streamed", [False, True])
def test_budget_books_a_tool_call_reply_as_text_plus_calls(form: str, streamed: bool) -> None:
    from lean_plugins.llama_index.cached_llm import reply_tokens
    from llama_index.core.tools import FunctionTool

    tool = FunctionTool.from_defaults(fn=search)
    budgeted = with_output_budget(TOOL_FAKES[form](), 200)
    with Ledger() as ledger:
        if streamed:
            response = list(budgeted.stream_chat_with_tools([tool], user_msg="Who built the bridge?"))[-1]
        else:
            response = budgeted.chat_with_tools([tool], user_msg="Who built the bridge?")
    calls = budgeted.get_tool_calls_from_response(response, error_on_no_tool_call=False)
    assert [(c.tool_id, c.tool_name, c.tool_kwargs) for c in calls] == [("call-7", "search", TOOL_CALL["args"])]
    booked = ledger.select("llm")
    # Old code: the budget booked the text only (count_tokens(TOOL_TEXT)), the cache the calls too.
    assert (booked["events"], booked["output_after"]) == (1, TOOL_REPLY_TOKENS)
    assert response.additional_kwargs["output_budget"]["tokens_generated"] == TOOL_REPLY_TOKENS
    assert reply_tokens(response) == TOOL_REPLY_TOKENS  # CachedLLM's count of the same reply


@pytest.mark.parametrize("form", sorted(TOOL_FAKES))
def test_cached_budgeted_tool_call_reply_is_booked_once_the_same_way(form: str, tmp_path: Any) -> None:
    from lean_plugins.llama_index import CachedLLM
    from llama_index.core.tools import FunctionTool

    from lean_plugins.cache import LeanCache

    tool = FunctionTool.from_defaults(fn=search)
    cache = LeanCache(path=tmp_path / "cache", mode="exact", guard=False, verifier=False)
    lean = CachedLLM(with_output_budget(TOOL_FAKES[form](), 200), cache=cache)
    with Ledger() as ledger:
        first = lean.chat_with_tools([tool], user_msg="Who built the bridge?")
        again = lean.chat_with_tools([tool], user_msg="Who built the bridge?")
    assert lean.get_tool_calls_from_response(again) == lean.get_tool_calls_from_response(first)
    spent, hit = ledger.select("llm"), ledger.select("cache", "hit")
    assert (spent["events"], spent["output_after"]) == (1, TOOL_REPLY_TOKENS)  # the miss, once
    assert (hit["events"], hit["output_before"]) == (1, TOOL_REPLY_TOKENS)  # the repeat avoided it


@pytest.mark.parametrize("form", sorted(TOOL_FAKES))
def test_handlers_book_a_tool_call_reply_as_the_budget_does(form: str, event_handler) -> None:
    from llama_index.core.tools import FunctionTool

    tool = FunctionTool.from_defaults(fn=search)
    handler = event_handler(OutputBudget(200))
    callbacks = OutputBudgetCallbackHandler(OutputBudget(200, record_usage=False))
    llm = TOOL_FAKES[form]()
    llm.callback_manager = CallbackManager([callbacks])
    with Ledger() as ledger:
        llm.chat_with_tools([tool], user_msg="Who built the bridge?")
    assert ledger.select("llm")["output_after"] == TOOL_REPLY_TOKENS
    assert handler.last_result.tokens_generated == TOOL_REPLY_TOKENS
    assert callbacks.last_result.tokens_generated == TOOL_REPLY_TOKENS
