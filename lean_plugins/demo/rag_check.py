"""Does caching a RAG pipeline ever serve another question's answer? Measured end to end.

The question set (``rag_questions.json``) holds first-time questions over the demo knowledge
base that each need a different answer, many of them near misses of one another, plus
paraphrases of some. Each framework runs it through its ordinary RAG pipeline (LangChain:
in-memory retriever | LangChain's "stuff" prompt | chat model; LlamaIndex:
``VectorStoreIndex(...).as_query_engine()``) with the demo's deterministic stand-in model and
MiniLM embeddings, once for each way to cache:

* ``plain``: no cache (the baseline: every request reaches the model);
* ``llm``: the LLM-level cache with its defaults (LangChain ``set_llm_cache(LeanCache())``,
  LlamaIndex ``CachedLLM`` as the engine's LLM);
* ``question``: the question-level cache with its defaults (``with_cache``,
  ``CachedQueryEngine``).

Every cache write is tagged with the label of the request that made it, and every cache hit
with the label of the request it served, so a hit is *wrong* exactly when the entry came from
another question (however similar the two answers happen to be).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lean_plugins.cache import LeanCache
from lean_plugins.demo.knowledge import (
    DEMO_DIR,
    Question,
    contains_answer,
    load_knowledge_base,
    load_questions,
)
from lean_plugins.demo.settings import DemoSettings
from lean_plugins.demo.standin import CallLog

RAG_QUESTIONS_FILE = DEMO_DIR / "rag_questions.json"
LEVELS = ("plain", "llm", "question")
FRAMEWORKS = ("langchain", "llama_index")


def load_rag_questions(limit: int | None = None) -> list[Question]:
    """The RAG cache check's question set (not the demo's ``questions.json``)."""
    return load_questions(RAG_QUESTIONS_FILE, limit=limit)


class TracingCache(LeanCache):
    """``LeanCache`` that remembers which request wrote each entry and which entry served each hit.

    Set :attr:`current` to a tag of the request being run (its label, its id); every entry
    written meanwhile is owned by that tag, and every hit is logged in :attr:`hits` as
    ``(current tag, owner tag of the entry, match)``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.current: Any = None
        self.owner: dict[str, Any] = {}
        self.hits: list[tuple[Any, Any, str]] = []

    def put(self, prompt: str, response: str, **kwargs: Any) -> None:
        self.owner.setdefault(prompt, self.current)
        super().put(prompt, response, **kwargs)

    def lookup(self, prompt: str, **kwargs: Any) -> Any:
        hit = super().lookup(prompt, **kwargs)
        if hit is not None:
            self.hits.append((self.current, self.owner.get(hit.cached_prompt), hit.match))
        return hit


@dataclass
class LevelResult:
    """One framework, one cache level, the whole question set."""

    framework: str
    level: str
    requests: int = 0
    model_calls: int = 0
    served: int = 0
    wrong: int = 0
    paraphrases: int = 0
    paraphrases_served: int = 0
    answers_with_string: int = 0
    wrong_ids: list[str] = field(default_factory=list)


def _pipelines(framework: str, level: str, cache: TracingCache | None, log: CallLog) -> tuple[Callable[[str], str], Callable[[], None]]:
    """``ask(question) -> answer`` for one framework and level, and a function that undoes globals."""
    settings = DemoSettings()
    sections = load_knowledge_base()
    if framework == "langchain":
        from langchain_core.globals import get_llm_cache, set_llm_cache

        from lean_plugins.demo.langchain_app import LangChainDemo
        from lean_plugins.demo.langchain_parts import StandInChatModel

        chain: Any = LangChainDemo(sections, settings).chain(StandInChatModel(call_log=log), ())
        previous = get_llm_cache()
        if level == "llm":
            from lean_plugins.langchain import LeanCache as LangChainLeanCache

            set_llm_cache(LangChainLeanCache(cache))
        elif level == "question":
            from lean_plugins.langchain import with_cache

            chain = with_cache(chain, cache=cache)
        return chain.invoke, lambda: set_llm_cache(previous)
    from lean_plugins.demo.llama_index_app import LlamaIndexDemo
    from lean_plugins.demo.llama_index_parts import StandInLLM

    llm: Any = StandInLLM(call_log=log)
    if level == "llm":
        from lean_plugins.llama_index import CachedLLM

        llm = CachedLLM(llm=llm, cache=cache)
    engine: Any = LlamaIndexDemo(sections, settings).query_engine(llm, ())
    if level == "question":
        from lean_plugins.llama_index import CachedQueryEngine

        engine = CachedQueryEngine(engine, cache=cache)
    return (lambda question: str(engine.query(question))), (lambda: None)


def run_level(framework: str, level: str, questions: list[Question], workdir: Path) -> LevelResult:
    """Ask every question through one framework's pipeline with one cache level."""
    log = CallLog()
    cache = None if level == "plain" else TracingCache(workdir / f"{framework}-{level}", record_hits=False)
    ask, undo = _pipelines(framework, level, cache, log)
    result = LevelResult(framework, level)
    try:
        for q in questions:
            mark, hits = log.mark(), len(cache.hits) if cache else 0
            if cache is not None:
                cache.current = q.label
            answer = ask(q.question)
            new_hits = cache.hits[hits:] if cache else []
            result.requests += 1
            result.model_calls += len(log.since(mark))
            result.answers_with_string += contains_answer(answer, q.answer)
            served = bool(new_hits)
            wrong = any(owner != q.label for _, owner, _ in new_hits)
            result.served += served
            result.wrong += wrong
            if wrong:
                result.wrong_ids.append(q.id)
            if q.kind == "paraphrase":
                result.paraphrases += 1
                result.paraphrases_served += served and not wrong
    finally:
        undo()
        if cache is not None:
            cache.close()
    return result


def run_check(
    frameworks: Iterable[str] = FRAMEWORKS,
    levels: Iterable[str] = LEVELS,
    questions: list[Question] | None = None,
    workdir: str | Path | None = None,
) -> list[LevelResult]:
    """Every (framework, level) run over the question set, each with a fresh cache."""
    questions = questions if questions is not None else load_rag_questions()
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="lean-rag-check-"))
    return [run_level(fw, level, questions, root) for fw in frameworks for level in levels]


def table(results: list[LevelResult]) -> list[str]:
    """Markdown table of :func:`run_check`'s results."""
    lines = [
        "| framework | cache | requests | model calls | served from cache | wrong answers served | "
        "paraphrases served | answers with the expected string |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {
        "plain": "none (baseline)",
        "llm": "LLM level, defaults",
        "question": "question level, defaults",
    }
    for r in results:
        para = f"{r.paraphrases_served} / {r.paraphrases}" if r.level != "plain" else "-"
        wrong = f"{r.wrong}" + (f" ({', '.join(r.wrong_ids)})" if r.wrong_ids else "")
        lines.append(
            f"| {r.framework} | {names[r.level]} | {r.requests} | {r.model_calls} | {r.served} | {wrong} | "
            f"{para} | {r.answers_with_string} / {r.requests} |"
        )
    return lines
