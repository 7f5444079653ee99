"""The pair verifiers a semantic candidate must pass.

The default is :class:`CrossEncoderVerifier`, a MiniLM cross-encoder that reads both questions
together (``lean_plugins.cache.cross_encoder``; model card: ``docs/cache-verifier.md``).
:class:`PairVerifier`, below, is the previous one, a logistic regression on word-level
features, kept loadable (``verifier=PairVerifier.load()``); both accept a pair whose texts
differ only in case or sentence punctuation (:func:`prose_equal`).

The logistic regression:

MiniLM's cosine is inflated by shared words: QQP's non-duplicates typically share every word
but one, or the same words in another order ("what does A think of B" / "... B think of A"),
and score as high as true paraphrases that share few words. The verifier scores a (query,
cached prompt) pair from the cosine and a few word-level features, their squares and pairwise
products, and a candidate is served only when the score clears a threshold chosen on QQP pairs
(``scripts/bench_cache.py``; model card: ``docs/cache-verifier.md``).

The model ships as JSON (feature names, standardisation, coefficients, threshold): loading it
never unpickles anything.
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass, field
from itertools import combinations_with_replacement
from pathlib import Path

from lean_plugins.cache.guard import _WORD, _fold, content_words
from lean_plugins.errors import ConfigurationError

#: Word-level features, in order. ``mismatch`` = content words in one prompt only (capped at 6);
#: ``order_inversions`` = share of the shared content words' pairs that come in the other order.
BASE_FEATURES = (
    "cos",
    "cos2",
    "overlap",
    "cos_overlap",
    "length_ratio",
    "mismatch",
    "no_mismatch",
    "order_inversions",
    "order_swapped",
)
#: What the model weighs: the base features, then every product of two of them (squares too).
FEATURES = BASE_FEATURES + tuple(f"{a}*{b}" for a, b in combinations_with_replacement(BASE_FEATURES, 2))
DEFAULT_VERIFIER_FILE = "cache_verifier.json"
#: The cross-encoder's score for a pair that differs only in case or sentence punctuation.
PROSE_EQUAL_LOGIT = 20.0

# Words (with inner dots, apostrophes, hyphens: "os.path", "don't", "3.5") and quote marks; the
# sentence punctuation between them (?!.,;:) is what prose_equal forgives.
_PROSE_TOKEN = re.compile(r"\w+(?:['’.\-]\w+)*|[\"“”‘’']")
_PROSE_PUNCT = re.compile(r"[\s?!.,;:…]+")


def _prose_tokens(text: str) -> list[str] | None:
    """The words and quote marks of a natural-language text, or None when it has other symbols."""
    tokens = _PROSE_TOKEN.findall(text)
    if _PROSE_PUNCT.sub("", _PROSE_TOKEN.sub("", text)):
        return None  # brackets, operators, backticks, ...: code or notation, where symbols matter
    return tokens


def _uniform_case(tokens: list[str]) -> bool:
    """All lower case, all upper case, or every word capitalised: a case change of the whole text."""
    letters = "".join(tokens)
    words = [t for t in tokens if t[:1].isalpha()]
    return letters == letters.lower() or letters == letters.upper() or all(w[0].isupper() for w in words)


def prose_equal(a: str, b: str) -> bool:
    """True when two natural-language texts differ only in case or sentence punctuation.

    ``What is the capital of France?`` / ``what is the capital of france``; a missing question
    mark. Not when either text has other symbols (code, JSON, slices, operators), and not for a
    case change of single words inside otherwise unchanged text (``List`` / ``list`` in a
    sentence that keeps its other capitals): only a whole-text change (all lower, all upper,
    title case) on one side.
    """
    if a == b:
        return True
    ta, tb = _prose_tokens(a), _prose_tokens(b)
    if ta is None or tb is None or not ta or len(ta) != len(tb):
        return False
    if [t.casefold() for t in ta] != [t.casefold() for t in tb]:
        return False
    return ta == tb or _uniform_case(ta) or _uniform_case(tb)


def _order_inversions(query_words: list[str], cached_words: list[str], shared: frozenset[str]) -> float:
    """Share of pairs of shared content words whose order differs between the two prompts."""
    first_q = list(dict.fromkeys(w for w in map(_fold, query_words) if w in shared))
    position = {w: i for i, w in enumerate(dict.fromkeys(w for w in map(_fold, cached_words) if w in shared))}
    order = [position[w] for w in first_q if w in position]
    n = len(order)
    if n < 2:
        return 0.0
    inversions = sum(order[i] > order[j] for i in range(n) for j in range(i + 1, n))
    return inversions / (n * (n - 1) / 2)


def base_features(query: str, cached: str, cosine: float) -> list[float]:
    """The word-level features of one pair, in :data:`BASE_FEATURES` order."""
    wq, wc = content_words(query), content_words(cached)
    union = wq | wc
    overlap = len(wq & wc) / len(union) if union else 0.0
    query_words, cached_words = _WORD.findall(query), _WORD.findall(cached)
    nq, nc = len(query_words), len(cached_words)
    length_ratio = min(nq, nc) / max(1, nq, nc)
    mismatch = len(wq ^ wc)
    inversions = _order_inversions(query_words, cached_words, wq & wc)
    return [
        cosine,
        cosine * cosine,
        overlap,
        cosine * overlap,
        length_ratio,
        float(min(mismatch, 6)),
        float(mismatch == 0),
        inversions,
        float(inversions > 0),
    ]


def expand(base: list[float]) -> list[float]:
    """Base features followed by their pairwise products, in :data:`FEATURES` order."""
    return base + [a * b for a, b in combinations_with_replacement(base, 2)]


def pair_features(query: str, cached: str, cosine: float) -> list[float]:
    """The verifier's inputs for one pair, in :data:`FEATURES` order."""
    return expand(base_features(query, cached, cosine))


@dataclass(frozen=True)
class PairVerifier:
    """Logistic regression on :func:`pair_features`; accepts a pair when its logit >= ``threshold``.

    ``min_cosine`` is the cosine below which no candidate is considered (the nearest-neighbour
    cut-off the verifier was trained above).
    """

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    threshold: float
    min_cosine: float
    features: tuple[str, ...] = FEATURES

    def __post_init__(self) -> None:
        if self.features != FEATURES:
            raise ConfigurationError(
                f"verifier file names features {list(self.features)}, this version computes {list(FEATURES)}; "
                "retrain it with scripts/bench_cache.py."
            )
        if not len(self.weights) == len(self.mean) == len(self.scale) == len(FEATURES):
            raise ConfigurationError(
                f"verifier needs {len(FEATURES)} weights, means and scales; the file has "
                f"{len(self.weights)}, {len(self.mean)}, {len(self.scale)}."
            )

    def score(self, query: str, cached: str, cosine: float) -> float:
        """Logit that ``cached``'s answer also answers ``query``."""
        x = pair_features(query, cached, cosine)
        return self.bias + sum(
            w * (v - m) / s for w, v, m, s in zip(self.weights, x, self.mean, self.scale, strict=True)
        )

    def probability(self, query: str, cached: str, cosine: float) -> float:
        return 1.0 / (1.0 + math.exp(-self.score(query, cached, cosine)))

    def accepts(self, query: str, cached: str, cosine: float) -> bool:
        return cosine >= self.min_cosine and self.passes(query, cached, cosine)

    def passes(self, query: str, cached: str, cosine: float) -> bool:
        """The verdict on a candidate the nearest-neighbour search already let through."""
        return prose_equal(query, cached) or self.score(query, cached, cosine) >= self.threshold

    def passes_many(self, query: str, cached: list[str], cosines: list[float]) -> list[bool]:
        """:meth:`passes` for several candidates of one query."""
        return [self.passes(query, c, s) for c, s in zip(cached, cosines, strict=True)]

    # -- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": "lean-plugins cache verifier v2 (logistic regression on features and their products)",
            "features": list(self.features),
            "weights": list(self.weights),
            "bias": self.bias,
            "mean": list(self.mean),
            "scale": list(self.scale),
            "threshold": self.threshold,
            "min_cosine": self.min_cosine,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict) -> PairVerifier:
        try:
            return cls(
                weights=tuple(float(w) for w in data["weights"]),
                bias=float(data["bias"]),
                mean=tuple(float(m) for m in data["mean"]),
                scale=tuple(float(s) for s in data["scale"]),
                threshold=float(data["threshold"]),
                min_cosine=float(data["min_cosine"]),
                features=tuple(data["features"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"not a cache verifier file ({type(exc).__name__}: {exc}); expected the JSON written by "
                "PairVerifier.save (keys weights, bias, mean, scale, threshold, min_cosine, features)."
            ) from exc

    @classmethod
    def load(cls, path: str | Path | None = None) -> PairVerifier:
        """Read a verifier from JSON (default: the one shipped in ``lean_plugins/data``)."""
        if path is None:
            from lean_plugins.paths import package_data

            path = package_data(DEFAULT_VERIFIER_FILE)
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigurationError(f"cannot read cache verifier {path}: {exc}") from exc
        return cls.from_dict(data)


@dataclass
class CrossEncoderVerifier:
    """MiniLM cross-encoder on the pair (and its cosine); accepts when its logit >= ``threshold``.

    The model (``lean_plugins/data/cache_verifier/``) is loaded on the first score, not when a
    cache is built. ``prose_equal`` pairs are accepted without running it.
    """

    threshold: float
    min_cosine: float
    model_dir: Path
    info: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._scorers: dict[str, object] = {}
        self._lock = threading.Lock()

    def _model(self, dtype: str = "float32"):  # type: ignore[no-untyped-def]
        scorer = self._scorers.get(dtype)
        if scorer is None:
            with self._lock:
                scorer = self._scorers.get(dtype)
                if scorer is None:
                    from lean_plugins.cache.cross_encoder import CrossEncoderScorer

                    scorer = self._scorers[dtype] = CrossEncoderScorer(self.model_dir, dtype)
        return scorer

    def scores(
        self, queries: list[str], cached: list[str], cosines: list[float], *, dtype: str = "float32"
    ) -> list[float]:
        """Logits for many pairs at once (one batch); :func:`prose_equal` pairs get
        :data:`PROSE_EQUAL_LOGIT` without running the model. ``dtype="bfloat16"``: the fast
        path's estimate, which settles only verdicts far from the threshold
        (``lean_plugins.cache.fast_path``); the threshold holds for float32 logits."""
        out = [PROSE_EQUAL_LOGIT if prose_equal(q, c) else None for q, c in zip(queries, cached, strict=True)]
        todo = [i for i, v in enumerate(out) if v is None]
        if todo:
            logits = self._model(dtype).logits(
                [queries[i] for i in todo], [cached[i] for i in todo], [float(cosines[i]) for i in todo]
            )
            for i, v in zip(todo, logits, strict=True):
                out[i] = v
        return [float(v) for v in out]  # type: ignore[arg-type]

    def score(self, query: str, cached: str, cosine: float) -> float:
        """Logit that ``cached``'s answer also answers ``query``."""
        return self.scores([query], [cached], [cosine])[0]

    def passes(self, query: str, cached: str, cosine: float) -> bool:
        """The verdict on a candidate the nearest-neighbour search already let through."""
        return self.score(query, cached, cosine) >= self.threshold

    def passes_many(self, query: str, cached: list[str], cosines: list[float]) -> list[bool]:
        """:meth:`passes` for several candidates of one query, scored in one batch (one forward
        pass, cheaper than one per candidate)."""
        logits = self.scores([query] * len(cached), cached, cosines)
        return [v >= self.threshold for v in logits]

    def accepts(self, query: str, cached: str, cosine: float) -> bool:
        return cosine >= self.min_cosine and self.passes(query, cached, cosine)

    @classmethod
    def load(cls, model_dir: str | Path | None = None) -> CrossEncoderVerifier:
        """Read the model's description (default: the one shipped in ``lean_plugins/data``)."""
        from lean_plugins.cache.cross_encoder import INFO_FILE, MODEL_DIR

        if model_dir is None:
            from lean_plugins.paths import package_data

            model_dir = package_data(MODEL_DIR)
        model_dir = Path(model_dir)
        try:
            info = json.loads((model_dir / INFO_FILE).read_text(encoding="utf-8"))
            threshold, min_cosine = float(info["threshold"]), float(info["min_cosine"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot read the cache verifier model in {model_dir} ({type(exc).__name__}: {exc}); "
                "reinstall lean-plugins or rebuild it with scripts/train_verifier.py, or pass "
                "verifier=PairVerifier.load() for the logistic verifier."
            ) from exc
        return cls(threshold=threshold, min_cosine=min_cosine, model_dir=model_dir, info=info)


Verifier = PairVerifier | CrossEncoderVerifier


def default_verifier() -> CrossEncoderVerifier:
    """The shipped cross-encoder verifier."""
    return CrossEncoderVerifier.load()
