"""LeanPrompt: sections, variables, few-shot selection under a token budget, report, ledger."""

from __future__ import annotations

import warnings

import pytest

from lean_plugins.errors import ConfigurationError, MissingVariableError
from lean_plugins.ledger import Ledger
from lean_plugins.prompts import Example, LeanPrompt, UnusedVariableWarning, select_examples
from lean_plugins.tokens import count_tokens


def test_sections_render_compactly_in_order_and_skip_empty_ones() -> None:
    prompt = LeanPrompt(
        role="You are a support agent.",
        task="Answer the customer's question.",
        context="{docs}",
        constraints=["Cite the document id.", "At most 3 sentences."],
        output_format="plain text",
        input="Question: {question}\nAnswer:",
    )
    # Stable first: the sections without a variable lead, so a prefix cache can reuse them.
    assert prompt.template() == (
        "You are a support agent.\nAnswer the customer's question.\n"
        "Rules:\n- Cite the document id.\n- At most 3 sentences.\nFormat: plain text\n"
        "Context:\n{docs}\nQuestion: {question}\nAnswer:"
    )
    as_written = LeanPrompt(**{**prompt.to_config(), "layout": "as_written"})
    assert as_written.template() == (
        "You are a support agent.\nAnswer the customer's question.\nContext:\n{docs}\n"
        "Rules:\n- Cite the document id.\n- At most 3 sentences.\nFormat: plain text\n"
        "Question: {question}\nAnswer:"
    )
    assert prompt.input_variables == ["docs", "question"]
    assert LeanPrompt(task="Hi {x}", constraints="", context="  ").template() == "Hi {x}"
    assert LeanPrompt(constraints="Be brief.").template() == "Rules: Be brief."


def test_missing_variable_is_named() -> None:
    prompt = LeanPrompt(task="Translate {text} to {language}.")
    with pytest.raises(MissingVariableError, match="'language'"):
        prompt.format(text="hello")
    assert isinstance(MissingVariableError("x"), KeyError)


def test_unused_variables_warn_and_undeclared_ones_are_errors() -> None:
    with pytest.warns(UnusedVariableWarning, match="'tone'"):
        LeanPrompt(task="Summarize {text}.", input_variables=["text", "tone"])
    with pytest.raises(ConfigurationError, match="'text'"):
        LeanPrompt(task="Summarize {text}.", input_variables=["other"])
    prompt = LeanPrompt(task="Summarize {text}.")
    with pytest.warns(UnusedVariableWarning, match="'extra'"):
        assert prompt.format(text="a b", extra=1) == "Summarize a b."


def test_literal_braces_and_partial() -> None:
    prompt = LeanPrompt(task='Reply as JSON {{"answer": ...}} about {topic} for {user}.')
    partial = prompt.partial(user="Ann")
    assert partial.input_variables == ["topic"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert partial.format(topic="tea") == 'Reply as JSON {"answer": ...} about tea for Ann.'
    assert prompt.input_variables == ["topic", "user"]  # the original is unchanged


def test_config_roundtrip() -> None:
    prompt = LeanPrompt(task="Do {x}.", examples=[("a", "b")], example_budget=50, name="p")
    again = LeanPrompt(**prompt.to_config())
    assert again.template() == prompt.template() and again.to_config() == prompt.to_config()


EXAMPLES = [
    Example("What is the capital of France?", "Paris"),
    Example("How do I reset my router?", "Hold the reset button for 10 seconds."),
    Example("Which planet is largest?", "Jupiter"),
    Example("My wifi keeps dropping, what should I do?", "Move the router away from walls and update it."),
    Example("Who wrote Hamlet?", "Shakespeare"),
]


@pytest.mark.slow
def test_examples_are_chosen_by_relevance_within_the_token_budget() -> None:
    prefixes = ("Q: ", "A: ")
    one = count_tokens(f"Q: {EXAMPLES[3].input}\nA: {EXAMPLES[3].output}") + 1
    two = one + count_tokens(f"Q: {EXAMPLES[1].input}\nA: {EXAMPLES[1].output}") + 1
    chosen = select_examples("my router internet connection is unstable", EXAMPLES, two, prefixes=prefixes)
    assert set(chosen) == {EXAMPLES[1], EXAMPLES[3]}
    assert select_examples("router wifi", EXAMPLES, one - 1, prefixes=prefixes) != [EXAMPLES[3]]
    assert select_examples("anything", EXAMPLES, 0) == []
    geo = select_examples("capital city of Germany", EXAMPLES, 15, prefixes=prefixes)
    assert geo == [EXAMPLES[0]]

    prompt = LeanPrompt(
        task="Answer briefly.",
        examples=EXAMPLES,
        example_budget=two,
        example_prefixes=prefixes,
        input="Q: {question}\nA:",
    )
    text = prompt.format(question="the router wifi connection drops")
    assert "reset my router" in text and "wifi keeps dropping" in text and "Hamlet" not in text
    examples_part = text.split("Examples:\n", 1)[1].rsplit("\nQ: the router", 1)[0]
    assert count_tokens(examples_part) <= two
    assert text.endswith("Q: the router wifi connection drops\nA:")


def test_without_a_budget_every_example_is_rendered_compactly() -> None:
    prompt = LeanPrompt(examples=[("2+2", "4"), {"input": "{x}", "output": "y"}], input="{q}")
    assert prompt.template() == "Examples:\nInput: 2+2\nOutput: 4\nInput: {{x}}\nOutput: y\n{q}"
    assert prompt.format(q="3+3") == "Examples:\nInput: 2+2\nOutput: 4\nInput: {x}\nOutput: y\n3+3"
    with pytest.raises(ConfigurationError, match="'input' and 'output'"):
        LeanPrompt(examples=[{"question": "a"}])


def test_token_report_against_the_source_template() -> None:
    source = (
        "I would like you to answer the question below. Please be concise.\n"
        "------------\n{context}\n------------\nQuestion: {question}\nAnswer:"
    )
    prompt = LeanPrompt.from_template(source)
    report = prompt.token_report()
    assert report.fixed_tokens == count_tokens(
        "Answer the question below. Be concise.\n\nQuestion: \nAnswer:"
    )
    assert report.source_fixed_tokens == count_tokens(
        source.replace("{context}", "").replace("{question}", "")
    )
    assert report.saved_tokens == report.source_fixed_tokens - report.fixed_tokens > 0
    assert 0 < report.reduction < 1
    assert report.sections == {"task": report.fixed_tokens}
    assert "saved" in str(report)


def test_each_render_records_tokens_saved_in_the_ledger() -> None:
    source = "Please, I would like you to summarize the text below.\n=========\n{text}\n=========\nSummary:"
    prompt = LeanPrompt.from_template(source, name="summary")
    with Ledger() as ledger:
        rendered = prompt.format(text="A long text. " * 20)
    (event,) = ledger.events
    assert (event.layer, event.kind) == ("prompts", "render")
    assert event.input_before == count_tokens(source.format(text="A long text. " * 20))
    assert event.input_after == count_tokens(rendered) < event.input_before
    assert event.meta == {"prompt": "summary"}
    quiet = LeanPrompt.from_template(source, record_to_ledger=False)
    with Ledger() as ledger:
        quiet.format(text="x")
    assert ledger.events == []


def test_lean_from_template_goes_further_than_minify() -> None:
    source = (
        "Context information is below.\n---------------------\n{context_str}\n---------------------\n"
        "Given the context information and not prior knowledge, answer the query.\nQuery: {query_str}\nAnswer: "
    )
    lean = LeanPrompt.from_template(source, lean=True).token_report()
    plain = LeanPrompt.from_template(source).token_report()
    assert lean.fixed_tokens < plain.fixed_tokens < plain.source_fixed_tokens
