"""The demo's offline stand-in: deterministic answers from the prompt, real token counts, and
real LangChain / LlamaIndex machinery around it."""

from __future__ import annotations

import pytest

from lean_plugins.demo.standin import CallLog, StandInAnswerer, candidate_sentences, find_question
from lean_plugins.tokens import count_tokens

PROMPT = (
    "Use the following pieces of context to answer the user's question.\n"
    "----------------\n"
    "Mars has two small moons, Phobos and Deimos. A year on Mars lasts 687 Earth days. "
    "The canyon system Valles Marineris stretches more than 4,000 kilometres.\n"
    "How long is a year on Mars?"
)


def test_finds_the_last_question_and_the_other_sentences() -> None:
    assert find_question(PROMPT) == "How long is a year on Mars?"
    sentences = candidate_sentences(PROMPT, "How long is a year on Mars?")
    assert "A year on Mars lasts 687 Earth days." in sentences
    assert all("?" not in s for s in sentences)


def test_answers_with_the_most_similar_context_sentence_deterministically() -> None:
    answerer = StandInAnswerer()
    first = answerer.answer(PROMPT)
    assert first == "A year on Mars lasts 687 Earth days."
    assert StandInAnswerer().answer(PROMPT) == first
    other = PROMPT.replace("How long is a year on Mars?", "What are the moons of Mars called?")
    assert "Phobos" in answerer.answer(other)


def test_langchain_chat_model_counts_real_tokens_and_honours_max_tokens() -> None:
    from langchain_core.messages import HumanMessage, SystemMessage

    from lean_plugins.demo.langchain_parts import StandInChatModel

    log = CallLog()
    model = StandInChatModel(call_log=log)
    system, question = PROMPT.rsplit("\n", 1)
    reply = model.invoke([SystemMessage(system), HumanMessage(question)])
    assert reply.content == "A year on Mars lasts 687 Earth days."
    assert reply.usage_metadata["input_tokens"] == count_tokens(f"{system}\n{question}")
    assert reply.usage_metadata["output_tokens"] == count_tokens(reply.content)
    assert len(log.calls) == 1 and log.calls[0].response == reply.content
    short = StandInChatModel(max_tokens=3, call_log=log).invoke(
        [SystemMessage(system), HumanMessage(question)]
    )
    assert count_tokens(short.content) == 3
    streamed = "".join(
        chunk.content for chunk in model.stream([SystemMessage(system), HumanMessage(question)])
    )
    assert streamed == reply.content
    assert log.calls[-1].output_tokens == count_tokens(streamed)


def test_llama_index_llm_completes_and_streams_with_real_counts() -> None:
    from lean_plugins.demo.llama_index_parts import StandInLLM

    llm = StandInLLM()
    response = llm.complete(PROMPT)
    assert response.text == "A year on Mars lasts 687 Earth days."
    assert response.raw["usage"] == {
        "input_tokens": count_tokens(PROMPT),
        "output_tokens": count_tokens(response.text),
    }
    assert "".join(r.delta for r in llm.stream_complete(PROMPT)) == response.text
    assert len(llm.call_log.calls) == 2
    assert not llm.metadata.is_chat_model


@pytest.mark.parametrize("bad", ["", "gpt", "local:", "openai", "foo:bar"])
def test_llm_spec_rejects_bad_values(bad: str) -> None:
    from lean_plugins.demo.settings import LLMSpec
    from lean_plugins.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="--llm"):
        LLMSpec.parse(bad)
