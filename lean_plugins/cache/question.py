"""Question-level cache: a whole pipeline's answer, keyed on the user's question.

An LLM-level cache sees a RAG prompt whose retrieved context outweighs the question, so it can
only serve verbatim repeats safely. Keyed on the question itself, a paraphrase can hit, and a
hit skips retrieval, compression and every model call of the pipeline together.

Two pipelines must never share answers, so each entry lives in a namespace derived from a
stable description of the wrapped pipeline (its retriever settings, index identity, model
parameters, prompts; see :func:`describe`) and the tenant. The framework adapters
(``lean_plugins.langchain.with_cache``, ``lean_plugins.llama_index.CachedQueryEngine``) build
that description and serialise the framework's output; this module is framework-free.

What a hit saves is what the pipeline's model calls cost when the entry was made: the adapters
report each model call (:func:`report_llm_call`) while the wrapped pipeline runs under
:func:`collecting`, and the entry keeps those counts, so the ledger books one ``cache`` event
per hit with the input and output it avoided.

Fresh by construction: an entry also records what its answer depended on, each retrieval the
pipeline made (which retriever, the query it was given, the ids and content hashes of the
documents it returned; see :class:`Retrieval`). A hit is served only if those retrievals,
run again at lookup, still return the same documents with the same content
(:class:`RetrieverRegistry`): a document edited in place, deleted, or outranked by a new one
turns the entry into a miss. The adapters observe retrievals through the framework's own
events (LangChain callbacks, LlamaIndex instrumentation), so a retriever is seen however the
pipeline reaches it: a step of the chain, a function's closure or a module-level global.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import enum
import hashlib
import inspect
import json
import logging
import re
import sys
import threading
import types
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lean_plugins.cache.keys import namespace_for
from lean_plugins.ledger import Ledger

if TYPE_CHECKING:
    from lean_plugins.cache.lean_cache import LeanCache

logger = logging.getLogger("lean_plugins.cache")

#: Version of the stored entry format (part of every namespace, so a new format never reads an
#: old entry). 2: entries record their retrievals.
ENTRY_FORMAT = 2

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
# Fields never described (or hashed) into a namespace: credentials.
_SECRET_KEY = re.compile(r"(api_?key|secret|password|passwd|access_token|auth_token|credential)", re.I)
_MAX_DEPTH = 40
_RUNTIME_STATE: tuple[type, ...] = (
    type(threading.Lock()),
    type(threading.RLock()),
    threading.Condition,
    threading.Event,
    Ledger,
)


# -- what an answer depended on ---------------------------------------------------------------
#: A document as an entry remembers it: (id or "", sha256 of its content and metadata).
DocumentMark = tuple[str, str]


def document_mark(doc_id: Any, content: str, metadata: Any = None) -> DocumentMark:
    """How an entry remembers one retrieved document: its id and a hash of what it says.

    The content hash catches an edit that keeps the id (a vector store updated in place); the
    metadata is in the hash because prompts often show it (a title, a date, a source).
    """
    digest = hashlib.sha256(content.encode("utf-8"))
    if metadata:
        digest.update(b"\x00" + json.dumps(metadata, sort_keys=True, default=str).encode("utf-8"))
    return ("" if doc_id is None else str(doc_id), digest.hexdigest())


def source_key(retriever: Any) -> str:
    """The name under which an entry refers to a retriever: its class (stable across processes;
    which object of that class is meant is settled by running them, see :class:`RetrieverRegistry`)."""
    return f"{type(retriever).__module__}.{type(retriever).__qualname__}"


@dataclass(frozen=True)
class Retrieval:
    """One retrieval a pipeline made while it produced an answer."""

    source: str
    """The retriever (:func:`source_key`)."""
    query: str
    """The query the retriever was given (a rewritten query, if the pipeline rewrote it)."""
    documents: tuple[DocumentMark, ...]
    """What it returned, in order (:func:`document_mark`)."""
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Extra keyword arguments of the call (JSON values; the adapter passes them again)."""

    def still_returns(self, documents: Sequence[DocumentMark]) -> bool:
        """Whether ``documents`` (a new run) say what the recorded ones said, in the same order.

        Compared by content hash, not id: the model read the documents' text and metadata, never
        their ids, and stores such as LangChain's in-memory one give the same document a new
        random id in each process (the ids are kept to say which document changed).
        """
        return tuple(h for _, h in documents) == tuple(h for _, h in self.documents)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "query": self.query, "documents": [list(d) for d in self.documents],
                "options": dict(self.options)}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Retrieval:
        documents = tuple((str(i), str(h)) for i, h in data["documents"])
        return cls(str(data["source"]), str(data["query"]), documents, dict(data.get("options") or {}))


def callers_on_stack(kind: type | tuple[type, ...], methods: frozenset[str]) -> list[tuple[Any, dict[str, Any]]]:
    """``(self, locals)`` of every running call of one of ``methods`` on a ``kind`` object,
    innermost first (the callers of the code that asks).

    Framework events say *that* a retriever ran, not *which object* it was; the object is the
    one whose ``invoke`` / ``retrieve`` is on the stack while its event is handled. Coroutines
    awaited one by another are on the same stack, so this holds for async runs too.
    """
    found: list[tuple[Any, dict[str, Any]]] = []
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name in methods:
            owner = frame.f_locals.get("self")
            if isinstance(owner, kind) and not any(owner is f for f, _ in found):
                found.append((owner, dict(frame.f_locals)))
        frame = frame.f_back
    return found


class RetrievalLog:
    """The retrievals seen while a wrapped pipeline runs (the adapters report them).

    Only the innermost retrievals are kept: a retriever that called other retrievers (a
    multi-query or ensemble retriever) is checked through them, so a check never re-runs the
    model a query-rewriting retriever calls. A retrieval whose retriever could not be told, or
    whose options are not plain JSON, makes the answer *unverifiable*: it is not cached.
    """

    def __init__(self) -> None:
        self._runs: list[tuple[Any, Retrieval]] = []
        self._outer: set[int] = set()
        self.retrievers: list[Any] = []
        self.unverifiable: str | None = None
        self._lock = threading.Lock()

    def add(self, retriever: Any, query: str, documents: Iterable[DocumentMark],
            options: Mapping[str, Any] | None = None, outer: Iterable[Any] = ()) -> None:  # fmt: skip
        """One finished retrieval by ``retriever`` (``None``: not found), made inside the
        retrievals of ``outer`` (retrievers further up the stack)."""
        with self._lock:
            self._outer.update(id(o) for o in outer)
            if retriever is None:
                self.unverifiable = "a retriever ran that could not be found to run again"
                return
            try:
                options = json.loads(json.dumps(dict(options or {})))
            except (TypeError, ValueError):
                self.unverifiable = f"{source_key(retriever)} was called with options that are not JSON"
                return
            if not any(r is retriever for r in self.retrievers):
                self.retrievers.append(retriever)
            self._runs.append((retriever, Retrieval(source_key(retriever), query, tuple(documents), options)))

    def retrievals(self) -> tuple[Retrieval, ...]:
        """The innermost retrievals, each once, in the order they ran."""
        with self._lock:
            kept: list[Retrieval] = []
            for retriever, retrieval in self._runs:
                if id(retriever) not in self._outer and retrieval not in kept:
                    kept.append(retrieval)
            return tuple(kept)


def _equal(one: Any, other: Any) -> bool:
    """Whether two retrievers are configured alike (pydantic models compare field by field)."""
    try:
        return bool(one == other)
    except Exception:  # an __eq__ that cannot compare these: treat them as different
        return False


class RetrieverRegistry:
    """The retrievers a pipeline can run again, by :func:`source_key`; checks an entry's retrievals.

    The adapters register the retrievers they find in the wrapped pipeline when it is wrapped
    (steps, closures, module-level globals its functions read) and every one they see run. An
    entry recorded in another process whose retriever this one has not met is a miss (the run
    that follows registers it).
    """

    def __init__(self) -> None:
        self._by_source: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    #: Retrievers kept per class (the latest): a pipeline that builds a retriever per call
    #: (``store.as_retriever()`` inside a function) must not grow the registry without bound.
    MAX_PER_SOURCE = 8

    def register(self, retriever: Any) -> None:
        with self._lock:
            known = self._by_source.setdefault(source_key(retriever), [])
            if any(r is retriever or _equal(r, retriever) for r in known):
                return
            known.append(retriever)
            del known[: -self.MAX_PER_SOURCE]

    def candidates(self, source: str) -> list[Any]:
        with self._lock:
            return list(self._by_source.get(source, ()))

    def holds(self, retrievals: Sequence[Retrieval], run: Callable[[Any, Retrieval], Sequence[DocumentMark]]) -> bool:
        """Whether every recorded retrieval, run again (``run(retriever, retrieval)``), returns
        documents with the same content, in the same order (:meth:`Retrieval.still_returns`)."""
        return all(self._one_holds(r, run) for r in retrievals)

    def _one_holds(self, retrieval: Retrieval, run: Callable[[Any, Retrieval], Sequence[DocumentMark]]) -> bool:
        for retriever in self.candidates(retrieval.source):
            try:
                if retrieval.still_returns(run(retriever, retrieval)):
                    return True
            except Exception as exc:  # the real run that follows the miss raises it to the caller
                logger.warning("Freshness check: %s failed (%s); treated as a miss.", retrieval.source, exc)
        return False

    async def aholds(
        self, retrievals: Sequence[Retrieval], arun: Callable[[Any, Retrieval], Awaitable[Sequence[DocumentMark]]]
    ) -> bool:
        """Async :meth:`holds`."""
        for retrieval in retrievals:
            held = False
            for retriever in self.candidates(retrieval.source):
                try:
                    held = retrieval.still_returns(await arun(retriever, retrieval))
                except Exception as exc:
                    logger.warning("Freshness check: %s failed (%s); treated as a miss.", retrieval.source, exc)
                if held:
                    break
            if not held:
                return False
        return True


# -- what a hit avoided ------------------------------------------------------------------------
class UsageCollector:
    """Model calls seen while a wrapped pipeline runs: prompt text -> response text; and the
    retrievals the answer depends on (:attr:`retrievals`).

    Calls are de-duplicated by prompt, so wrappers that pass one call through to an inner model
    (an output budget, an LLM-level cache) count it once.
    """

    def __init__(self) -> None:
        self._calls: dict[str, str] = {}
        self._lock = threading.Lock()
        self.retrievals = RetrievalLog()

    def add(self, prompt: str, response: str) -> None:
        with self._lock:
            self._calls[prompt] = response

    @property
    def calls(self) -> int:
        return len(self._calls)

    @property
    def input_tokens(self) -> int:
        from lean_plugins.tokens import count_tokens

        with self._lock:
            return sum(count_tokens(p) for p in self._calls)

    @property
    def output_tokens(self) -> int:
        from lean_plugins.tokens import count_tokens

        with self._lock:
            return sum(count_tokens(r) for r in self._calls.values())


_COLLECTORS: contextvars.ContextVar[tuple[UsageCollector, ...]] = contextvars.ContextVar(
    "lean_plugins_question_cache_collectors", default=()
)


def collecting_context() -> tuple[contextvars.Context, UsageCollector]:
    """A copy of the current context in which reported model calls also reach a new collector.

    Run the wrapped pipeline with ``context.run(...)`` (each step of a stream too, so calls that
    finish while the stream is read are counted).
    """
    collector = UsageCollector()
    context = contextvars.copy_context()
    context.run(lambda: _COLLECTORS.set((*_COLLECTORS.get(), collector)))
    return context, collector


def report_llm_call(prompt: str, response: str) -> None:
    """Tell every active :func:`collecting` block about one model call."""
    for collector in _COLLECTORS.get():
        collector.add(prompt, response)


def report_retrieval(retriever: Any, query: str, documents: Iterable[DocumentMark],
                     options: Mapping[str, Any] | None = None, outer: Iterable[Any] = ()) -> None:  # fmt: skip
    """Tell every active :func:`collecting_context` about one finished retrieval."""
    documents, outer = tuple(documents), tuple(outer)
    for collector in _COLLECTORS.get():
        collector.retrievals.add(retriever, query, documents, options, outer)


# -- namespaces --------------------------------------------------------------------------------
Hook = Callable[[Any, Callable[[Any], Any]], Any]


def describe(value: Any, hook: Hook | None = None) -> Any:
    """A stable, JSON-able description of ``value`` for a cache namespace.

    Equal configurations describe equally in any process: memory addresses are dropped from
    ``repr`` text, sets are sorted, functions are described by their module, name, bytecode
    and closure, pydantic models and dataclasses by their fields. Fields that look like
    credentials are left out, so no secret is hashed into a key.

    ``hook(value, recurse)`` lets an adapter describe framework objects its own way (a model by
    its cache key, a vector store by its contents); it returns ``NotImplemented`` to leave a
    value to the generic rules, and calls ``recurse`` for the parts it contains.
    """
    return _describe(value, hook, 0, frozenset())


def _describe(value: Any, hook: Hook | None, _depth: int, _seen: frozenset[int]) -> Any:
    if _depth > _MAX_DEPTH:
        return "..."
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return _ADDRESS.sub("", value)
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    if id(value) in _seen:
        return f"<cycle {type(value).__qualname__}>"
    seen = _seen | {id(value)}
    nxt = _depth + 1

    def recurse(part: Any) -> Any:
        return _describe(part, hook, nxt, seen)

    if hook is not None:
        custom = hook(value, recurse)
        if custom is not NotImplemented:
            return custom
    if isinstance(value, _RUNTIME_STATE):
        # Where a part books its savings, and its locks, are state, not configuration.
        return type(value).__qualname__
    if isinstance(value, Mapping):
        return {
            str(k): ("***" if _SECRET_KEY.search(str(k)) else recurse(v))
            for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
        }
    if isinstance(value, list | tuple):
        return [recurse(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((recurse(v) for v in value), key=lambda d: json.dumps(d, default=str))
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if inspect.isfunction(value) or inspect.ismethod(value):
        func = value.__func__ if inspect.ismethod(value) else value
        code = getattr(func, "__code__", None)
        cells = closure_values(func)
        return {
            "function": f"{func.__module__}.{func.__qualname__}",
            "code": _code_digest(code) if code is not None else None,
            "closure": recurse(cells),
            "defaults": recurse(list(func.__defaults__ or ())),
            "kwdefaults": recurse(func.__kwdefaults__ or {}),
            "self": recurse(value.__self__) if inspect.ismethod(value) else None,
            "globals": recurse(globals_read(func)),
        }
    if inspect.isclass(value) or inspect.isbuiltin(value) or inspect.ismodule(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', value.__name__)}"
    fields = _fields(value)
    if fields is not None:
        return {"class": kind, "fields": recurse(fields)}
    if type(value).__repr__ is object.__repr__ and hasattr(value, "__dict__"):
        # A plain object (a callable instance, a bound method's self): its repr says nothing
        # but its class, so it is described by its attributes.
        attrs = {k: v for k, v in vars(value).items() if not k.startswith("__")}
        return {"class": kind, "attrs": recurse(attrs)}
    return {"class": kind, "repr": _ADDRESS.sub("", repr(value))}


def names_read(func: Any) -> set[str]:
    """The global and attribute names a function's code (and the functions nested in it) reads."""
    code = getattr(func, "__code__", None)
    names: set[str] = set()
    codes = [code] if code is not None else []
    while codes:
        current = codes.pop()
        names.update(current.co_names)
        codes.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return names


def globals_read(func: Any) -> dict[str, Any]:
    """The module-level values a function (and the functions nested in it) reads that are plain
    data: a setting in a global dict or string changes the answer as much as a closure value does
    (``PRICES["apple"] = 2.5``). Objects (a global retriever, model or store) are left to the
    adapters, which find a function's retrievers themselves and check them by running them again."""
    namespace = getattr(func, "__globals__", None)
    if not isinstance(namespace, Mapping):
        return {}
    read: dict[str, Any] = {}
    for name in sorted(names_read(func)):
        if name not in namespace or name.startswith("__"):
            continue
        value = namespace[name]
        if _plain_data(value):
            read[name] = value
    return read


def _plain_data(value: Any, depth: int = 0) -> bool:
    """None, numbers, text, enums, and dicts / lists / tuples / sets of them (a few levels deep)."""
    if value is None or isinstance(value, bool | int | float | str | bytes | enum.Enum):
        return True
    if depth >= 4:
        return False
    if isinstance(value, Mapping):
        return all(_plain_data(k, depth + 1) and _plain_data(v, depth + 1) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return all(_plain_data(v, depth + 1) for v in value)
    return False


def closure_values(func: Any) -> list[Any]:
    """The values a function's closure holds (empty cells left out)."""
    return [c.cell_contents for c in (getattr(func, "__closure__", None) or ()) if _cell_filled(c)]


def _cell_filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _code_digest(code: types.CodeType) -> str:
    """Bytecode, names and constants of a function, nested functions included."""
    digest = hashlib.sha256(code.co_code)
    digest.update("\x00".join(code.co_names).encode("utf-8"))
    for const in code.co_consts:
        digest.update(_code_digest(const).encode() if isinstance(const, types.CodeType) else repr(const).encode())
    return digest.hexdigest()[:16]


def _fields(value: Any) -> dict[str, Any] | None:
    """Public fields of a pydantic model or a dataclass (``None`` for other objects)."""
    model_fields = getattr(type(value), "model_fields", None)
    if isinstance(model_fields, dict):
        return {name: getattr(value, name, None) for name in model_fields if not name.startswith("_")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if not f.name.startswith("_")}
    return None


def question_namespace(config: Any, *, tenant: str | None = None, namespace: str | None = None) -> str:
    """Namespace of a pipeline's question-level entries: its described ``config``, the user's
    optional ``namespace`` label (e.g. an index version) and the tenant.
    """
    raw = json.dumps(
        {"format": ENTRY_FORMAT, "config": config, "label": namespace}, sort_keys=True, default=str
    )
    return namespace_for("question:" + hashlib.sha256(raw.encode("utf-8")).hexdigest(), tenant)


# -- the cache ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CachedAnswer:
    """A served question-level entry."""

    value: str
    """The adapter's serialisation of the pipeline's output."""
    question: str
    """The question the entry was cached under (equal to the asked one unless ``match`` is semantic)."""
    match: str
    similarity: float
    input_tokens: int
    """Model input the pipeline spent making the entry (what this hit avoided)."""
    output_tokens: int
    retrievals: tuple[Retrieval, ...] = ()
    """What the answer depended on (checked before the answer is served)."""


#: ``holds(retrievals)``: whether an entry's retrievals still return what they returned.
Holds = Callable[[tuple[Retrieval, ...]], bool]
AsyncHolds = Callable[[tuple[Retrieval, ...]], Awaitable[bool]]


class QuestionCache:
    """A :class:`~lean_plugins.cache.LeanCache` holding whole answers per question.

    Args:
        cache: the core cache (default: a local exact+semantic ``LeanCache``, with its guard
            and pair verifier: paraphrases hit, questions that differ in a name, number,
            negation and the like do not).
        namespace: the pipeline's namespace (:func:`question_namespace`).
        model: model name for the ledger's prices (``None``: tokens only).
        tenant: tenant id for the ledger (already part of ``namespace``).
    """

    def __init__(
        self,
        cache: LeanCache | None,
        *,
        namespace: str,
        model: str | None = None,
        tenant: str | None = None,
    ) -> None:
        from lean_plugins.cache.lean_cache import LeanCache

        if cache is not None and not isinstance(cache, LeanCache):
            raise TypeError(
                f"cache must be a lean_plugins.cache.LeanCache, got {type(cache).__name__}; "
                "build one with LeanCache(...) (the LangChain BaseCache adapter wraps one as .cache)."
            )
        self.cache = cache if cache is not None else LeanCache()
        self.namespace = namespace
        self._scopes: set[str] = set()
        self.model = model
        self.tenant = tenant
        #: Entries found but not served because their retrievals changed (this process).
        self.stale = 0

    @staticmethod
    def _check(question: Any) -> str:
        if not isinstance(question, str):
            raise TypeError(f"The question-level cache key must be a str, got {type(question).__name__}.")
        return question

    def scoped(self, context: Any) -> str:
        """The namespace for one call whose answer also depends on ``context`` (the input's other
        fields, run-time configuration): entries are shared only between calls with equal
        context, and paraphrases match only within it."""
        if not context:
            return self.namespace
        scoped = question_namespace({"pipeline": self.namespace, "context": describe(context)})
        self._scopes.add(scoped)
        return scoped

    def _find(self, question: str, namespace: str | None) -> CachedAnswer | None:
        hit = self.cache.lookup(
            self._check(question),
            namespace=namespace or self.namespace,
            model=self.model,
            tenant=self.tenant,
            record=False,
        )
        if hit is None:
            return None
        try:
            entry = json.loads(hit.response)
            return CachedAnswer(
                value=str(entry["value"]),
                question=hit.cached_prompt,
                match=hit.match,
                similarity=float(hit.similarity),
                input_tokens=int(entry["input_tokens"]),
                output_tokens=int(entry["output_tokens"]),
                retrievals=tuple(Retrieval.from_json(r) for r in entry.get("retrievals", ())),
            )
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("Dropping an unreadable question-level cache entry (%s); treated as a miss.", exc)
            return None

    def _stale(self, answer: CachedAnswer) -> None:
        self.stale += 1
        logger.info(
            "Question-level entry %r not served: its retrieved documents changed (a miss; the "
            "pipeline runs and the entry is replaced).",
            answer.question,
        )

    def lookup(
        self, question: str, *, namespace: str | None = None, holds: Holds | None = None
    ) -> CachedAnswer | None:
        """The cached answer to ``question`` (or a paraphrase of it), or ``None``; books the hit.

        ``namespace`` overrides this pipeline's namespace for one call (see :meth:`scoped`).
        ``holds`` checks the entry's retrievals (the adapter runs them again); an entry whose
        retrievals no longer return the same documents is a miss (counted in :attr:`stale`).
        Without ``holds`` an entry that recorded retrievals is never served.
        """
        answer = self._find(question, namespace)
        if answer is None:
            return None
        if answer.retrievals and (holds is None or not holds(answer.retrievals)):
            self._stale(answer)
            return None
        self._record(answer)
        return answer

    async def alookup(
        self, question: str, *, namespace: str | None = None, aholds: AsyncHolds | None = None
    ) -> CachedAnswer | None:
        """Async :meth:`lookup` (the store is read in a worker thread; ``aholds`` is awaited)."""
        self._check(question)
        answer = await asyncio.to_thread(self._find, question, namespace)
        if answer is None:
            return None
        if answer.retrievals and (aholds is None or not await aholds(answer.retrievals)):
            self._stale(answer)
            return None
        self._record(answer)
        return answer

    def store(
        self, question: str, value: str, usage: UsageCollector | None = None, *, namespace: str | None = None
    ) -> None:
        """Cache ``value`` (the serialised output) for ``question`` with what making it cost and
        the retrievals it depended on (both from ``usage``)."""
        from lean_plugins.tokens import count_tokens

        self._check(question)
        if usage is not None and usage.retrievals.unverifiable:
            logger.info("Not caching the answer to %r: %s.", question, usage.retrievals.unverifiable)
            return
        if usage is not None and usage.calls:
            input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
        else:  # no model call was reported: count the question and the answer themselves
            input_tokens, output_tokens = count_tokens(question), count_tokens(value)
        retrievals = usage.retrievals.retrievals() if usage is not None else ()
        entry = json.dumps(
            {
                "value": value,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "retrievals": [r.to_json() for r in retrievals],
            },
            ensure_ascii=False,
        )
        self.cache.put(question, entry, namespace=namespace or self.namespace, output_tokens=output_tokens)

    async def astore(
        self, question: str, value: str, usage: UsageCollector | None = None, *, namespace: str | None = None
    ) -> None:
        """Async :meth:`store` (runs in a worker thread)."""
        await asyncio.to_thread(lambda: self.store(question, value, usage, namespace=namespace))

    def clear(self) -> None:
        """Delete this pipeline's entries (other pipelines and tenants keep theirs), with those of
        the scoped namespaces this process has used."""
        for namespace in {self.namespace, *self._scopes}:
            self.cache.clear(namespace)

    def _record(self, answer: CachedAnswer) -> None:
        if not self.cache.record_hits:
            return
        from lean_plugins.ledger import record

        record(
            layer="cache",
            kind="hit",
            input_before=answer.input_tokens,
            output_before=answer.output_tokens,
            model=self.model,
            tenant=self.tenant,
            meta={
                "level": "question",
                "match": answer.match,
                "similarity": round(answer.similarity, 4),
            },
        )
