"""Storage back-ends of :class:`~lean_plugins.cache.LeanCache`, one store per namespace.

Records and vectors go through GPTCache's managers: ``SQLStorage`` (SQLite embedded, or
PostgreSQL) for records, ``Faiss`` (embedded) or ``PGVector`` (PostgreSQL) for vectors. The
Redis store keeps records in plain Redis hashes with native per-key TTL (GPTCache's own Redis
managers need the RedisJSON / RediSearch modules, which a stock Redis server lacks) and keeps
its vectors in an in-process FAISS index that it syncs from Redis, so many app servers share
one cache.

A record's payload is JSON ``{"prompt", "response", "created", "expires", "sha"}``; the
``sha`` of the response is checked on every read, so a torn or altered record is a miss, never
a wrong answer. Records are written in one transaction (SQL) or one ``MULTI`` (Redis).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lean_plugins.cache import _gptcache

logger = logging.getLogger("lean_plugins.cache")

# Column sizes for SQL back-ends that enforce VARCHAR lengths (PostgreSQL).
_TABLE_LEN = {"question_question": 64, "answer_answer": 10_000_000, "session_id": 64}


@dataclass(frozen=True)
class Record:
    """One cached prompt and its response."""

    id: int
    prompt: str
    response: str
    created: float
    expires: float | None
    output_tokens: int | None = None

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires


def encode_payload(
    prompt: str, response: str, created: float, expires: float | None, output_tokens: int | None = None
) -> str:
    sha = hashlib.sha256(response.encode("utf-8")).hexdigest()[:16]
    data = {"prompt": prompt, "response": response, "created": created, "expires": expires, "sha": sha}
    if output_tokens is not None:
        data["out_tokens"] = int(output_tokens)
    return json.dumps(data, ensure_ascii=False)


def decode_payload(record_id: int, payload: str | bytes | None) -> Record | None:
    """The record in ``payload``, or ``None`` when it is not a complete, intact record."""
    if payload is None:
        return None
    try:
        data = json.loads(payload)
        response = data["response"]
        if hashlib.sha256(response.encode("utf-8")).hexdigest()[:16] != data["sha"]:
            return None
        out_tokens = data.get("out_tokens")
        return Record(
            int(record_id),
            str(data["prompt"]),
            response,
            float(data["created"]),
            data["expires"],
            None if out_tokens is None else int(out_tokens),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class Store(ABC):
    """Records and vectors of one namespace. Callers serialise calls with :attr:`lock`."""

    def __init__(self) -> None:
        self.lock = threading.RLock()

    @abstractmethod
    def insert(self, key: str, payload: str, vector: np.ndarray | None, ttl: float | None) -> int:
        """Store one record (replacing others with the same ``key``); return its id."""

    def insert_many(
        self, keys: list[str], payloads: list[str], vectors: np.ndarray | None, ttl: float | None
    ) -> list[int]:
        """Store many records; the default inserts them one by one."""
        return [
            self.insert(k, p, None if vectors is None else vectors[i], ttl)
            for i, (k, p) in enumerate(zip(keys, payloads, strict=True))
        ]

    @abstractmethod
    def exact(self, key: str) -> list[Record]:
        """Records whose key is ``key``."""

    @abstractmethod
    def search(self, vector: np.ndarray, top_k: int) -> list[tuple[float, int]]:
        """``(cosine, id)`` of the nearest stored vectors, best first."""

    @abstractmethod
    def fetch(self, ids: list[int]) -> dict[int, Record]:
        """Records by id (missing and damaged ones left out)."""

    @abstractmethod
    def delete(self, ids: list[int]) -> None: ...

    @abstractmethod
    def touch(self, record_id: int) -> None:
        """Mark a record as just used (for least-recently-used eviction)."""

    @abstractmethod
    def evict(self, max_entries: int) -> int:
        """Delete least-recently-used records beyond ``max_entries``; return how many."""

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def destroy(self) -> None:
        """Delete everything of this namespace."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Persist in-memory state (vector index)."""

    def close(self) -> None:
        self.flush()


def _l2_to_cosine(distance: float) -> float:
    # Vectors are unit length: squared L2 distance = 2 - 2 cos.
    return 1.0 - float(distance) / 2.0


# --------------------------------------------------------------------------------------------
# SQL records (GPTCache SQLStorage) + FAISS or pgvector vectors
# --------------------------------------------------------------------------------------------


class _AtomicFaiss:
    """GPTCache's ``Faiss`` vector manager, written atomically (temp file + rename).

    Small namespaces use an exact flat index. From :attr:`IVF_MIN_VECTORS` vectors on, a flat
    search costs ~15-20 ms per lookup on one core (100k x 384 floats), so the index is rebuilt
    once as an inverted-file index (``IVF{sqrt(n)},Flat``, :attr:`IVF_NPROBE` lists searched):
    it scans ~5% of the vectors and keeps its own ids, so deletes and TTL expiry work as before.
    """

    IVF_MIN_VECTORS = 50_000
    IVF_NPROBE = 16

    def __init__(self, index_path: Path | None, dimension: int) -> None:
        faiss_mod = _gptcache.load("gptcache.manager.vector_data.faiss")
        self._faiss = faiss_mod.faiss
        self.path = index_path
        # GPTCache's constructor would read an existing file and fail on a damaged one: give it a
        # path that does not exist and load the real file in load_or_rebuild.
        self.index = faiss_mod.Faiss(os.devnull + ".absent", dimension, 1)
        self.index._index_file_path = str(index_path) if index_path else None
        self.dirty = False

    def load_or_rebuild(self, rows: list[tuple[int, bytes]], dimension: int) -> None:
        """Use the saved index when it holds exactly the ids in ``rows``, else rebuild from them."""
        want = {rid for rid, _ in rows}
        if self.path is not None and self.path.is_file():
            try:
                saved = self._faiss.read_index(str(self.path))
                if saved.d == dimension and self._ids(saved) == want:
                    self.index._index = saved
                    self._tune(saved)
                    return
            except Exception as exc:  # a damaged index is rebuilt from the records
                logger.warning(
                    "Vector index %s is unreadable (%s); rebuilding it from the records.", self.path, exc
                )
        self.index._index = self._faiss.index_factory(dimension, "IDMap,Flat", self._faiss.METRIC_L2)
        if rows:
            ids = np.array([rid for rid, _ in rows], dtype=np.int64)
            vecs = np.stack([np.frombuffer(blob, dtype=np.float32) for _, blob in rows])
            self.add_many(vecs, ids)
        self.dirty = True

    def _ids(self, index: Any) -> set[int]:
        """The ids an index holds (flat: its id map; IVF: its inverted lists)."""
        faiss = self._faiss
        if hasattr(index, "id_map"):
            return set(faiss.vector_to_array(index.id_map).tolist())
        ivf = faiss.extract_index_ivf(index)
        invlists, out = ivf.invlists, set()
        for lst in range(ivf.nlist):
            size = invlists.list_size(lst)
            if size:
                out.update(faiss.rev_swig_ptr(invlists.get_ids(lst), size).tolist())
        return out

    def _tune(self, index: Any) -> None:
        if not hasattr(index, "id_map"):
            self._faiss.extract_index_ivf(index).nprobe = self.IVF_NPROBE

    @property
    def is_ivf(self) -> bool:
        return not hasattr(self.index._index, "id_map")

    def add(self, record_id: int, vector: np.ndarray) -> None:
        self.add_many(vector.reshape(1, -1), np.array([record_id], np.int64))

    def add_many(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.index._index.add_with_ids(vectors.astype(np.float32), ids.astype(np.int64))
        self.dirty = True
        if not self.is_ivf and self.index._index.ntotal >= self.IVF_MIN_VECTORS:
            self._to_ivf()

    def _to_ivf(self) -> None:
        """Rebuild the flat index as an IVF index (k-means on a sample, seeded)."""
        faiss, flat = self._faiss, self.index._index
        n, dimension = int(flat.ntotal), int(flat.d)
        ids = faiss.vector_to_array(flat.id_map).astype(np.int64)
        vectors = faiss.downcast_index(flat.index).reconstruct_n(0, n)
        nlist = max(1, int(np.sqrt(n)))
        ivf = faiss.index_factory(dimension, f"IVF{nlist},Flat", faiss.METRIC_L2)
        sample = np.random.default_rng(0).choice(n, size=min(n, 64 * nlist), replace=False)
        ivf.train(vectors[np.sort(sample)])
        ivf.add_with_ids(vectors, ids)
        self._tune(ivf)
        self.index._index = ivf
        self.dirty = True
        logger.info(
            "Vector index %s: %d vectors, switched to IVF%d (nprobe %d).",
            self.path,
            n,
            nlist,
            self.IVF_NPROBE,
        )

    def search(self, vector: np.ndarray, top_k: int) -> list[tuple[float, int]]:
        found = self.index.search(vector.astype(np.float32), top_k=top_k) or []
        return [(_l2_to_cosine(d), int(i)) for d, i in found if int(i) >= 0]

    def delete(self, ids: list[int]) -> None:
        if ids:
            self.index.delete(np.array(ids, dtype=np.int64))
            self.dirty = True

    def count(self) -> int:
        return int(self.index.count())

    def flush(self) -> None:
        if not self.dirty or self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._faiss.write_index(self.index._index, str(tmp))
        os.replace(tmp, self.path)
        self.dirty = False


class SQLStore(Store):
    """Records in GPTCache's ``SQLStorage``; vectors in FAISS (embedded) or pgvector (PostgreSQL).

    The record's ``question`` column holds the exact-match key (a sha256 hex string), its
    answer holds the JSON payload.
    """

    #: Save the FAISS index after this many unsaved writes (and always on close).
    flush_every = 256

    def __init__(
        self,
        *,
        sql_url: str,
        db_type: str,
        table: str,
        dimension: int | None,
        index_path: Path | None = None,
        vectors: str = "faiss",
    ) -> None:
        super().__init__()
        sql_storage = _gptcache.load("gptcache.manager.scalar_data.sql_storage")
        sqlalchemy = _gptcache.load("sqlalchemy")
        # Built directly (not CacheBase.get): CacheBase would ask GPTCache to pip-install psycopg2.
        self.records = sql_storage.SQLStorage(
            db_type=db_type, url=sql_url, table_name=table, table_len_config=_TABLE_LEN
        )
        self._sa = sqlalchemy
        self._table = table
        self._ques, self._answer = self.records._ques, self.records._answer
        if db_type == "sqlite":
            # WAL: readers do not block the writer, and a commit needs no full fsync of the
            # database file (synchronous=NORMAL is still crash-safe for the application).
            @sqlalchemy.event.listens_for(self.records._engine, "connect")
            def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

            self.records._engine.dispose()  # reconnect with the pragmas
        for name, column in (("q", self._ques.question), ("a", self._answer.question_id)):
            sqlalchemy.Index(f"ix_{table}_{name}", column).create(bind=self.records._engine, checkfirst=True)
        self._vectors_kind = vectors
        self._index_path = index_path
        self._sql_url = sql_url
        self._faiss: _AtomicFaiss | None = None
        self._pg: Any = None
        self._unsaved = 0
        self._touched: dict[int, Any] = {}
        self._count = self.records.count()
        if dimension is not None:
            self.ensure_vectors(dimension)

    # -- vectors -------------------------------------------------------------------------------
    def ensure_vectors(self, dimension: int) -> None:
        if self._faiss is not None or self._pg is not None:
            return
        if self._vectors_kind == "pgvector":
            pgvector = _gptcache.load("gptcache.manager.vector_data.pgvector")
            # lists=1: exact search, correct at any size; tune lists/probes for very large caches.
            with warnings.catch_warnings():  # GPTCache re-declares its table class per namespace
                warnings.simplefilter("ignore")
                self._pg = self._make_pgvector(pgvector, dimension)
            return
        faiss = _AtomicFaiss(self._index_path, dimension)

        with self.records.Session() as session:
            rows = (
                session.query(self._ques.id, self._ques.embedding_data)
                .filter(self._ques.deleted == 0, self._ques.embedding_data.isnot(None))
                .all()
            )
        faiss.load_or_rebuild([(r.id, r.embedding_data) for r in rows], dimension)
        self._faiss = faiss

    def _make_pgvector(self, pgvector: Any, dimension: int) -> Any:
        return pgvector.PGVector(
            url=self._sql_url,
            index_params={"index_type": "L2", "params": {"lists": 1, "probes": 1}},
            collection_name=self._table,
            dimension=dimension,
            top_k=1,
        )

    # -- records -------------------------------------------------------------------------------
    def insert(self, key: str, payload: str, vector: np.ndarray | None, ttl: float | None) -> int:
        base = _gptcache.load("gptcache.manager.scalar_data.base")
        old = [r.id for r in self._ids_for_key(key)]
        if vector is not None:
            self.ensure_vectors(int(vector.shape[-1]))
        data = base.CacheData(
            question=key,
            answers=[base.Answer(payload, base.DataType.STR)],
            embedding_data=None if vector is None else vector.astype(np.float32),
        )
        (record_id,) = self.records.batch_insert([data])
        if vector is not None:
            if self._pg is not None:
                self._pg.mul_add(
                    [_gptcache.load("gptcache.manager.vector_data.base").VectorData(record_id, vector)]
                )
            else:
                assert self._faiss is not None
                self._faiss.add(record_id, vector)
                self._unsaved += 1
        self._count += 1
        if old:
            self.delete(old)
        if self._unsaved >= self.flush_every:
            self.flush()
        return int(record_id)

    def insert_many(
        self, keys: list[str], payloads: list[str], vectors: np.ndarray | None, ttl: float | None
    ) -> list[int]:
        """One transaction for all records (bulk warm-up of a cache)."""
        base = _gptcache.load("gptcache.manager.scalar_data.base")
        old: list[int] = []
        unique = sorted(set(keys))
        with self.records.Session() as session:
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                old += [
                    r.id
                    for r in session.query(self._ques.id)
                    .filter(self._ques.question.in_(chunk), self._ques.deleted == 0)
                    .all()
                ]
        if vectors is not None:
            self.ensure_vectors(int(vectors.shape[-1]))
        datas = [
            base.CacheData(
                question=key,
                answers=[base.Answer(payload, base.DataType.STR)],
                embedding_data=None if vectors is None else vectors[i].astype(np.float32),
            )
            for i, (key, payload) in enumerate(zip(keys, payloads, strict=True))
        ]
        ids = [int(i) for i in self.records.batch_insert(datas)]
        if vectors is not None:
            if self._pg is not None:
                vector_data = _gptcache.load("gptcache.manager.vector_data.base").VectorData
                self._pg.mul_add([vector_data(rid, vectors[i]) for i, rid in enumerate(ids)])
            else:
                assert self._faiss is not None
                self._faiss.add_many(vectors, np.array(ids, dtype=np.int64))
        self._count += len(ids)
        if old:
            self.delete(old)
        self.flush()
        return ids

    def _ids_for_key(self, key: str) -> list[Any]:
        with self.records.Session() as session:
            return (
                session.query(self._ques.id).filter(self._ques.question == key, self._ques.deleted == 0).all()
            )

    def _load(self, where: Any) -> dict[int, Record]:
        with self.records.Session() as session:
            rows = (
                session.query(self._ques.id, self._answer.answer)
                .join(self._answer, self._answer.question_id == self._ques.id)
                .filter(self._ques.deleted == 0, where)
                .all()
            )
        out: dict[int, Record] = {}
        for rid, payload in rows:
            record = decode_payload(rid, payload)
            if record is not None:
                out[record.id] = record
        return out

    def exact(self, key: str) -> list[Record]:
        return list(self._load(self._ques.question == key).values())

    def fetch(self, ids: list[int]) -> dict[int, Record]:
        return self._load(self._ques.id.in_(ids)) if ids else {}

    def search(self, vector: np.ndarray, top_k: int) -> list[tuple[float, int]]:
        self.ensure_vectors(int(vector.shape[-1]))
        if self._pg is not None:
            return [(_l2_to_cosine(float(d) ** 2), int(i)) for d, i in self._pg.search(vector, top_k=top_k)]
        assert self._faiss is not None
        return self._faiss.search(vector, top_k)

    def delete(self, ids: list[int]) -> None:
        if not ids:
            return
        self.records.mark_deleted(ids)
        self.records.clear_deleted_data()
        if self._pg is not None:
            self._pg.delete(ids)
        elif self._faiss is not None:
            self._faiss.delete(ids)
        self._count = max(0, self._count - len(ids))

    def touch(self, record_id: int) -> None:
        # Kept in memory and written before an eviction or a flush: a hit costs no commit.
        from datetime import datetime

        self._touched[record_id] = datetime.now()

    def _write_touches(self) -> None:
        if not self._touched:
            return
        touched, self._touched = self._touched, {}
        with self.records.Session() as session:
            for record_id, when in touched.items():
                session.query(self._ques).filter(self._ques.id == record_id).update({"last_access": when})
            session.commit()

    def evict(self, max_entries: int) -> int:
        excess = self._count - max_entries
        if excess <= 0:
            return 0
        self._write_touches()
        with self.records.Session() as session:
            rows = (
                session.query(self._ques.id)
                .filter(self._ques.deleted == 0)
                .order_by(self._ques.last_access, self._ques.id)
                .limit(excess)
                .all()
            )
        ids = [r.id for r in rows]
        self.delete(ids)
        return len(ids)

    def count(self) -> int:
        return self._count

    def flush(self) -> None:
        self._write_touches()
        if self._faiss is not None:
            self._faiss.flush()
        self._unsaved = 0

    def close(self) -> None:
        self.flush()
        self.records._engine.dispose()

    def destroy(self) -> None:
        tables = [
            self._ques,
            self._answer,
            self.records._ques_dep,
            self.records._session,
            self.records._report,
        ]
        for model in tables:
            model.__table__.drop(bind=self.records._engine, checkfirst=True)
        if self._pg is not None:
            self._pg._store.__table__.drop(bind=self._pg._engine, checkfirst=True)
            self._pg._engine.dispose()
        self.records._engine.dispose()
        self._faiss = None
        self._count = 0


class LocalStore(SQLStore):
    """SQLite records + FAISS vectors in one directory per namespace."""

    def __init__(self, directory: Path, dimension: int | None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        super().__init__(
            sql_url=f"sqlite:///{directory / 'records.sqlite'}",
            db_type="sqlite",
            table="lean",
            dimension=dimension,
            index_path=directory / "vectors.faiss",
        )

    def destroy(self) -> None:
        import shutil

        self.records._engine.dispose()
        self._faiss = None
        shutil.rmtree(self.directory, ignore_errors=True)
        self._count = 0


class PostgresStore(SQLStore):
    """PostgreSQL records + pgvector vectors; tables ``lean_<namespace hash>_*``."""

    def __init__(self, url: str, table: str, dimension: int | None) -> None:
        super().__init__(
            sql_url=url, db_type="postgresql", table=table, dimension=dimension, vectors="pgvector"
        )


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------


class RedisStore(Store):
    """Records in Redis hashes (native TTL) with an LRU sorted set; vectors in a local FAISS
    index synced from Redis before each search, so entries written by other processes are found.

    Keys (``P`` = ``lean-plugins:<namespace hash>``): ``P:e:<id>`` hash (key, payload, vec),
    ``P:k:<key>`` set of ids, ``P:lru`` zset (id -> last use), ``P:added`` zset (id -> id),
    ``P:next`` id counter.
    """

    def __init__(self, client: Any, prefix: str, dimension: int | None) -> None:
        super().__init__()
        self.client = client
        self.prefix = prefix
        self._faiss: _AtomicFaiss | None = None
        self._synced = 0
        self._known: set[int] = set()
        if dimension is not None:
            self._ensure_vectors(dimension)

    def _k(self, *parts: object) -> str:
        return ":".join([self.prefix, *map(str, parts)])

    def _ensure_vectors(self, dimension: int) -> None:
        if self._faiss is None:
            self._faiss = _AtomicFaiss(None, dimension)
            self._faiss.load_or_rebuild([], dimension)
            self._synced = 0
            self._known = set()

    #: Ids are taken (INCR) before their record is committed, so a record can land after a
    #: higher id was synced; each sync re-reads this many ids below the highest one seen.
    sync_window = 4096

    def _sync(self) -> None:
        assert self._faiss is not None
        low = max(0, self._synced - self.sync_window)
        seen = [int(i) for i in self.client.zrangebyscore(self._k("added"), f"({low}", "+inf")]
        new_ids = [i for i in seen if i not in self._known]
        if not new_ids:
            return
        pipe = self.client.pipeline(transaction=False)
        for rid in new_ids:
            pipe.hget(self._k("e", rid), "vec")
        for rid, blob in zip(new_ids, pipe.execute(), strict=True):
            if blob:  # None: expired or deleted since (the record and its "added" entry are one MULTI)
                self._faiss.add(rid, np.frombuffer(blob, dtype=np.float32))
            self._known.add(rid)
        self._synced = max(self._synced, *new_ids)

    def insert(self, key: str, payload: str, vector: np.ndarray | None, ttl: float | None) -> int:
        old = [int(i) for i in self.client.smembers(self._k("k", key))]
        record_id = int(self.client.incr(self._k("next")))
        fields: dict[str, Any] = {"key": key, "payload": payload}
        if vector is not None:
            fields["vec"] = vector.astype(np.float32).tobytes()
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self._k("e", record_id), mapping=fields)
        pipe.sadd(self._k("k", key), record_id)
        if ttl is not None:
            ms = max(1, int(ttl * 1000))
            pipe.pexpire(self._k("e", record_id), ms)
            pipe.pexpire(self._k("k", key), ms)
        pipe.zadd(self._k("lru"), {str(record_id): time.time()})
        if vector is not None:
            pipe.zadd(self._k("added"), {str(record_id): record_id})
        pipe.execute()
        if old:
            self.delete(old)
        return record_id

    def exact(self, key: str) -> list[Record]:
        ids = [int(i) for i in self.client.smembers(self._k("k", key))]
        return list(self.fetch(ids).values())

    def fetch(self, ids: list[int]) -> dict[int, Record]:
        if not ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for rid in ids:
            pipe.hget(self._k("e", rid), "payload")
        out = {}
        gone = []
        for rid, payload in zip(ids, pipe.execute(), strict=True):
            record = decode_payload(rid, payload)
            if record is not None:
                out[rid] = record
            elif payload is None:
                gone.append(rid)
        if gone:  # expired in Redis: drop the leftovers from the indexes
            self._forget(gone)
        return out

    def search(self, vector: np.ndarray, top_k: int) -> list[tuple[float, int]]:
        self._ensure_vectors(int(vector.shape[-1]))
        self._sync()
        assert self._faiss is not None
        return self._faiss.search(vector, top_k)

    def _forget(self, ids: list[int]) -> None:
        members = [str(i) for i in ids]
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self._k("lru"), *members)
        pipe.zrem(self._k("added"), *members)
        pipe.execute()
        if self._faiss is not None:
            self._faiss.delete(ids)
        self._known.difference_update(ids)

    def delete(self, ids: list[int]) -> None:
        if not ids:
            return
        pipe = self.client.pipeline(transaction=False)
        for rid in ids:
            pipe.hget(self._k("e", rid), "key")
        keys = pipe.execute()
        pipe = self.client.pipeline(transaction=True)
        for rid, key in zip(ids, keys, strict=True):
            pipe.delete(self._k("e", rid))
            if key is not None:
                pipe.srem(self._k("k", key.decode() if isinstance(key, bytes) else key), rid)
        pipe.execute()
        self._forget(ids)

    def touch(self, record_id: int) -> None:
        self.client.zadd(self._k("lru"), {str(record_id): time.time()}, xx=True)

    def evict(self, max_entries: int) -> int:
        excess = int(self.client.zcard(self._k("lru"))) - max_entries
        if excess <= 0:
            return 0
        ids = [int(i) for i in self.client.zrange(self._k("lru"), 0, excess - 1)]
        self.delete(ids)
        return len(ids)

    def count(self) -> int:
        return int(self.client.zcard(self._k("lru")))

    def destroy(self) -> None:
        keys = list(self.client.scan_iter(match=self.prefix + ":*", count=1000))
        for start in range(0, len(keys), 500):
            self.client.delete(*keys[start : start + 500])
        if self._faiss is not None:
            self._faiss.load_or_rebuild([], self._faiss.index._dimension)
        self._synced = 0
        self._known = set()
