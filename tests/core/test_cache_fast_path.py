"""The cache's fast numeric path (``lean_plugins.cache.fast_path``): which path ``auto`` picks,
that the direct encoder forward is the model's own in float32, that bfloat16 stays within the
margins that settle a verdict, and that the served decisions do not change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lean_plugins import devices  # noqa: E402
from lean_plugins.cache import LeanCache  # noqa: E402
from lean_plugins.cache.adversarial import load_adversarial  # noqa: E402
from lean_plugins.cache.fast_path import (  # noqa: E402
    COSINE_MARGIN,
    LOGIT_MARGIN,
    apart,
    logits_settled,
    resolve_cache_precision,
    uncertain_ranks,
)
from lean_plugins.cache.verifier import CrossEncoderVerifier, PairVerifier  # noqa: E402
from lean_plugins.embeddings import BertForward, SentenceEncoder  # noqa: E402
from lean_plugins.errors import ConfigurationError  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
TEXTS = [
    "What is the capital of France?",
    "Which city is the capital of France?",
    "How do I learn Python quickly?",
    "What is the fastest way to learn Python?",
    "Who taught Aristotle?",
    "Who did Aristotle teach?",
    "Is it safe to drink tap water in Lisbon?",
    "Why doesn't my laptop turn on after closing the lid?",
]


@pytest.mark.parametrize(("has_bf16", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_auto_picks_bfloat16_only_where_the_cpu_has_it(
    monkeypatch, tmp_path: Path, has_bf16: bool, expected: str
) -> None:
    assert resolve_cache_precision("auto", lambda: has_bf16) == expected
    # forced paths are what they say, whatever the CPU
    assert resolve_cache_precision("float32", lambda: True) == "float32"
    assert resolve_cache_precision("bfloat16", lambda: False) == "bfloat16"
    # LeanCache asks devices.cpu_has_native_bfloat16 at construction
    monkeypatch.setattr(devices, "cpu_has_native_bfloat16", lambda: has_bf16)
    assert LeanCache(path=tmp_path, record_hits=False).precision == expected


def test_paths_that_read_float32_values_stay_float32(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="precision must be one of"):
        LeanCache(path=tmp_path, precision="int8")
    # the user's embedding, the error budget's calibration and the logistic verifier's cosine
    # features are all float32 values: bfloat16 is not used there
    assert (
        LeanCache(path=tmp_path, precision="bfloat16", embedding=lambda t: np.ones((len(t), 4))).precision
        == "float32"
    )
    assert LeanCache(path=tmp_path, precision="bfloat16", max_error=0.01).precision == "float32"
    assert LeanCache(path=tmp_path, precision="bfloat16", verifier=PairVerifier.load()).precision == "float32"
    assert LeanCache(path=tmp_path, precision="bfloat16").precision == "bfloat16"


def test_settled_rules() -> None:
    floor, k, m = 0.75, 5, COSINE_MARGIN
    assert uncertain_ranks([0.9, 0.6], floor, k) == set()  # one clear candidate, one clear miss
    assert uncertain_ranks([], floor, k) == set()
    assert uncertain_ranks([0.9, floor + m / 2, floor - m / 2, 0.7], floor, k) == {1, 2}  # near the floor
    # the sixth nearest could swap with the fifth: both unsettled
    assert uncertain_ranks([0.95, 0.94, 0.93, 0.92, 0.91, 0.91 - m / 2], floor, k) == {4, 5}
    assert uncertain_ranks([0.95, 0.94, 0.93, 0.92, 0.91, 0.91 - 2 * m], floor, k) == set()
    assert uncertain_ranks([0.95, 0.94, 0.93, 0.92, 0.91, 0.5], floor, k) == set()
    assert apart(0.9, 0.9 - m) and not apart(0.9, 0.9 - m / 2)
    assert logits_settled([4.0, -1.0], 2.85)
    assert not logits_settled([2.85 + LOGIT_MARGIN / 2], 2.85)
    assert not logits_settled([2.85 - LOGIT_MARGIN / 2], 2.85)


def test_many_candidates_serve_what_float32_serves(tmp_path: Path) -> None:
    # several stored paraphrases close to each other and to the floor: bfloat16 keeps its
    # verdict only where the order and the list cannot differ, and serves the same entry
    stored = [
        "How long should I boil an egg?",
        "How many minutes do I boil an egg for?",
        "What is the right time to boil an egg?",
        "How long do you boil eggs for soft yolks?",
        "How do I boil an egg?",
        "Is Python hard to learn?",
        "What is the capital of France?",
        "Which city is the capital of France?",
        "Who taught Aristotle?",
    ]
    queries = [
        "For how long should eggs be boiled?",
        "How hard is it to learn Python?",
        "What city is France's capital?",
        "Who was Aristotle's teacher?",
        "Who did Aristotle teach?",
        "How do I cook rice?",
    ]
    served = {}
    for precision in ("float32", "bfloat16"):
        cache = LeanCache(path=tmp_path / precision, record_hits=False, precision=precision)
        for i, q in enumerate(stored):
            cache.put(q, f"answer {i}")
        hits = [cache.lookup(q) for q in queries]
        served[precision] = [None if h is None else h.response for h in hits]
        cache.close()
    assert any(served["float32"]) and None in served["float32"]
    assert served["bfloat16"] == served["float32"]


def test_direct_forward_is_the_models_own_in_float32() -> None:
    encoder = SentenceEncoder()
    fast = encoder.encode(TEXTS)
    one = np.stack([encoder.encode(t) for t in TEXTS])
    assert isinstance(encoder._forward, BertForward)
    encoder._forward = None  # through transformers' module forward
    assert np.array_equal(encoder.encode(TEXTS), fast)
    assert np.array_equal(np.stack([encoder.encode(t) for t in TEXTS]), one)


def test_bfloat16_vectors_and_logits_stay_within_the_margins() -> None:
    exact = SentenceEncoder()
    fast = SentenceEncoder(dtype="bfloat16", prepack=True)
    stored = exact.encode(TEXTS)
    queries32 = np.stack([exact.encode(t) for t in TEXTS])
    queries16 = np.stack([fast.encode(t) for t in TEXTS])  # a lookup embeds one text at a time
    cos32, cos16 = stored @ queries32.T, stored @ queries16.T
    assert np.abs(cos32 - cos16).max() < COSINE_MARGIN / 2
    verifier = CrossEncoderVerifier.load()
    pairs = [(TEXTS[i], TEXTS[i + 1]) for i in range(0, len(TEXTS) - 1, 2)]
    l32 = verifier.scores(
        [a for a, _ in pairs], [b for _, b in pairs], [float(cos32[i, i + 1]) for i in range(0, 8, 2)]
    )
    l16 = verifier.scores(
        [a for a, _ in pairs],
        [b for _, b in pairs],
        [float(cos16[i, i + 1]) for i in range(0, 8, 2)],
        dtype="bfloat16",
    )
    assert np.abs(np.array(l32) - np.array(l16)).max() < LOGIT_MARGIN / 2


def test_cross_encoder_direct_forward_is_the_models_own() -> None:
    from lean_plugins.cache.cross_encoder import encode_pairs

    scorer = CrossEncoderVerifier.load()._model()
    queries, cached, cosines = TEXTS[0::2], TEXTS[1::2], [0.9, 0.8, 0.95, 0.7]
    batch = encode_pairs(scorer.tok, queries, cached, scorer.max_length)
    with torch.inference_mode():
        ref = scorer.model(
            batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], torch.tensor(cosines)
        )
    assert scorer.logits(queries, cached, cosines) == [float(x) for x in ref]


def _served(precision: str, rows: list, tmp_path: Path) -> list[bool]:
    cache = LeanCache(path=tmp_path / precision, record_hits=False, precision=precision)
    assert cache.precision == precision
    out = []
    for i, row in enumerate(rows):
        cache.clear("pair")
        cache.put(row.cached, f"answer {i}", namespace="pair")
        out.append(cache.lookup(row.query, namespace="pair") is not None)
    cache.close()
    return out


def test_bfloat16_serves_what_float32_serves_on_the_adversarial_set(tmp_path: Path) -> None:
    # every pair of the shipped adversarial set: different-meaning pairs and paraphrase controls
    rows = load_adversarial(DATA / "cache_adversarial.jsonl")
    exact, fast = _served("float32", rows, tmp_path), _served("bfloat16", rows, tmp_path)
    assert any(exact) and not all(exact), "the set should exercise both verdicts"
    assert fast == exact
