"""Budget prediction per route: quantile, floor/cap, query kinds, censoring, persistence."""

from __future__ import annotations

import json
import random
import threading

import pytest

from lean_plugins.budget import BudgetPredictor, query_kind, route_for_template
from lean_plugins.budget.predictor import default_state_path
from lean_plugins.errors import ConfigurationError


@pytest.mark.parametrize(
    ("prompt", "kind"),
    [
        ("Answer in one word: what colour is the sky?", "one_word"),
        ("Return the result as JSON with keys a and b.", "json"),
        ("List three uses of copper.", "list"),
        ("Is Paris in France?", "yes_no"),
        ("Why is the sky blue?", "explain"),
        ("How does a transistor work?", "explain"),
        ("Explain photosynthesis to a child.", "explain"),
        ("who wrote he ain't heavy he's my brother lyrics", "factoid"),
        ("How many moons does Mars have?", "factoid"),
        ("Context: blah blah.\nQuestion: when did the eagles win last super bowl", "factoid"),
        ("Write me a poem about the sea", "other"),
        ("", "other"),
    ],
)
def test_query_kind(prompt: str, kind: str) -> None:
    assert query_kind(prompt) == kind


def test_cold_start_uses_the_default_then_a_high_quantile() -> None:
    p = BudgetPredictor(min_samples=20, quantile=0.95, headroom=1.0, floor=1)
    assert p.predict("qa", default=300) == 300
    lengths = list(range(1, 101))  # 1..100
    for n in lengths[:19]:
        p.observe("qa", n, kind="other")
    assert p.predict("qa", kind="other", default=300) == 300  # still cold
    for n in lengths[19:]:
        p.observe("qa", n, kind="other")
    assert p.predict("qa", kind="other", default=300) == 95
    assert p.predict("other-route", default=77) == 77


def test_window_forgets_old_lengths() -> None:
    p = BudgetPredictor(window=50, min_samples=10, headroom=1.0, floor=1)
    for _ in range(50):
        p.observe("r", 400, kind="other")
    for _ in range(50):
        p.observe("r", 40, kind="other")
    assert p.predict("r", kind="other", default=1000) == 40


def test_floor_and_cap() -> None:
    p = BudgetPredictor(min_samples=5, floor=16, cap=100)
    for _ in range(5):
        p.observe("tiny", 2, kind="other")
        p.observe("huge", 5000, kind="other")
    assert p.predict("tiny", kind="other", default=500) == 16
    assert p.predict("huge", kind="other", default=500) == 100


def test_kind_falls_back_to_the_route_scaled() -> None:
    p = BudgetPredictor(min_samples=10, headroom=1.0, floor=1)
    for _ in range(30):
        p.observe("chat", 200, kind="explain")
    # no one-word observations yet: the route's quantile times the one-word factor
    assert p.predict("chat", "Answer in one word: capital of Peru?", default=999) == 50
    for _ in range(10):
        p.observe("chat", 3, prompt="Answer in one word: capital of Peru?")
    assert p.predict("chat", "In one word, the capital of Chile?", default=999) == 3


def test_truncated_answers_make_the_budget_grow() -> None:
    p = BudgetPredictor(min_samples=10, headroom=1.0, floor=1, quantile=0.9)
    for _ in range(20):
        p.observe("r", 50, kind="other")
    assert p.predict("r", kind="other", default=500) == 50
    for _ in range(3):
        p.observe("r", 50, kind="other", truncated=True)
    assert p.predict("r", kind="other", default=500) == 100


def test_persistence_round_trip_and_atomic_write(tmp_path) -> None:
    path = tmp_path / "state" / "predictor.json"
    p = BudgetPredictor(path, min_samples=5, autosave_every=0)
    rng = random.Random(0)
    for _ in range(40):
        p.observe("route-a", rng.randint(10, 60), prompt="Why is the sky blue?")
        p.observe("route-b", rng.randint(100, 300), kind="list")
    assert not path.exists()
    p.save()
    data = json.loads(path.read_text())
    assert data["version"] == 1 and set(data["routes"]) == {"route-a", "route-b"}
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind
    again = BudgetPredictor(path, min_samples=5)
    for route, prompt in [("route-a", "Why is the sky blue?"), ("route-b", "List them")]:
        assert again.predict(route, prompt, default=1) == p.predict(route, prompt, default=1)


def test_autosave(tmp_path) -> None:
    path = tmp_path / "p.json"
    p = BudgetPredictor(path, autosave_every=10)
    for _ in range(10):
        p.observe("r", 12, kind="other")
    assert BudgetPredictor(path).samples("r") == 10


def test_corrupt_state_file_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "p.json"
    path.write_text("{not json")
    with pytest.raises(ConfigurationError, match="Delete the file"):
        BudgetPredictor(path)
    path.write_text(json.dumps({"version": 99, "routes": {}}))
    with pytest.raises(ConfigurationError, match="version"):
        BudgetPredictor(path)


def test_save_without_a_path_is_explained() -> None:
    with pytest.raises(ConfigurationError, match="persistent"):
        BudgetPredictor().save()


def test_persistent_predictor_lives_in_the_cache_dir() -> None:
    p = BudgetPredictor.persistent(autosave_every=1)
    p.observe("x", 5, kind="other")
    assert default_state_path().is_file()


def test_concurrent_observe_and_save(tmp_path) -> None:
    p = BudgetPredictor(tmp_path / "p.json", autosave_every=7, window=10_000)

    def worker(i: int) -> None:
        for j in range(200):
            p.observe(f"r{i % 3}", j, kind="other")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p.save()
    assert sum(BudgetPredictor(tmp_path / "p.json", window=10_000).samples(f"r{i}") for i in range(3)) == 1200


def test_route_for_template_is_stable_and_distinct() -> None:
    a = route_for_template("Answer briefly: {question}")
    assert a == route_for_template("Answer briefly: {question}")
    assert a != route_for_template("Answer at length: {question}")
    assert a.startswith("template:")
