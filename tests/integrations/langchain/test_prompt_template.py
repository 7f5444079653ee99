"""LeanPromptTemplate / LeanChatPromptTemplate / lean_from inside real LangChain chains."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.language_models import FakeListLLM
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.load import dumpd, dumps, load
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import BasePromptTemplate, ChatPromptTemplate, MessagesPlaceholder, PromptTemplate
from lean_plugins.langchain import LeanChatPromptTemplate, LeanPromptTemplate, lean_from
from lean_plugins.langchain.prompt_template import load_lean_prompt

from lean_plugins.errors import ConfigurationError
from lean_plugins.ledger import Ledger
from lean_plugins.prompts import strip_variables
from lean_plugins.tokens import count_tokens


class PromptRecorder(BaseCallbackHandler):
    """Keeps what the model was actually sent."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.messages: list[list[Any]] = []

    def on_llm_start(self, serialized: Any, prompts: list[str], **kwargs: Any) -> None:
        self.prompts.extend(prompts)

    def on_chat_model_start(self, serialized: Any, messages: list[list[Any]], **kwargs: Any) -> None:
        self.messages.extend(messages)


def qa_prompt() -> LeanPromptTemplate:
    return LeanPromptTemplate(
        role="You are a careful analyst.",
        task="Answer from the context only.",
        context="{context}",
        constraints=["Cite the source id.", "One sentence."],
        input="Question: {question}\nAnswer:",
    )


def test_in_lcel_the_llm_receives_the_lean_prompt() -> None:
    prompt = qa_prompt()
    assert prompt.input_variables == ["context", "question"]
    recorder = PromptRecorder()
    chain = prompt | FakeListLLM(responses=["Paris [d1]."]) | StrOutputParser()
    out = chain.invoke(
        {"context": "[d1] Paris is the capital.", "question": "Capital?"}, {"callbacks": [recorder]}
    )
    assert out == "Paris [d1]."
    assert recorder.prompts == [
        "You are a careful analyst.\nAnswer from the context only.\nRules:\n- Cite the source id.\n"
        "- One sentence.\nContext:\n[d1] Paris is the capital.\nQuestion: Capital?\nAnswer:"
    ]


def test_partial_and_missing_variables() -> None:
    prompt = qa_prompt().partial(context="fixed context")
    assert isinstance(prompt, LeanPromptTemplate)
    assert prompt.input_variables == ["question"]
    assert "Context:\nfixed context" in prompt.invoke({"question": "q"}).to_string()
    with pytest.raises(KeyError, match="question"):
        prompt.invoke({})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # extra chain keys are ignored quietly, as in PromptTemplate
        assert prompt.invoke({"question": "q", "user_id": 7}).to_string().endswith("Question: q\nAnswer:")
    dated = qa_prompt().partial(context=lambda: "from a function")
    assert "Context:\nfrom a function" in dated.format(question="q")


def test_declared_variables_are_validated() -> None:
    # pydantic wraps the ConfigurationError (a ValueError) in its ValidationError.
    with pytest.raises(ValueError, match="'question'"):
        LeanPromptTemplate(task="{question}", input_variables=["other"])
    with pytest.warns(UserWarning, match="'unused'"):
        LeanPromptTemplate(task="{question}", input_variables=["question", "unused"])
    with pytest.raises(ValueError, match="f-string"):
        LeanPromptTemplate(task="{{ q }}", template_format="jinja2")


def test_dumpd_and_load_roundtrip() -> None:
    prompt = LeanPromptTemplate(
        task="Classify {text}.", examples=[{"input": "great", "output": "positive"}], example_budget=40
    )
    data = dumpd(prompt)
    assert data["id"] == ["lean_plugins", "langchain", "prompt_template", "LeanPromptTemplate"]
    assert LeanPromptTemplate.is_lc_serializable()
    with pytest.raises(ValueError):  # langchain refuses third-party namespaces by default
        load(data, allowed_objects=[LeanPromptTemplate])
    again = load(data, valid_namespaces=["lean_plugins"], allowed_objects=[LeanPromptTemplate])
    assert isinstance(again, LeanPromptTemplate) and again.template == prompt.template
    assert load_lean_prompt(dumps(prompt)).template == prompt.template


def test_chat_form_is_a_chat_prompt_template_in_a_chain() -> None:
    prompt = LeanChatPromptTemplate.from_sections(
        role="You are terse.", task="Answer from the context.", context="{context}", human="{question}"
    )
    assert isinstance(prompt, ChatPromptTemplate)
    assert sorted(prompt.input_variables) == ["context", "question"]
    recorder = PromptRecorder()
    model = GenericFakeChatModel(messages=iter([AIMessage(content="42")]))
    out = (prompt | model | StrOutputParser()).invoke(
        {"context": "The answer is 42.", "question": "What is it?"}, {"callbacks": [recorder]}
    )
    assert out == "42"
    system, human = recorder.messages[0]
    assert isinstance(system, SystemMessage) and isinstance(human, HumanMessage)
    assert system.content == "You are terse.\nAnswer from the context.\nContext:\nThe answer is 42."
    assert human.content == "What is it?"
    again = load_lean_prompt(dumpd(prompt))
    assert isinstance(again, LeanChatPromptTemplate)
    assert again.format_messages(context="c", question="q") == prompt.format_messages(
        context="c", question="q"
    )


def test_chat_form_works_in_create_stuff_documents_chain() -> None:
    from langchain_classic.chains.combine_documents import create_stuff_documents_chain
    from langchain_classic.chains.question_answering.stuff_prompt import CHAT_PROMPT

    lean = lean_from(CHAT_PROMPT)
    recorder = PromptRecorder()
    model = GenericFakeChatModel(messages=iter([AIMessage(content="blue")]))
    chain = create_stuff_documents_chain(model, lean)
    docs = [Document(page_content="The sky is blue."), Document(page_content="Grass is green.")]
    with Ledger() as ledger:
        assert chain.invoke({"context": docs, "question": "Sky colour?"}, {"callbacks": [recorder]}) == "blue"
    system = recorder.messages[0][0].content
    assert "The sky is blue.\n\nGrass is green." in system
    assert "----------------" not in system and "just say" not in system
    (event,) = [e for e in ledger.events if e.layer == "prompts"]
    assert event.input_after < event.input_before


async def test_async_chat_render_records_the_saving_too() -> None:
    from langchain_classic.chains.question_answering.stuff_prompt import CHAT_PROMPT

    lean = lean_from(CHAT_PROMPT)
    model = GenericFakeChatModel(messages=iter([AIMessage(content="ok")]))
    with Ledger() as ledger:
        assert await (lean | model | StrOutputParser()).ainvoke({"context": "c", "question": "q"}) == "ok"
    assert [e.layer for e in ledger.events] == ["prompts"]


@pytest.mark.slow
def test_few_shot_examples_chosen_per_input_inside_a_chain() -> None:
    prompt = LeanPromptTemplate(
        task="Classify the support ticket.",
        examples=[
            {"input": "My invoice shows the wrong amount", "output": "billing"},
            {"input": "The app crashes when I open settings", "output": "bug"},
            {"input": "I was charged twice this month", "output": "billing"},
            {"input": "Login button does nothing on Android", "output": "bug"},
        ],
        example_budget=25,
        input="Ticket: {ticket}\nLabel:",
    )
    recorder = PromptRecorder()
    chain = prompt | FakeListLLM(responses=["billing", "bug"])
    chain.invoke({"ticket": "Why was my card charged two times?"}, {"callbacks": [recorder]})
    chain.invoke({"ticket": "The app freezes and crashes on start"}, {"callbacks": [recorder]})
    billing, bug = recorder.prompts
    assert "charged twice" in billing and "crashes when I open settings" not in billing
    assert "crashes when I open settings" in bug and "charged twice" not in bug


def test_chat_lean_from_keeps_placeholders_and_partials() -> None:
    source = ChatPromptTemplate.from_messages(
        [
            ("system", "Please, I would like you to answer as {persona}.\n-----\nThank you!"),
            MessagesPlaceholder("history"),
            ("human", "{question}"),
        ]
    ).partial(persona="a pirate")
    lean = lean_from(source)
    assert isinstance(lean, LeanChatPromptTemplate)
    assert isinstance(lean.messages[1], MessagesPlaceholder)
    assert lean.messages[0].prompt.template == "Answer as {persona}."
    out = lean.format_messages(history=[HumanMessage(content="hi")], question="q")
    assert [m.content for m in out] == ["Answer as a pirate.", "hi", "q"]


def test_lean_from_records_savings_against_the_source() -> None:
    from langchain_classic.chains.question_answering.stuff_prompt import PROMPT

    lean = lean_from(PROMPT)
    assert isinstance(lean, LeanPromptTemplate) and lean.source_template == PROMPT.template
    values = {"context": "Some context.", "question": "Why?"}
    with Ledger() as ledger:
        text = (lean | FakeListLLM(responses=["x"])).invoke(values) and lean.format(**values)
    events = [e for e in ledger.events if e.layer == "prompts"]
    assert len(events) == 2
    assert events[0].input_before == count_tokens(PROMPT.format(**values))
    assert events[0].input_after == count_tokens(text) < events[0].input_before
    with Ledger() as ledger:
        assert "{question}" in lean.pretty_repr()
    assert ledger.events == []  # showing the template is not a render for a model
    report = lean.token_report()
    assert report.source_fixed_tokens == count_tokens(strip_variables(PROMPT.template))
    assert report.reduction > 0.2


SHIPPED = [
    "question_answering.stuff_prompt",
    "question_answering.map_reduce_prompt",
    "question_answering.refine_prompts",
    "question_answering.map_rerank_prompt",
    "summarize.stuff_prompt",
    "summarize.map_reduce_prompt",
    "summarize.refine_prompts",
    "conversational_retrieval.prompts",
]


def shipped_prompts() -> list[tuple[str, BasePromptTemplate]]:
    out = []
    for module in SHIPPED:
        mod = importlib.import_module(f"langchain_classic.chains.{module}")
        out += [(f"{module}.{k}", v) for k, v in vars(mod).items() if isinstance(v, BasePromptTemplate)]
    return out


@pytest.mark.parametrize(("name", "prompt"), shipped_prompts(), ids=lambda x: x if isinstance(x, str) else "")
def test_lean_from_every_shipped_prompt_keeps_variables_and_renders(
    name: str, prompt: BasePromptTemplate
) -> None:
    lean = lean_from(prompt)
    assert sorted(lean.input_variables) == sorted(prompt.input_variables)
    values = {v: f"<{v}>" for v in prompt.input_variables}
    if isinstance(prompt, PromptTemplate):
        before, after = prompt.format(**values), lean.format(**values)
    else:
        before = "\n".join(str(m.content) for m in prompt.format_messages(**values))
        after = "\n".join(str(m.content) for m in lean.format_messages(**values))
    for v in values.values():
        assert v in after
    assert count_tokens(after) <= count_tokens(before)


def test_lean_from_rejects_what_it_cannot_rewrite() -> None:
    with pytest.raises(ConfigurationError, match="f-string"):
        lean_from(PromptTemplate.from_template("{{ q }}", template_format="jinja2"))
    from langchain_core.prompts import FewShotPromptTemplate

    few = FewShotPromptTemplate(
        examples=[{"q": "a"}],
        example_prompt=PromptTemplate.from_template("{q}"),
        suffix="{x}",
        input_variables=["x"],
    )
    with pytest.raises(ConfigurationError, match="FewShotPromptTemplate"):
        lean_from(few)


# -- prefix-cache layout and breakpoints ------------------------------------------------------


def test_lean_from_lays_out_stable_first_and_marks_the_cache_breakpoint() -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.prompts import ChatPromptTemplate
    from lean_plugins.langchain import lean_from

    source = ChatPromptTemplate.from_messages(
        [
            ("system", "You are a support agent. Please always cite the document id."),
            ("human", "Documents:\n{docs}\nAnswer in one sentence.\nQuestion: {question}"),
        ]
    )
    prompt = lean_from(source, cache_breakpoint=True)
    human = prompt.messages[1].prompt.template
    assert human.startswith("Answer in one sentence.\nDocuments:\n{docs}")  # stable first
    seen = []

    class Recording(GenericFakeChatModel):
        def _generate(self, messages, *args, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(messages)
            return super()._generate(messages, *args, **kwargs)

    chain = prompt | Recording(messages=iter([AIMessage(content="ok")]))
    chain.invoke({"docs": "[d1] text", "question": "Why?"})
    system, user = seen[0]
    # The system message is stable; the human message starts with a stable line: the
    # breakpoint goes after that line, inside the human message.
    assert isinstance(system.content, str)
    assert user.content[0] == {
        "type": "text",
        "text": "Answer in one sentence.\nDocuments:\n",  # up to the line of the first value
        "cache_control": {"type": "ephemeral"},
    }
    assert user.content[1]["text"] == "[d1] text\nQuestion: Why?"
    plain = lean_from(source).format_messages(docs="x", question="y")
    assert all(isinstance(m.content, str) for m in plain)  # off by default


def test_breakpoint_at_the_end_of_a_stable_system_message() -> None:
    from langchain_core.prompts import ChatPromptTemplate
    from lean_plugins.langchain import lean_from

    source = ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("human", "{question}")])
    system, human = lean_from(source, cache_breakpoint=True).format_messages(question="Why?")
    assert system.content == [{"type": "text", "text": "Answer briefly.", "cache_control": {"type": "ephemeral"}}]
    assert human.content == "Why?"


PROSE_SOURCE = (
    "You are a very helpful and extremely knowledgeable assistant that always tries its best for the user.\n"
    "Please read the following document carefully and thoroughly before you answer the user's question.\n"
    "You must never make up facts that are not stated in the document, and you should not guess at all.\n"
    "Document: {document}\nQuestion: {question}\nAnswer:"
)


def test_lean_from_passes_prose_rate_to_lean_text_and_renders_in_a_chain() -> None:
    pytest.importorskip("llmlingua")
    from lean_plugins.prompts import lean_text

    source = PromptTemplate.from_template(PROSE_SOURCE)
    prompt = lean_from(source, prose_rate=0.5, min_cosine=None, layout="as_written")
    assert prompt.template == lean_text(PROSE_SOURCE, prose_rate=0.5, min_cosine=None)
    rules_only = lean_from(source, layout="as_written").template
    assert count_tokens(strip_variables(prompt.template)) < count_tokens(strip_variables(rules_only))
    values = {"document": "Paris is in France.", "question": "Where is Paris?"}
    llm = FakeListLLM(responses=["ok"])
    assert (prompt | llm).invoke(values) == "ok"
    rendered = prompt.format(**values)
    assert "never" in rendered and "not" in rendered and "Where is Paris?" in rendered
