"""``LeanCache(max_error=...)``: a semantic cache that measures its own wrong-hit rate and keeps
it under a bound the user sets.

Every semantic candidate that clears the cosine floor and the guard is a *would-be hit* with a
verifier score (a logit). The :class:`ErrorBudget` decides per would-be hit:

- **serve** it, when its score is at or above the certified threshold ``t*`` (see below) and
  the audit coin did not fire;
- **explore** it otherwise: the lookup is a miss, the caller calls the model as on any miss,
  and when it stores the fresh answer (``LeanCache.put`` for the same prompt, namespace and
  scope) the cache compares it with the candidate's cached answer and records whether the
  candidate would have been right.

The audit coin: each would-be hit is *audited* with probability ``audit_rate`` (1.0 until a
threshold is certified), drawn independently of the pair, its score and its outcome. Only
audited outcomes enter the estimate; unaudited explorations (scores below ``t*``) are counted
but not used, because their scores are not a fair sample.

Certification: at audit counts ``n_k = first_check * 2**k`` the budget recomputes ``t*`` as the
lowest score on a fixed grid of ``K`` thresholds whose one-sided Clopper-Pearson upper bound of
the wrong share among audited would-be hits scoring at or above it is <= ``max_error``, at
confidence ``1 - delta / (K * 2**(k+1))``. Between checks ``t*`` stays fixed.

**The guarantee.** If the would-be hits form an i.i.d. stream (the same distribution of
question pairs over time) and the answer comparison is right about whether the cached answer
serves the new question, then with probability at least ``1 - delta`` over the whole run
(every check, every grid threshold: a union bound), every threshold the budget ever certifies
has a true wrong share among would-be hits at or above it of at most ``max_error``; served hits
are exactly those would-be hits minus an independent coin's picks, so the expected share of
wrong answers among served semantic hits is at most ``max_error``. It bounds the wrong share
of *semantic* hits (exact and normalised-exact hits are not scored); it is per process (each
``LeanCache`` object keeps its own budget); a stream whose mix of questions drifts after
certification is covered only from the next check on. Until the first certification no
semantic hit is served (``first_check`` audited outcomes are needed, more at small bounds: at
``max_error=0.01``, 1,000 audited outcomes with no wrong ones; every audited would-be hit
is a model call the cache did not save).
"""

from __future__ import annotations

import math
import random
import re
import threading
from dataclasses import dataclass, field

from lean_plugins.errors import ConfigurationError

#: Score grid the threshold is chosen from (verifier logits).
DEFAULT_GRID = tuple(float(t) for t in range(-4, 13))  # -4 ... 12, step 1


def clopper_pearson_upper(wrong: int, n: int, alpha: float) -> float:
    """One-sided upper ``1 - alpha`` confidence bound of a binomial proportion (exact)."""
    if n <= 0:
        return 1.0
    if wrong >= n:
        return 1.0
    if wrong == 0:
        return 1.0 - alpha ** (1.0 / n)
    # Bisection on the binomial CDF: the p with P(X <= wrong | n, p) = alpha.
    lo, hi = wrong / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _binom_cdf(wrong, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def _binom_cdf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0 if k < n else 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k + 1):
        log_term = (
            math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        )
        total += math.exp(log_term)
    return min(1.0, total)


#: Cosine of two answers' MiniLM embeddings at or above which :func:`answers_agree` calls them
#: the same answer when their text differs.
ANSWER_COSINE = 0.9
_NOT_WORD = re.compile(r"[\W_]+")


def answers_agree(cached_answer: str, fresh_answer: str) -> bool:
    """Whether a cached answer would have served: the same words (case, spacing and
    punctuation aside), else MiniLM cosine >= :data:`ANSWER_COSINE` of the two answers.

    A rough default for free-text answers; pass ``LeanCache(answer_judge=...)`` when you know
    better (the key of a structured answer, a grader)."""
    a, b = (
        _NOT_WORD.sub(" ", cached_answer).casefold().split(),
        _NOT_WORD.sub(" ", fresh_answer).casefold().split(),
    )
    if a == b:
        return True
    if not a or not b:
        return False
    from lean_plugins.embeddings import get_encoder

    va, vb = get_encoder().encode([cached_answer, fresh_answer])
    return float(va @ vb) >= ANSWER_COSINE


@dataclass
class ErrorBudget:
    """Learns the lowest verifier score at which semantic hits keep to ``max_error``.

    Args:
        max_error: the bound on the wrong share of served semantic hits (e.g. 0.01).
        delta: the chance, over the whole run, that the bound is not met (default 0.05).
        audit_rate: share of would-be hits audited once a threshold is certified (all of them
            before); audited ones above the threshold are explored, not served.
        first_check: audited outcomes before the first certification attempt (then 2x, 4x, ...).
        grid: the scores a threshold is chosen from, ascending.
        seed: seed of the audit coin (``None``: random).
    """

    max_error: float
    delta: float = 0.05
    audit_rate: float = 0.05
    first_check: int = 250
    grid: tuple[float, ...] = DEFAULT_GRID
    seed: int | None = None
    threshold: float | None = field(default=None, init=False)
    #: audited outcomes: (score, wrong)
    audited: list[tuple[float, bool]] = field(default_factory=list, init=False)
    counts: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.max_error < 1.0:
            raise ConfigurationError(
                f"max_error is a share of semantic hits in (0, 1), got {self.max_error!r}."
            )
        if not 0.0 < self.delta < 1.0:
            raise ConfigurationError(f"delta must be in (0, 1), got {self.delta!r}.")
        if not 0.0 < self.audit_rate <= 1.0:
            raise ConfigurationError(f"audit_rate must be in (0, 1], got {self.audit_rate!r}.")
        if self.first_check < 1:
            raise ConfigurationError(f"first_check must be >= 1, got {self.first_check!r}.")
        if list(self.grid) != sorted(self.grid) or not self.grid:
            raise ConfigurationError("grid must be a non-empty ascending sequence of scores.")
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._next_check = self.first_check
        self._checks = 0
        self.counts = {"would_be_hits": 0, "served": 0, "explored": 0, "audited": 0, "wrong_audited": 0}

    # -- decisions -------------------------------------------------------------------------
    def decide(self, score: float) -> tuple[bool, bool]:
        """``(serve, audited)`` for a would-be hit with this verifier score."""
        with self._lock:
            self.counts["would_be_hits"] += 1
            rate = 1.0 if self.threshold is None else self.audit_rate
            audited = self._rng.random() < rate  # drawn before looking at the score
            serve = not audited and self.threshold is not None and score >= self.threshold
            self.counts["served" if serve else "explored"] += 1
            return serve, audited

    def observe(self, score: float, wrong: bool, audited: bool) -> None:
        """The outcome of an explored would-be hit (``wrong``: the cached answer did not serve)."""
        with self._lock:
            if not audited:
                return
            self.audited.append((float(score), bool(wrong)))
            self.counts["audited"] += 1
            self.counts["wrong_audited"] += int(wrong)
            if len(self.audited) >= self._next_check:
                self._certify()
                self._next_check *= 2

    def _certify(self) -> None:
        self._checks += 1
        alpha = self.delta / (len(self.grid) * 2**self._checks)
        scores = sorted(self.audited, key=lambda sw: sw[0], reverse=True)
        best: float | None = None
        n = wrong = 0
        i = 0
        for t in reversed(self.grid):  # from the highest threshold down
            while i < len(scores) and scores[i][0] >= t:
                n += 1
                wrong += scores[i][1]
                i += 1
            if n and clopper_pearson_upper(wrong, n, alpha) <= self.max_error:
                best = t
        self.threshold = best

    def upper_bound(self, threshold: float) -> float:
        """The current Clopper-Pearson bound (at ``1 - delta``, no union) for a threshold."""
        with self._lock:
            sel = [w for s, w in self.audited if s >= threshold]
        return clopper_pearson_upper(sum(sel), len(sel), self.delta)

    def summary(self) -> dict:
        with self._lock:
            return {
                **self.counts,
                "threshold": self.threshold,
                "max_error": self.max_error,
                "checks": self._checks,
            }
