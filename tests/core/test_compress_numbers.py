"""Figures stay with what they measure; numbers of irrelevant sentences give way to the answer."""

from __future__ import annotations

import re

import pytest

from lean_plugins.compress import LeanCompressor
from lean_plugins.compress.data import word_spans, words
from lean_plugins.compress.spans import is_content_word, number_groups, sentence_spans

EARTH = (
    "Earth is the third planet from the Sun and the only astronomical object known to harbour life. "
    "Its equatorial diameter is 12,742 kilometres. "
    "About 71 percent of the surface is covered with water, and the atmosphere is 78 percent "
    "nitrogen and 21 percent oxygen. "
    "The axis of rotation is tilted by 23.4 degrees, which causes the seasons. "
    "The planet formed about 4.5 billion years ago, and life appeared within one billion years."
)


def groups_of(text: str) -> list[list[str]]:
    spans = word_spans(text)
    return [[text[a:b] for a, b in (spans[i] for i in g)] for g in number_groups(text, spans)]


def test_a_figure_groups_its_units_and_the_word_it_measures() -> None:
    text = (
        "It is home to 3 million dairy cattle. Between 75,000 to 100,000 people left. "
        "Its diameter is 12,742 kilometres. In 1066, William invaded. It opened on July 8, 1905, in the rain."
    )
    assert groups_of(text) == [
        ["3", "million", "dairy"],  # a figure running into a noun measures it
        ["75,000", "to", "100,000", "people"],  # a range is one figure
        ["12,742", "kilometres.", "diameter"],  # else the nearest content word before it
        ["1066,", "William"],  # else the nearest after, in the same sentence
        ["July", "8,", "1905,", "opened"],  # a month before its day belongs to the date
    ]


def test_a_formula_is_one_figure() -> None:
    # Before "+" linked numbers, "2p 1" could be kept without its operator (SQuAD, Prime number).
    text = "Sophie Germain primes are of the form 2p + 1 with p prime. It has 3 × 5 = 15 cells."
    assert groups_of(text) == [["2p", "+", "1", "form"], ["3", "×", "5", "=", "15", "cells."]]


def test_units_switch_leaves_unit_words_out_of_the_group() -> None:
    text = "It formed 4.6 billion years ago."
    spans = word_spans(text)
    assert [[text[a:b] for a, b in (spans[i] for i in g)] for g in number_groups(text, spans, units=False)] == [
        ["4.6", "formed"]
    ]


@pytest.mark.parametrize(
    ("word", "content"),
    [("rainfall", True), ("Earth's", True), ("the", False), ("percent", False), ("1905", False), ("°F", False)],
)
def test_content_words(word: str, content: bool) -> None:
    assert is_content_word(word) is content


def kept_numbers_without_context(original: str, output: str) -> list[str]:
    """Kept words with a digit whose sentence keeps no content word besides units."""
    out_words = words(output)
    bare = []
    for a, b in sentence_spans(original):
        sentence = words(original[a:b])
        # the output is a subsequence of the original's words: find this sentence's kept words
        kept = [w for w in sentence if w in out_words]
        figures = [w for w in kept if re.search(r"\d", w)]
        if figures and not any(is_content_word(w) for w in kept):
            bare.extend(figures)
    return bare


@pytest.fixture(scope="module")
def compressor() -> LeanCompressor:
    return LeanCompressor(record_ledger=False)


@pytest.mark.parametrize("rate", [0.5, 0.33, 0.2])
@pytest.mark.parametrize("query", [None, "What causes the seasons?"])
def test_no_sentence_is_reduced_to_bare_figures(compressor: LeanCompressor, rate: float, query: str | None) -> None:
    out = compressor.compress(EARTH, rate=rate, query=query).text
    assert kept_numbers_without_context(EARTH, out) == [], out
    for figure in re.findall(r"\S*\d\S*", out):
        assert figure in EARTH.split()  # figures come out whole


def test_figures_of_other_sentences_give_way_to_the_answer(compressor: LeanCompressor) -> None:
    text = (
        "The record high temperature is 115 °F (46.1 °C), set on July 8, 1905, and the record low is "
        "17 °F (−8 °C), set on January 6, 1913. Rainfall averages 11.5 inches (292 mm) a year over 48 "
        "days. The tower was designed by the architect Margaret Holloway of Leith, who also planned "
        "the stone breakwater that shelters the fishing boats."
    )
    answer = "designed by the architect Margaret Holloway of Leith"
    out = compressor.compress(text, rate=0.4, query="Who designed the tower?").text
    assert answer in out, out
    kept_all = LeanCompressor(record_ledger=False, protect_numbers=True)
    kept_all._prompt_compressor = compressor.prompt_compressor
    every = kept_all.compress(text, rate=0.4, query="Who designed the tower?").text
    for figure in re.findall(r"\S*\d\S*", text):
        assert figure in every.split()  # protect_numbers keeps them all, as before
    assert kept_numbers_without_context(text, every) == [], every


def test_a_relevant_figure_survives_with_its_noun(compressor: LeanCompressor) -> None:
    out = compressor.compress(EARTH, rate=0.33, query="How large is the diameter of Earth?").text
    assert "12,742 kilometres." in out and "diameter" in out, out


def test_long_input_embeds_only_the_sentences_sharing_the_question_words(
    compressor: LeanCompressor, monkeypatch
) -> None:
    from lean_plugins.embeddings import get_encoder

    filler = [f"Report {i} of the harbour board lists the weather, the tides and the ferry times." for i in range(99)]
    answer = "The lighthouse was designed by the engineer Margaret Holloway of Leith."
    text = " ".join([*filler[:60], answer, *filler[60:]])
    encoder = get_encoder(dtype=compressor.resolved_dtype)  # the compressor's own instance
    seen: list[list[str]] = []
    real_encode = encoder.encode

    def spy(texts, **kwargs):
        seen.append(list(texts))
        return real_encode(texts, **kwargs)

    monkeypatch.setattr(encoder, "encode", spy)
    out = compressor.compress(text, rate=0.2, query="Who designed the lighthouse?").text
    assert answer in out
    assert len(seen) == 1 and len(seen[0]) == 1 + 32  # the question and 32 of the 100 sentences
    assert answer in seen[0]


NAMES = (
    "After the war the old harbour was rebuilt by the city, and in the following years the engineer "
    "Margaret Holloway and the mayor Thomas Reid opened two new piers for the ferries to Leith and Kirkwall."
)


def test_without_a_question_names_and_number_words_rank_higher(compressor: LeanCompressor) -> None:
    plain = LeanCompressor(record_ledger=False, answer_word_bonus=0.0)
    plain._prompt_compressor = compressor.prompt_compressor
    names = {"Margaret", "Holloway", "Thomas", "Reid", "two", "Leith", "Kirkwall."}
    with_bonus = names & set(compressor.compress(NAMES, rate=0.35).text.split())
    without = names & set(plain.compress(NAMES, rate=0.35).text.split())
    assert with_bonus > without, (with_bonus, without)
