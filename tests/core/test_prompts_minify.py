"""Each minify rule on its own, the protection of variables/code/quotes, and lean_text."""

from __future__ import annotations

from lean_plugins.prompts import minify
from lean_plugins.prompts.lean import (
    compact_examples,
    compact_json,
    drop_articles,
    join_broken_lines,
    lean_text,
)
from lean_plugins.prompts.minifier import (
    MINIFY_RULES,
    Rule,
    apply_rules,
    dedupe,
    filler_phrases,
    politeness,
    rule_lines,
    tidy,
    transitions,
    whitespace,
    wordy_phrases,
)
from lean_plugins.prompts.template import mask, strip_variables, template_variables
from lean_plugins.tokens import count_tokens


def test_whitespace_strips_lines_collapses_spaces_and_drops_blank_lines() -> None:
    assert whitespace("  Answer\tthe   question.  \n\n\n  Be brief. ") == "Answer the question.\nBe brief."


def test_rule_lines_removes_decoration_and_keeps_headings() -> None:
    text = (
        "Context is below.\n---------------------\nX\n=====\nStop.-----\nY\n-----------schema-----------\nZ"
    )
    assert tidy(rule_lines(text)) == "Context is below.\nX\nStop.\nY\nSchema:\nZ"
    assert rule_lines("one - two -- three") == "one - two -- three"  # short dashes are text


def test_politeness_removes_thanks_and_please() -> None:
    assert tidy(politeness("Please summarize it. Thank you!")) == "Summarize it."
    assert tidy(politeness("Kindly list the items. Thanks in advance.")) == "List the items."
    assert tidy(politeness("Answer, please.")) == "Answer,."


def test_filler_phrases_removes_openers_and_capitalises() -> None:
    assert filler_phrases("I would like you to write a poem.") == "Write a poem."
    assert filler_phrases("Done. It is important that you cite sources.") == "Done. Cite sources."
    assert filler_phrases("Try to be brief. Make sure to use JSON.") == "Be brief. Use JSON."
    assert filler_phrases("Could you list the items?") == "List the items."
    assert filler_phrases("If unsure, just say so.") == "If unsure, say so."
    # An opener in the middle of a sentence is content, not filler.
    assert filler_phrases("The rule you should follow is X.") == "The rule you should follow is X."


def test_wordy_phrases_shortens() -> None:
    assert wordy_phrases("Read it in order to answer, due to the fact that it helps.") == (
        "Read it to answer, because it helps."
    )


def test_transitions_removes_task_announcements() -> None:
    assert transitions("Example: a\nLet's try this now:\nQ: {q}") == "Example: a\n\nQ: {q}"
    assert transitions("Begin!\nQ") == "\nQ"
    assert transitions("Begin with the summary.") == "Begin with the summary."


def test_dedupe_removes_repeated_instructions_only() -> None:
    text = "Do not make up an answer ever.\nUse the context.\nDon't make up an answer ever!"
    assert dedupe(text) == "Do not make up an answer ever.\nUse the context.\n"
    # Labelled data lines and short fragments repeat on purpose in examples.
    data = "Question: what color are apples today?\nQuestion: what color are apples today?"
    assert dedupe(data) == data
    quoted = "Order 'apple pie' for me now.\nOrder 'apple pie' for me now."
    assert minify(quoted) == quoted  # a repeated sentence with a quote is kept


def test_tidy_cleans_what_removals_leave() -> None:
    assert tidy("Answer , now .. Then...\n\n\n, more  text ") == "Answer, now. Then...\nmore text"


def test_rules_never_touch_protected_spans() -> None:
    text = (
        'Please answer {question}. Say "please, thank you" verbatim. Use `please()`.\n'
        "```\nplease   keep    this\n-----\n```\n"
        "Output {{'please': '',   'x': {{...}}}} and 'Thank you' as is."
    )
    out = minify(text)
    for span in (
        "{question}",
        '"please, thank you"',
        "`please()`",
        "please   keep    this\n-----",
        "'Thank you'",
    ):
        assert span in out
    assert "{{'please': '',   'x': {{...}}}}" in out
    assert out.startswith("Answer {question}.")


def test_a_rule_that_drops_a_variable_is_skipped() -> None:
    evil = Rule("evil", "drops everything", lambda text: "")
    assert apply_rules("Keep {x} here", [evil]) == "Keep {x} here"


def test_mask_roundtrip_and_apostrophes() -> None:
    text = "Bob's {name} said 'hi' and don't `x` \"y\""
    masked = mask(text)
    assert masked.unmask() == text
    assert masked.spans == ("{name}", "'hi'", "`x`", '"y"')


def test_minify_is_deterministic_and_keeps_variables() -> None:
    text = (
        "I would like you to answer the question.\n\n---------\n{context}\n---------\n"
        "Please be concise.  It is important that you be concise!\nQuestion: {question}\nAnswer:"
    )
    first = minify(text)
    assert first == minify(text)
    assert template_variables(first) == ["context", "question"]
    assert first == "Answer the question.\n{context}\nBe concise.\nQuestion: {question}\nAnswer:"
    assert count_tokens(first) < count_tokens(text)


def test_every_minify_rule_is_documented() -> None:
    import lean_plugins.prompts.minifier as module

    for rule in MINIFY_RULES:
        assert rule.name in (module.__doc__ or "")


def test_drop_articles_only_in_instruction_prose() -> None:
    text = (
        "Answer the question using a few of the documents.\nQuestion: what is the capital of a country?\n"
        "Question: {q}\nThe answer must cite an id."
    )
    assert drop_articles(text) == (
        "Answer question using a few of documents.\nQuestion: what is the capital of a country?\n"
        "Question: {q}\nAnswer must cite id."
    )
    assert drop_articles("Text: The cat sat on the mat today.") == "Text: The cat sat on the mat today."
    assert (
        drop_articles("IMPORTANT NOTE: use the index for the lookup.")
        == "IMPORTANT NOTE: use index for lookup."
    )


def test_compact_json_changes_only_whitespace_outside_strings() -> None:
    block = "{{'head': 'Tim Cook', 'props': {{'a b': 1}},\n 'x': [1, 2]}}"
    assert compact_json(block) == "{{'head':'Tim Cook','props':{{'a b':1}},'x':[1,2]}}"
    assert compact_json("{{'unbalanced: 1}}") == "{{'unbalanced: 1}}"


def test_sql_lines_are_protected_code() -> None:
    text = "Please see:\nSELECT * FROM items WHERE id != 1  LIMIT 5;\nThanks!"
    assert minify(text) == "See:\nSELECT * FROM items WHERE id != 1  LIMIT 5;"


def test_a_refine_instruction_is_dropped_only_when_it_was_said_before() -> None:
    alone = "Existing answer: {a}\nGiven the new context, refine the original answer. Else keep it."
    assert "refine" in lean_text(alone).lower()


def test_join_broken_lines() -> None:
    assert join_broken_lines("as well\nas the score\nNext") == "as well as the score\nNext"


def test_compact_examples_cuts_only_repeated_example_bodies() -> None:
    long_body = " ".join(f"Sentence number {i} is here." for i in range(30))
    text = f"How to score:\n- {long_body}\nContent: {long_body}\nContent: short\nContent: {{x}}"
    out = compact_examples(text, 20)
    lines = out.split("\n")
    assert lines[1] == f"- {long_body}"  # an instruction, not an example: kept whole
    assert lines[2].startswith("Content: Sentence number 0 is here.") and lines[2].endswith(" …")
    assert count_tokens(lines[2]) <= 25
    assert lines[3:] == ["Content: short", "Content: {x}"]


def test_compact_examples_joins_one_line_bodies_and_keeps_multi_line_formats() -> None:
    text = (
        "Score it.\nExample #1\nContext:\nApples are red\nScore: 100\nExample #2\nContext:\nPears\n"
        "Score: 0\nTriplets:\n(a, b, c)\n(d, e, f)\nTriplets:\n{t}"
    )
    masked = mask(text)  # as in lean_text: the variable is a placeholder
    assert masked.unmask(compact_examples(masked.text)) == (
        "Score it.\nExamples:\nContext: Apples are red\nScore: 100\nContext: Pears\nScore: 0\n"
        "Triplets:\n(a, b, c)\n(d, e, f)\nTriplets:\n{t}"
    )


def test_lean_text_rewrites_and_keeps_variables() -> None:
    source = (
        "Context information is below.\n---------------------\n{context_str}\n---------------------\n"
        "Given the context information and not prior knowledge, answer the query.\n"
        "Query: {query_str}\nAnswer: "
    )
    out = lean_text(source, compressor=None)
    assert out == "Context:\n{context_str}\nUsing only context, answer query.\nQuery: {query_str}\nAnswer:"
    assert count_tokens(strip_variables(out)) <= 0.6 * count_tokens(strip_variables(source))


def test_lean_text_uses_a_given_compressor_on_long_plain_paragraphs_only() -> None:
    paragraph = " ".join(f"Rule {i}: always answer in formal English, never slang {i}." for i in range(12))
    source = f"{paragraph}\nQuestion: {{question}} {paragraph}"
    calls = []

    def compressor(text: str) -> str:
        calls.append(text)
        return "Answer formally."

    out = lean_text(source, compressor=compressor)
    assert out.split("\n")[0] == "Answer formally."
    assert "{question}" in out and len(calls) == 1  # the line with the variable is not compressed
