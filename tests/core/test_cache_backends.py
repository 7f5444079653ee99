"""LeanCache on real servers: Redis and PostgreSQL + pgvector (started by scripts/test.sh).

Skipped, with the reason, only when the server URL variable is unset (a plain local pytest).
"""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

pytest.importorskip("gptcache")

from lean_plugins.cache import LeanCache, namespace_for

URL_ENV = {"redis": "LEAN_PLUGINS_REDIS_URL", "postgres": "LEAN_PLUGINS_POSTGRES_URL"}


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    name = request.param
    if not os.environ.get(URL_ENV[name]):
        pytest.skip(f"{URL_ENV[name]} is not set; scripts/test.sh starts a {name} server and sets it")
    if name == "redis":
        pytest.importorskip("redis")
    else:
        pytest.importorskip("psycopg")
    return name


@pytest.fixture
def ns() -> str:
    """A fresh namespace per test, so runs never see each other's entries."""
    return namespace_for("test-model", uuid.uuid4().hex)


def test_exact_semantic_guard_and_isolation(backend: str, ns: str) -> None:
    cache = LeanCache(backend=backend)
    other = namespace_for("test-model", uuid.uuid4().hex)
    try:
        cache.put("How tall is the Eiffel Tower?", "330 m", namespace=ns)
        assert cache.lookup("how tall is the eiffel tower", namespace=ns).match == "normalized"
        hit = cache.lookup("What is the height of the Eiffel Tower?", namespace=ns)
        assert hit is not None and hit.match == "semantic" and hit.response == "330 m"
        assert cache.get("How tall is the Berlin TV Tower?", namespace=ns) is None
        assert cache.get("How tall is the Eiffel Tower?", namespace=other) is None
        assert cache.get("What is the height of the Eiffel Tower?", namespace=other) is None
        long_answer = "é" * 20_000
        cache.put("long", long_answer, namespace=other)
        assert cache.get("long", namespace=other) == long_answer
        cache.clear(ns)
        assert cache.get("How tall is the Eiffel Tower?", namespace=ns) is None
        assert cache.get("long", namespace=other) == long_answer
    finally:
        cache.clear(ns)
        cache.clear(other)
        cache.close()


def test_entries_are_shared_between_processes_views(backend: str, ns: str) -> None:
    """Two LeanCache objects (as on two app servers) see each other's writes, semantic too."""
    writer, reader = LeanCache(backend=backend), LeanCache(backend=backend)
    try:
        assert reader.get("How tall is Mount Everest?", namespace=ns) is None  # reader index exists
        writer.put("How tall is Mount Everest?", "8849 m", namespace=ns)
        assert reader.get("What is the height of Mount Everest?", namespace=ns) == "8849 m"
    finally:
        writer.clear(ns)
        writer.close()
        reader.close()


def test_ttl_and_max_entries(backend: str, ns: str) -> None:
    cache = LeanCache(backend=backend, mode="exact", ttl=0.5, max_entries=3)
    try:
        cache.put("short", "lived", namespace=ns)
        assert cache.get("short", namespace=ns) == "lived"
        time.sleep(0.7)
        assert cache.get("short", namespace=ns) is None
        for i in range(4):
            cache.put(f"q{i}", f"a{i}", namespace=ns, ttl=60)
            time.sleep(0.01)
        assert cache.get("q0", namespace=ns) is None
        assert [cache.get(f"q{i}", namespace=ns) for i in (1, 2, 3)] == ["a1", "a2", "a3"]
    finally:
        cache.clear(ns)
        cache.close()


def test_concurrent_writes_lose_nothing(backend: str, ns: str) -> None:
    cache = LeanCache(backend=backend, mode="exact")
    try:
        threads = [
            threading.Thread(
                target=lambda w=w: [cache.put(f"w{w} q{i}", f"a{w}.{i}", namespace=ns) for i in range(20)]
            )
            for w in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        missing = [
            (w, i)
            for w in range(8)
            for i in range(20)
            if cache.get(f"w{w} q{i}", namespace=ns) != f"a{w}.{i}"
        ]
        assert missing == []
    finally:
        cache.clear(ns)
        cache.close()
