"""``max_error``: the error budget on a synthetic stream with known truth, and through LeanCache."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from lean_plugins.cache.calibration import ErrorBudget, answers_agree, clopper_pearson_upper
from lean_plugins.errors import ConfigurationError


def _wrong_probability(score: float) -> float:
    """Known truth of the synthetic stream: the chance a would-be hit at this score is wrong."""
    return 1.0 / (1.0 + math.exp(1.5 * score - 3.0))  # 95% wrong at -0, ~1% at 5, ~0.1% at 6.6


def _run_stream(budget: ErrorBudget, n: int, seed: int) -> tuple[int, int]:
    rng = random.Random(seed)
    served = wrong_served = 0
    for _ in range(n):
        score = rng.uniform(-2.0, 9.0)
        wrong = rng.random() < _wrong_probability(score)
        serve, audited = budget.decide(score)
        if serve:
            served += 1
            wrong_served += wrong
        else:  # explored: the model is called, the answers compared
            budget.observe(score, wrong, audited)
    return served, wrong_served


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_budget_keeps_served_wrong_share_under_the_bound(seed: int) -> None:
    budget = ErrorBudget(max_error=0.01, seed=seed)
    served, wrong = _run_stream(budget, 40_000, seed)
    assert budget.threshold is not None, "a threshold is certified on this stream"
    # Served wrong share: at or under the bound (it bounds the expectation).
    assert served > 8_000 and wrong / served <= 0.01, (served, wrong, budget.summary())
    # The certified threshold's true wrong share (computable: the stream is known) is <= 1%.
    grid = np.linspace(budget.threshold, 9.0, 20_001)
    true_share = float(np.mean([_wrong_probability(s) for s in grid]))
    assert true_share <= 0.01
    # ... and it is not needlessly strict: a static threshold of 6 would be about as safe.
    assert budget.threshold <= 6.0


def test_budget_serves_nothing_until_certified_and_counts_everything() -> None:
    budget = ErrorBudget(max_error=0.01, seed=0)
    served, _ = _run_stream(budget, 500, 0)
    assert served == 0 and budget.threshold is None
    counts = budget.summary()
    assert counts["would_be_hits"] == 500 and counts["explored"] == 500 and counts["audited"] == 500


def test_budget_refuses_to_certify_a_stream_that_is_too_often_wrong() -> None:
    budget = ErrorBudget(max_error=0.01, seed=0)
    rng = random.Random(0)
    for _ in range(5_000):
        score = rng.uniform(0, 10)
        serve, audited = budget.decide(score)
        if not serve:
            budget.observe(score, rng.random() < 0.05, audited)  # 5% wrong at every score
    assert budget.threshold is None


def test_clopper_pearson_bound() -> None:
    assert clopper_pearson_upper(0, 300, 0.05) == pytest.approx(0.00994, abs=1e-4)  # the rule of three
    assert clopper_pearson_upper(5, 100, 0.05) == pytest.approx(0.1019, abs=2e-3)
    assert clopper_pearson_upper(0, 0, 0.05) == 1.0


def test_bad_budget_settings_name_the_problem() -> None:
    for kwargs, name in [
        ({"max_error": 0}, "max_error"),
        ({"max_error": 0.01, "audit_rate": 0}, "audit_rate"),
    ]:
        with pytest.raises(ConfigurationError, match=name):
            ErrorBudget(**kwargs)


def test_answers_agree() -> None:
    assert answers_agree("Paris.", "paris")
    assert not answers_agree("Paris", "")
    assert not answers_agree("The capital of France is Paris.", "Bananas are rich in potassium.")
