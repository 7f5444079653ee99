"""``CachedQueryEngine``: a LlamaIndex query engine whose answers are cached per question.

Wrap a configured engine (``CachedQueryEngine(index.as_query_engine(...))``): a hit returns the
cached answer text with its source nodes (ids, text, metadata, scores) without node
postprocessors or any LLM call, and paraphrases of an earlier question can hit (the core
:class:`~lean_plugins.cache.LeanCache`'s semantic path with its guard and verifier). A hit is
fresh: the retrievals the answer was made from are run again (the retriever only, no
postprocessor) and must return nodes with the same content (see
:mod:`lean_plugins.cache.question`). The
namespace of the entries is a stable description of the engine: retriever class and settings
(``similarity_top_k``, filters, query mode), the index's contents (a hash of its nodes'
content hashes), the embedding model, node postprocessors, prompts and the LLM's configuration
(secrets left out), so two engines never share answers.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import re
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

from lean_plugins.cache import LeanCache
from lean_plugins.cache.question import (
    CachedAnswer,
    QuestionCache,
    Retrieval,
    RetrieverRegistry,
    UsageCollector,
    callers_on_stack,
    collecting_context,
    describe,
    document_mark,
    question_namespace,
    report_llm_call,
    report_retrieval,
)
from lean_plugins.ledger import mark_cache_hit
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    PydanticResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.indices.base import BaseIndex
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMCompletionEndEvent
from llama_index.core.instrumentation.events.retrieval import RetrievalEndEvent
from llama_index.core.llms.llm import LLM
from llama_index.core.prompts.base import BasePromptTemplate
from llama_index.core.prompts.mixin import PromptDictType, PromptMixinType
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

logger = logging.getLogger("lean_plugins.cache")

_CHUNK = re.compile(r"\s*\S+|\s+$")
# Attributes that do not change an engine's answer (or are described through the index).
_NOISE = frozenset(
    {
        "callback_manager",
        "_callback_manager",
        "_docstore",
        "_vector_store",
        "_object_map",
        "_verbose",
        "verbose",
        "cache",
        "_storage_context",
    }
)


# -- what a hit avoided (every LLM call) and what it depends on (every retrieval) -------------
_RETRIEVER_CALLS = frozenset({"retrieve", "aretrieve"})


def _marks(nodes: list[NodeWithScore]) -> list[tuple[str, str]]:
    return [document_mark(n.node.node_id, n.node.get_content(), n.node.metadata) for n in nodes]


def _bundle(retrieval: Retrieval) -> QueryBundle:
    options = retrieval.options
    return QueryBundle(
        query_str=retrieval.query,
        custom_embedding_strs=options.get("embedding_strs"),
        embedding=options.get("embedding"),
    )


def _rerun(retriever: Any, retrieval: Retrieval) -> list[tuple[str, str]]:
    return _marks(retriever.retrieve(_bundle(retrieval)))


async def _arerun(retriever: Any, retrieval: Retrieval) -> list[tuple[str, str]]:
    return _marks(await retriever.aretrieve(_bundle(retrieval)))


def _report_retrieval(event: RetrievalEndEvent) -> None:
    """One finished retrieval, with the retriever that made it (the ``self`` of the
    ``retrieve`` on the stack: the event does not name it) and the query it was given."""
    callers = callers_on_stack(BaseRetriever, _RETRIEVER_CALLS)
    query = event.str_or_query_bundle
    options: dict[str, Any] = {}
    if isinstance(query, QueryBundle):
        if query.custom_embedding_strs:
            options["embedding_strs"] = list(query.custom_embedding_strs)
        if query.embedding is not None:
            options["embedding"] = list(query.embedding)
        query = query.query_str
    retriever = callers[0][0] if callers else None
    report_retrieval(retriever, str(query), _marks(list(event.nodes)), options, [c for c, _ in callers[1:]])


class _LLMCallReporter(BaseEventHandler):
    """Reports each finished LLM call and each retrieval to the question cache's active
    collector (if any)."""

    @classmethod
    def class_name(cls) -> str:
        return "LeanPluginsQuestionCacheReporter"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, LLMCompletionEndEvent):
            report_llm_call(event.prompt, event.response.text)
        elif isinstance(event, LLMChatEndEvent):
            prompt = "\n".join(m.content or "" for m in event.messages)
            reply = event.response.message.content if event.response is not None else ""
            report_llm_call(prompt, reply or "")
        elif isinstance(event, RetrievalEndEvent):
            _report_retrieval(event)


_REPORTER = _LLMCallReporter()


def _install_reporter() -> None:
    dispatcher = get_dispatcher()  # the root: it sees every LLM's events
    if not any(isinstance(h, _LLMCallReporter) for h in dispatcher.event_handlers):
        dispatcher.add_event_handler(_REPORTER)


# -- namespace ---------------------------------------------------------------------------------
def _index_identity(index: BaseIndex, recurse: Callable[[Any], Any]) -> Any:
    """Class, vector store class and a hash of the nodes' content hashes (ids are random)."""
    identity: dict[str, Any] = {
        "index": type(index).__qualname__,
        "vector_store": type(getattr(index, "vector_store", None)).__qualname__,
    }
    docs = getattr(index.docstore, "docs", {})
    if docs:
        hashes = sorted(node.hash for node in docs.values())
        identity["contents"] = hashlib.sha256("\x00".join(hashes).encode("utf-8")).hexdigest()
    else:  # text lives in the vector store: known by its id and collection only
        identity["index_id"] = index.index_id
        store = getattr(index, "vector_store", None)
        for attr in ("collection_name", "index_name", "table_name", "namespace"):
            value = getattr(store, attr, None)
            if isinstance(value, str):
                identity[attr] = value
    return identity


def _node_hashes(docstore: Any, node_ids: list[str]) -> str:
    docs = getattr(docstore, "docs", {})
    hashes = sorted(docs[i].hash if i in docs else i for i in node_ids)
    return hashlib.sha256("\x00".join(hashes).encode("utf-8")).hexdigest()


def _describe_hook(value: Any, recurse: Callable[[Any], Any]) -> Any:
    if isinstance(value, BaseIndex):
        return _index_identity(value, recurse)
    if isinstance(value, LLM | BaseEmbedding):
        fields = {
            name: getattr(value, name, None)
            for name in type(value).model_fields
            if name not in _NOISE and not name.startswith("_")
        }
        return {"class": value.class_name(), "fields": recurse(fields)}
    if isinstance(value, CallbackManager):
        return None
    if isinstance(value, BasePromptTemplate):
        # By the text it renders (template variable lists come from sets: unordered).
        return {
            "class": type(value).__qualname__,
            "template": value.get_template(),
            "kwargs": recurse(value.kwargs),
        }
    module = type(value).__module__
    if module.startswith(("llama_index", "lean_plugins")):
        # Engines, retrievers and synthesizers keep their settings in private attributes;
        # pydantic parts (postprocessors, prompts) in fields. Callback managers are left out.
        model_fields = getattr(type(value), "model_fields", None)
        if model_fields:
            fields = {n: getattr(value, n, None) for n in model_fields if n not in _NOISE}
            return {"class": f"{module}.{type(value).__qualname__}", "fields": recurse(fields)}
        attrs = {k: v for k, v in sorted(vars(value).items()) if k not in _NOISE}
        docstore = getattr(value, "_docstore", None)
        if isinstance(attrs.get("_node_ids"), list) and docstore is not None:
            # A retriever limited to some nodes (as_query_engine lists them all): by their
            # content hashes, since node ids are random per process.
            attrs["_node_ids"] = _node_hashes(docstore, attrs["_node_ids"])
        return {"class": f"{module}.{type(value).__qualname__}", "attrs": recurse(attrs)}
    return NotImplemented


def describe_engine(engine: Any) -> Any:
    """A stable description of a query engine and everything that decides its answers."""
    return _describe_watching(engine)[0]


def _describe_watching(engine: Any, registry: RetrieverRegistry | None = None) -> tuple[Any, list[dict]]:
    """The description, and the node tables of the indexes it hashed (an insert changes them).

    Every retriever met on the way goes into ``registry``, so entries can be checked (their
    retrievals run again) before this engine has run once.
    """
    watched: list[dict] = []

    def hook(value: Any, recurse: Callable[[Any], Any]) -> Any:
        if registry is not None and isinstance(value, BaseRetriever):
            registry.register(value)
        if isinstance(value, BaseIndex):
            # The index struct's own table, changed in place by insert / delete (the docstore's
            # ``docs`` is a fresh copy at every access).
            nodes = getattr(value.index_struct, "nodes_dict", None)
            if isinstance(nodes, dict):
                watched.append(nodes)
        return _describe_hook(value, recurse)

    return describe(engine, hook), watched


def _fingerprint(watched: list[dict]) -> tuple:
    """Cheap per-call check of the watched node tables: nodes inserted, deleted or replaced."""
    return tuple((len(d), hash(tuple(d))) for d in watched)


def _model_name(engine: Any) -> str | None:
    llm = getattr(getattr(engine, "_response_synthesizer", None), "_llm", None)
    metadata = getattr(llm, "metadata", None)
    name = getattr(metadata, "model_name", None)
    return name if isinstance(name, str) and name != "unknown" else None


# -- stored form of a response ---------------------------------------------------------------
def _encode(text: str, source_nodes: list[NodeWithScore], metadata: dict[str, Any] | None) -> str:
    sources = [
        {
            "id": s.node.node_id,
            "text": s.node.get_content(),
            "metadata": s.node.metadata,
            "score": s.score,
        }
        for s in source_nodes
    ]
    return json.dumps({"text": text, "sources": sources, "metadata": metadata}, ensure_ascii=False, default=str)


def _decode(value: str) -> tuple[str, list[NodeWithScore], dict[str, Any] | None]:
    data = json.loads(value)
    nodes = [
        NodeWithScore(node=TextNode(id_=s["id"], text=s["text"], metadata=s["metadata"] or {}), score=s["score"])
        for s in data["sources"]
    ]
    return str(data["text"]), nodes, data.get("metadata")


def _pieces(text: str) -> list[str]:
    return _CHUNK.findall(text) or [""]


class CachedQueryEngine(BaseQueryEngine):
    """Any LlamaIndex query engine behind a question-level answer cache.

    Args:
        query_engine: the configured engine (the namespace is described when the wrapper is
            built, and again when prompts are updated through the wrapper; change the engine
            through the wrapper, or wrap it once it is configured).
        cache: the core :class:`lean_plugins.cache.LeanCache`; default a local exact + semantic one.
        tenant: tenant id; tenants never share entries.
        namespace: an extra namespace label, e.g. an index version: change it when you re-index
            a vector store that keeps the text itself (the default store's contents are hashed).
    """

    def __init__(
        self,
        query_engine: BaseQueryEngine,
        cache: LeanCache | None = None,
        tenant: str | None = None,
        *,
        namespace: str | None = None,
    ) -> None:
        if not isinstance(query_engine, BaseQueryEngine):
            raise TypeError(
                f"CachedQueryEngine wraps a LlamaIndex BaseQueryEngine (e.g. index.as_query_engine()), "
                f"got {type(query_engine).__name__}."
            )
        self.query_engine = query_engine
        self.tenant = tenant
        self.label = namespace
        # The retrievers whose runs answers depend on: a hit is served only if, run again with
        # the same query, they return nodes with the same content (an edit in the docstore
        # under the same id, a deletion, a new better match: a miss).
        self.retrievers = RetrieverRegistry()
        self.question_cache = QuestionCache(
            cache, namespace=self._namespace(), model=_model_name(query_engine), tenant=tenant
        )
        _install_reporter()
        super().__init__(callback_manager=query_engine.callback_manager)

    @classmethod
    def class_name(cls) -> str:
        return "CachedQueryEngine"

    def _namespace(self) -> str:
        description, self._watched = _describe_watching(self.query_engine, self.retrievers)
        self._fingerprint = _fingerprint(self._watched)
        return question_namespace(description, tenant=self.tenant, namespace=self.label)

    def _scope(self, query_bundle: QueryBundle) -> str:
        """The namespace of one query: the engine's (described again when its index changed),
        narrowed by the bundle's own retrieval strings or embedding when it has them."""
        if self._watched and _fingerprint(self._watched) != self._fingerprint:
            self.question_cache.namespace = self._namespace()
        context: dict[str, Any] = {}
        if query_bundle.custom_embedding_strs:
            context["embedding_strs"] = list(query_bundle.custom_embedding_strs)
        if query_bundle.embedding is not None:
            context["embedding"] = hashlib.sha256(json.dumps(list(query_bundle.embedding)).encode()).hexdigest()
        if getattr(query_bundle, "image_path", None):
            context["image_path"] = query_bundle.image_path
        return self.question_cache.scoped(context)

    @property
    def streaming(self) -> bool:
        """Whether the wrapped engine streams (a hit then streams the cached text too)."""
        return bool(getattr(getattr(self.query_engine, "_response_synthesizer", None), "_streaming", False))

    # -- prompts: the wrapped engine's, under the same keys ---------------------------------------
    def get_prompts(self) -> dict[str, BasePromptTemplate]:
        """The wrapped engine's prompts (same keys, e.g. ``response_synthesizer:text_qa_template``)."""
        return self.query_engine.get_prompts()

    def update_prompts(self, prompts_dict: dict[str, BasePromptTemplate]) -> None:
        """Update the wrapped engine's prompts; entries made with the old ones are not served."""
        self.query_engine.update_prompts(prompts_dict)
        # Other prompts give other answers: a new namespace, so no old answer is served.
        self.question_cache.namespace = self._namespace()

    def _get_prompts(self) -> dict[str, Any]:
        return {}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        pass

    def _get_prompt_modules(self) -> PromptMixinType:
        return {}

    # -- hits ------------------------------------------------------------------------------------
    def _hit(self, answer: CachedAnswer, asynchronous: bool) -> RESPONSE_TYPE | None:
        try:
            text, nodes, metadata = _decode(answer.value)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("CachedQueryEngine: dropping an unreadable cached answer (%s); a miss.", exc)
            return None
        # The ledger's cache-hit contract: the cache booked the hit; the response says so.
        metadata = mark_cache_hit(metadata)
        if not self.streaming:
            return Response(response=text, source_nodes=nodes, metadata=metadata)
        if asynchronous:

            async def agen() -> AsyncGenerator[str, None]:
                for piece in _pieces(text):
                    yield piece

            return AsyncStreamingResponse(response_gen=agen(), source_nodes=nodes, metadata=metadata)
        return StreamingResponse(response_gen=iter(_pieces(text)), source_nodes=nodes, metadata=metadata)

    def _store(self, question: str, namespace: str, response: Any, text: str, usage: UsageCollector) -> None:
        for retriever in usage.retrievals.retrievers:
            self.retrievers.register(retriever)
        value = _encode(text, list(response.source_nodes or []), response.metadata)
        self.question_cache.store(question, value, usage, namespace=namespace)

    # -- query -----------------------------------------------------------------------------------
    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        question, namespace = query_bundle.query_str, self._scope(query_bundle)
        answer = self.question_cache.lookup(
            question, namespace=namespace, holds=lambda r: self.retrievers.holds(r, _rerun)
        )
        if answer is not None:
            hit = self._hit(answer, asynchronous=False)
            if hit is not None:
                return hit
        context, usage = collecting_context()
        response = context.run(self.query_engine.query, query_bundle)
        if isinstance(response, StreamingResponse) and response.response_gen is not None:
            response.response_gen = self._stream_then_store(question, namespace, response, response.response_gen, context, usage)
        elif isinstance(response, Response | PydanticResponse):
            self._store(question, namespace, response, str(response), usage)
        return response

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        question, namespace = query_bundle.query_str, self._scope(query_bundle)
        answer = await self.question_cache.alookup(
            question, namespace=namespace, aholds=lambda r: self.retrievers.aholds(r, _arerun)
        )
        if answer is not None:
            hit = self._hit(answer, asynchronous=True)
            if hit is not None:
                return hit
        context, usage = collecting_context()
        response = await asyncio.create_task(self.query_engine.aquery(query_bundle), context=context)
        if isinstance(response, AsyncStreamingResponse) and response.response_gen is not None:
            response.response_gen = self._astream_then_store(question, namespace, response, response.response_gen, context, usage)
        elif isinstance(response, StreamingResponse) and response.response_gen is not None:
            response.response_gen = self._stream_then_store(question, namespace, response, response.response_gen, context, usage)
        elif isinstance(response, Response | PydanticResponse):
            await asyncio.to_thread(self._store, question, namespace, response, str(response), usage)
        return response

    def _stream_then_store(
        self,
        question: str,
        namespace: str,
        response: Any,
        inner: Any,
        context: contextvars.Context,
        usage: UsageCollector,
    ) -> Generator[str, None, None]:
        """The engine's token stream; cached once it has been read to the end."""
        text = ""
        try:
            while True:
                try:
                    piece = context.run(next, inner)
                except StopIteration:
                    break
                text += piece
                yield piece
        except GeneratorExit:  # the reader stopped: end the engine's stream too, cache nothing
            context.run(inner.close)
            raise
        self._store(question, namespace, response, text, usage)

    async def _astream_then_store(
        self,
        question: str,
        namespace: str,
        response: Any,
        inner: Any,
        context: contextvars.Context,
        usage: UsageCollector,
    ) -> AsyncGenerator[str, None]:
        text = ""
        try:
            while True:
                try:
                    piece = await asyncio.create_task(inner.__anext__(), context=context)
                except StopAsyncIteration:
                    break
                text += piece
                yield piece
        except GeneratorExit:
            await inner.aclose()
            raise
        await asyncio.to_thread(self._store, question, namespace, response, text, usage)
