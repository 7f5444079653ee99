"""How relevant each sentence is to a question: a logistic model over cheap sentence features.

The features are the MiniLM cosine to the question (and how far it is from the best and the
mean sentence of the call), the share of the question's content words a sentence holds (plain
and IDF-weighted over the call's sentences, so a word every sentence repeats counts little;
words are compared by stem, so "called" matches "call"),
shared word pairs, position and length, and whether the sentence holds what the question type
asks for (a figure for "how many", a year for "when", a name for "who"/"where"). The weights
and the question-type patterns live in ``lean_plugins/data/compressor/relevance.json``, fitted
by ``scripts/train_relevance.py`` on the SQuAD development articles; the benchmark reports
them with each article left out of the fit.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from lean_plugins.compress.data import QuestionItem
from lean_plugins.compress.language import ENGLISH_STOPWORDS, fold
from lean_plugins.compress.spans import sentence_spans

FEATURE_NAMES: tuple[str, ...] = (
    "cosine",
    "cosine_minus_best",
    "cosine_minus_mean",
    "term_share",
    "idf_term_share",
    "idf_share_minus_best",
    "pair_share",
    "first_sentence",
    "log_words",
    "figure_for_count_or_when",
    "year_for_when",
    "name_for_who_or_where",
)

_WORD = re.compile(r"\w+")
_FIGURE = re.compile(r"\d")
_YEAR = re.compile(r"\b(?:1\d{3}|20\d\d)s?\b|\bcentur(?:y|ies)\b", re.IGNORECASE)
_NAME_INSIDE = re.compile(r"\s[A-Z][a-z]")


@lru_cache(maxsize=1)
def _stem_rules() -> tuple[tuple[str, ...], int]:
    """Suffixes stripped from content words before they are compared (longest first) and the
    shortest stem left: "established" and "establish", "called" and "call" then match."""
    spec = json.loads(relevance_path().read_text())
    return tuple(sorted(spec["stem_suffixes"], key=len, reverse=True)), int(spec["stem_min_length"])


def stem(word: str) -> str:
    """``word`` without the first of the stem suffixes (relevance.json) that leaves a stem of
    at least ``stem_min_length`` characters; a crude, table-driven stemmer."""
    suffixes, shortest = _stem_rules()
    for suffix in suffixes:
        if word.endswith(suffix) and len(word) - len(suffix) >= shortest:
            return word[: -len(suffix)]
    return word


def _content_terms(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(fold(text)) if w not in ENGLISH_STOPWORDS]


def question_type(query: str, patterns: dict[str, list[re.Pattern[str]]]) -> str | None:
    """The first type in ``patterns`` whose regexes match ``query`` ("when", "count", ...)."""
    for name, regexes in patterns.items():
        if any(r.search(query) for r in regexes):
            return name
    return None


def term_shares(query: str, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sentence: the share of the query's content words it holds, the same weighted by IDF
    over ``sentences``, and the share of the query's adjacent content-word pairs it holds."""
    n = len(sentences)
    terms = _content_terms(query)
    term_set = set(terms)
    sentence_terms = [_content_terms(s) for s in sentences]
    sentence_sets = [set(t) for t in sentence_terms]
    df = {t: sum(t in s for s in sentence_sets) for t in term_set}
    idf = {t: math.log((n + 1) / (df[t] + 0.5)) for t in term_set}
    idf_total = sum(idf.values()) or 1.0
    share = np.array([len(term_set & s) / len(term_set) if term_set else 0.0 for s in sentence_sets])
    idf_share = np.array([sum(idf[t] for t in term_set & s) / idf_total for s in sentence_sets])
    pairs = set(itertools.pairwise(terms))
    pair_share = np.array(
        [len(pairs & set(itertools.pairwise(t))) / len(pairs) if pairs else 0.0 for t in sentence_terms]
    )
    return share, idf_share, pair_share


def sentence_features(
    query: str,
    sentences: Sequence[str],
    cosine: np.ndarray,
    qtype: str | None,
    shares: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Features of each sentence (rows) in ``FEATURE_NAMES`` order (columns); ``shares`` is
    :func:`term_shares` of the same arguments when the caller has it already."""
    n = len(sentences)
    cosine = np.asarray(cosine, dtype=np.float64)
    share, idf_share, pair_share = shares if shares is not None else term_shares(query, sentences)
    first = np.zeros(n)
    if n:
        first[0] = 1.0
    log_words = np.log1p([len(s.split()) for s in sentences])
    figure = np.array([bool(_FIGURE.search(s)) for s in sentences], dtype=np.float64)
    year = np.array([bool(_YEAR.search(s)) for s in sentences], dtype=np.float64)
    name = np.array([bool(_NAME_INSIDE.search(s[1:])) for s in sentences], dtype=np.float64)
    best = cosine.max() if n else 0.0
    return np.column_stack(
        [
            cosine,
            cosine - best,
            cosine - (cosine.mean() if n else 0.0),
            share,
            idf_share,
            idf_share - (idf_share.max() if n else 0.0),
            pair_share,
            first,
            log_words,
            figure * (qtype in ("count", "when")),
            year * (qtype == "when"),
            name * (qtype in ("who", "where")),
        ]
    ).reshape(n, len(FEATURE_NAMES))


@dataclass(frozen=True)
class RelevanceModel:
    """Logistic weights over ``FEATURE_NAMES`` and the question-type patterns."""

    coef: np.ndarray
    intercept: float
    question_types: dict[str, list[re.Pattern[str]]]

    @classmethod
    def from_dict(cls, data: dict) -> RelevanceModel:
        if tuple(data["features"]) != FEATURE_NAMES:
            raise ValueError(
                f"relevance weights were fitted for features {data['features']}, this code computes "
                f"{list(FEATURE_NAMES)}; refit with scripts/train_relevance.py"
            )
        types = {
            name: [re.compile(p, re.IGNORECASE) for p in patterns]
            for name, patterns in data["question_types"].items()
        }
        return cls(np.asarray(data["coef"], dtype=np.float64), float(data["intercept"]), types)

    def score(
        self,
        query: str,
        sentences: Sequence[str],
        cosine: np.ndarray,
        shares: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Log-odds that each sentence holds the answer to ``query`` (``shares``: as in
        :func:`sentence_features`)."""
        qtype = question_type(query, self.question_types)
        features = sentence_features(query, sentences, cosine, qtype, shares)
        return features @ self.coef + self.intercept


def relevance_path() -> Path:
    """The shipped weights file."""
    return Path(str(resources.files("lean_plugins") / "data" / "compressor" / "relevance.json"))


@lru_cache(maxsize=1)
def shipped_relevance_model() -> RelevanceModel:
    """The weights shipped in the package (loaded once)."""
    return RelevanceModel.from_dict(json.loads(relevance_path().read_text()))


def fit_logistic(features: np.ndarray, labels: np.ndarray, l2: float = 1.0, steps: int = 50) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton steps: ``(coef, intercept)``.

    Small enough to need no extra dependency (a dozen features, a few thousand rows).
    """
    x = np.column_stack([features, np.ones(len(features))])
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], l2)
    penalty[-1] = 0.0  # the intercept is not shrunk
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        gradient = x.T @ (p - labels) + penalty * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1])


def caching_encoder(
    cache: dict[str, np.ndarray] | None = None, *, dtype: str = "float32"
) -> Callable[[list[str]], np.ndarray]:
    """``encode(texts)`` with the shared MiniLM encoder in ``dtype`` and a cache (a fresh one per
    call site, or ``cache``, filled in place): a paragraph's sentences repeat across its questions."""
    from lean_plugins.embeddings import get_encoder

    encoder = get_encoder(dtype=dtype)
    cache = {} if cache is None else cache

    def encode(texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            cache.update(zip(missing, encoder.encode(missing), strict=False))
        return np.stack([cache[t] for t in texts])

    return encode


def training_rows(
    items: Sequence[QuestionItem], encode: Callable[[list[str]], np.ndarray], model: RelevanceModel
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(features, labels)`` per question: one row per sentence of its paragraph, label 1 for
    the sentences holding an answer. Questions whose answer crosses sentences are skipped."""
    rows = []
    for item in items:
        sentences = [item.context[a:b] for a, b in sentence_spans(item.context)]
        labels = np.array([any(a in s for a in item.answers) for s in sentences], dtype=np.float64)
        if not labels.any():
            continue
        vectors = encode([item.question, *sentences])
        qtype = question_type(item.question, model.question_types)
        rows.append((sentence_features(item.question, sentences, vectors[1:] @ vectors[0], qtype), labels))
    return rows


def fit_relevance(
    rows: Sequence[tuple[np.ndarray, np.ndarray]], question_types: dict[str, list[re.Pattern[str]]], l2: float = 1.0
) -> RelevanceModel:
    """A model fitted on ``rows`` (from :func:`training_rows`)."""
    coef, intercept = fit_logistic(np.concatenate([f for f, _ in rows]), np.concatenate([y for _, y in rows]), l2)
    return RelevanceModel(coef, intercept, question_types)
