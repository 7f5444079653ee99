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
import threading
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lean_plugins.cache.keys import namespace_for
from lean_plugins.ledger import Ledger

if TYPE_CHECKING:
    from lean_plugins.cache.lean_cache import LeanCache

logger = logging.getLogger("lean_plugins.cache")

#: Version of the stored entry format (part of every namespace, so a new format never reads an
#: old entry).
ENTRY_FORMAT = 1

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


# -- what a hit avoided ------------------------------------------------------------------------
class UsageCollector:
    """Model calls seen while a wrapped pipeline runs: prompt text -> response text.

    Calls are de-duplicated by prompt, so wrappers that pass one call through to an inner model
    (an output budget, an LLM-level cache) count it once.
    """

    def __init__(self) -> None:
        self._calls: dict[str, str] = {}
        self._lock = threading.Lock()

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
        cells = [c.cell_contents for c in (func.__closure__ or ()) if _cell_filled(c)]
        return {
            "function": f"{func.__module__}.{func.__qualname__}",
            "code": _code_digest(code) if code is not None else None,
            "closure": recurse(cells),
            "defaults": recurse(list(func.__defaults__ or ())),
            "kwdefaults": recurse(func.__kwdefaults__ or {}),
            "self": recurse(value.__self__) if inspect.ismethod(value) else None,
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

    def lookup(self, question: str, *, namespace: str | None = None) -> CachedAnswer | None:
        """The cached answer to ``question`` (or a paraphrase of it), or ``None``; books the hit.

        ``namespace`` overrides this pipeline's namespace for one call (see :meth:`scoped`).
        """
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
            answer = CachedAnswer(
                value=str(entry["value"]),
                question=hit.cached_prompt,
                match=hit.match,
                similarity=float(hit.similarity),
                input_tokens=int(entry["input_tokens"]),
                output_tokens=int(entry["output_tokens"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("Dropping an unreadable question-level cache entry (%s); treated as a miss.", exc)
            return None
        self._record(answer)
        return answer

    async def alookup(self, question: str, *, namespace: str | None = None) -> CachedAnswer | None:
        """Async :meth:`lookup` (runs in a worker thread)."""
        self._check(question)
        return await asyncio.to_thread(lambda: self.lookup(question, namespace=namespace))

    def store(
        self, question: str, value: str, usage: UsageCollector | None = None, *, namespace: str | None = None
    ) -> None:
        """Cache ``value`` (the serialised output) for ``question`` with what making it cost."""
        from lean_plugins.tokens import count_tokens

        self._check(question)
        if usage is not None and usage.calls:
            input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
        else:  # no model call was reported: count the question and the answer themselves
            input_tokens, output_tokens = count_tokens(question), count_tokens(value)
        entry = json.dumps(
            {"value": value, "input_tokens": input_tokens, "output_tokens": output_tokens},
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
