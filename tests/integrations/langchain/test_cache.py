"""lean_plugins.langchain.LeanCache: LangChain's standard cache suites plus real model runs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

pytest.importorskip("gptcache")
pytest.importorskip("langchain_tests")

from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.language_models import FakeListChatModel, FakeListLLM
from langchain_core.load import dumps
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, Generation
from langchain_tests.integration_tests import AsyncCacheTestSuite, SyncCacheTestSuite
from lean_plugins.langchain import LeanCache

from lean_plugins.ledger import Ledger
from lean_plugins.tokens import count_tokens
from tests.cache_prompts import EMAIL_PAIRS, LONG_PAIRS, RAG_FRANCE, RAG_GERMANY


class TestLeanCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, tmp_path: Path) -> LeanCache:
        return LeanCache(path=tmp_path / "lc")


class TestLeanCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, tmp_path: Path) -> LeanCache:
        return LeanCache(path=tmp_path / "lc")


@pytest.mark.parametrize(
    "generations",
    [
        [Generation(text="Sample generated text.", generation_info={"reason": "test"})],
        [ChatGeneration(message=AIMessage("Paris.", response_metadata={"x": 1})), Generation(text="Another.")],
    ],
)
async def test_hits_are_the_stored_generations(
    tmp_path: Path, generations: list[Generation]
) -> None:
    cache = LeanCache(path=tmp_path / "lc")
    cache.update("Sample prompt for testing.", "llm", generations)
    assert cache.lookup("Sample prompt for testing.", "llm") == generations
    await cache.aupdate("Another prompt.", "llm", generations)
    assert await cache.alookup("Another prompt.", "llm") == generations


@pytest.fixture
def lc_cache(tmp_path: Path):
    cache = LeanCache(path=tmp_path / "lc")
    previous = get_llm_cache()
    yield cache
    set_llm_cache(previous)


def test_global_cache_serves_an_llm_repeat_and_a_paraphrase(lc_cache: LeanCache) -> None:
    set_llm_cache(lc_cache)
    llm = FakeListLLM(responses=["first answer", "second answer", "third answer"])
    assert llm.invoke("How tall is the Eiffel Tower?") == "first answer"
    assert llm.invoke("How tall is the Eiffel Tower?") == "first answer"
    assert llm.invoke("What is the height of the Eiffel Tower?") == "first answer"
    assert llm.invoke("How tall is the Berlin TV Tower?") == "second answer"


def test_per_model_cache_keeps_chat_generations_and_separates_models(lc_cache: LeanCache) -> None:
    chat_a = FakeListChatModel(responses=["Paris.", "unused"], cache=lc_cache)
    chat_b = FakeListChatModel(responses=["from model b"], cache=lc_cache, sleep=0.0)
    question = [HumanMessage("How tall is the Eiffel Tower?")]
    first = chat_a.invoke(question)
    again = chat_a.invoke([HumanMessage("how tall is the Eiffel Tower")])
    assert isinstance(again, AIMessage) and again.content == first.content == "Paris."
    # Different model parameters, different llm_string: a different namespace.
    assert chat_b.invoke(question).content == "from model b"


async def test_async_chat_model_uses_the_cache(lc_cache: LeanCache) -> None:
    chat = FakeListChatModel(responses=["Paris.", "unused"], cache=lc_cache)
    question = [HumanMessage("How tall is the Eiffel Tower?")]
    assert (await chat.ainvoke(question)).content == "Paris."
    assert (await chat.ainvoke(question)).content == "Paris."


def test_stores_full_generations_as_json_and_records_the_saving(lc_cache: LeanCache) -> None:
    gens = [
        ChatGeneration(
            message=AIMessage("The capital is Paris.", response_metadata={"x": 1}), generation_info={"a": 2}
        ),
        Generation(text="second"),
    ]
    lc_cache.update("How tall is the Eiffel Tower?", '{"model_name": "gpt-4o-mini"}', gens)
    with Ledger() as ledger:
        assert (lc_cache.lookup("How tall is the Eiffel Tower?", '{"model_name": "gpt-4o-mini"}')) == gens
    (event,) = [e for e in ledger.events if e.layer == "cache"]
    assert event.model == "gpt-4o-mini"
    assert event.output_before == count_tokens("The capital is Paris.") + count_tokens("second") == 6
    assert lc_cache.lookup("How tall is the Eiffel Tower?", '{"model_name": "gpt-4o"}') is None


def test_tenants_are_isolated(tmp_path: Path) -> None:
    a = LeanCache(path=tmp_path, tenant="a")
    b = LeanCache(cache=a.cache, tenant="b")
    a.update("q", "llm", [Generation(text="for a")])
    assert b.lookup("q", "llm") is None
    assert (a.lookup("q", "llm")) == [Generation(text="for a")]
    b.clear(llm_string="llm")
    assert (a.lookup("q", "llm")) == [Generation(text="for a")]


# -- keys hold everything that changes the answer (issue 13) ----------------------------------------
def _counting_chat(cache: LeanCache) -> FakeListChatModel:
    return FakeListChatModel(responses=[f"answer {i}" for i in range(20)], cache=cache)


def test_chat_requests_that_differ_in_any_message_field_never_share_an_answer(lc_cache: LeanCache) -> None:
    chat = _counting_chat(lc_cache)
    system = SystemMessage("You answer questions about the Solar System.")
    base = [system, HumanMessage("Hi"), AIMessage("Hello"), HumanMessage("And Mars?")]
    tool_turn = [
        system,
        HumanMessage("What is the weather?"),
        AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "call_1"}]),
        ToolMessage("18 C", tool_call_id="call_1"),
    ]
    variants = {
        "a role injected inside one message": [system, HumanMessage("Hi\nai: Hello"), HumanMessage("And Mars?")],
        "another speaker name": [system, HumanMessage("Hi", name="bob"), AIMessage("Hello"), HumanMessage("And Mars?")],
        "the tool turn": tool_turn,
        "other tool-call arguments": [
            *tool_turn[:2],
            AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "Rome"}, "id": "call_1"}]),
            tool_turn[3],
        ],
        "another tool called": [
            *tool_turn[:2],
            AIMessage("", tool_calls=[{"name": "forecast", "args": {"city": "Paris"}, "id": "call_1"}]),
            tool_turn[3],
        ],
        "another tool-call id": [
            *tool_turn[:2],
            AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "call_2"}]),
            ToolMessage("18 C", tool_call_id="call_2"),
        ],
    }
    first = chat.invoke(base).content
    answers = {what: chat.invoke(messages).content for what, messages in variants.items()}
    assert len({first, *answers.values()}) == len(variants) + 1, answers  # every one reached the model
    assert chat.invoke(base).content == first  # while an equal request is served


def test_bound_tools_and_call_arguments_are_in_the_key(lc_cache: LeanCache) -> None:
    chat = _counting_chat(lc_cache)
    question = [HumanMessage("How long is a day on Mars?")]
    plain = chat.invoke(question).content
    assert chat.invoke(question, max_tokens=8).content != plain
    assert chat.invoke(question, tools=[{"name": "search", "parameters": {}}]).content != plain
    assert chat.invoke(question, stop=["."]).content != plain
    assert chat.invoke(question).content == plain


def test_a_question_carrying_retrieved_context_is_matched_on_its_question_within_identical_context(
    lc_cache: LeanCache,
) -> None:
    set_llm_cache(lc_cache)
    llm = FakeListLLM(responses=[f"answer {i}" for i in range(5)])
    template = "Context information is below.\n---------------------\n{context}\n---------------------\nQuery: {q}\nAnswer: "
    context = "A day on Mars lasts 24 hours and 37 minutes, but a year on Mars lasts 687 Earth days."
    first = llm.invoke(template.format(context=context, q="How long is a day on Mars?"))
    assert llm.invoke(template.format(context=context, q="How long is a day on Mars?")) == first
    # a paraphrase of the question, within the same context: the core's rule (keys.split_prompt)
    assert llm.invoke(template.format(context=context, q="What is the length of a day on Mars?")) == first
    assert llm.invoke(template.format(context=context, q="How long is a year on Mars?")) != first
    other = context.replace("37 minutes", "40 minutes")
    assert llm.invoke(template.format(context=other, q="How long is a day on Mars?")) != first


@pytest.mark.parametrize(
    ("first", "second"),
    [LONG_PAIRS[0], LONG_PAIRS[2], *EMAIL_PAIRS, (RAG_FRANCE, RAG_GERMANY)],
    ids=["long", "long-instruction-first", "email-following", "email-this", "email-paragraph", "rag-one-string"],
)
def test_long_prompts_pasted_text_and_other_questions_are_never_served_each_others_answer(
    lc_cache: LeanCache, first: str, second: str
) -> None:
    # Old code: "Summarize ..." / "Reply politely to the following email: ..." (a 56-word
    # single-line message) was served at the LLM level.
    set_llm_cache(lc_cache)
    llm = FakeListLLM(responses=["first", "second", "unused"])
    assert (llm.invoke(first), llm.invoke(second)) == ("first", "second")
    chat = FakeListChatModel(responses=["first", "second", "unused"], cache=lc_cache)
    replies = chat.invoke([HumanMessage(first)]), chat.invoke([HumanMessage(second)])
    assert [r.content for r in replies] == ["first", "second"]
    assert llm.invoke(second) == "second", "an exact repeat is still served"


def test_paraphrase_is_served_only_after_identical_earlier_messages(lc_cache: LeanCache) -> None:
    chat = _counting_chat(lc_cache)
    system = SystemMessage("You answer questions about the Eiffel Tower.")
    first = chat.invoke([system, HumanMessage("How tall is the Eiffel Tower?")]).content
    assert chat.invoke([system, HumanMessage("What is the height of the Eiffel Tower?")]).content == first
    other_system = SystemMessage("You answer questions about towers in Paris.")
    assert chat.invoke([other_system, HumanMessage("What is the height of the Eiffel Tower?")]).content != first


def test_wrong_shape_entries_are_a_miss_with_one_warning(lc_cache: LeanCache, caplog) -> None:
    chat = _counting_chat(lc_cache)
    question = [HumanMessage("How long is a day on Mars?")]
    llm_string = chat._get_llm_string()
    prompt = dumps(question)
    for bad in ([AIMessage("a message, not generations")], []):
        lc_cache.update(prompt, llm_string, bad)  # type: ignore[arg-type]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lean_plugins.cache"):
            answer = chat.invoke(question).content
            again = chat.invoke(question).content
        assert answer.startswith("answer") and again == answer  # the model's answer replaced the entry
        assert len([r for r in caplog.records if "not a non-empty list of generations" in r.getMessage()]) == 1


def test_bad_prompts_are_the_callers_error_and_do_not_switch_the_cache_off(lc_cache: LeanCache) -> None:
    with pytest.raises(TypeError, match="must be a str"):
        lc_cache.lookup(None, "llm")  # type: ignore[arg-type]
    assert lc_cache.lookup("Why is the sky blue\ud800?", "llm") is None
    lc_cache.update("Why is the sky blue?", "llm", [Generation(text="Rayleigh scattering.")])
    assert lc_cache.lookup("Why is the sky blue?", "llm")[0].text == "Rayleigh scattering."


@pytest.mark.slow
def test_zero_config_rag_chain_never_serves_another_questions_answer(lc_cache: LeanCache) -> None:
    """retriever | prompt | chat model over the demo knowledge base, LangChain's default stuff
    prompt (context in the system message), ``set_llm_cache(LeanCache())`` with no settings."""
    from langchain_core.documents import Document
    from langchain_core.runnables import RunnablePassthrough
    from langchain_core.vectorstores import InMemoryVectorStore

    from lean_plugins.demo.knowledge import load_knowledge_base
    from lean_plugins.demo.langchain_app import default_qa_prompt, format_docs
    from lean_plugins.demo.langchain_parts import MiniLMEmbeddings, StandInChatModel
    from tests.cache_rag_questions import QUESTIONS

    docs = [Document(page_content=s.text) for s in load_knowledge_base()]
    retriever = InMemoryVectorStore.from_documents(docs, MiniLMEmbeddings()).as_retriever(search_kwargs={"k": 2})
    model = StandInChatModel()
    set_llm_cache(lc_cache)
    chain = {"context": retriever | format_docs, "question": RunnablePassthrough()} | default_qa_prompt() | model
    served, answers = [], {}
    for question in QUESTIONS:
        calls = len(model.call_log.calls)
        answers[question] = chain.invoke(question).content
        if len(model.call_log.calls) == calls:
            served.append(question)
    assert served == [], f"served from the cache with another question's answer: {served}"
    for question in QUESTIONS[:3]:  # repeats are hits, with the answer they were given
        calls = len(model.call_log.calls)
        assert chain.invoke(question).content == answers[question]
        assert len(model.call_log.calls) == calls


def test_local_models_key_on_their_weights_and_every_generation_setting(tmp_path: Path, lc_cache: LeanCache) -> None:
    pytest.importorskip("torch")
    from lean_plugins.langchain import LeanChatModel, LeanLLM

    from lean_plugins.pruning import load_model, save_pruned
    from lean_plugins.pruning.pruner import drop_layers
    from tests.stories260k import stories_dir

    dense = str(stories_dir())
    model, tokenizer, _ = load_model(dense, device="cpu")
    drop_layers(model, [model.config.num_hidden_layers - 1])
    pruned = str(save_pruned(model, tokenizer, tmp_path / "pruned"))

    def chat_key(**fields: object) -> str:
        return LeanChatModel(**{"model": dense, **fields})._get_llm_string()

    def llm_key(**fields: object) -> str:  # what LangChain's BaseLLM keys its cache on
        return str(sorted(LeanLLM(**{"model": dense, **fields}).asdict().items()))

    chat_keys = [
        chat_key(),
        chat_key(model=pruned),
        chat_key(max_tokens=8),
        chat_key(max_tokens=40, temperature=0.9),
        chat_key(top_p=0.5),
        chat_key(stop=["\n"]),
        chat_key(dtype="bfloat16"),
    ]
    assert len(set(chat_keys)) == len(chat_keys)
    llm_keys = [llm_key(), llm_key(model=pruned), llm_key(top_p=0.5), llm_key(stop=["."]), llm_key(max_tokens=8)]
    assert len(set(llm_keys)) == len(llm_keys)
    assert chat_key() == chat_key()  # and stable, so repeats are hits

    # End to end: the pruned model is never served the dense model's answer.
    question = "Tell me a story about a cat."
    dense_answer = LeanChatModel(model=dense, max_tokens=12, cache=lc_cache).invoke(question).content
    pruned_answer = LeanChatModel(model=pruned, max_tokens=12, cache=lc_cache).invoke(question).content
    assert pruned_answer == LeanChatModel(model=pruned, max_tokens=12, cache=False).invoke(question).content
    assert pruned_answer != dense_answer

    # LangChain leaves a text LLM's per-call arguments out of its key; LeanLLM puts them in.
    llm = LeanLLM(model=dense, max_tokens=16, cache=lc_cache)
    long_answer = llm.invoke("Once upon a time")
    short_answer = llm.invoke("Once upon a time", max_tokens=3)
    assert short_answer == LeanLLM(model=dense, max_tokens=3, cache=False).invoke("Once upon a time")
    assert short_answer != long_answer and llm.invoke("Once upon a time") == long_answer
