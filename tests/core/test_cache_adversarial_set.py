"""The blind adversarial pair set (tests/data/cache_adversarial_blind.jsonl) and its loader."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from lean_plugins.cache.adversarial import LabelledPair, load_adversarial
from lean_plugins.errors import ConfigurationError

BLIND_SET = Path(__file__).resolve().parents[1] / "data" / "cache_adversarial_blind.jsonl"
# The categories issue 26 names: always on the training side (fixed on purpose, not held out).
ISSUE_CATEGORIES = {
    "active_passive", "reflexive_pronoun", "json_quoting", "slice_direction", "tense", "relative_week",
    "detail_level", "pronoun_swap",
}  # fmt: skip


def test_blind_set_has_the_size_and_spread_the_issue_asks_for() -> None:
    pairs = load_adversarial(BLIND_SET)
    different = [p for p in pairs if not p.same_meaning]
    paraphrases = [p for p in pairs if p.same_meaning]
    categories = Counter(p.category for p in different)
    assert len(different) >= 300 and len(categories) >= 30 and len(paraphrases) >= 100
    assert ISSUE_CATEGORIES <= set(categories)
    held = {p.category for p in different if p.held_out}
    assert len(held) >= len(categories) / 3 and not held & ISSUE_CATEGORIES
    assert any(p.held_out for p in paraphrases) and not all(p.held_out for p in paraphrases)
    assert len({(p.cached, p.query) for p in pairs}) == len(pairs), "no pair twice"
    assert all(p.cached != p.query for p in pairs)


def test_loader_reads_rows_and_names_bad_ones(tmp_path: Path) -> None:
    good = {"category": "tense", "cached": "Who is king?", "query": "Who was king?", "same_meaning": False}
    path = tmp_path / "set.jsonl"
    path.write_text(
        json.dumps(good) + "\n\n" + json.dumps({**good, "held_out": True, "category": "x"}) + "\n"
    )
    assert load_adversarial(path) == [
        LabelledPair("tense", "Who is king?", "Who was king?", False, False),
        LabelledPair("x", "Who is king?", "Who was king?", False, True),
    ]
    for bad, message in [
        ("{not json", "not JSON"),
        (json.dumps({**good, "same_meaning": "no"}), "same_meaning"),
        (json.dumps({**good, "query": " "}), "query"),
        (json.dumps({**good, "extra": 1}), "unknown fields"),
    ]:
        path.write_text(bad + "\n")
        with pytest.raises(ConfigurationError, match=message):
            load_adversarial(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "held_out": True}) + "\n")
    with pytest.raises(ConfigurationError, match="partly held out"):
        load_adversarial(path)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_adversarial(tmp_path / "missing.jsonl")
