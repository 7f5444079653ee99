"""Issue 26's known wrong serve, "Why do we dream at night?" for "Why do we sleep at night?":
one word of a kind swapped for another. The guard refuses the words its table lists
(``sibling_words`` in lean_plugins/data/cache_guard_rules.json, one test per entry in
test_cache_guard_rules.py); the cross-encoder verifier must refuse the kind of swap for words
the table does not list. Real MiniLM, the shipped verifier, real SQLite + FAISS."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("gptcache")
pytest.importorskip("faiss")

from lean_plugins.cache import LeanCache, SemanticGuard
from lean_plugins.cache.guard import rules
from lean_plugins.cache.verifier import CrossEncoderVerifier
from lean_plugins.embeddings import get_encoder

# Written for this test (before the verifier was measured on them), with words in no table of
# the guard (checked below); scripts/train_verifier.py generates its swaps from that table.
UNLISTED_SWAPS = [
    ("Why do we hiccup?", "Why do we burp?"),
    ("How do I grow tomatoes?", "How do I grow potatoes?"),
    ("What do owls hunt?", "What do eagles hunt?"),
    ("Is yoga good for back pain?", "Is pilates good for back pain?"),
    ("How do I clean a carpet?", "How do I clean a mattress?"),
    ("Why do my feet smell?", "Why do my armpits smell?"),
    ("How do I learn to whistle?", "How do I learn to hum?"),
    ("What causes thunder?", "What causes lightning?"),
    ("How do I fix a leaking faucet?", "How do I fix a leaking toilet?"),
    ("How long do turtles live?", "How long do parrots live?"),
    ("How do I remove a splinter?", "How do I remove a wart?"),
    ("What is the best way to store cheese?", "What is the best way to store butter?"),
    ("How do volcanoes form?", "How do earthquakes form?"),
    ("How do I knit a scarf?", "How do I knit a sweater?"),
    ("Can parrots eat chocolate?", "Can parrots eat avocado?"),
    ("How do I unclog a sink?", "How do I unclog a bathtub?"),
    ("What is the boiling point of mercury?", "What is the boiling point of ethanol?"),
    ("How do I become a plumber?", "How do I become an electrician?"),
    ("How do I treat a sunburn?", "How do I treat a blister?"),
    ("How do I get rid of fleas?", "How do I get rid of cockroaches?"),
]
#: Share of UNLISTED_SWAPS the verifier must refuse on its own, without the guard (which
#: refuses about half of them as rare words).
REFUSED_FLOOR = 0.8


def _cos(a: str, b: str) -> float:
    va, vb = get_encoder().encode([a, b])
    return float(va @ vb)


def test_default_cache_refuses_dream_for_sleep_both_ways(tmp_path: Path) -> None:
    cache = LeanCache(path=tmp_path, record_hits=False)
    cache.put("Why do we dream at night?", "Dreams come from REM sleep ...")
    assert cache.lookup("Why do we sleep at night?") is None
    cache.clear()
    cache.put("Why do we sleep at night?", "Sleep restores ...")
    assert cache.lookup("Why do we dream at night?") is None
    # The same question still hits.
    assert cache.get("why do we sleep at night") == "Sleep restores ..."
    assert SemanticGuard().refusal("Why do we sleep at night?", "Why do we dream at night?") == "siblings"


def test_unlisted_swaps_use_words_outside_the_table() -> None:
    listed = {w for group in rules()["sibling_words"] for w in group}
    for a, b in UNLISTED_SWAPS:
        diff = {w.strip("?").lower() for w in a.split()} ^ {w.strip("?").lower() for w in b.split()}
        assert diff and not diff & listed, (a, b)
        assert SemanticGuard().refusal(a, b) != "siblings"


def test_verifier_refuses_one_word_of_a_kind_for_another_beyond_the_table() -> None:
    verifier = CrossEncoderVerifier.load()
    served = [
        (a, b)
        for a, b in UNLISTED_SWAPS
        if verifier.passes(b, a, _cos(a, b)) or verifier.passes(a, b, _cos(a, b))
    ]
    assert len(served) <= (1 - REFUSED_FLOOR) * len(UNLISTED_SWAPS), served
