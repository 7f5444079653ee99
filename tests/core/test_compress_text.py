"""Pure-text parts of the compressor: words, label alignment, protected spans, sentences."""

from __future__ import annotations

from lean_plugins.compress.data import (
    CompressionPair,
    align_keep_labels,
    keep_f1,
    split_pairs,
    word_spans,
    words,
)
from lean_plugins.compress.language import looks_english
from lean_plugins.compress.spans import (
    DEFAULT_PROTECTED_PATTERNS,
    compile_patterns,
    number_groups,
    protected_word_mask,
    sentence_spans,
)


def test_alignment_tolerates_recapitalisation_and_respacing() -> None:
    original = "Several school districts in Hampton Roads are holding classes this Presidents' Day."
    compressed = "Several school districts are holding classes this Presidents ' Day."
    labels = align_keep_labels(original, compressed)
    kept = [w for w, keep in zip(words(original), labels, strict=False) if keep]
    assert kept == [
        "Several",
        "school",
        "districts",
        "are",
        "holding",
        "classes",
        "this",
        "Presidents'",
        "Day.",
    ]


def test_alignment_picks_the_right_repeated_word() -> None:
    original = "the cat saw the dog near the house"
    labels = align_keep_labels(original, "the dog near the house")
    assert labels == [False, False, False, True, True, True, True, True]


def test_keep_f1() -> None:
    assert keep_f1([True, False, True], [True, False, True]) == 1.0
    assert keep_f1([True, True, False, False], [True, False, True, False]) == 0.5
    assert keep_f1([False, False], [False, False]) == 1.0


def test_split_is_seeded_and_disjoint() -> None:
    pairs = [CompressionPair(f"sentence {i} here", f"sentence {i}") for i in range(200)]
    a = split_pairs(pairs)
    b = split_pairs(pairs)
    assert a == b
    train, val, test = a
    assert len(test) == 20 and len(val) == 10 and len(train) == 170
    assert not {p.original for p in test} & {p.original for p in train + val}


def test_word_spans_keep_original_text() -> None:
    text = "  Hello,\tWorld!\n\nNew  line "
    assert [text[a:b] for a, b in word_spans(text)] == ["Hello,", "World!", "New", "line"]


def test_default_patterns_protect_numbers_urls_emails_code() -> None:
    text = "Call 555-1234 or mail ops@example.com, see https://x.org/a?b=1 and run `pip install x` now"
    spans = word_spans(text)
    mask = protected_word_mask(text, spans, compile_patterns(DEFAULT_PROTECTED_PATTERNS))
    protected = [text[a:b] for (a, b), m in zip(spans, mask, strict=False) if m]
    assert protected == ["555-1234", "ops@example.com,", "https://x.org/a?b=1", "`pip", "install", "x`"]


def test_force_tokens_and_user_patterns() -> None:
    text = "Keep ACME-42 and Zorro but not other words"
    spans = word_spans(text)
    mask = protected_word_mask(text, spans, compile_patterns([r"ACME-\d+"], force_tokens=["Zorro"]))
    assert [text[a:b] for (a, b), m in zip(spans, mask, strict=False) if m] == ["ACME-42", "Zorro"]


def test_sentence_spans() -> None:
    text = 'First one. "Second?" Third!\nFourth line\n\n  Fifth'
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "First one.",
        '"Second?"',
        "Third!",
        "Fourth line",
        "Fifth",
    ]


def test_and_between_names_is_part_of_the_name() -> None:
    from lean_plugins.compress.compressor import _answer_words

    text = "The San Joaquin Light & Power Building, Charles Huggins and Janet Rowley, bread and butter."
    spans = word_spans(text)
    marked = [text[a:b] for (a, b), m in zip(spans, _answer_words(text, spans), strict=False) if m]
    assert marked == ["San", "Joaquin", "Light", "&", "Power", "Building,", "Charles", "Huggins", "and", "Janet", "Rowley,"]


def test_initials_and_titles_do_not_end_a_sentence() -> None:
    text = (
        "Number theorists such as G. H. Hardy prided themselves. The founder was James O. McKinsey. "
        "E.I. du Pont made arms in the U.S. Rep. Joe Barton wrote letters. (Dr. Smith) agreed."
    )
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "Number theorists such as G. H. Hardy prided themselves.",
        "The founder was James O. McKinsey.",
        "E.I. du Pont made arms in the U.S. Rep. Joe Barton wrote letters.",  # "U.S." ends none
        "(Dr. Smith) agreed.",
    ]


def test_language_check() -> None:
    assert looks_english("The committee approved the budget for the next year after a long debate on taxes.")
    assert not looks_english(
        "Le conseil municipal a approuvé le budget pour l'année prochaine après un long débat."
    )
    assert not looks_english("东京是日本的首都，也是世界上人口最多的城市之一。")
    assert looks_english("x = compute(a, b)  # 42")


def test_join_keeps_only_chosen_words_and_the_texts_outer_spacing() -> None:
    import numpy as np

    from lean_plugins.compress.compressor import _join_kept

    text = "\n  alpha beta\n\ngamma delta  epsilon \n"
    spans = word_spans(text)
    assert _join_kept(text, spans, np.array([False, False, False, False, True])) == "\n  epsilon \n"
    assert (
        _join_kept(text, spans, np.array([True, False, False, True, True]))
        == "\n  alpha\n\ndelta  epsilon \n"
    )
    assert _join_kept(text, spans, np.array([True, True, False, False, False])) == "\n  alpha beta \n"
    assert _join_kept(text, spans, np.zeros(5, dtype=bool)) == ""


def test_unit_words_follow_their_number_only() -> None:
    text = "In April 1191 it sailed 4.6 billion years and 5 km on 1 May, costing USD 30 in the 10th century."
    spans = word_spans(text)
    grouped = {text[spans[i][0] : spans[i][1]] for g in number_groups(text, spans) for i in g}
    units = {"billion", "years", "km", "May,", "century.", "April", "USD"}
    assert units <= grouped
    # a unit-like word far from a number is not pulled in
    assert "in" not in grouped and "costing" in grouped  # "costing USD 30": the word it measures


def test_query_terms_match_without_accents() -> None:
    from lean_plugins.compress.relevance import sentence_features

    features = sentence_features(
        "Who was the fiancee?", ["His fiancée Berengaria waited.", "The fleet sailed."], [0.0, 0.0], None
    )
    assert features[0, 3] == 1.0 and features[1, 3] == 0.0  # term_share


def test_protect_numbers_switch() -> None:
    from lean_plugins.compress import LeanCompressor

    text = "It formed 4.6 billion years ago."
    spans = word_spans(text)
    groups = number_groups(text, spans)
    marked = {
        switch: [text[a:b] for (a, b), keep in zip(spans, mask, strict=False) if keep]
        for switch in (True, False)
        for mask in [LeanCompressor(protect_numbers=switch)._forced_mask(text, spans, groups)]
    }
    assert marked == {True: ["formed", "4.6", "billion", "years"], False: []}


def test_cli_reads_stdin_for_dash_and_names_a_missing_file(monkeypatch, capsys, tmp_path) -> None:
    import io

    from lean_plugins.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["compress", "-", "--json"]) == 0
    assert '"skipped": "empty"' in capsys.readouterr().out
    missing = tmp_path / "nope.txt"
    assert main(["compress", str(missing)]) == 2
    assert f"cannot read {missing}" in capsys.readouterr().err


def test_repeated_words_are_content_words_seen_before() -> None:
    from lean_plugins.compress.compressor import _repeated_words

    text = "The rainforest grows. Rainforests burn, and the 2 rivers feed the rainforest's trees 2 times."
    spans = word_spans(text)
    marked = [text[a:b] for (a, b), m in zip(spans, _repeated_words(text, spans), strict=False) if m]
    assert marked == ["Rainforests", "rainforest's"]  # stop words and numbers never count


def test_without_a_question_a_repeated_word_goes_before_a_word_said_once(monkeypatch) -> None:
    import numpy as np

    from lean_plugins.compress import LeanCompressor

    text = "river lake river hill river sea"
    lean = LeanCompressor(record_ledger=False, answer_word_bonus=0.0)
    monkeypatch.setattr(lean, "_score", lambda texts: [np.full(len(word_spans(t)), 0.5) for t in texts])
    out = lean.compress(text, target_tokens=4).text
    assert out == "river lake hill sea"  # equal classifier scores: the shipped penalty decides
