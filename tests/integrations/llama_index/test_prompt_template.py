"""LeanPromptTemplate / lean_from inside a real LlamaIndex VectorStoreIndex query engine."""

from __future__ import annotations

import pytest
from lean_plugins.llama_index import LeanPromptTemplate, lean_from
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.llms.types import MessageRole
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.prompts import (
    BasePromptTemplate,
    ChatPromptTemplate,
    PromptTemplate,
    SelectorPromptTemplate,
    default_prompts,
)
from llama_index.core.prompts.prompt_type import PromptType

from lean_plugins.errors import ConfigurationError, MissingVariableError
from lean_plugins.ledger import Ledger
from lean_plugins.prompts import LeanPrompt, strip_variables
from lean_plugins.tokens import count_tokens


def query_engine():
    docs = [Document(text="The sky is blue on a clear day."), Document(text="Grass is green in spring.")]
    index = VectorStoreIndex.from_documents(docs, embed_model=MockEmbedding(embed_dim=8))
    # MockLLM echoes its prompt, so the response is exactly what the LLM received.
    return index.as_query_engine(llm=MockLLM(), similarity_top_k=2)


def test_swapped_into_a_query_engine_the_llm_receives_the_lean_prompt() -> None:
    engine = query_engine()
    qa = LeanPromptTemplate(
        task="Answer from the context only.",
        context="{context_str}",
        input="Query: {query_str}\nAnswer:",
        prompt_type=PromptType.QUESTION_ANSWER,
    )
    engine.update_prompts({"response_synthesizer:text_qa_template": qa})
    current = engine.get_prompts()["response_synthesizer:text_qa_template"]
    assert isinstance(current, LeanPromptTemplate) and current.get_template() == qa.get_template()
    with Ledger() as ledger:
        response = engine.query("What colour is the sky?")
    text = str(response)
    assert text.startswith("Answer from the context only.\nContext:\n")
    assert "The sky is blue on a clear day." in text and "Grass is green in spring." in text
    assert text.endswith("Query: What colour is the sky?\nAnswer:")
    events = [e for e in ledger.events if e.layer == "prompts"]
    assert len(events) == 1  # the engine's empty-prompt sizing call is not a render
    assert events[0].input_after == count_tokens(text)


def test_lean_from_the_engines_default_prompt_cuts_what_the_llm_receives() -> None:
    engine = query_engine()
    default = engine.get_prompts()["response_synthesizer:text_qa_template"]
    assert isinstance(default, SelectorPromptTemplate)
    before = str(engine.query("What colour is the sky?"))
    lean = lean_from(default)
    assert isinstance(lean, SelectorPromptTemplate)
    assert isinstance(lean.default_template, LeanPromptTemplate)
    engine.update_prompts({"response_synthesizer:text_qa_template": lean})
    with Ledger() as ledger:
        after = str(engine.query("What colour is the sky?"))
    assert "---------------------" in before and "---------------------" not in after
    assert "The sky is blue on a clear day." in after and "What colour is the sky?" in after
    assert count_tokens(after) < count_tokens(before)
    (event,) = [e for e in ledger.events if e.layer == "prompts"]
    assert (event.input_before, event.input_after) == (count_tokens(before), count_tokens(after))


def test_partial_format_format_messages_and_get_template() -> None:
    prompt = LeanPromptTemplate(task="Translate {text} into {language}.")
    assert prompt.template_vars == ["text", "language"]
    fixed = prompt.partial_format(language="French")
    assert fixed.kwargs == {"language": "French"} and prompt.kwargs == {}
    assert fixed.format(text="cat") == "Translate cat into French."
    (message,) = fixed.format_messages(text="dog")
    assert message.role == MessageRole.USER and message.content == "Translate dog into French."
    assert prompt.get_template() == "Translate {text} into {language}."
    with pytest.raises(MissingVariableError, match="'language'"):
        prompt.format(text="cat")
    mapped = LeanPromptTemplate(task="Say {greeting}.", template_var_mappings={"hello": "greeting"})
    assert mapped.format(hello="hi") == "Say hi."
    with pytest.raises(ConfigurationError, match="not both"):
        LeanPromptTemplate(LeanPrompt(task="x"), task="y")


@pytest.mark.parametrize(
    "name",
    [k for k, v in vars(default_prompts).items() if isinstance(v, BasePromptTemplate)],
)
def test_lean_from_every_default_prompt_keeps_variables(name: str) -> None:
    source = getattr(default_prompts, name)
    lean = lean_from(source)
    assert isinstance(lean, LeanPromptTemplate)
    assert sorted(lean.template_vars) == sorted(source.template_vars)
    assert lean.metadata["prompt_type"] == source.metadata["prompt_type"]
    values = {v: f"<{v}>" for v in source.template_vars}
    text = lean.format(**values)
    assert all(v in text for v in values.values())
    report = lean.token_report()
    assert report.source_fixed_tokens == count_tokens(strip_variables(source.get_template()))
    assert report.fixed_tokens <= report.source_fixed_tokens


def test_lean_from_chat_prompt_rewrites_each_message() -> None:
    from llama_index.core.prompts.chat_prompts import CHAT_TEXT_QA_PROMPT

    lean = lean_from(CHAT_TEXT_QA_PROMPT)
    assert isinstance(lean, ChatPromptTemplate)
    assert sorted(lean.template_vars) == sorted(CHAT_TEXT_QA_PROMPT.template_vars)
    before = CHAT_TEXT_QA_PROMPT.format_messages(context_str="c", query_str="q")
    after = lean.format_messages(context_str="c", query_str="q")
    assert [m.role for m in after] == [m.role for m in before]
    assert sum(count_tokens(m.content) for m in after) < sum(count_tokens(m.content) for m in before)
    with pytest.raises(ConfigurationError, match="supports"):
        lean_from(object())  # type: ignore[arg-type]
    assert lean_from(PromptTemplate("{x}")).format(x="y") == "y"


# -- prefix-cache layout and breakpoints ------------------------------------------------------


def test_cache_breakpoint_reaches_a_chat_llm_after_the_stable_prefix() -> None:
    from typing import Any

    from lean_plugins.llama_index import LeanPromptTemplate
    from llama_index.core.base.llms.types import (
        CachePoint,
        ChatMessage,
        ChatResponse,
        CompletionResponse,
        LLMMetadata,
        TextBlock,
    )
    from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
    from llama_index.core.llms.custom import CustomLLM

    seen: list[Any] = []

    class ChatRecorder(CustomLLM):
        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(is_chat_model=True)

        @llm_chat_callback()
        def chat(self, messages: Any, **kwargs: Any) -> ChatResponse:
            seen.append(list(messages))
            return ChatResponse(message=ChatMessage(role="assistant", content="ok"))

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            raise AssertionError("a chat model is called through chat()")

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):  # type: ignore[override]
            raise AssertionError("not streamed")

    prompt = LeanPromptTemplate(
        task="Answer from the context only.",
        context="{context_str}",
        input="Query: {query_str}\nAnswer:",
        cache_breakpoint=True,
    )
    assert ChatRecorder().predict(prompt, context_str="[d1] Paris.", query_str="Capital?") == "ok"
    (message,) = seen[0]
    first, marker, rest = message.blocks
    assert isinstance(first, TextBlock) and first.text == "Answer from the context only.\nContext:\n"
    assert isinstance(marker, CachePoint) and marker.cache_control.type == "ephemeral"
    assert rest.text == "[d1] Paris.\nQuery: Capital?\nAnswer:"


def test_lean_from_lays_out_the_default_text_qa_prompt_stable_first() -> None:
    from lean_plugins.llama_index import lean_from
    from llama_index.core.prompts.default_prompts import DEFAULT_TEXT_QA_PROMPT

    lean = lean_from(DEFAULT_TEXT_QA_PROMPT)
    report = lean.token_report()
    assert lean.get_template().index("answer") < lean.get_template().index("{context_str}")
    assert report.stable_prefix_tokens > report.source_stable_prefix_tokens
    as_written = lean_from(DEFAULT_TEXT_QA_PROMPT, layout="as_written").token_report()
    assert as_written.stable_prefix_tokens <= report.source_stable_prefix_tokens


def test_lean_from_passes_prose_rate_to_lean_text() -> None:
    pytest.importorskip("llmlingua")
    from llama_index.core.prompts import PromptTemplate as LlamaPromptTemplate

    from lean_plugins.prompts import lean_text

    source = (
        "You are a very helpful and extremely knowledgeable assistant that always tries its best for the user.\n"
        "You must never make up facts that are not stated in the context, and you should not guess at all.\n"
        "Context: {context_str}\nQuery: {query_str}\nAnswer:"
    )
    lean = lean_from(LlamaPromptTemplate(source), prose_rate=0.5, min_cosine=None, layout="as_written")
    assert lean.get_template() == lean_text(source, prose_rate=0.5, min_cosine=None)
    assert lean.get_template() != lean_from(LlamaPromptTemplate(source), layout="as_written").get_template()
    rendered = lean.format(context_str="Paris is in France.", query_str="Where is Paris?")
    assert "never" in rendered and "Where is Paris?" in rendered
