"""Storage back-ends of :class:`~lean_plugins.cache.LeanCache`, one store per namespace.

Records and vectors go through GPTCache's managers: ``SQLStorage`` (SQLite embedded, or
PostgreSQL) for records, ``Faiss`` (embedded) or ``PGVector`` (PostgreSQL) for vectors. The
Redis store keeps records in plain Redis hashes with native per-key TTL (GPTCache's own Redis
managers need the RedisJSON / RediSearch modules, which a stock Redis server lacks) and searches
its vectors inside the server with a Redis 8 vector set (``VADD`` / ``VSIM``, HNSW); on a server
without vector sets (Redis 7) each process keeps a FAISS copy synced from Redis.

Many instances share one store: record ids are never reused (SQL: a counter row that ``clear()``
does not reset; Redis: a counter ``clear()`` keeps, seeded from the clock when a restarted server
lost it), so a vector an instance found can only ever name the record it was stored with.
Instances see each other's writes and clears (SQL: the counter row also carries a generation
that ``clear()`` bumps; each search catches up when either moved).

A record's payload is JSON ``{"prompt", "response", "created", "expires", "sha"}``; the
``sha`` of the response is checked on every read, so a torn or corrupted record is a miss, never
a wrong answer (it detects damage, not a deliberate edit: it is not keyed). Records are written
in one transaction (SQL) or one ``MULTI`` (Redis).
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
    #: The request context the entry belongs to (``lean_plugins.cache.keys.RequestKey.scope``).
    scope: str = ""

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires


def encode_payload(
    prompt: str,
    response: str,
    created: float,
    expires: float | None,
    output_tokens: int | None = None,
    scope: str = "",
) -> str:
    sha = hashlib.sha256(response.encode("utf-8")).hexdigest()[:16]
    data = {"prompt": prompt, "response": response, "created": created, "expires": expires, "sha": sha}
    if output_tokens is not None:
        data["out_tokens"] = int(output_tokens)
    if scope:
        data["scope"] = scope
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
            str(data.get("scope") or ""),
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
    def clear(self) -> None:
        """Delete every record of this namespace; the store stays usable and ids are not reused."""

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
    answer holds the JSON payload. A one-row table ``<table>_meta`` holds the next record id and
    a generation: rows are written with ids taken from it in the same transaction, ``clear()``
    deletes rows and bumps the generation (never the id), and a search first catches up with
    what other instances wrote or cleared since (new ids: added to the FAISS copy; new
    generation: the copy is rebuilt from the rows).
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
        self._meta = self._create_meta()
        self._vectors_kind = vectors
        self._index_path = index_path
        self._sql_url = sql_url
        self._faiss: _AtomicFaiss | None = None
        self._pg: Any = None
        self._unsaved = 0
        self._touched: dict[int, Any] = {}
        # The (next id, generation) this instance's view (count, FAISS copy) is up to date with.
        self._seen = self._read_meta()
        self._count = self.records.count()
        if dimension is not None:
            self.ensure_vectors(dimension)

    # -- the shared counter row ----------------------------------------------------------------
    def _create_meta(self) -> Any:
        sa = self._sa
        meta = sa.Table(
            f"{self._table}_meta",
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("next_id", sa.BigInteger, nullable=False),
            sa.Column("generation", sa.BigInteger, nullable=False),
        )
        engine = self.records._engine
        try:
            meta.create(bind=engine, checkfirst=True)
        except sa.exc.DatabaseError:  # another instance created it between the check and ours
            if not sa.inspect(engine).has_table(meta.name):
                raise
        # Existing stores (before the counter row) continue after their highest id.
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    f'INSERT INTO "{meta.name}" (id, next_id, generation) '
                    f'SELECT 1, COALESCE(MAX(id), 0) + 1, 0 FROM "{self._ques.__tablename__}" WHERE 1 = 1 '
                    "ON CONFLICT (id) DO NOTHING"
                )
            )
        return meta

    def _read_meta(self, session: Any = None) -> tuple[int, int]:
        query = self._sa.select(self._meta.c.next_id, self._meta.c.generation).where(self._meta.c.id == 1)
        if session is not None:
            row = session.execute(query).one()
        else:
            with self.records._engine.connect() as conn:
                row = conn.execute(query).one()
        return int(row[0]), int(row[1])

    def _take_ids(self, session: Any, n: int) -> list[int]:
        """Reserve ``n`` new ids inside ``session``'s transaction (its first write: takes the lock)."""
        end = session.execute(
            self._sa.text(f'UPDATE "{self._meta.name}" SET next_id = next_id + :n WHERE id = 1 RETURNING next_id'),
            {"n": n},
        ).scalar_one()
        return list(range(int(end) - n, int(end)))

    def _vector_rows(self, below: int, from_id: int = 0) -> list[tuple[int, bytes]]:
        with self.records.Session() as session:
            rows = (
                session.query(self._ques.id, self._ques.embedding_data)
                .filter(
                    self._ques.deleted == 0,
                    self._ques.embedding_data.isnot(None),
                    self._ques.id >= from_id,
                    self._ques.id < below,
                )
                .all()
            )
        return [(int(r.id), r.embedding_data) for r in rows]

    def refresh(self) -> None:
        """Catch up with other instances' writes and clears (one small read when nothing moved)."""
        next_id, generation = self._read_meta()
        seen_next, seen_generation = self._seen
        if (next_id, generation) == self._seen:
            return
        if self._faiss is not None:
            if generation != seen_generation:
                self._faiss.load_or_rebuild(self._vector_rows(next_id), self._faiss.index._dimension)
            else:
                rows = self._vector_rows(next_id, seen_next)
                if rows:
                    ids = np.array([rid for rid, _ in rows], dtype=np.int64)
                    self._faiss.add_many(np.stack([np.frombuffer(b, dtype=np.float32) for _, b in rows]), ids)
        self._count = self.records.count()
        self._seen = (next_id, generation)

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
        self._seen = self._read_meta()
        faiss.load_or_rebuild(self._vector_rows(self._seen[0]), dimension)
        self._count = self.records.count()
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
        return self.insert_many([key], [payload], None if vector is None else vector.reshape(1, -1), ttl)[0]

    def insert_many(
        self, keys: list[str], payloads: list[str], vectors: np.ndarray | None, ttl: float | None
    ) -> list[int]:
        """One transaction for all records (bulk warm-up of a cache)."""
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
            vectors = vectors.astype(np.float32)
        with self.records.Session() as session:
            ids = self._take_ids(session, len(keys))
            session.add_all(
                self._ques(
                    id=rid, question=key, embedding_data=None if vectors is None else vectors[i].tobytes()
                )
                for i, (rid, key) in enumerate(zip(ids, keys, strict=True))
            )
            session.add_all(
                self._answer(question_id=rid, answer=payload, answer_type=0)  # 0: GPTCache's DataType.STR
                for rid, payload in zip(ids, payloads, strict=True)
            )
            session.commit()
        # Ids right after the ones this view has seen: nobody else wrote in between, so the view
        # stays current by adding ours. Otherwise the next refresh() reads them with the others'.
        contiguous = ids[0] == self._seen[0]
        if contiguous:
            self._seen = (ids[-1] + 1, self._seen[1])
            self._count += len(ids)
        if vectors is not None:
            if self._pg is not None:
                vector_data = _gptcache.load("gptcache.manager.vector_data.base").VectorData
                self._pg.mul_add([vector_data(rid, vectors[i]) for i, rid in enumerate(ids)])
            elif contiguous:
                assert self._faiss is not None
                self._faiss.add_many(vectors, np.array(ids, dtype=np.int64))
                self._unsaved += len(ids)
        if old:
            self.delete(old)
        if self._unsaved >= self.flush_every or len(ids) > 1:
            self.flush()
        return ids

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
        self.refresh()
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
        self.refresh()
        if self._count <= max_entries:
            return 0
        # Other instances' deletes do not move the counter row: count for real before deleting.
        self._count = self.records.count()
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
        self.refresh()
        return self._count

    def flush(self) -> None:
        self._write_touches()
        if self._faiss is not None:
            self._faiss.flush()
        self._unsaved = 0

    def close(self) -> None:
        self.flush()
        self.records._engine.dispose()
        if self._pg is not None:
            self._pg._engine.dispose()

    def clear(self) -> None:
        sa = self._sa
        vector_table = f"{self._table}_pg_vector_store"
        has_pg_table = self._pg is not None or (
            self._vectors_kind == "pgvector" and sa.inspect(self.records._engine).has_table(vector_table)
        )
        self._touched = {}
        with self.records.Session() as session:
            # The generation first: it takes the write lock, and tells other instances to rebuild.
            session.execute(sa.text(f'UPDATE "{self._meta.name}" SET generation = generation + 1 WHERE id = 1'))
            for model in (self._answer, self.records._ques_dep, self.records._session, self._ques):
                session.query(model).delete(synchronize_session=False)
            if has_pg_table:
                session.execute(sa.text(f'DELETE FROM "{vector_table}"'))
            session.commit()
            self._seen = self._read_meta(session)
        self._count = 0
        if self._faiss is not None:
            self._faiss.load_or_rebuild([], self._faiss.index._dimension)
            self._faiss.flush()


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


class PostgresStore(SQLStore):
    """PostgreSQL records + pgvector vectors; tables ``lean_<namespace hash>_*``."""

    def __init__(self, url: str, table: str, dimension: int | None) -> None:
        super().__init__(
            sql_url=url, db_type="postgresql", table=table, dimension=dimension, vectors="pgvector"
        )


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------


#: (server address, index kind) pairs already logged, so each is logged once per process.
_LOGGED_REDIS_INDEX: set[tuple[str, str]] = set()


def redis_has_vector_sets(client: Any) -> bool:
    """Whether the server answers the vector-set commands (Redis 8, or the vectorset module)."""
    redis = _redis_module()
    try:
        client.execute_command("VCARD", "lean-plugins:probe-vector-sets")
    except redis.exceptions.ResponseError:  # "unknown command": Redis 7 and older
        return False
    return True


def _redis_module() -> Any:
    from lean_plugins._optional import require

    return require("redis", "redis")


class RedisStore(Store):
    """Records in Redis hashes (native TTL) with an LRU sorted set; vectors in a Redis 8 vector
    set searched inside the server, or, on a server without vector sets, in a local FAISS copy
    synced from Redis before each search.

    Keys (``P`` = the store's prefix): ``P:e:<id>`` hash (key, payload, vec), ``P:k:<key>`` set
    of ids, ``P:lru`` zset (id -> last use), ``P:v`` vector set (id -> vector), ``P:next`` id
    counter (``clear()`` keeps it; a server that lost it starts it from the clock in microseconds,
    above any id it handed out before), and for the FAISS copy ``P:added`` zset (id -> id) and
    ``P:epoch`` (a token ``clear()`` and a restart remove: a copy made under another token is
    rebuilt). Every candidate is re-scored with the vector stored in its own record, so a vector
    index that is behind (or quantised) can cause a miss, never another record's answer.

    Args:
        client: a ``redis.Redis`` client.
        prefix: the key prefix of this namespace.
        dimension: the vector dimension, when known.
        index: ``"auto"`` (vector set when the server has them, else the FAISS copy),
            ``"vectorset"`` or ``"faiss"``.
    """

    #: HNSW exploration factor of a ``VSIM`` search: a fixed value keeps recall steady at any
    #: ``top_k`` (higher: better recall, slower search).
    vsim_ef = 200

    def __init__(self, client: Any, prefix: str, dimension: int | None, index: str = "auto") -> None:
        super().__init__()
        self.client = client
        self.prefix = prefix
        if index not in ("auto", "vectorset", "faiss"):
            raise ValueError(f"index must be 'auto', 'vectorset' or 'faiss', got {index!r}")
        has_sets = index == "vectorset" or (index == "auto" and redis_has_vector_sets(client))
        self.index = "vectorset" if has_sets else "faiss"
        self._log_index()
        self._faiss: _AtomicFaiss | None = None
        self._synced = 0
        self._known: set[int] = set()
        self._epoch: bytes | None = None
        if dimension is not None:
            self._ensure_vectors(dimension)

    def _log_index(self) -> None:
        kwargs = self.client.connection_pool.connection_kwargs
        where = f"{kwargs.get('host', kwargs.get('path', '?'))}:{kwargs.get('port', '')}/{kwargs.get('db', 0)}"
        if (where, self.index) in _LOGGED_REDIS_INDEX:
            return
        _LOGGED_REDIS_INDEX.add((where, self.index))
        if self.index == "vectorset":
            logger.info("Redis cache at %s: vectors searched inside the server (vector sets, HNSW).", where)
        else:
            logger.info(
                "Redis cache at %s: the server has no vector sets (Redis < 8), so each process keeps "
                "a FAISS copy of the vectors, synced before each search.",
                where,
            )

    def _k(self, *parts: object) -> str:
        return ":".join([self.prefix, *map(str, parts)])

    def _ensure_vectors(self, dimension: int) -> None:
        if self.index == "faiss" and self._faiss is None:
            self._faiss = _AtomicFaiss(None, dimension)
            self._reset_copy()

    def _reset_copy(self) -> None:
        assert self._faiss is not None
        self._faiss.load_or_rebuild([], self._faiss.index._dimension)
        self._synced = 0
        self._known = set()

    #: Ids are taken (INCR) before their record is committed, so a record can land after a
    #: higher id was synced; each sync re-reads this many ids below the highest one seen.
    sync_window = 4096

    def _sync(self) -> None:
        """Bring the FAISS copy up to date (fallback path only)."""
        assert self._faiss is not None
        epoch = self.client.get(self._k("epoch"))
        if epoch is None:  # a fresh or cleared namespace, or a restarted server
            self.client.set(self._k("epoch"), os.urandom(8).hex(), nx=True)
            epoch = self.client.get(self._k("epoch"))
        if epoch != self._epoch:
            self._reset_copy()
            self._epoch = epoch
        low = max(0, self._synced - self.sync_window)
        seen = [int(i) for i in self.client.zrangebyscore(self._k("added"), f"({low}", "+inf")]
        new_ids = [i for i in seen if i not in self._known]
        if not new_ids:
            return
        for start in range(0, len(new_ids), 5000):
            chunk = new_ids[start : start + 5000]
            pipe = self.client.pipeline(transaction=False)
            for rid in chunk:
                pipe.hget(self._k("e", rid), "vec")
            # None: expired or deleted since (the record and its "added" entry are one MULTI)
            found = [(rid, blob) for rid, blob in zip(chunk, pipe.execute(), strict=True) if blob]
            if found:
                vectors = np.stack([np.frombuffer(blob, dtype=np.float32) for _, blob in found])
                self._faiss.add_many(vectors, np.array([rid for rid, _ in found], dtype=np.int64))
            self._known.update(chunk)
        self._synced = max(self._synced, *new_ids)

    def _new_ids(self, n: int) -> list[int]:
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self._k("next"), time.time_ns() // 1000, nx=True)
        pipe.incrby(self._k("next"), n)
        end = int(pipe.execute()[1])
        return list(range(end - n + 1, end + 1))

    def insert(self, key: str, payload: str, vector: np.ndarray | None, ttl: float | None) -> int:
        return self.insert_many([key], [payload], None if vector is None else vector.reshape(1, -1), ttl)[0]

    #: Records per ``MULTI`` (and ``VADD``s per pipeline) in :meth:`insert_many`.
    write_chunk = 256

    def insert_many(
        self, keys: list[str], payloads: list[str], vectors: np.ndarray | None, ttl: float | None
    ) -> list[int]:
        """Records in pipelined ``MULTI`` blocks (each block all-or-nothing), then their vectors.

        ``VADD`` (an HNSW insertion in the server's main thread, milliseconds each on a busy
        server) goes in a plain pipeline after its records' block: each reply then has the whole
        client timeout, where one ``EXEC`` reply would have to wait for a whole block. A crash in
        between leaves records without a vector (exact hits only), never a vector without its
        record.
        """
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.smembers(self._k("k", key))
        old = sorted({int(i) for members in pipe.execute() for i in members})
        ids = self._new_ids(len(keys))
        blobs: list[bytes] = []
        if vectors is not None:
            self._ensure_vectors(int(vectors.shape[-1]))
            blobs = [v.tobytes() for v in vectors.astype(np.float32)]
        for start in range(0, len(ids), self.write_chunk):
            block = range(start, min(len(ids), start + self.write_chunk))
            pipe = self.client.pipeline(transaction=True)
            for i in block:
                record_id, key = ids[i], keys[i]
                fields: dict[str, Any] = {"key": key, "payload": payloads[i]}
                if blobs:
                    fields["vec"] = blobs[i]
                pipe.hset(self._k("e", record_id), mapping=fields)
                pipe.sadd(self._k("k", key), record_id)
                if ttl is not None:
                    ms = max(1, int(ttl * 1000))
                    pipe.pexpire(self._k("e", record_id), ms)
                    pipe.pexpire(self._k("k", key), ms)
                pipe.zadd(self._k("lru"), {str(record_id): time.time()})
                if blobs and self.index == "faiss":
                    pipe.zadd(self._k("added"), {str(record_id): record_id})
            pipe.execute()
            if blobs and self.index == "vectorset":
                pipe = self.client.pipeline(transaction=False)
                for i in block:
                    pipe.execute_command("VADD", self._k("v"), "FP32", blobs[i], str(ids[i]))
                pipe.execute()
        if old:
            self.delete(old)
        return ids

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
        query = vector.astype(np.float32).reshape(-1)
        self._ensure_vectors(int(query.shape[0]))
        if self.index == "vectorset":
            reply = self.client.execute_command(
                "VSIM", self._k("v"), "FP32", query.tobytes(), "COUNT", top_k, "EF", self.vsim_ef
            )
            ids = [int(name) for name in reply or []]
        else:
            self._sync()
            assert self._faiss is not None
            ids = [rid for _, rid in self._faiss.search(query.reshape(1, -1), top_k)]
        return self._rescore(query, ids)

    def _rescore(self, query: np.ndarray, ids: list[int]) -> list[tuple[float, int]]:
        """``(cosine, id)`` from each candidate's own stored vector, best first."""
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for rid in ids:
            pipe.hget(self._k("e", rid), "vec")
        found, gone = [], []
        for rid, blob in zip(ids, pipe.execute(), strict=True):
            if blob is None or len(blob) != query.nbytes:
                gone.append(rid)
                continue
            found.append((float(np.dot(np.frombuffer(blob, dtype=np.float32), query)), rid))
        if gone:
            self._forget(gone)
        return sorted(found, reverse=True)

    def _forget(self, ids: list[int]) -> None:
        members = [str(i) for i in ids]
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self._k("lru"), *members)
        if self.index == "vectorset":
            for member in members:
                pipe.execute_command("VREM", self._k("v"), member)
        else:
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

    def clear(self) -> None:
        delete_redis_keys(self.client, self.prefix + ":*")
        if self._faiss is not None:
            self._reset_copy()
        self._epoch = None


def delete_redis_keys(client: Any, pattern: str) -> int:
    """Delete the keys matching ``pattern`` except id counters (``*:next``, never reset)."""
    keys = [
        k
        for k in client.scan_iter(match=pattern, count=1000)
        if not (k.decode() if isinstance(k, bytes) else k).endswith(":next")
    ]
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    return len(keys)
