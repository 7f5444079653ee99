"""Stable-first layout: what moves, what never does, and how long the stable prefix is."""

from __future__ import annotations

from lean_plugins.prompts import LeanPrompt, template_variables
from lean_plugins.prompts.layout import (
    breakpoint_position,
    split_at_stable_prefix,
    stable_first,
    stable_prefix,
    stable_prefix_tokens,
)


def test_an_instruction_after_the_documents_moves_before_them() -> None:
    text = "Context:\n{context}\nUsing only the context, answer the query.\nQuery: {query}\nAnswer:"
    out = stable_first(text)
    assert out == "Using only the context, answer the query.\nContext:\n{context}\nQuery: {query}\nAnswer:"
    assert stable_prefix_tokens(out) > stable_prefix_tokens(text) == 2  # "Context:\n"
    assert sorted(out.split("\n")) == sorted(text.split("\n"))  # nothing lost, only reordered


def test_text_that_points_at_its_place_does_not_move() -> None:
    for text in (
        "{context}\nAnswer the question using the context above.\nQ: {q}",
        "{context}\nThen give your answer.\nQ: {q}",
        "{context}\nthe question is below.\nQ: {q}",  # lower case: continues the sentence before
    ):
        assert stable_first(text) == text


def test_labels_and_the_closing_cue_stay_with_their_values() -> None:
    text = "Question: {q}\nDocuments:\n{docs}\nBe brief.\nHelpful Answer:"
    assert stable_first(text) == "Be brief.\nQuestion: {q}\nDocuments:\n{docs}\nHelpful Answer:"


def test_slow_variables_move_up_after_the_fixed_text() -> None:
    text = "Question: {question}\nTools:\n{tools}\nAlways cite sources.\nAnswer:"
    out = stable_first(text, slow_variables=["tools"])
    assert out == "Always cite sources.\nTools:\n{tools}\nQuestion: {question}\nAnswer:"
    assert stable_prefix(out, slow_variables=["tools"]) == "Always cite sources.\nTools:\n{tools}\nQuestion: "
    assert stable_first(text) == "Always cite sources.\nQuestion: {question}\nTools:\n{tools}\nAnswer:"


def test_code_and_json_move_only_whole() -> None:
    text = 'Q: {q}\nReturn JSON like:\n{{\n  "a": 1\n}}\nDone.'
    out = stable_first(text)
    assert '{{\n  "a": 1\n}}' in out and template_variables(out) == ["q"]


def test_split_and_breakpoint_positions() -> None:
    assert split_at_stable_prefix("Be brief.\nQ: {q}\nA:") == ("Be brief.\n", "Q: {q}\nA:")
    assert split_at_stable_prefix("No variables.") == ("No variables.", "")
    # system message fully stable, human message per call: the break ends the system message.
    assert breakpoint_position(["Be brief.", "{q}"], ["Be brief.", "hi"]) == (0, len("Be brief."))
    # one message: stable lines, then the question.
    assert breakpoint_position(["Rules.\nQ: {q}"], ["Rules.\nQ: hi"]) == (0, len("Rules.\n"))
    # the very first text is per call: nothing to cache.
    assert breakpoint_position(["{q}\nRules."], ["hi\nRules."]) is None
    assert breakpoint_position([None, "Rules. {q}"], [None, "Rules. hi"]) is None


def test_lean_prompt_reports_its_stable_prefix_against_the_source() -> None:
    source = "Context:\n{context}\nAnswer from the context only, in one sentence.\nQuestion: {q}\nAnswer:"
    prompt = LeanPrompt.from_template(source)
    report = prompt.token_report()
    assert report.source_stable_prefix_tokens == 2
    assert report.stable_prefix_tokens > 8
    assert "stable prefix" in str(report)
    as_written = LeanPrompt.from_template(source, layout="as_written").token_report()
    assert as_written.stable_prefix_tokens == 2


def test_lean_prompt_examples_picked_per_input_count_as_per_call() -> None:
    prompt = LeanPrompt(
        task="Classify the text.",
        examples=[("great", "positive")],
        input="Text: {text}\nLabel:",
        example_budget=50,
    )
    assert list(prompt.section_texts()) == ["task", "examples", "input"]
    fixed = LeanPrompt(task="Classify.", context="{text}", examples=[("great", "positive")])
    assert list(fixed.section_texts()) == ["task", "examples", "context"]


def test_frames_lists_and_reminders_stay_in_place() -> None:
    # Closing tags, bracket markers and headings belong to the value they frame.
    framed = "[CONTENT]\n{input}\n[END CONTENT]\n<ctx>\n{c}\n</ctx>\nTopic\n{topic}\nQuery\n{query}"
    assert stable_first(framed) == framed
    # A list item is never lifted out of its list; moved text goes before the whole list.
    listed = "Rules:\n1. Use the path.\n2. Open with {fence}.\n3. Close the fence.\nCode: {code}\nUse the full path always."
    assert stable_first(listed) == (
        "Use the full path always.\nRules:\n1. Use the path.\n2. Open with {fence}.\n3. Close the fence.\nCode: {code}"
    )
    # A closing reminder is meant to come last.
    reminder = "Q: {q}\nREMINDER - Cite the sources.\nAnswer:"
    assert stable_first(reminder) == reminder
