"""The pair verifier: loads from JSON (never pickle), refuses a different question that cosine
alone would serve, serves a clear paraphrase. Real MiniLM, real SQLite + FAISS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("gptcache")
pytest.importorskip("faiss")

from lean_plugins.cache import LeanCache
from lean_plugins.cache.verifier import (
    BASE_FEATURES,
    FEATURES,
    PROSE_EQUAL_LOGIT,
    CrossEncoderVerifier,
    PairVerifier,
    pair_features,
    prose_equal,
)
from lean_plugins.embeddings import get_encoder
from lean_plugins.errors import ConfigurationError
from lean_plugins.paths import package_data


def _cos(a: str, b: str) -> float:
    va, vb = get_encoder().encode([a, b])
    return float(va @ vb)


def test_shipped_verifier_is_json_and_round_trips(tmp_path: Path) -> None:
    data = json.loads(package_data("cache_verifier.json").read_text(encoding="utf-8"))
    assert data["features"] == list(FEATURES) and len(data["weights"]) == len(FEATURES)
    verifier = PairVerifier.load()
    copy = tmp_path / "v.json"
    verifier.save(copy)
    assert PairVerifier.load(copy) == verifier
    args = ("How do I learn Python?", "What is the best way to learn Python?", 0.9)
    assert PairVerifier.load(copy).score(*args) == pytest.approx(verifier.score(*args))


def test_bad_verifier_files_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"weights": [1.0]}), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="not a cache verifier file"):
        PairVerifier.load(bad)
    data = PairVerifier.load().to_dict()
    data["features"] = ["cos", "something_else"]
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="retrain"):
        PairVerifier.load(bad)
    with pytest.raises(ConfigurationError, match="cannot read"):
        PairVerifier.load(tmp_path / "missing.json")


def test_verifier_rejects_a_different_question_that_cosine_alone_serves(tmp_path: Path) -> None:
    # Asking for books on one part of chess is a narrower question; the guard sees no number,
    # negation or name that differs, and MiniLM's cosine is high.
    cached, query = "What are the best books on chess?", "What are the best books on chess openings?"
    cosine = _cos(cached, query)
    verifier = PairVerifier.load()
    assert cosine >= 0.85, "the pair must be close enough for a cosine threshold to serve it"
    assert not verifier.accepts(query, cached, cosine)
    plain = LeanCache(path=tmp_path, threshold=0.85, verifier=False, overlap_penalty=0.0)
    plain.put(cached, "answer")
    assert plain.get(query) == "answer", "cosine + guard serves it: only the verifier stops it"
    assert LeanCache(path=tmp_path, threshold=0.85, verifier=True).get(query) is None
    assert LeanCache(path=tmp_path).get(query) is None


def test_verifier_serves_a_clear_paraphrase(tmp_path: Path) -> None:
    cached, query = "How tall is the Eiffel Tower?", "What is the height of the Eiffel Tower?"
    verifier = PairVerifier.load()
    assert verifier.accepts(query, cached, _cos(cached, query))
    assert verifier.probability(query, cached, _cos(cached, query)) > 0.5
    cache = LeanCache(path=tmp_path, verifier=verifier)
    assert cache.verifier == verifier and cache.threshold == verifier.min_cosine
    cache.put(cached, "330 m")
    hit = cache.lookup(query)
    assert hit is not None and hit.match == "semantic" and hit.response == "330 m"


def test_features_see_word_differences() -> None:
    same = pair_features("How do I cook rice?", "How do I cook rice?", 1.0)
    different = pair_features("How do I cook rice?", "How do I cook pasta?", 0.8)
    names = dict(zip(FEATURES, different, strict=True))
    assert dict(zip(FEATURES, same, strict=True))["no_mismatch"] == 1.0
    assert (
        names["mismatch"] == 2.0 and names["no_mismatch"] == 0.0 and names["overlap"] == pytest.approx(1 / 3)
    )


def test_features_see_swapped_words() -> None:
    # Same words, other roles: "what does A think of B" is not "what does B think of A".
    swapped = dict(
        zip(
            FEATURES,
            pair_features("What does Alice think of Bob?", "What does Bob think of Alice?", 0.99),
            strict=True,
        )
    )
    same_order = dict(
        zip(
            FEATURES,
            pair_features("What does Alice think of Bob?", "What do Alice think of Bob?", 0.99),
            strict=True,
        )
    )
    assert swapped["order_swapped"] == 1.0 and swapped["order_inversions"] > 0
    assert same_order["order_swapped"] == 0.0 and same_order["order_inversions"] == 0.0
    assert len(FEATURES) == len(BASE_FEATURES) * (len(BASE_FEATURES) + 3) // 2
    verifier = PairVerifier.load()
    assert verifier.score(
        "What does Alice think of Bob?", "What does Bob think of Alice?", 0.99
    ) < verifier.score("What does Alice think of Bob?", "What do Alice think of Bob?", 0.99)


# -- the cross-encoder verifier (the default) and case / punctuation variants ------------------
ISSUE_SHORT_PAIRS = [  # issue 26: different questions the previous default served to each other
    ("Who taught Aristotle?", "Who did Aristotle teach?"),
    ("Tell me about yourself", "Tell me about myself"),
    ('{"a": 1}', "{'a': 1}"),
    ("x[1:]", "x[:1]"),
    ("x[:-1]", "x[-1:]"),
    ("Who is the king of Spain?", "Who was the king of Spain?"),
    ("What meetings do I have this week?", "What meetings do I have next week?"),
    ("Explain how DNS works briefly", "Explain how DNS works in detail"),
    ("What did she say about him?", "What did he say about her?"),
]
CASE_AND_PUNCTUATION = [
    ("What is the capital of France?", "what is the capital of france"),
    ("How many moons does Mars have?", "How many moons does Mars have"),
    ("Why is the sky blue?", "WHY IS THE SKY BLUE?"),
    ("Where do penguins live?", "where do penguins live."),
]


def test_prose_equal_forgives_case_and_sentence_punctuation_only() -> None:
    for a, b in CASE_AND_PUNCTUATION:
        assert prose_equal(a, b) and prose_equal(b, a), (a, b)
    for a, b in [
        ("What is List in Python typing?", "What is list in Python typing?"),  # one word's case, in code
        ('Is "true" the same as true in JSON?', "Is true the same as true in JSON?"),  # quotes
        ("x[1:]", "x[:1]"),
        ("Is 3.5 ok?", "Is 35 ok?"),
        ("What is the capital of France?", "What is the capital of Spain?"),
    ]:
        assert not prose_equal(a, b), (a, b)


def test_default_cache_serves_case_and_punctuation_variants(tmp_path: Path) -> None:
    cache = LeanCache(path=tmp_path, record_hits=False)
    assert isinstance(cache.verifier, CrossEncoderVerifier)
    for i, (cached, query) in enumerate(CASE_AND_PUNCTUATION):
        cache.put(cached, f"answer {i}", namespace=f"n{i}")
        hit = cache.lookup(query, namespace=f"n{i}")
        assert hit is not None and hit.response == f"answer {i}", (cached, query)


@pytest.mark.parametrize(("cached", "query"), ISSUE_SHORT_PAIRS)
def test_default_cache_refuses_the_issues_short_pairs(tmp_path: Path, cached: str, query: str) -> None:
    cache = LeanCache(path=tmp_path, record_hits=False)
    cache.put(cached, "the cached answer")
    assert cache.lookup(query) is None
    cache.clear()
    cache.put(query, "the cached answer")
    assert cache.lookup(cached) is None


def test_cross_encoder_reads_the_pair_and_names_a_missing_model(tmp_path: Path) -> None:
    verifier = CrossEncoderVerifier.load()
    assert verifier.model_dir == package_data("cache_verifier")
    same = verifier.score("How tall is the Eiffel Tower?", "What is the height of the Eiffel Tower?", 0.9)
    swapped = verifier.score("Who taught Aristotle?", "Who did Aristotle teach?", 0.95)
    assert same > verifier.threshold > swapped
    assert verifier.score("what is dna", "What is DNA?", 0.5) == PROSE_EQUAL_LOGIT
    with pytest.raises(ConfigurationError, match="train_verifier"):
        CrossEncoderVerifier.load(tmp_path)
    (tmp_path / "verifier.json").write_text(json.dumps({**verifier.info}), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="train_verifier"):
        CrossEncoderVerifier.load(tmp_path).score("a b", "c d", 0.9)  # no weights file


def test_lookup_scores_only_the_nearest_candidates_in_one_batch(tmp_path: Path) -> None:
    # A spy on the real cross-encoder (no stand-in): every candidate below passes the cosine floor
    # and the guard, and the verifier runs once, on at most VERIFIED_CANDIDATES of them.
    from lean_plugins.cache.lean_cache import VERIFIED_CANDIDATES

    verifier = CrossEncoderVerifier.load()
    batches: list[int] = []
    real_scores = verifier.scores

    def spy(queries: list[str], cached: list[str], cosines: list[float], **kwargs: str) -> list[float]:
        batches.append(len(queries))
        return real_scores(queries, cached, cosines, **kwargs)

    verifier.scores = spy  # type: ignore[method-assign]
    cache = LeanCache(path=tmp_path, verifier=verifier, record_hits=False)
    stored = [
        "How can I learn Python quickly?",
        "What is the fastest way to learn Python?",
        "How do I learn Python fast?",
        "What is the quickest way to learn Python?",
        "How should I learn Python quickly?",
    ]
    for i, q in enumerate(stored):
        cache.put(q, f"answer {i}")
    query = "What's the best way to learn Python fast?"
    cands = [q for q in stored if _cos(q, query) >= cache.threshold and cache.guard.agrees(query, q)]
    assert len(cands) > VERIFIED_CANDIDATES, "the test needs more candidates than are verified"
    cache.lookup(query)
    # one batch per pass: the bfloat16 pass, and the float32 one where a verdict was near a boundary
    assert batches in ([VERIFIED_CANDIDATES], [VERIFIED_CANDIDATES] * 2)
