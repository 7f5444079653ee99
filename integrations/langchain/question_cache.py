"""``with_cache``: a LangChain Runnable that caches a whole chain's output, keyed on its input.

Put it around a RAG chain (``with_cache(retriever | prompt | model | parser)``): a hit skips
retrieval, compression and the model together, and paraphrases of an earlier question can hit
(the core :class:`~lean_plugins.cache.LeanCache`'s semantic path with its guard and verifier).
The namespace of the entries is a stable description of the wrapped chain (each model's
LangChain cache key, each retriever's search settings and vector store contents, prompts and
functions), so two chains never share answers. Outputs are stored with LangChain's own
serialisation (``dumpd`` / ``load`` restricted to core classes), never pickle: strings,
messages (tool calls included), documents and dicts or lists of those.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
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
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import ensure_config, merge_configs
from langchain_core.vectorstores import VectorStoreRetriever
from pydantic import ConfigDict, Field

from lean_plugins.cache import LeanCache as CoreLeanCache
from lean_plugins.cache.question import QuestionCache, UsageCollector, describe, question_namespace
from lean_plugins.ledger import mark_cache_hit

logger = logging.getLogger("lean_plugins.cache")

_WORD_CHUNK = re.compile(r"\s*\S+|\s+$")

KeySpec = str | Callable[[Any], str] | None


def _llm_key(model: BaseLanguageModel) -> str:
    """The model's own LangChain cache key (its class and every generation parameter)."""
    if isinstance(model, BaseChatModel):
        return model._get_llm_string()
    if isinstance(model, BaseLLM):
        return str(sorted(model._get_invocation_params().items()))
    return json.dumps(describe(model), sort_keys=True, default=str)


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


def _describe_watching(runnable: Any) -> tuple[Any, list[dict]]:
    """The description, and the in-memory vector stores' contents it hashed (they can change)."""
    watched: list[dict] = []

    def hook(value: Any, recurse: Callable[[Any], Any]) -> Any:
        if isinstance(value, VectorStoreRetriever):
            contents = getattr(value.vectorstore, "store", None)
            if isinstance(contents, dict):
                watched.append(contents)
        return _describe_hook(value, recurse)

    return describe(runnable, hook), watched


def _fingerprint(watched: list[dict]) -> tuple:
    """Cheap per-call check of the watched stores: documents added, deleted or replaced."""
    return tuple((len(c), hash(tuple(map(id, c.values())))) for c in watched)


def _without_question(description: Any, question: str) -> Any:
    """A described input with every text that holds the question replaced by a placeholder."""
    if isinstance(description, str):
        return "<question>" if question.strip() and question.strip() in description else description
    if isinstance(description, dict):
        return {k: _without_question(v, question) for k, v in description.items()}
    if isinstance(description, list):
        return [_without_question(v, question) for v in description]
    return description


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


class _UsageHandler(BaseCallbackHandler):
    """Reports each model call of the wrapped chain to the question cache's collector."""

    raise_error = False

    def __init__(self, collector: UsageCollector) -> None:
        self.collector = collector
        self.prompts: dict[Any, str] = {}

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
        with a callable key everything but the text holding the question, e.g. the earlier
        messages of a conversation) and the run-time ``configurable`` values (another model chosen
        with ``configurable_alternatives``, a session id) are part of the namespace: an answer is
        shared only between calls where they are equal.
        """
        if self.watched and _fingerprint(self.watched) != self.fingerprint:
            # Documents were added to (or removed from) a store since the chain was described:
            # a new namespace, so no answer made over the old documents is served.
            description, self.watched = _describe_watching(self.runnable)
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
            context["input"] = _without_question(describe_runnable(value), question)
        # LangChain's and LangGraph's internal entries ("__pregel_...") are machinery, not choices.
        configurable = {
            k: v for k, v in ((config or {}).get("configurable") or {}).items() if not str(k).startswith("__")
        }
        if configurable:
            context["configurable"] = configurable
        return self.question_cache.scoped(context)

    def _store(self, question: str, output: Any, collector: UsageCollector, namespace: str) -> None:
        value = _serialise(output)
        if value is None:
            logger.warning(
                "with_cache: a %s output does not survive LangChain's serialisation; not cached.",
                type(output).__name__,
            )
            return
        self.question_cache.store(question, value, collector, namespace=namespace)

    def _hit(self, question: str, namespace: str) -> tuple[bool, Any]:
        answer = self.question_cache.lookup(question, namespace=namespace)
        if answer is None:
            return False, None
        try:
            return True, _marked(_deserialise(answer.value))
        except Exception as exc:
            logger.warning("with_cache: dropping an unreadable cached output (%s); treated as a miss.", exc)
            return False, None

    async def _ahit(self, question: str, namespace: str) -> tuple[bool, Any]:
        import asyncio

        return await asyncio.to_thread(self._hit, question, namespace)

    # -- invoke ----------------------------------------------------------------------------------
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        question = self._question(input)
        namespace = self._scope(input, question, config)
        found, output = self._hit(question, namespace)
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
        found, output = await self._ahit(question, namespace)
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
        found, output = self._hit(question, namespace)
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
        found, output = await self._ahit(question, namespace)
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
            every text but the one holding the question, such as the earlier messages of a
            conversation, is part of the namespace). Run-time ``configurable`` values always are.
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
    config, watched = _describe_watching(runnable)
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
    )


__all__ = ["CachedRunnable", "describe_runnable", "with_cache"]
