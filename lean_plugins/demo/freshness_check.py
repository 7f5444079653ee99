"""Does the question-level cache ever serve an answer its documents no longer support? Measured.

Each framework's RAG pipeline over the demo knowledge base, cached at the question level with
the defaults (LangChain: the README's shape, a function reading a module-level retriever inside
``with_cache``; LlamaIndex: ``CachedQueryEngine(VectorStoreIndex(...).as_query_engine())``),
with the demo's deterministic stand-in model, runs the RAG check's questions through phases:

* ``fill``: every question once (entries are made);
* ``repeat``: every question again, nothing changed (hits expected);
* ``edit``: every number in every document changed in place, same ids (LangChain: the vector
  store's entry replaced; LlamaIndex: the docstore's node text replaced, vectors untouched);
* ``delete``: a third of the documents deleted;
* ``add``: for every document left, an edited copy added under a new id.

After each change every question is asked again. A served answer is *stale* when it differs
from what the pipeline without a cache answers now for the question the entry was made for
(so a paraphrase hit is judged by its own entry, and an edit that leaves the served sentence
as it was is not counted). Conversations are checked too (LangChain): a message-history
runnable where the user renames themself, and ``key=callable`` follow-ups ("no") after
different first questions, against the same chain without a cache.

Each check also times the lookup of a hit with and without the freshness check (re-running
the entry's retrievals), on the same entries, for the cost table.
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lean_plugins.demo.knowledge import Question, Section, load_knowledge_base
from lean_plugins.demo.rag_check import TracingCache, load_rag_questions
from lean_plugins.demo.standin import CallLog

PHASES = ("fill", "repeat", "edit", "delete", "add")


@dataclass
class PhaseResult:
    framework: str
    phase: str
    requests: int = 0
    served: int = 0
    stale: int = 0
    stale_ids: list[str] = field(default_factory=list)


@dataclass
class LookupCost:
    """Milliseconds per hit lookup, on the same entries: the cache alone, and with the check."""

    framework: str
    plain_ms: list[float] = field(default_factory=list)
    checked_ms: list[float] = field(default_factory=list)


def edited(text: str) -> str:
    """``text`` with every number changed (7 -> 8): an edit that changes answers."""
    return re.sub(r"\d+", lambda m: str(int(m.group()) + 1), text)


# The README's LangChain shape reads a module-level retriever.
retriever: Any = None


def context(question: str) -> str:
    return "\n\n".join(d.page_content for d in retriever.invoke(question))


class _Pipeline:
    """One framework's pipeline: cached, plain (same parts, no cache), and document edits."""

    def __init__(self, framework: str, sections: list[Section], cache: TracingCache) -> None:
        self.framework = framework
        self.ids = [f"doc{i}" for i in range(len(sections))]
        self.texts = {i: s.text for i, s in zip(self.ids, sections, strict=True)}
        self.log = CallLog()  # the cached pipeline's model calls: a request without one was served
        if framework == "langchain":
            self._langchain(cache)
        else:
            self._llama_index(cache)

    def _langchain(self, cache: TracingCache) -> None:
        global retriever
        from langchain_core.documents import Document
        from langchain_core.output_parsers import StrOutputParser
        from langchain_core.runnables import RunnableLambda, RunnablePassthrough
        from langchain_core.vectorstores import InMemoryVectorStore

        from lean_plugins.demo.langchain_app import default_qa_prompt
        from lean_plugins.demo.langchain_parts import MiniLMEmbeddings, StandInChatModel
        from lean_plugins.langchain import with_cache

        self.store = InMemoryVectorStore(MiniLMEmbeddings())
        self.store.add_documents([Document(id=i, page_content=t) for i, t in self.texts.items()])
        retriever = self.store.as_retriever(search_kwargs={"k": 2})
        def chain(log: CallLog | None = None) -> Any:
            return (
                {"context": RunnableLambda(context), "question": RunnablePassthrough()}
                | default_qa_prompt()
                | StandInChatModel(call_log=log or CallLog())
                | StrOutputParser()
            )

        self.cached = with_cache(chain(self.log), cache=cache)
        self.ask, self.plain = self.cached.invoke, chain().invoke

        def put(ids: list[str], texts: list[str]) -> None:
            self.store.add_documents([Document(id=i, page_content=t) for i, t in zip(ids, texts, strict=True)])

        self.put, self.delete = put, self.store.delete

    def _llama_index(self, cache: TracingCache) -> None:
        from llama_index.core import VectorStoreIndex
        from llama_index.core.schema import TextNode

        from lean_plugins.demo.llama_index_parts import MiniLMEmbedding, StandInLLM
        from lean_plugins.llama_index import CachedQueryEngine

        self.index = VectorStoreIndex(
            [TextNode(id_=i, text=t) for i, t in self.texts.items()], embed_model=MiniLMEmbedding()
        )
        engine = self.index.as_query_engine(llm=StandInLLM(call_log=self.log), similarity_top_k=2)
        plain = self.index.as_query_engine(llm=StandInLLM(), similarity_top_k=2)
        self.cached = CachedQueryEngine(engine, cache=cache)
        self.ask = lambda q: str(self.cached.query(q))
        self.plain = lambda q: str(plain.query(q))

        def put(ids: list[str], texts: list[str]) -> None:
            nodes = [TextNode(id_=i, text=t) for i, t in zip(ids, texts, strict=True)]
            known = [n for n in nodes if n.node_id in self.index.docstore.docs]
            if known:  # an edit in place: the docstore's text, under the same id
                self.index.docstore.add_documents(known, allow_update=True)
            new = [n for n in nodes if n.node_id not in self.index.docstore.docs]
            if new:
                self.index.insert_nodes(new)

        self.put, self.delete = put, self.index.delete_nodes

    def lookup_cost(self, question: str, cost: LookupCost) -> None:
        """Time one lookup without and with the freshness check (both on a warm cache)."""
        qc = self.cached.question_cache
        if self.framework == "langchain":
            namespace = self.cached._scope(question, question, None)
            holds = self.cached._holds
        else:
            from llama_index.core.schema import QueryBundle

            from lean_plugins.llama_index.cached_query_engine import _rerun

            namespace = self.cached._scope(QueryBundle(question))
            holds = lambda r: self.cached.retrievers.holds(r, _rerun)  # noqa: E731
        start = time.perf_counter()
        found = qc._find(question, namespace)
        middle = time.perf_counter()
        checked = qc.lookup(question, namespace=namespace, holds=holds)
        end = time.perf_counter()
        if found is not None and checked is not None:
            cost.plain_ms.append((middle - start) * 1000)
            cost.checked_ms.append((end - middle) * 1000)


def run_framework(
    framework: str, questions: list[Question], workdir: Path, sections: list[Section] | None = None
) -> tuple[list[PhaseResult], LookupCost]:
    """Every phase for one framework, with a fresh cache and fresh documents."""
    sections = sections if sections is not None else load_knowledge_base()
    cache = TracingCache(workdir / f"fresh-{framework}", record_hits=False)
    pipeline = _Pipeline(framework, sections, cache)
    results, cost = [], LookupCost(framework)
    try:
        for phase in PHASES:
            if phase == "edit":
                pipeline.put(pipeline.ids, [edited(pipeline.texts[i]) for i in pipeline.ids])
            elif phase == "delete":
                gone = pipeline.ids[::3]
                pipeline.delete(gone)
                pipeline.ids = [i for i in pipeline.ids if i not in gone]
            elif phase == "add":
                copies = [f"{i}-copy" for i in pipeline.ids]
                pipeline.put(copies, [edited(edited(pipeline.texts[i])) for i in pipeline.ids])
            result = PhaseResult(framework, phase)
            for q in questions:
                hits, mark = len(cache.hits), pipeline.log.mark()
                cache.current = q.question
                answer = pipeline.ask(q.question)
                result.requests += 1
                if not pipeline.log.since(mark):  # served: the entry is the last one the cache found
                    result.served += 1
                    owner = cache.hits[-1][1] if len(cache.hits) > hits else None
                    # Judged against the pipeline now, for the question the entry was made for.
                    if owner is None or answer != pipeline.plain(owner):
                        result.stale += 1
                        result.stale_ids.append(q.id)
                if phase == "repeat" and hasattr(pipeline.cached.question_cache, "_find"):
                    pipeline.lookup_cost(q.question, cost)  # (a version before the check has no _find)
            results.append(result)
    finally:
        cache.close()
    return results, cost


# -- conversations (LangChain) ----------------------------------------------------------------
def _conversation_model() -> Any:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class ConversationModel(BaseChatModel):
        """A rule-based stand-in whose answers depend on the conversation: it remembers the
        name the user last gave and the company they asked about."""

        @property
        def _llm_type(self) -> str:
            return "conversation-stand-in"

        def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
            name, company = None, None
            for m in messages:
                if isinstance(m, HumanMessage):
                    found = re.search(r"(?:my name is|call me) (\w+)", m.text, re.I)
                    name = found.group(1) if found else name
                    found = re.search(r"sell my (\w+) shares", m.text, re.I)
                    company = found.group(1) if found else company
            last = messages[-1].text.strip()
            if "what is my name" in last.lower():
                text = f"Your name is {name}." if name else "I don't know your name."
            elif last.lower() in {"no", "yes"} and company:
                text = f"Then {'keep' if last.lower() == 'no' else 'sell'} your {company} shares."
            else:
                text = f"Noted: {last}"
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    return ConversationModel()


NAMES = ("Bob", "Alice", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jun")
COMPANIES = ("Tesla", "Apple", "Nvidia", "Amazon", "Google", "Meta", "Intel", "Sony", "Nokia", "Ford")


def run_conversations(workdir: Path) -> list[PhaseResult]:
    """History renames and follow-ups: a served answer is wrong when it differs from the
    uncached chain's answer to the same conversation."""
    from langchain_core.chat_history import InMemoryChatMessageHistory
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
    from langchain_core.runnables.history import RunnableWithMessageHistory

    from lean_plugins.langchain import with_cache

    model = _conversation_model()
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{question}")])
    results = []

    def history_chain(sessions: dict[str, Any]) -> Any:
        return RunnableWithMessageHistory(
            prompt | model | StrOutputParser(),
            lambda session_id: sessions.setdefault(session_id, InMemoryChatMessageHistory()),
            input_messages_key="question",
            history_messages_key="history",
        )

    cache = TracingCache(workdir / "fresh-history", record_hits=False)
    cached_sessions: dict[str, Any] = {}
    plain_sessions: dict[str, Any] = {}
    cached, plain = with_cache(history_chain(cached_sessions), key="question", cache=cache), history_chain(plain_sessions)
    result = PhaseResult("langchain", "history")
    for n, (first, second) in enumerate(zip(NAMES, NAMES[1:] + NAMES[:1], strict=True)):
        # Two conversations per pair of names, so conversations at the same point can share.
        for session in (f"{n}a", f"{n}b"):
            config = {"configurable": {"session_id": session}}
            for turn in (f"My name is {first}.", "What is my name?", f"Actually, call me {second}.", "What is my name?"):
                hits = len(cache.hits)
                answer = cached.invoke({"question": turn}, config)
                expected = plain.invoke({"question": turn}, config)
                result.requests += 1
                result.served += len(cache.hits) - hits
                if answer != expected or [m.text for m in cached_sessions[session].messages] != [
                    m.text for m in plain_sessions[session].messages
                ]:
                    result.stale += 1
                    result.stale_ids.append(f"{session}:{turn}")
    results.append(result)
    cache.close()

    cache = TracingCache(workdir / "fresh-followup", record_hits=False)
    cached = with_cache(model | StrOutputParser(), key=lambda m: m[-1].content, cache=cache)
    plain_chain = model | StrOutputParser()
    result = PhaseResult("langchain", "follow-up")
    for _ in range(2):  # the second round repeats every conversation: hits expected
        for company in COMPANIES:
            for reply in ("no", "yes"):
                conversation = [
                    HumanMessage(f"Should I sell my {company} shares now?"),
                    AIMessage("Do you need the money soon?"),
                    HumanMessage(reply),
                ]
                hits = len(cache.hits)
                answer = cached.invoke(conversation)
                result.requests += 1
                result.served += len(cache.hits) - hits
                if answer != plain_chain.invoke(conversation):
                    result.stale += 1
                    result.stale_ids.append(f"{company}:{reply}")
    results.append(result)
    cache.close()
    return results


def run_check(
    frameworks: tuple[str, ...] = ("langchain", "llama_index"),
    limit: int | None = None,
    workdir: str | Path | None = None,
) -> tuple[list[PhaseResult], list[LookupCost]]:
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="lean-fresh-check-"))
    questions = load_rag_questions(limit=limit)
    results: list[PhaseResult] = []
    costs: list[LookupCost] = []
    for framework in frameworks:
        phase_results, cost = run_framework(framework, questions, root)
        results += phase_results
        costs.append(cost)
    if "langchain" in frameworks:
        results += run_conversations(root)
    return results, costs


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))]:.2f}"


def tables(results: list[PhaseResult], costs: list[LookupCost]) -> list[str]:
    """Markdown tables: stale serves per phase, and what the check adds to a hit's lookup."""
    lines = [
        "| framework | phase | requests | served from cache | stale or wrong answers served |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        stale = f"{r.stale}" + (f" ({', '.join(r.stale_ids[:5])}{', ...' if len(r.stale_ids) > 5 else ''})" if r.stale_ids else "")
        lines.append(f"| {r.framework} | {r.phase} | {r.requests} | {r.served} | {stale} |")
    lines += [
        "",
        "| framework | hits timed | lookup p50 ms (cache only) | lookup p50 ms (with freshness check) | "
        "extra p50 ms | lookup p90 ms (cache only / with check) |",
        "|---|---|---|---|---|---|",
    ]
    for c in costs:
        extra = (
            f"{statistics.median(c.checked_ms) - statistics.median(c.plain_ms):.2f}" if c.plain_ms else "-"
        )
        lines.append(
            f"| {c.framework} | {len(c.plain_ms)} | {_ms(c.plain_ms, 0.5)} | {_ms(c.checked_ms, 0.5)} | {extra} | "
            f"{_ms(c.plain_ms, 0.9)} / {_ms(c.checked_ms, 0.9)} |"
        )
    return lines


def stale_total(results: list[PhaseResult]) -> int:
    return sum(r.stale for r in results)


