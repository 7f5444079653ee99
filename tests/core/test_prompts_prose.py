"""Prose compression in lean templates (lean_plugins/prompts/prose.py): one test per guard rule
(lean_plugins/data/prompt_prose_guard.json), what is never lost, the option's checks, the
fallback without a model, and the meaning guard. The real shipped compressor model is used."""

from __future__ import annotations

import json
import logging

import pytest

from lean_plugins.errors import ConfigurationError
from lean_plugins.prompts import lean_text, strip_variables, template_variables
from lean_plugins.prompts.prose import (
    PROSE_GUARD,
    compress_prose,
    guarded_settings,
    load_prose_guard,
    load_scorer,
    prose_lines,
    shipped_scorer,
)
from lean_plugins.prompts.template import mask
from lean_plugins.tokens import count_tokens

pytest.importorskip("torch")
pytest.importorskip("llmlingua")


@pytest.fixture(scope="module")
def scorer():
    loaded = shipped_scorer()
    if loaded is None:
        pytest.skip("the shipped compressor model could not load")
    return loaded


def _words(text: str) -> set[str]:
    """Each word as written and without a closing punctuation mark (a dropped last word of a
    sentence leaves its full stop on the word before it)."""
    return {w for word in text.split() for w in (word, word.rstrip(".,;:!?"))}


@pytest.mark.parametrize("rule", PROSE_GUARD, ids=lambda r: r.name)
def test_each_guard_rule_keeps_what_its_examples_say(rule, scorer) -> None:
    for line, kept in rule.examples:
        out = compress_prose(line, 0.3, scorer, min_words=6)
        if rule.kind == "keep_line":
            assert out == line
            continue
        assert out != line, "the example should be long enough to be compressed"
        words = _words(out)
        for word in kept:
            assert word in words, f"{rule.name}: {word!r} lost from {line!r} -> {out!r}"


def test_guard_loader_rejects_bad_entries(tmp_path) -> None:
    good = {"name": "neg", "kind": "words", "words": ["not"], "examples": [["Do not.", ["not"]]]}
    path = tmp_path / "guard.json"
    for entries, message in (
        ([good, good], r"more than once"),
        ([{**good, "kind": "phrase"}], r"'neg' is invalid"),
        ([{**good, "kind": "span", "pattern": "(open"}], r"'neg' is invalid"),
        ([{**good, "examples": []}], r"at least one example"),
    ):
        path.write_text(json.dumps({"rules": entries}), encoding="utf-8")
        with pytest.raises(ConfigurationError, match=message):
            load_prose_guard(path)


TEMPLATE = (
    "You are a very helpful and extremely knowledgeable assistant that always tries its best for the user.\n"
    "Please read the following document carefully and thoroughly before you answer the user's question.\n"
    "You must never make up facts that are not stated in the document, and you should not guess at all.\n"
    'If the document does not contain the answer, please simply reply with "I don\'t know" to the user.\n'
    "Give at most 3 reasons for your answer, and please keep each reason shorter than 25 words overall.\n"
    "Use the helper `fetch_page(url)` whenever you need more context about something in the document.\n"
    "Return a JSON object in this form:\n"
    '{{"answer": "...", "reasons": ["..."]}}\n'
    "Document: {document}\n"
    "Question: {question}\n"
    "Answer:"
)


def test_lean_text_with_prose_rate_keeps_what_is_never_lost(scorer) -> None:
    out = lean_text(TEMPLATE, prose_rate=0.4, min_cosine=None)
    assert template_variables(out) == template_variables(TEMPLATE)
    assert count_tokens(strip_variables(out)) < 0.8 * count_tokens(strip_variables(lean_text(TEMPLATE)))
    for kept in ('"I don\'t know"', "`fetch_page(url)`", '{{"answer":"...","reasons":["..."]}}', "3", "25"):
        assert kept in out, kept
    words = {w.strip(".,;:!?").lower() for w in out.split()}
    assert {"never", "not", "must", "at", "most"} <= words
    assert "\nReturn JSON:\n" in out  # the phrasebook shortens the format line; prose compression leaves it
    assert out.endswith("Document: {document}\nQuestion: {question}\nAnswer:")


def test_prose_compression_is_deterministic(scorer) -> None:
    first = lean_text(TEMPLATE, prose_rate=0.5, min_cosine=None)
    assert first == lean_text(TEMPLATE, prose_rate=0.5, min_cosine=None)
    assert first != lean_text(TEMPLATE)


def test_examples_data_and_short_lines_are_not_prose() -> None:
    text = (
        "## Example 1\nThe quick brown fox jumps over the lazy dog in the sunny park today.\n"
        "## Task\nRead the text below and write a summary of it in plain and simple words.\n"
        "Text: one long example body that goes on and on for a while here\n"
        "Text: another long example body that goes on and on for a while\nShort line here."
    )
    masked = mask(text).text
    assert prose_lines(masked.split("\n"), min_words=6) == [False, False, False, True, False, False, False]


@pytest.mark.parametrize("rate", [0, -0.1, 1.5, "0.5", True, float("nan")])
def test_prose_rate_is_validated_with_a_clear_error(rate) -> None:
    with pytest.raises(ConfigurationError, match=r"prose_rate must be a number in \(0, 1\]"):
        lean_text(TEMPLATE, prose_rate=rate)


def test_other_prose_options_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="prose_min_words must be a positive int"):
        lean_text(TEMPLATE, prose_rate=0.5, prose_min_words=0)
    with pytest.raises(ConfigurationError, match=r"min_cosine must be a number in \[0, 1\]"):
        lean_text(TEMPLATE, prose_rate=0.5, min_cosine=2)
    with pytest.raises(ConfigurationError, match="prose_scorer must be"):
        lean_text(TEMPLATE, prose_rate=0.5, prose_scorer=42)


def test_rate_one_is_the_rules_alone(scorer) -> None:
    assert lean_text(TEMPLATE, prose_rate=1.0) == lean_text(TEMPLATE)


def test_a_missing_model_falls_back_to_the_rules_with_one_warning(tmp_path, caplog) -> None:
    missing = str(tmp_path / "no-such-compressor")
    with caplog.at_level(logging.WARNING, logger="lean_plugins.prompts"):
        out = lean_text(TEMPLATE, prose_rate=0.4, prose_scorer=missing, min_cosine=None)
        again = lean_text(TEMPLATE, prose_rate=0.4, prose_scorer=missing, min_cosine=None)
    assert out == again == lean_text(TEMPLATE)
    warnings = [r for r in caplog.records if "prose compression unavailable" in r.getMessage()]
    assert len(warnings) == 1
    assert load_scorer(missing) is None


def test_a_lean_compressor_can_be_passed_as_the_scorer(scorer) -> None:
    from lean_plugins.compress import LeanCompressor

    compressor = LeanCompressor(record_ledger=False, dtype="float32")  # as the shipped scorer
    assert lean_text(TEMPLATE, prose_rate=0.5, prose_scorer=compressor, min_cosine=None) == lean_text(
        TEMPLATE, prose_rate=0.5, min_cosine=None
    )


def test_the_meaning_guard_relaxes_until_the_cosine_holds(scorer) -> None:
    from lean_plugins.embeddings import get_encoder
    from lean_plugins.prompts.prose import template_cosine

    loose = lean_text(TEMPLATE, prose_rate=0.3, min_cosine=None)
    guarded = lean_text(TEMPLATE, prose_rate=0.3, min_cosine=0.97)
    encoder = get_encoder()
    assert template_cosine(TEMPLATE, guarded, encoder) >= 0.97 or guarded == lean_text(TEMPLATE)
    assert count_tokens(guarded) >= count_tokens(loose)
    # a floor no rewrite can meet ends at the rules alone, without the example cap
    assert lean_text(TEMPLATE, prose_rate=0.3, max_example_tokens=10, min_cosine=1.0) == lean_text(TEMPLATE)


def test_guarded_settings_raise_the_rate_then_drop_the_cap() -> None:
    assert guarded_settings(0.7, None) == [(0.7, None), (0.8, None), (0.9, None), (None, None)]
    assert guarded_settings(None, 100) == [(None, 100), (None, None)]
    assert guarded_settings(0.9, 50) == [(0.9, 50), (None, 50), (0.9, None), (None, None)]


def _bench_module():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "bench_prompts.py"
    spec = importlib.util.spec_from_file_location("bench_prompts_under_test", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]  # dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_the_benchmarks_never_lost_check_names_what_is_missing() -> None:
    never_lost = _bench_module().never_lost
    source = (
        'Do not guess. Give 3 reasons. Say "unknown" if unsure.\n```py\nx = 1\n```\n'
        '{{"answer": "..."}}\nQuestion: {question}\n## Example 1\nText: 42 apples'
    )
    assert never_lost(source, source) == []
    lost = never_lost(source, "Guess. Give reasons.\n{{}}\nQuestion:")
    assert lost == [
        "variable question",
        "number 1",
        "number 3",
        'quoted "..."',
        'quoted "answer"',
        'quoted "unknown"',
        "negation not",
        "code fence",
        "JSON key answer",
    ]


def test_the_never_lost_check_reads_a_contraction_as_the_same_negation() -> None:
    never_lost = _bench_module().never_lost
    assert never_lost("Do not guess. You cannot skip it.", "Don't guess. You can't skip it.") == []
    assert never_lost("Don't guess.", "Do not guess.") == []
    assert never_lost("Don't guess. Never skip.", "Guess. Never skip.") == ["negation not"]
    assert never_lost("Won't help.", "Will help.") == ["negation not"]
