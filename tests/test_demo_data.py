"""The demo's shipped knowledge base and fixed question set."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from lean_plugins.demo.knowledge import (
    QUESTIONS_FILE,
    contains_answer,
    knowledge_text,
    load_knowledge_base,
    load_questions,
)
from lean_plugins.errors import ConfigurationError


def test_knowledge_base_is_a_few_thousand_words_in_sections() -> None:
    sections = load_knowledge_base()
    assert len(sections) >= 10
    assert sum(len(s.text.split()) for s in sections) > 2000
    assert all("?" not in s.text for s in sections)  # the stand-in finds the question by its "?"


def test_question_mix_is_half_first_quarter_repeats_quarter_paraphrases() -> None:
    questions = load_questions()
    counts = Counter(q.kind for q in questions)
    assert counts["first"] * 2 == len(questions)
    assert counts["repeat"] * 4 == len(questions)
    assert counts["paraphrase"] * 4 == len(questions)


def test_every_answer_is_in_the_knowledge_base_and_labels_point_back() -> None:
    kb = knowledge_text(load_knowledge_base())
    questions = load_questions()
    by_label = {q.label: q for q in questions if q.kind == "first"}
    for q in questions:
        assert contains_answer(kb, q.answer), q.id
        if q.kind != "first":
            assert by_label[q.label].answer == q.answer
        if q.kind == "paraphrase":
            assert q.question != by_label[q.label].question


def test_bad_labels_are_rejected(tmp_path) -> None:
    raw = json.loads(QUESTIONS_FILE.read_text())
    raw["questions"][4]["of"] = raw["questions"][4]["label"] = "F99"
    bad = tmp_path / "q.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(ConfigurationError, match="F99"):
        load_questions(bad)


def test_limit_keeps_the_first_requests() -> None:
    assert [q.id for q in load_questions(limit=3)] == ["Q01", "Q02", "Q03"]
