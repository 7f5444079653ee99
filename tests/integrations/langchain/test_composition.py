"""All five layers in one LangChain chain: compressor, lean template, a model (a provider-like
tool-calling fake, or our local LeanChatModel on stories260K), output budget and LLM cache;
sync and async, invoke and stream, a first call and a cached repeat.

Per cell: the answer is the right one, the budget is never exceeded, tool calls and usage
survive, the repeat is served by the cache, and the ledger's per-layer dollars add up to
(plain cost - lean cost) measured on the same requests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from lean_plugins.langchain.cache import served_from_cache

from lean_plugins.budget import OutputBudget
from lean_plugins.ledger import Ledger
from lean_plugins.pricing import resolve_price
from lean_plugins.tokens import count_tokens
from tests.integrations.composition_data import BUDGET, DOCUMENTS, FAKE_ANSWER, PRICE, QUESTION
from tests.integrations.langchain.budget_fakes import ToolCallingFake

SYSTEM = (
    "You are a very helpful, friendly and knowledgeable assistant. Please make sure that you "
    "always answer the question of the user using only the context information that is provided "
    "to you below, and please do not use any prior knowledge that you might have."
)


def weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


@pytest.fixture(scope="module")
def compressor() -> Any:
    from lean_plugins.langchain import LeanCompressor

    return LeanCompressor()


@pytest.fixture(scope="module")
def local_client() -> Any:
    pytest.importorskip("torch")
    from tests.budget_helpers import stories_local_llm

    return stories_local_llm()


def make_model(kind: str, local_client: Any) -> Any:
    if kind == "tool-calling fake":
        return ToolCallingFake(answer=FAKE_ANSWER)
    from lean_plugins.langchain import LeanChatModel

    return LeanChatModel(model="stories260K", client=local_client, max_tokens=256)


def chain(model: Any, *, lean: bool, compressor: Any, cache: Any = None) -> Runnable:
    """The RAG chain, plain (the caller's own: source template, whole documents, the model with
    its max_tokens at the budget's cap) or lean (all five layers, in the order the docs
    recommend: compress the retrieved documents, lean template, cache and budget on the model)."""
    from lean_plugins.langchain import lean_from, with_output_budget

    # stories260K has a 512-token context (of a 512-word vocabulary): one document fits
    texts = DOCUMENTS if isinstance(model, ToolCallingFake) else DOCUMENTS[1:]

    def retrieve(question: str) -> list[Document]:
        docs = [Document(page_content=text) for text in texts]
        return list(compressor.compress_documents(docs, question)) if lean else docs

    prompt: Any = ChatPromptTemplate.from_messages(
        [("system", SYSTEM), ("human", "Context information:\n{context}\n\nQuestion: {question}")]
    )
    tools = [weather] if isinstance(model, ToolCallingFake) else []
    if lean:
        prompt = lean_from(prompt)
        cached = model.model_copy(update={"cache": cache})
        llm: Runnable = with_output_budget(cached, OutputBudget(BUDGET))
    else:
        llm = model.model_copy(update={"max_tokens": BUDGET})
    if tools:
        llm = llm.bind_tools(tools)
    context = RunnableLambda(retrieve) | RunnableLambda(lambda docs: "\n\n".join(d.page_content for d in docs))
    return {"context": context, "question": RunnablePassthrough()} | prompt | llm


def ask(runnable: Runnable, mode: str) -> AIMessage:
    if mode == "invoke":
        return runnable.invoke(QUESTION)
    if mode == "ainvoke":
        return asyncio.run(runnable.ainvoke(QUESTION))
    if mode == "stream":
        chunks = list(runnable.stream(QUESTION))
    else:

        async def collect() -> list[AIMessageChunk]:
            return [c async for c in runnable.astream(QUESTION)]

        chunks = asyncio.run(collect())
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    from langchain_core.messages import message_chunk_to_message

    return message_chunk_to_message(merged)


def messages_tokens(messages: list[BaseMessage]) -> int:
    return sum(count_tokens(str(m.content)) for m in messages)


@pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke", "astream"])
@pytest.mark.parametrize("kind", ["tool-calling fake", "local stories260K"])
def test_all_layers_compose(kind: str, mode: str, compressor: Any, local_client: Any, tmp_path: Any) -> None:
    from lean_plugins.langchain import LeanCache

    check_composition(kind, mode, compressor, local_client, LeanCache(path=tmp_path, mode="exact"))


@pytest.mark.redis
@pytest.mark.parametrize("mode", ["invoke", "astream"])
def test_all_layers_compose_with_the_cache_on_redis(mode: str, compressor: Any, local_client: Any) -> None:
    """The same with the cache on Redis (many app servers), in this suite's own Redis DB (5)."""
    import os
    import re
    import uuid

    from lean_plugins.langchain import LeanCache

    url = os.environ.get("LEAN_PLUGINS_REDIS_URL")
    if not url:
        pytest.skip("LEAN_PLUGINS_REDIS_URL is not set; scripts/test.sh starts Redis and sets it")
    pytest.importorskip("redis")
    url = re.sub(r"/\d+$", "", url) + "/5"
    cache = LeanCache(backend="redis", url=url, mode="exact", key_prefix=f"composition-{uuid.uuid4().hex}")
    try:
        check_composition("tool-calling fake", mode, compressor, local_client, cache)
    finally:
        cache.clear()


def check_composition(kind: str, mode: str, compressor: Any, local_client: Any, cache: Any) -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    class Prompts(BaseCallbackHandler):
        """Records each model call's messages (cl100k tokens), as a tracer would."""

        def __init__(self) -> None:
            self.inputs: list[int] = []
            self.messages: list[list[BaseMessage]] = []

        def on_chat_model_start(self, serialized: Any, messages: list[list[BaseMessage]], **kwargs: Any) -> None:
            self.inputs.append(messages_tokens(messages[0]))
            self.messages.append(messages[0])

    model = make_model(kind, local_client)
    plain_prompts, lean_prompts = Prompts(), Prompts()
    plain = chain(model, lean=False, compressor=compressor)
    plain_answers = [ask(plain.with_config(callbacks=[plain_prompts]), mode) for _ in range(2)]

    lean = chain(model, lean=True, compressor=compressor, cache=cache)
    with Ledger() as ledger:
        first = ask(lean.with_config(callbacks=[lean_prompts]), mode)
        calls_after_first = len(getattr(model, "calls", [])) or None
        repeat = ask(lean.with_config(callbacks=[lean_prompts]), mode)

    # the right answer, and the repeat is the cached first answer
    assert first.content and repeat.content == first.content
    if kind == "tool-calling fake":
        assert first.content == plain_answers[0].content, "the provider's answer, cut where max_tokens would"
        assert first.tool_calls == plain_answers[0].tool_calls == repeat.tool_calls
        assert first.tool_calls[0]["name"] == "weather"
        assert len(model.calls) == calls_after_first == 3, "2 plain calls, 1 lean call: the repeat was cached"
    else:
        # the same model on the same (lean) prompt, capped at the budget: the budget's answer is
        # it, or it cut back to a sentence end
        reference = model.model_copy(update={"max_tokens": BUDGET}).invoke(lean_prompts.messages[0])
        assert reference.content.startswith(first.content)
    assert served_from_cache(repeat)
    # the budget is never exceeded, in the unit the call counted in
    for message in (first, repeat):
        meta = message.response_metadata["output_budget"]
        assert meta["tokens_used"] <= meta["budget"] == BUDGET
    # usage survives (the provider's or the local model's own counts)
    assert first.usage_metadata and first.usage_metadata["output_tokens"] > 0
    assert first.usage_metadata["input_tokens"] > 0

    # the ledger adds up: per-layer dollars saved == plain cost - lean cost, same requests
    price = resolve_price(PRICE)
    plain_out = [count_tokens(m.text) for m in plain_answers]
    if kind != "tool-calling fake":
        # A local model's answer depends on its prompt: the lean prompt's answer is the one both
        # are priced with (no layer books a saving for a different answer).
        plain_out = [count_tokens(first.text)] * 2
    plain_cost = sum(price.cost(i, o) for i, o in zip(plain_prompts.inputs, plain_out, strict=True))
    assert len(lean_prompts.inputs) == 2  # the wrapper's run; the repeat is a cache hit
    lean_cost = price.cost(lean_prompts.inputs[0], count_tokens(first.text))  # the repeat cost nothing
    summary = ledger.summary(price=PRICE)
    saved = sum(row.dollars_saved for row in summary.rows if row.layer != "llm")
    assert {row.layer for row in summary.rows} >= {"prompts", "compress", "cache", "budget", "llm"}
    # within rounding: token counts of joined texts differ from the sum of their parts by a
    # token or so where pieces meet
    tolerance = price.cost(6, 0)
    assert abs(saved - (plain_cost - lean_cost)) <= tolerance, summary.to_table()
    assert plain_cost > lean_cost


# -- agents: the same layers as create_agent middleware -----------------------------------------
@pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke", "astream"])
def test_agent_with_all_layers_composes(mode: str, tmp_path: Any) -> None:
    """A create_agent whose tool returns the retrieved documents, with the lean middleware
    (budget, cache, compressed tool results, prefix layout) and LangChain's own call limit."""
    pytest.importorskip("langchain.agents")
    from langchain.agents import create_agent
    from langchain.agents.middleware import ModelCallLimitMiddleware
    from langchain_core.tools import tool
    from lean_plugins.langchain.middleware import (
        LeanBudgetMiddleware,
        LeanCacheMiddleware,
        LeanCompressMiddleware,
        LeanPrefixMiddleware,
    )

    from lean_plugins.agents import ToolResultCompressor
    from lean_plugins.cache import LeanCache as CoreLeanCache
    from lean_plugins.compress import LeanCompressor
    from lean_plugins.ledger import is_cache_hit
    from tests.integrations.langchain.agent_fakes import ScriptedChatModel, search_then_answer

    @tool
    def retrieve(query: str) -> str:
        """The documents retrieved for a question."""
        return "\n\n".join(DOCUMENTS)

    model = ScriptedChatModel(policy=search_then_answer({QUESTION: "Rollo"}, tool="retrieve"), max_tokens=200)
    cache = CoreLeanCache(path=tmp_path / "agent", mode="exact", guard=False, verifier=False)
    middleware = [
        ModelCallLimitMiddleware(run_limit=4),
        LeanBudgetMiddleware(step_tokens=BUDGET + 16),
        LeanCacheMiddleware(cache),
        LeanCompressMiddleware(ToolResultCompressor(LeanCompressor(record_ledger=False), min_tokens=50)),
        LeanPrefixMiddleware(breakpoints="anthropic"),
    ]
    agent = create_agent(model, [retrieve], system_prompt=SYSTEM, middleware=middleware)
    inputs = {"messages": [{"role": "user", "content": QUESTION}]}

    def run_once() -> list[AIMessage]:
        if mode == "invoke":
            return [m for m in agent.invoke(inputs)["messages"] if isinstance(m, AIMessage)]
        if mode == "ainvoke":
            return [m for m in asyncio.run(agent.ainvoke(inputs))["messages"] if isinstance(m, AIMessage)]
        if mode == "stream":
            updates = list(agent.stream(inputs, stream_mode="updates"))
        else:

            async def collect() -> list[Any]:
                return [u async for u in agent.astream(inputs, stream_mode="updates")]

            updates = asyncio.run(collect())
        return [m for u in updates for v in u.values() if v for m in v.get("messages", []) if isinstance(m, AIMessage)]

    with Ledger() as ledger:
        first = run_once()
        again = run_once()
    for answers in (first, again):
        text = answers[-1].content if isinstance(answers[-1].content, str) else answers[-1].text
        assert text.startswith("Rollo") and count_tokens(text) <= BUDGET + 16
        assert [c["name"] for m in answers for c in m.tool_calls] == ["retrieve"]
    assert [c["id"] for m in again for c in m.tool_calls] == [c["id"] for m in first for c in m.tool_calls]
    assert len(model.calls) == 2 and all(is_cache_hit(m.response_metadata) for m in again)
    compressed = ledger.select("compress", "tool_result")
    assert compressed["events"] == 1 and compressed["input_after"] < compressed["input_before"]
    layers = {e.layer for e in ledger.events}
    assert {"compress", "cache", "budget", "llm"} <= layers
