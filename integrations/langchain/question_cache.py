"""``with_cache``: a LangChain Runnable that caches a whole chain's output, keyed on its input.

Put it around a RAG chain (``with_cache(retriever | prompt | model | parser)``): a hit skips
compression and the model together, and paraphrases of an earlier question can hit (the core
:class:`~lean_plugins.cache.LeanCache`'s semantic path with its guard and verifier). A hit is
fresh: the retrievals its answer was made from (seen through LangChain's callbacks, however the
chain reached the retriever) are run again and must return documents with the same content, and
a ``RunnableWithMessageHistory`` is keyed on its history (see :mod:`lean_plugins.cache.question`).
The namespace of the entries is a stable description of the wrapped chain (each model's
LangChain cache key, each retriever's search settings and vector store contents, prompts and
functions), so two chains never share answers. Outputs are stored with LangChain's own
serialisation (``dumpd`` / ``load`` restricted to core classes), never pickle: strings,
messages (tool calls included), documents and dicts or lists of those.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import re
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, BaseLanguageModel, BaseLLM
from langchain_core.load import dumpd, load
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    BaseMessageChunk,
    message_chunk_to_message,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.output_parsers import BaseOutputParser
from langchain_core.outputs import LLMResult
from langchain_core.prompts import BasePromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import ensure_config, merge_configs
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever
from pydantic import ConfigDict, Field

from lean_plugins.cache import LeanCache as CoreLeanCache
from lean_plugins.cache.keys import SECRET_FIELD
from lean_plugins.cache.question import (
    QuestionCache,
    Retrieval,
    RetrieverRegistry,
    UsageCollector,
    callers_on_stack,
    closure_values,
    describe,
    document_mark,
    names_read,
    question_namespace,
)
from lean_plugins.ledger import mark_cache_hit

logger = logging.getLogger("lean_plugins.cache")

_WORD_CHUNK = re.compile(r"\s*\S+|\s+$")

KeySpec = str | Callable[[Any], str] | None


def _llm_key(model: BaseLanguageModel) -> str:
    """The model's own LangChain cache key (its class and every generation parameter), with its
    plain settings beside it: a model whose ``_identifying_params`` leave out a field (a custom
    model's ``temperature``) still gets a new key when that field changes."""
    if isinstance(model, BaseChatModel):
        return f"{model._get_llm_string()}\x00{_plain_settings(model)}"
    if isinstance(model, BaseLLM):
        return f"{sorted(model._get_invocation_params().items())}\x00{_plain_settings(model)}"
    return json.dumps(describe(model), sort_keys=True, default=str)


def _plain_settings(model: BaseLanguageModel) -> str:
    """The model's declared fields whose values are plain JSON (clients, callbacks, excluded and
    secret fields left out), as canonical JSON."""
    settings: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        if field.exclude or name in _NOISE or SECRET_FIELD.search(name):
            continue
        value = getattr(model, name, None)
        try:
            settings[name] = json.loads(json.dumps(value))
        except (TypeError, ValueError):
            continue
    return json.dumps(settings, sort_keys=True)




def _vectorstore_identity(store: Any, recurse: Callable[[Any], Any]) -> Any:
    """Class, collection and (for the in-memory store) a hash of the stored documents."""
    identity: dict[str, Any] = {"class": f"{type(store).__module__}.{type(store).__qualname__}"}
    for attr in ("collection_name", "index_name", "table_name", "namespace"):
        value = getattr(store, attr, None)
        if isinstance(value, str):
            identity[attr] = value
    contents = getattr(store, "store", None)  # InMemoryVectorStore: id -> {id, text, metadata, vector}
    if isinstance(contents, dict):
        # Texts and metadata, not ids: the in-memory store gives each document a random id, and
        # the same documents loaded in another process must give the same namespace.
        rows = sorted(
            f"{doc.get('text', '')}\x00{json.dumps(doc.get('metadata', {}), sort_keys=True, default=str)}"
            for doc in contents.values()
            if isinstance(doc, dict)
        )
        identity["documents"] = hashlib.sha256("\x01".join(rows).encode("utf-8")).hexdigest()
    embeddings = getattr(store, "embeddings", None) or getattr(store, "embedding", None)
    if embeddings is not None:
        identity["embeddings"] = recurse(embeddings)
    return identity


# Fields that do not change a runnable's output.
_NOISE = frozenset({"callbacks", "callback_manager", "metadata", "tags", "name", "verbose", "cache"})


def _describe_hook(value: Any, recurse: Callable[[Any], Any]) -> Any:
    """LangChain objects described by what decides their output."""
    if isinstance(value, BaseLanguageModel):
        return {"model": _llm_key(value)}
    if isinstance(value, VectorStoreRetriever):
        return {
            "retriever": type(value).__qualname__,
            "search_type": value.search_type,
            "search_kwargs": recurse(value.search_kwargs),
            "vectorstore": _vectorstore_identity(value.vectorstore, recurse),
        }
    if isinstance(value, VectorStore):  # a store a function reads (its vectors are not configuration)
        return _vectorstore_identity(value, recurse)
    if isinstance(value, BaseRetriever | Runnable):
        # Prompts and parsers by LangChain's own serialisation where the class supports it;
        # composite runnables (sequences, parallels, bindings) field by field, so each part
        # they hold goes through this hook too.
        if isinstance(value, BasePromptTemplate | BaseOutputParser) and value.is_lc_serializable():
            try:
                return recurse(value.to_json())
            except Exception:  # some serialisable classes still fail on their contents
                pass
        names = getattr(type(value), "model_fields", None) or {
            name for name in vars(value) if not name.startswith("_")
        }
        fields = {name: getattr(value, name, None) for name in sorted(names) if name not in _NOISE}
        return {"class": f"{type(value).__module__}.{type(value).__qualname__}", "fields": recurse(fields)}
    return NotImplemented


def describe_runnable(runnable: Any) -> Any:
    """A stable description of ``runnable`` and everything that decides its output."""
    return _describe_watching(runnable)[0]


def _describe_watching(runnable: Any, registry: RetrieverRegistry | None = None) -> tuple[Any, list[dict]]:
    """The description, and the in-memory vector stores' contents it hashed (they can change).

    Every retriever met on the way (a step, a closure variable, a module-level global that a
    function of the chain reads) goes into ``registry``: entries from another process that
    depend on it can then be checked without running the chain first.
    """
    watched: list[dict] = []

    def hook(value: Any, recurse: Callable[[Any], Any]) -> Any:
        if isinstance(value, VectorStoreRetriever):
            contents = getattr(value.vectorstore, "store", None)
            if isinstance(contents, dict):
                watched.append(contents)
        if registry is not None:
            if isinstance(value, BaseRetriever):
                registry.register(value)
            elif inspect.isfunction(value) or inspect.ismethod(value):
                _read_by_function(value, registry)
        return _describe_hook(value, recurse)

    return describe(runnable, hook), watched


# Vector-store methods that search without a retriever (no retriever callback is emitted).
_DIRECT_SEARCH = re.compile(r"^a?(similarity_search|max_marginal_relevance_search|search)")


def _read_by_function(function: Any, registry: RetrieverRegistry) -> None:
    """Register the retrievers a function reads from its module's globals (the README's
    ``def context(q): ... retriever.invoke(q)`` shape; closures are described, so the hook
    sees those), and warn when it searches a vector store directly: no retriever runs then,
    so a change to the store's documents could not be noticed."""
    func = getattr(function, "__func__", function)
    namespace = getattr(func, "__globals__", {})
    names = names_read(func)
    stores = [v for v in closure_values(func) if isinstance(v, VectorStore)]
    for name in names:
        value = namespace.get(name)
        if isinstance(value, BaseRetriever):
            registry.register(value)
        elif isinstance(value, VectorStore):
            stores.append(value)
    if stores and any(_DIRECT_SEARCH.match(n) for n in names):
        logger.warning(
            "with_cache: %s searches a %s directly, not through a retriever, so a change to its "
            "documents cannot be noticed and an answer made from them could be served after they "
            "change. Search through a retriever (store.as_retriever(...).invoke(question)).",
            getattr(func, "__qualname__", func),
            type(stores[0]).__name__,
        )


def _fingerprint(watched: list[dict]) -> tuple:
    """Cheap per-call check of the watched stores: documents added, deleted or replaced."""
    return tuple((len(c), hash(tuple(map(id, c.values())))) for c in watched)


# A marker no input text can equal (it holds NUL characters), standing for the question.
_QUESTION = "\x00lean_plugins:question\x00"


def _question_marked(description: Any, question: str) -> Any:
    """A described input with the question's own text, and nothing else, replaced by a marker.

    The question is the *last* text in the input equal to it (a conversation's latest message);
    every other text stays, whole: an earlier message that merely contains the question's
    words ("no" inside "now", or an earlier "no") is context, so two conversations share an
    answer only when everything but the question is equal. If no text equals the question
    (a key callable that rewrites it), nothing is replaced and only exact repeats of the whole
    input can hit.
    """
    paths: list[tuple] = []

    def find(value: Any, path: tuple) -> None:
        if isinstance(value, str):
            if value.strip() == question.strip():
                paths.append(path)
        elif isinstance(value, dict):
            for k, v in value.items():
                find(v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                find(v, (*path, i))

    find(description, ())
    if not paths:
        return description

    def replace(value: Any, path: tuple) -> Any:
        if not path:
            return _QUESTION
        head, rest = path[0], path[1:]
        if isinstance(value, dict):
            return {k: replace(v, rest) if k == head else v for k, v in value.items()}
        return [replace(v, rest) if i == head else v for i, v in enumerate(value)]

    return replace(description, paths[-1])


def _history_runnable(runnable: Runnable) -> RunnableWithMessageHistory | None:
    """The ``RunnableWithMessageHistory`` that ``runnable`` is (under ``with_config`` bindings)."""
    while not isinstance(runnable, RunnableWithMessageHistory):
        if not isinstance(runnable, RunnableBinding):
            return None
        runnable = runnable.bound
    return runnable


def _nested_history_runnables(runnable: Runnable, top: RunnableWithMessageHistory | None) -> list[Any]:
    """Message-history runnables inside ``runnable`` other than ``top``."""
    found: list[Any] = []

    def hook(value: Any, recurse: Callable[[Any], Any]) -> Any:
        if isinstance(value, RunnableWithMessageHistory) and value is not top:
            found.append(value)
        return _describe_hook(value, recurse)

    describe(runnable, hook)
    return found


def _message_key(message: BaseMessage) -> dict[str, Any]:
    """What of a history message can change the next answer (not its random id or usage)."""
    key: dict[str, Any] = {"type": message.type, "content": message.content, "name": message.name}
    if isinstance(message, AIMessage) and message.tool_calls:
        key["tool_calls"] = [{"name": c["name"], "args": c["args"], "id": c.get("id")} for c in message.tool_calls]
    if getattr(message, "tool_call_id", None):
        key["tool_call_id"] = message.tool_call_id  # type: ignore[attr-defined]
    return key


def _marks(documents: list[Document]) -> list[tuple[str, str]]:
    return [document_mark(d.id, d.page_content, d.metadata) for d in documents]


def _rerun(retriever: Any, retrieval: Retrieval) -> list[tuple[str, str]]:
    return _marks(retriever.invoke(retrieval.query, **retrieval.options))


async def _arerun(retriever: Any, retrieval: Retrieval) -> list[tuple[str, str]]:
    return _marks(await retriever.ainvoke(retrieval.query, **retrieval.options))


def _model_name(description: Any) -> str | None:
    """Model name of the first model in a described chain, for the ledger's prices."""
    from lean_plugins.langchain.cache import model_from_llm_string

    if isinstance(description, dict):
        if isinstance(description.get("model"), str):
            return model_from_llm_string(description["model"])
        parts: Any = description.values()
    elif isinstance(description, list):
        parts = description
    else:
        return None
    for part in parts:
        name = _model_name(part)
        if name:
            return name
    return None


_RETRIEVER_CALLS = frozenset({"invoke", "ainvoke"})


class _UsageHandler(BaseCallbackHandler):
    """Reports each model call and each retrieval of the wrapped chain to the question cache's
    collector: what a hit avoids, and what the answer depended on.

    Retrievals are seen however the chain reaches the retriever (a step, a function reading a
    closure or a global): LangChain passes the run's callbacks to every runnable invoked inside
    it. The callback says which query and documents, not which retriever object; that is the
    ``self`` of the ``invoke`` on the stack, so the handler runs inline (also in async runs).
    """

    raise_error = False
    run_inline = True

    def __init__(self, collector: UsageCollector) -> None:
        self.collector = collector
        self.prompts: dict[Any, str] = {}
        self.retrievals: dict[Any, tuple[Any, str, dict[str, Any], list[Any]]] = {}

    def on_retriever_start(self, serialized: Any, query: str, *, run_id: Any, **kw: Any) -> None:
        callers = callers_on_stack(BaseRetriever, _RETRIEVER_CALLS)
        retriever, options = (callers[0][0], callers[0][1].get("kwargs") or {}) if callers else (None, {})
        self.retrievals[run_id] = (retriever, query, dict(options), [c for c, _ in callers[1:]])

    def on_retriever_end(self, documents: Any, *, run_id: Any, **kw: Any) -> None:
        started = self.retrievals.pop(run_id, None)
        if started is not None:
            retriever, query, options, outer = started
            self.collector.retrievals.add(retriever, query, _marks(list(documents)), options, outer)

    def on_retriever_error(self, error: BaseException, *, run_id: Any, **kw: Any) -> None:
        self.retrievals.pop(run_id, None)

    def on_chat_model_start(self, serialized: Any, messages: list[list[BaseMessage]], *, run_id: Any, **kw: Any) -> None:
        self.prompts[run_id] = "\n".join(m.text for batch in messages for m in batch)

    def on_llm_start(self, serialized: Any, prompts: list[str], *, run_id: Any, **kw: Any) -> None:
        self.prompts[run_id] = "\n".join(prompts)

    def on_llm_end(self, response: LLMResult, *, run_id: Any, **kw: Any) -> None:
        prompt = self.prompts.pop(run_id, None)
        if prompt is None:
            return
        text = "".join(g.text for gens in response.generations for g in gens)
        self.collector.add(prompt, text)


def _serialise(output: Any) -> str | None:
    """LangChain's JSON form of ``output``, or ``None`` when it does not read back as itself."""
    if isinstance(output, BaseMessageChunk):
        output = message_chunk_to_message(output)
    data = dumpd(output)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # load() is marked beta
            restored = load(data, allowed_objects="core")
    except Exception:
        restored = None
    if restored != output:
        return None
    return json.dumps(data, ensure_ascii=False)


def _deserialise(value: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load(json.loads(value), allowed_objects="core")


def _marked(output: Any) -> Any:
    """A served output with its messages marked as cache hits (the ledger's contract: the hit
    is booked once, by the cache, and call accounting books nothing more for it)."""
    if isinstance(output, BaseMessage):
        return output.model_copy(update={"response_metadata": mark_cache_hit(output.response_metadata)})
    if isinstance(output, dict):
        return {k: _marked(v) if isinstance(v, BaseMessage) else v for k, v in output.items()}
    return output


def _stream_pieces(output: Any) -> Iterator[Any]:
    """A cached output as stream chunks: word-sized pieces of a string, a message as one chunk
    (tool calls as complete call chunks), anything else whole."""
    if isinstance(output, str):
        yield from _WORD_CHUNK.findall(output) or [""]
    elif isinstance(output, AIMessage) and not isinstance(output, BaseMessageChunk):
        yield AIMessageChunk(
            content=output.content,
            additional_kwargs=output.additional_kwargs,
            response_metadata=output.response_metadata,
            id=output.id,
            usage_metadata=output.usage_metadata,
            tool_call_chunks=[
                tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c.get("id"), index=i)
                for i, c in enumerate(output.tool_calls)
            ],
        )
    else:
        yield output


def _add(total: Any, chunk: Any) -> Any:
    if total is None:
        return chunk
    try:
        return total + chunk
    except TypeError:
        return chunk


class CachedRunnable(RunnableSerializable[Any, Any]):
    """A Runnable whose output is cached per input question (see :func:`with_cache`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    runnable: Runnable = Field(description="The chain whose output is cached.")
    key: Any = Field(
        default=None,
        description="How the cache key is read from the input: None (the input is the question, a "
        "str), a dict field name, or a callable input -> str.",
    )
    question_cache: Any = Field(description="The core QuestionCache holding this chain's entries.", exclude=True)
    tenant: str | None = Field(default=None, description="Tenant id mixed into the namespace.")
    label: str | None = Field(default=None, description="The user's extra namespace label.")
    watched: list = Field(default_factory=list, exclude=True, description="In-memory stores' contents.")
    fingerprint: tuple = Field(default=(), exclude=True, description="The watched stores when described.")
    retrievers: Any = Field(
        default_factory=RetrieverRegistry,
        exclude=True,
        description="The retrievers found in the chain or seen running in it; a hit is served only "
        "if they still return the documents its answer was made from.",
    )
    history: Any = Field(
        default=None,
        exclude=True,
        description="The RunnableWithMessageHistory being cached, if it is one: its history is part "
        "of the key, and a hit is written into it.",
    )

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return False

    @property
    def InputType(self) -> Any:
        return self.runnable.InputType

    @property
    def OutputType(self) -> Any:
        return self.runnable.OutputType

    def _question(self, value: Any) -> str:
        key = self.key
        if callable(key):
            question = key(value)
        elif isinstance(key, str):
            if not isinstance(value, dict) or key not in value:
                raise TypeError(
                    f"with_cache(key={key!r}) needs a dict input with a {key!r} field, got "
                    f"{type(value).__name__}{' with fields ' + str(sorted(value)) if isinstance(value, dict) else ''}."
                )
            question = value[key]
        else:
            question = value
        if not isinstance(question, str):
            raise TypeError(
                f"with_cache keys on a str question, got {type(question).__name__}; pass "
                "key='field' for a dict input or key=callable returning the question."
            )
        return question

    @staticmethod
    def _config(config: RunnableConfig | None) -> tuple[RunnableConfig, UsageCollector]:
        """``config`` plus a handler that collects the chain's model calls (what a hit avoids)."""
        collector = UsageCollector()
        return merge_configs(ensure_config(config), {"callbacks": [_UsageHandler(collector)]}), collector

    def _scope(self, value: Any, question: str, config: RunnableConfig | None) -> str:
        """The namespace of one call: the chain's, narrowed by what else decides this answer.

        The rest of the input (with ``key="field"`` the other fields, ``{"language": "German"}``;
        with a callable key the whole input with the question's own text marked, see
        :func:`_question_marked`, e.g. the earlier messages of a conversation), the conversation
        so far when the chain is a ``RunnableWithMessageHistory``, and the run-time
        ``configurable`` values (another model chosen with ``configurable_alternatives``, a
        session id) are part of the namespace: an answer is shared only between calls where they
        are equal.
        """
        if self.watched and _fingerprint(self.watched) != self.fingerprint:
            # Documents were added to (or removed from) a store since the chain was described:
            # a new namespace, so no answer made over the old documents is served.
            description, self.watched = _describe_watching(self.runnable, self.retrievers)
            self.fingerprint = _fingerprint(self.watched)
            self.question_cache.namespace = question_namespace(
                description, tenant=self.tenant, namespace=self.label
            )
        context: dict[str, Any] = {}
        if isinstance(self.key, str) and isinstance(value, dict):
            others = {k: v for k, v in value.items() if k != self.key}
            if others:
                context["input"] = others
        elif callable(self.key):
            context["input"] = _question_marked(describe_runnable(value), question)
        session_keys: set[str] = set()
        if self.history is not None:
            # The conversation so far decides the answer ("What is my name?"): it is part of the
            # key, in place of the session id that only says where it is kept (two conversations
            # at the same point share answers, as two callers of a plain chain do).
            context["history"] = [_message_key(m) for m in self._session(config).messages]
            session_keys = {spec.id for spec in self.history.history_factory_config}
        # LangChain's and LangGraph's internal entries ("__pregel_...") are machinery, not choices.
        configurable = {
            k: v
            for k, v in ((config or {}).get("configurable") or {}).items()
            if not str(k).startswith("__") and k not in session_keys
        }
        if configurable:
            context["configurable"] = configurable
        return self.question_cache.scoped(context)

    def _session(self, config: RunnableConfig | None) -> Any:
        """The message history this call reads and writes (as the history runnable finds it)."""
        return self.history._merge_configs(ensure_config(config))["configurable"]["message_history"]

    def _turn(self, input: Any, output: Any) -> list[BaseMessage]:
        """The messages the history runnable would add for this input and output."""
        return self.history._get_input_messages(input) + self.history._get_output_messages(output)

    def _store(self, question: str, output: Any, collector: UsageCollector, namespace: str) -> None:
        for retriever in collector.retrievals.retrievers:
            self.retrievers.register(retriever)
        value = _serialise(output)
        if value is None:
            logger.warning(
                "with_cache: a %s output does not survive LangChain's serialisation; not cached.",
                type(output).__name__,
            )
            return
        self.question_cache.store(question, value, collector, namespace=namespace)

    def _holds(self, retrievals: tuple[Retrieval, ...]) -> bool:
        return self.retrievers.holds(retrievals, _rerun)

    async def _aholds(self, retrievals: tuple[Retrieval, ...]) -> bool:
        return await self.retrievers.aholds(retrievals, _arerun)

    def _read(self, value: str) -> tuple[bool, Any]:
        try:
            return True, _deserialise(value)
        except Exception as exc:
            logger.warning("with_cache: dropping an unreadable cached output (%s); treated as a miss.", exc)
            return False, None

    def _hit(self, input: Any, question: str, namespace: str, config: RunnableConfig | None) -> tuple[bool, Any]:
        """The cached output for this call (written into the conversation's history, as the
        history runnable would), or ``(False, None)``."""
        answer = self.question_cache.lookup(question, namespace=namespace, holds=self._holds)
        if answer is None:
            return False, None
        found, output = self._read(answer.value)
        if found and self.history is not None:
            self._session(config).add_messages(self._turn(input, output))
        return found, _marked(output) if found else None

    async def _ahit(self, input: Any, question: str, namespace: str, config: RunnableConfig | None) -> tuple[bool, Any]:
        answer = await self.question_cache.alookup(question, namespace=namespace, aholds=self._aholds)
        if answer is None:
            return False, None
        found, output = self._read(answer.value)
        if found and self.history is not None:
            await self._session(config).aadd_messages(self._turn(input, output))
        return found, _marked(output) if found else None

    # -- invoke ----------------------------------------------------------------------------------
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        question = self._question(input)
        namespace = self._scope(input, question, config)
        found, output = self._hit(input, question, namespace, config)
        if found:
            return output
        run_config, collector = self._config(config)
        output = self.runnable.invoke(input, run_config, **kwargs)
        self._store(question, output, collector, namespace)
        return output

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        import asyncio

        question = self._question(input)
        namespace = self._scope(input, question, config)
        found, output = await self._ahit(input, question, namespace, config)
        if found:
            return output
        run_config, collector = self._config(config)
        output = await self.runnable.ainvoke(input, run_config, **kwargs)
        await asyncio.to_thread(self._store, question, output, collector, namespace)
        return output

    # -- stream ----------------------------------------------------------------------------------
    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        question = self._question(input)
        namespace = self._scope(input, question, config)
        found, output = self._hit(input, question, namespace, config)
        if found:
            yield from _stream_pieces(output)
            return
        run_config, collector = self._config(config)
        total = None
        for chunk in self.runnable.stream(input, run_config, **kwargs):
            total = _add(total, chunk)
            yield chunk
        # Reached only when the consumer read the whole stream: a cut stream is not cached.
        if total is not None:
            self._store(question, total, collector, namespace)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        import asyncio

        question = self._question(input)
        namespace = self._scope(input, question, config)
        found, output = await self._ahit(input, question, namespace, config)
        if found:
            for piece in _stream_pieces(output):
                yield piece
            return
        run_config, collector = self._config(config)
        total = None
        async for chunk in self.runnable.astream(input, run_config, **kwargs):
            total = _add(total, chunk)
            yield chunk
        if total is not None:
            await asyncio.to_thread(self._store, question, total, collector, namespace)


def with_cache(
    runnable: Runnable,
    *,
    key: KeySpec = None,
    cache: CoreLeanCache | Any | None = None,
    tenant: str | None = None,
    namespace: str | None = None,
) -> CachedRunnable:
    """Cache ``runnable``'s output per question (the documented way to cache a RAG chain).

    Args:
        runnable: the chain, e.g. ``{"context": retriever | format_docs, "question":
            RunnablePassthrough()} | prompt | model | StrOutputParser()``.
        key: ``None`` when the input is the question (a str); a field name (``"question"``) for
            a dict input, whose other fields are then part of the namespace (an answer made for
            ``language="French"`` is never served for ``"German"``); or a callable
            ``input -> str``, e.g. ``lambda x: x["messages"][-1].content`` (the rest of the input,
            every text but the question's own, such as the earlier messages of a conversation,
            is part of the namespace). Run-time ``configurable`` values always are; so is the
            history when ``runnable`` is a ``RunnableWithMessageHistory`` (a hit is written into it).
        cache: a core :class:`lean_plugins.cache.LeanCache` (or the LangChain ``LeanCache``
            adapter, whose core cache is used); default: a local exact + semantic one.
        tenant: tenant id; tenants never share entries.
        namespace: an extra label for the namespace, e.g. your index version: change it when
            you re-index a vector store whose contents the description cannot see (the
            in-memory store's contents are hashed; server-side stores are known only by class
            and collection name).

    Returns:
        A Runnable with ``invoke`` / ``ainvoke`` / ``batch`` / ``abatch`` / ``stream`` /
        ``astream``; a hit returns (or streams) the cached output without running the chain,
        and books the model input and output it avoided in the savings ledger.
    """
    if not isinstance(runnable, Runnable):
        raise TypeError(f"with_cache wraps a LangChain Runnable, got {type(runnable).__name__}.")
    if key is not None and not isinstance(key, str) and not callable(key):
        raise TypeError(f"key must be None, a field name or a callable, got {type(key).__name__}.")
    core = getattr(cache, "cache", cache)  # the LangChain BaseCache adapter holds a core cache
    history = _history_runnable(runnable)
    nested = _nested_history_runnables(runnable, history)
    if nested:
        raise ValueError(
            "with_cache: the chain holds a RunnableWithMessageHistory inside it; a cached answer "
            "could not be written into its history. Wrap the history runnable itself instead: "
            "with_cache(RunnableWithMessageHistory(chain, get_session_history, ...), key=...)."
        )
    retrievers = RetrieverRegistry()
    config, watched = _describe_watching(runnable, retrievers)
    question_cache = QuestionCache(
        core,
        namespace=question_namespace(config, tenant=tenant, namespace=namespace),
        model=_model_name(config),
        tenant=tenant,
    )
    return CachedRunnable(
        runnable=runnable,
        key=key,
        question_cache=question_cache,
        tenant=tenant,
        label=namespace,
        watched=watched,
        fingerprint=_fingerprint(watched),
        retrievers=retrievers,
        history=history,
    )


__all__ = ["CachedRunnable", "describe_runnable", "with_cache"]
