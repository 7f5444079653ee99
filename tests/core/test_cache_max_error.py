"""``LeanCache(max_error=...)``: would-be hits are explored (a miss), the fresh answer stored with
``put`` settles them, the budget certifies a threshold, and the exploration is in the ledger.
Real MiniLM, cross-encoder, SQLite + FAISS."""

from __future__ import annotations

from pathlib import Path

import pytest

from lean_plugins.cache.calibration import ErrorBudget
from lean_plugins.errors import ConfigurationError

pytest.importorskip("gptcache")
pytest.importorskip("faiss")


def test_leancache_max_error_explores_calibrates_and_books(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    from lean_plugins.cache import LeanCache
    from lean_plugins.ledger import Ledger

    budget = ErrorBudget(max_error=0.2, first_check=40, seed=0)
    cache = LeanCache(path=tmp_path, max_error=budget, answer_judge=lambda a, b: a == b)
    assert cache.error_budget is budget
    cache.put("What is the capital of France?", "Paris")
    with Ledger() as ledger:
        for i in range(60):
            query = ["what is the capital of france", "What is the capital of France"][i % 2]
            hit = cache.lookup(query)
            if hit is None:  # explored: a miss; the caller asks the model and stores its answer
                cache.put(query, "Paris")
                cache.clear()
                cache.put("What is the capital of France?", "Paris")
    summary = cache.error_budget.summary()
    assert summary["threshold"] is not None, summary
    assert summary["audited"] >= 40 and summary["wrong_audited"] == 0
    explored = [e for e in ledger.events if e.kind == "explore"]
    assert len(explored) == summary["explored"] and all(e.input_saved == 0 for e in explored)
    served = sum(cache.lookup("WHAT IS THE CAPITAL OF FRANCE") is not None for _ in range(40))
    assert served >= 30, "certified: served but for the audited share (5%)"


def test_max_error_needs_a_verifier(tmp_path: Path) -> None:
    from lean_plugins.cache import LeanCache

    with pytest.raises(ConfigurationError, match="max_error needs a verifier"):
        LeanCache(path=tmp_path, max_error=0.01, verifier=False)
    with pytest.raises(ConfigurationError, match="max_error"):
        LeanCache(path=tmp_path, max_error=1.5)


def test_a_wrong_cached_answer_counts_against_the_budget(tmp_path: Path) -> None:
    from lean_plugins.cache import LeanCache

    cache = LeanCache(path=tmp_path, max_error=0.01, answer_judge=lambda a, b: a == b)
    cache.put("What is the capital of France?", "Paris")
    assert cache.lookup("what is the capital of france") is None  # nothing certified yet: explored
    cache.put("what is the capital of france", "Lyon")  # the model disagreed with the cache
    summary = cache.error_budget.summary()
    assert summary["audited"] == 1 and summary["wrong_audited"] == 1
    cache.put("what is the capital of france", "Lyon")  # settled once: a second put adds nothing
    assert cache.error_budget.summary()["audited"] == 1
