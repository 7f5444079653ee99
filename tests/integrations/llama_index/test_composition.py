"""All five layers in one LlamaIndex query engine: LeanCompressorPostprocessor, lean_from on
the text-QA prompt, a model (a provider-like tool-calling fake, or our local LeanLocalLLM on
stories260K), output budget and CachedLLM, in either order; sync and async, query and stream,
a first call and a cached repeat.

Per cell: the answer is the right one, the budget is never exceeded, tool calls and usage
survive, the repeat is served by the cache, and the ledger's per-layer dollars add up to
(plain cost - lean cost) measured on the same requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import Field

from lean_plugins.budget import OutputBudget
from lean_plugins.ledger import Ledger
from lean_plugins.pricing import resolve_price
from lean_plugins.tokens import count_tokens, encode, get_tokenizer
from tests.integrations.composition_data import BUDGET, DOCUMENTS, FAKE_ANSWER, PRICE, QUESTION

TEXT_QA = "response_synthesizer:text_qa_template"
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}


class ToolCallingFake(CustomLLM):
    """A provider-like LlamaIndex LLM: streams ``answer`` word by word, capped at ``max_tokens``
    cl100k tokens as a provider would; reports usage in ``raw``; a chat reply carries a tool
    call in ``additional_kwargs``. Records the prompt of every call it really served."""

    answer: str = FAKE_ANSWER
    max_tokens: int | None = None
    prompts: list[str] = Field(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=PRICE, num_output=self.max_tokens or 256, context_window=16_000)

    def _text(self) -> str:
        ids = encode(self.answer)[: self.max_tokens] if self.max_tokens else encode(self.answer)
        return get_tokenizer().decode_bytes(ids).decode("utf-8", errors="ignore")

    def _raw(self, prompt: str, text: str) -> dict[str, Any]:
        finish = "length" if self.max_tokens and len(encode(self.answer)) > self.max_tokens else "stop"
        usage = {"prompt_tokens": count_tokens(prompt), "completion_tokens": count_tokens(text)}
        return {"usage": usage, "finish_reason": finish}

    def _pieces(self, prompt: str) -> list[tuple[str, str]]:
        self.prompts.append(prompt)
        text, out = "", []
        for word in self._text().split(" "):
            piece = (" " if text else "") + word
            text += piece
            out.append((text, piece))
        return out

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        text = self._pieces(prompt)[-1][0]
        return CompletionResponse(text=text, raw=self._raw(prompt, text))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        pieces = self._pieces(prompt)

        def gen() -> CompletionResponseGen:
            for i, (text, piece) in enumerate(pieces):
                raw = self._raw(prompt, text) if i == len(pieces) - 1 else None
                yield CompletionResponse(text=text, delta=piece, raw=raw)

        return gen()

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        prompt = "\n".join(m.content or "" for m in messages)
        pieces = self._pieces(prompt)

        def gen() -> ChatResponseGen:
            for i, (text, piece) in enumerate(pieces):
                last = i == len(pieces) - 1
                message = ChatMessage(
                    role=MessageRole.ASSISTANT,
                    content=text,
                    additional_kwargs={"tool_calls": [TOOL_CALL]} if last else {},
                )
                yield ChatResponse(message=message, delta=piece, raw=self._raw(prompt, text) if last else None)

        return gen()

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        last = None
        for last in self.stream_chat(messages, **kwargs):  # noqa: B007
            pass
        assert last is not None
        return last.model_copy(update={"delta": None})


@pytest.fixture(scope="module")
def postprocessor() -> Any:
    from lean_plugins.llama_index import LeanCompressorPostprocessor

    return LeanCompressorPostprocessor()


@pytest.fixture(scope="module")
def local_client() -> Any:
    pytest.importorskip("torch")
    from tests.budget_helpers import stories_local_llm

    return stories_local_llm()


def make_model(kind: str, local_client: Any, max_tokens: int) -> Any:
    if kind == "tool-calling fake":
        return ToolCallingFake(max_tokens=max_tokens)
    from lean_plugins.llama_index import LeanLocalLLM

    # LlamaIndex's prompt helper keeps 500 tokens of padding, more than stories260K's 512-token
    # window leaves: it is told 1024 (the one-document prompts here fit in 512 model tokens)
    return LeanLocalLLM(
        client=RecordingClient(local_client), model="stories260K", max_new_tokens=max_tokens, context_window=1024
    )


class RecordingClient:
    """Our core local model, recording the prompt of every generation it really ran."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.prompts: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if name in ("generate", "stream", "agenerate", "astream"):

            def recorded(prompt: Any, *args: Any, **kwargs: Any) -> Any:
                self.prompts.append(prompt)
                return attr(prompt, *args, **kwargs)

            return recorded
        return attr


def prompts_of(model: Any) -> list[str]:
    return model.prompts if isinstance(model, ToolCallingFake) else model.local_llm.prompts


def engine(llm: Any, *, lean: bool, order: str, postprocessor: Any, cache_dir: Any, streaming: bool) -> Any:
    """The query engine, plain (LlamaIndex defaults, the model's max tokens at the budget's cap)
    or lean (the five layers at LlamaIndex's own extension points)."""
    from lean_plugins.llama_index import CachedLLM, lean_from, with_output_budget

    from lean_plugins.cache import LeanCache

    texts = DOCUMENTS if isinstance(llm, ToolCallingFake) else DOCUMENTS[1:]  # 512-token model
    index = VectorStoreIndex.from_documents([Document(text=t) for t in texts], embed_model=MockEmbedding(embed_dim=8))
    kwargs: dict[str, Any] = {"similarity_top_k": len(texts), "streaming": streaming}
    model = llm
    if lean:
        kwargs["node_postprocessors"] = [postprocessor]
        cache = LeanCache(path=cache_dir, mode="exact")
        if order == "cache(budget(llm))":
            model = CachedLLM(with_output_budget(llm, OutputBudget(BUDGET)), cache=cache)
        else:
            model = with_output_budget(CachedLLM(llm, cache=cache), OutputBudget(BUDGET))
    query_engine = index.as_query_engine(llm=model, **kwargs)
    if lean:
        query_engine.update_prompts({TEXT_QA: lean_from(query_engine.get_prompts()[TEXT_QA])})
    return query_engine


def ask(query_engine: Any, mode: str) -> str:
    if mode == "query":
        return str(query_engine.query(QUESTION))
    if mode == "aquery":
        return str(asyncio.run(query_engine.aquery(QUESTION)))
    if mode == "stream":
        return "".join(query_engine.query(QUESTION).response_gen)

    async def astream() -> str:
        response = await query_engine.aquery(QUESTION)
        return "".join([piece async for piece in response.async_response_gen()])

    return asyncio.run(astream())


@pytest.mark.parametrize("order", ["cache(budget(llm))", "budget(cache(llm))"])
@pytest.mark.parametrize("mode", ["query", "stream", "aquery", "astream"])
@pytest.mark.parametrize("kind", ["tool-calling fake", "local stories260K"])
def test_all_layers_compose(
    kind: str, mode: str, order: str, postprocessor: Any, local_client: Any, tmp_path: Any
) -> None:
    plain_model = make_model(kind, local_client, BUDGET)  # the caller's own max tokens
    plain = engine(plain_model, lean=False, order=order, postprocessor=None, cache_dir=None, streaming=mode in ("stream", "astream"))
    plain_answers = [ask(plain, mode) for _ in range(2)]

    lean_model = make_model(kind, local_client, 256)
    lean = engine(
        lean_model, lean=True, order=order, postprocessor=postprocessor, cache_dir=tmp_path,
        streaming=mode in ("stream", "astream"),
    )
    with Ledger() as ledger:
        first = ask(lean, mode)
        repeat = ask(lean, mode)

    # the right answer; the repeat is the cached first answer, the model was called once
    assert first.strip() and repeat == first
    assert len(prompts_of(lean_model)) == 1
    if kind == "tool-calling fake":
        assert first == plain_answers[0], "the provider's answer, cut where max_tokens would"
        count = count_tokens
    else:
        reference = plain_model.complete(prompts_of(lean_model)[0]).text  # same model, same prompt
        assert reference.startswith(first.strip()) or first.strip() in reference
        count = local_client.count_tokens
    # the budget is never exceeded, in the unit the call counted in
    assert count(first) <= BUDGET

    # the ledger adds up: per-layer dollars saved == plain cost - lean cost, same requests
    price = resolve_price(PRICE)
    plain_out = [count_tokens(a) for a in plain_answers]
    if kind != "tool-calling fake":
        # a local model's answer depends on its prompt: both are priced with the lean answer
        plain_out = [count_tokens(first)] * 2
    plain_in = [count_tokens(p) for p in prompts_of(plain_model)[:2]]
    plain_cost = sum(price.cost(i, o) for i, o in zip(plain_in, plain_out, strict=True))
    lean_cost = price.cost(count_tokens(prompts_of(lean_model)[0]), count_tokens(first))  # the repeat: 0
    summary = ledger.summary(price=PRICE)
    saved = sum(row.dollars_saved for row in summary.rows if row.layer != "llm")
    assert {row.layer for row in summary.rows} >= {"prompts", "compress", "cache", "budget", "llm"}
    tolerance = price.cost(6, 0)  # token counts of joined texts: a token or so where pieces meet
    assert abs(saved - (plain_cost - lean_cost)) <= tolerance, summary.to_table()
    assert plain_cost > lean_cost


def test_tool_calls_and_usage_survive_budget_and_cache(tmp_path: Any) -> None:
    from lean_plugins.llama_index import CachedLLM, with_output_budget

    from lean_plugins.cache import LeanCache

    llm = ToolCallingFake(max_tokens=256)
    composed = CachedLLM(with_output_budget(llm, OutputBudget(BUDGET, soft_window=0.0)), cache=LeanCache(path=tmp_path, mode="exact"))
    messages = [ChatMessage(role="user", content="Weather in Paris, and who led the Normans?")]
    response = composed.chat(messages)
    streamed = list(composed.stream_chat(messages))
    for final in (response, streamed[-1]):
        assert final.message.additional_kwargs["tool_calls"] == [TOOL_CALL]
        assert final.message.content == get_tokenizer().decode_bytes(encode(FAKE_ANSWER)[:BUDGET]).decode()
        assert final.raw["usage"]["completion_tokens"] == BUDGET
        assert final.additional_kwargs["stop_reason"] == "budget"


# -- agents: the same layers inside a FunctionAgent ---------------------------------------------
@pytest.mark.parametrize("order", ["cache(budget(llm))", "budget(cache(llm))"])
@pytest.mark.parametrize("streaming", [False, True])
async def test_function_agent_with_all_layers_composes(order: str, streaming: bool, tmp_path: Any) -> None:
    """A FunctionAgent whose tool returns the retrieved documents, compressed before they enter
    the memory, with the cached and budgeted LLM in either order."""
    pytest.importorskip("llama_index.core.agent.workflow")
    from lean_plugins.llama_index import CachedLLM, with_output_budget
    from lean_plugins.llama_index.tools import compress_tool_outputs
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.tools import FunctionTool

    from lean_plugins.agents import ToolResultCompressor
    from lean_plugins.cache import LeanCache
    from lean_plugins.compress import LeanCompressor
    from tests.integrations.llama_index.agent_fakes import ScriptedFunctionLLM, search_then_answer

    def retrieve(query: str) -> str:
        """The documents retrieved for a question."""
        return "\n\n".join(DOCUMENTS)

    inner = ScriptedFunctionLLM(policy=search_then_answer({QUESTION: "Rollo"}, tool="retrieve"), max_tokens=200)
    cache = LeanCache(path=tmp_path / "agent", mode="exact", guard=False, verifier=False)
    budget = OutputBudget(BUDGET)
    llm = (
        CachedLLM(with_output_budget(inner, budget), cache=cache)
        if order == "cache(budget(llm))"
        else with_output_budget(CachedLLM(inner, cache=cache), budget)
    )
    compressor = ToolResultCompressor(LeanCompressor(record_ledger=False), min_tokens=50)
    tools = compress_tool_outputs([FunctionTool.from_defaults(retrieve)], compressor, model=PRICE)
    agent = FunctionAgent(tools=tools, llm=llm, system_prompt="Answer from the retrieved documents.", streaming=streaming)

    with Ledger() as ledger:
        first = str(await agent.run(user_msg=QUESTION))
        served = len(inner.calls)
        again = str(await agent.run(user_msg=QUESTION))
    for answer in (first, again):
        assert answer.startswith("Rollo") and count_tokens(answer) <= BUDGET
    assert again == first
    assert len(inner.calls) == served  # both steps cached: the tool call and the final answer
    assert ledger.select("cache", "hit")["events"] == 2
    compressed = ledger.select("compress", "tool_output")
    assert compressed["events"] == 2 and compressed["input_after"] < compressed["input_before"]
