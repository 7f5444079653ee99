"""The framework-free question-level cache: namespaces from descriptions, entries, ledger."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from lean_plugins.cache import LeanCache
from lean_plugins.cache.question import (
    QuestionCache,
    Retrieval,
    RetrieverRegistry,
    callers_on_stack,
    collecting_context,
    describe,
    document_mark,
    question_namespace,
    report_llm_call,
    report_retrieval,
)
from lean_plugins.ledger import Ledger
from lean_plugins.tokens import count_tokens


class Opaque:
    def __init__(self, setting: int) -> None:
        self.setting = setting

    def __repr__(self) -> str:
        return f"<Opaque object at {hex(id(self))}>"


@dataclasses.dataclass
class Retriever:
    top_k: int
    api_key: str = "sk-secret"


def test_describe_is_the_same_for_equal_objects_and_leaves_out_addresses_and_secrets() -> None:
    a, b = describe({"x": Opaque(1), "s": {3, 1, 2}}), describe({"s": {2, 3, 1}, "x": Opaque(1)})
    assert a == b  # the memory address is not part of it; sets are sorted
    text = json.dumps(describe(Retriever(top_k=4)))
    assert "sk-secret" not in text and '"top_k": 4' in text
    assert describe(Retriever(top_k=4)) != describe(Retriever(top_k=2))


def test_describe_tells_functions_apart_by_code_and_closure() -> None:
    def make(rate: float):
        def compress(text: str) -> str:
            return text[: int(len(text) * rate)]

        return compress

    assert describe(make(0.5)) == describe(make(0.5))
    assert describe(make(0.5)) != describe(make(0.3))  # same code, other closure value
    assert describe(lambda t: t.upper()) != describe(lambda t: t.lower())


def test_namespaces_differ_by_config_tenant_and_label() -> None:
    base = question_namespace({"k": 4})
    assert base == question_namespace({"k": 4})
    assert len({base, question_namespace({"k": 2}), question_namespace({"k": 4}, tenant="acme"),
                question_namespace({"k": 4}, namespace="index-v2")}) == 4  # fmt: skip


@pytest.fixture()
def cache(tmp_path) -> LeanCache:
    return LeanCache(tmp_path / "cache")


def test_a_hit_books_the_pipeline_calls_it_avoided_once(cache) -> None:
    qc = QuestionCache(cache, namespace=question_namespace({"chain": 1}), model="gpt-4o-mini")
    context, usage = collecting_context()
    prompt = "Context: A year on Mars lasts 687 Earth days.\nQuestion: How long is a year on Mars?"
    context.run(report_llm_call, prompt, "687 Earth days")
    context.run(report_llm_call, prompt, "687 Earth days")  # a wrapper passing one call through
    report_llm_call("outside the context", "not counted")
    qc.store("How long is a year on Mars?", "687 Earth days", usage)
    with Ledger() as ledger:
        answer = qc.lookup("How long is a year on Mars?")
    assert answer is not None and answer.value == "687 Earth days" and answer.match == "exact"
    events = ledger.events
    assert len(events) == 1
    assert events[0].input_before == count_tokens(prompt)
    assert events[0].output_before == count_tokens("687 Earth days")
    assert events[0].meta["level"] == "question"


def test_paraphrase_hits_and_a_near_miss_does_not(cache) -> None:
    qc = QuestionCache(cache, namespace=question_namespace({"chain": 2}))
    qc.store("How long is a year on Mars?", "687 Earth days")
    hit = qc.lookup("What is the length of a year on Mars?")
    assert hit is not None and hit.match == "semantic" and hit.value == "687 Earth days"
    assert qc.lookup("How long is a day on Mars?") is None
    assert qc.lookup("How long is a year on Venus?") is None


def test_pipelines_and_tenants_never_share(cache) -> None:
    one = QuestionCache(cache, namespace=question_namespace({"k": 4}))
    other = QuestionCache(cache, namespace=question_namespace({"k": 1}))
    tenant = QuestionCache(cache, namespace=question_namespace({"k": 4}, tenant="acme"), tenant="acme")
    one.store("How old is the Sun?", "4.6 billion years")
    assert other.lookup("How old is the Sun?") is None
    assert tenant.lookup("How old is the Sun?") is None
    assert one.lookup("How old is the Sun?") is not None
    one.clear()
    assert one.lookup("How old is the Sun?") is None


def test_an_entry_of_the_wrong_shape_is_a_miss_and_one_warning(cache, caplog) -> None:
    namespace = question_namespace({"chain": 3})
    cache.put("How old is the Sun?", "not json", namespace=namespace)
    qc = QuestionCache(cache, namespace=namespace)
    with caplog.at_level(logging.WARNING, logger="lean_plugins.cache"):
        assert qc.lookup("How old is the Sun?") is None
    assert "unreadable question-level cache entry" in caplog.text


def test_bad_input_is_the_callers_error(cache) -> None:
    qc = QuestionCache(cache, namespace=question_namespace({}))
    with pytest.raises(TypeError, match="must be a str"):
        qc.lookup(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="LeanCache"):
        QuestionCache("not a cache", namespace="x")  # type: ignore[arg-type]
    qc.store("How old is the Sun?", "4.6 billion years")
    assert qc.lookup("How old is the Sun?") is not None  # the cache still works after it


def test_no_ledger_event_when_the_cache_does_not_record(tmp_path) -> None:
    qc = QuestionCache(LeanCache(tmp_path, record_hits=False), namespace=question_namespace({}))
    qc.store("How old is the Sun?", "4.6 billion years")
    with Ledger() as ledger:
        assert qc.lookup("How old is the Sun?") is not None
    assert ledger.events == []


@pytest.mark.redis
def test_two_app_processes_share_answers_on_redis() -> None:
    import os
    import uuid

    url = os.environ.get("LEAN_PLUGINS_REDIS_URL")
    if not url:
        pytest.skip("LEAN_PLUGINS_REDIS_URL is not set; scripts/test.sh starts Redis and sets it")
    pytest.importorskip("redis")
    namespace = question_namespace({"pipeline": uuid.uuid4().hex})
    writer = QuestionCache(LeanCache(backend="redis", url=url), namespace=namespace)
    reader = QuestionCache(LeanCache(backend="redis", url=url), namespace=namespace)
    try:
        writer.store("How long is a year on Mars?", "687 Earth days")
        hit = reader.lookup("What is the length of a year on Mars?")
        assert hit is not None and hit.value == "687 Earth days" and hit.match == "semantic"
        assert reader.lookup("How long is a day on Mars?") is None
    finally:
        writer.clear()
        writer.cache.close()
        reader.cache.close()


# -- freshness ------------------------------------------------------------------------------
class Shelf:
    """A plain retriever: returns the documents whose text holds a word of the query."""

    def __init__(self, docs: dict[str, str]) -> None:
        self.docs = docs
        self.runs = 0

    def retrieve(self, query: str) -> list[tuple[str, str]]:
        self.runs += 1
        report_retrieval(self, query, self.marks(query), outer=[c for c, _ in callers_on_stack(Shelf, frozenset({"retrieve"}))[1:]])
        return self.marks(query)

    def marks(self, query: str) -> list[tuple[str, str]]:
        words = set(query.lower().strip("?").split())
        return [document_mark(i, t) for i, t in sorted(self.docs.items()) if words & set(t.lower().split())]


class Fanout(Shelf):
    """A retriever that asks two others (as an ensemble or multi-query retriever does)."""

    def __init__(self, parts: list[Shelf]) -> None:
        super().__init__({})
        self.parts = parts

    def retrieve(self, query: str) -> list[tuple[str, str]]:
        marks = [m for p in self.parts for m in p.retrieve(query)]
        report_retrieval(self, query, marks)
        return marks


def rerun(retriever: Shelf, retrieval: Retrieval) -> list[tuple[str, str]]:
    return retriever.marks(retrieval.query)


def answer_with(shelf: Shelf, qc: QuestionCache, question: str) -> None:
    context, usage = collecting_context()
    context.run(shelf.retrieve, question)
    qc.store(question, f"answer from {shelf.docs}", usage)


def test_a_document_mark_keeps_the_id_and_hashes_content_and_metadata() -> None:
    same = document_mark("a", "Mars has two moons.")
    assert same == document_mark("a", "Mars has two moons.") and same[0] == "a"
    assert same[1] != document_mark("a", "Mars has three moons.")[1]
    assert same[1] != document_mark("a", "Mars has two moons.", {"date": "2020"})[1]


def test_a_hit_is_served_only_while_its_retrievals_return_the_same_content(cache) -> None:
    shelf = Shelf({"m": "Mars has two moons", "v": "Venus has no moons"})
    registry, qc = RetrieverRegistry(), QuestionCache(cache, namespace=question_namespace({"fresh": 1}))
    registry.register(shelf)
    answer_with(shelf, qc, "How many moons has Mars?")
    holds = lambda r: registry.holds(r, rerun)  # noqa: E731
    hit = qc.lookup("How many moons has Mars?", holds=holds)
    assert hit is not None and [r.query for r in hit.retrievals] == ["How many moons has Mars?"]
    assert qc.lookup("How many moons has Mars?") is None  # a dependent entry, nothing to check it with
    shelf.docs["m"] = "Mars has three moons"  # edited under the same id
    assert qc.lookup("How many moons has Mars?", holds=holds) is None and qc.stale == 2
    shelf.docs["m"] = "Mars has two moons"  # back as it was: the entry holds again
    assert qc.lookup("How many moons has Mars?", holds=holds) is not None
    del shelf.docs["v"]  # a document the retrieval returned is gone
    assert qc.lookup("How many moons has Mars?", holds=holds) is None
    assert RetrieverRegistry().holds(hit.retrievals, rerun) is False  # a retriever never met: a miss


def test_only_the_innermost_retrievals_are_recorded_and_checked(cache) -> None:
    left, right = Shelf({"a": "Mars moons"}), Shelf({"b": "moons of Jupiter"})
    fanout, qc = Fanout([left, right]), QuestionCache(cache, namespace=question_namespace({"fresh": 2}))
    answer_with(fanout, qc, "Which moons?")
    registry = RetrieverRegistry()
    registry.register(left)
    hit = qc.lookup("Which moons?", holds=lambda r: registry.holds(r, rerun))
    assert hit is None  # the right-hand retriever is not known: cannot be checked
    registry.register(right)
    hit = qc.lookup("Which moons?", holds=lambda r: registry.holds(r, rerun))
    assert hit is not None and len(hit.retrievals) == 2  # the two parts, not the fan-out


def test_an_answer_that_cannot_be_checked_is_not_cached(cache, caplog) -> None:
    qc = QuestionCache(cache, namespace=question_namespace({"fresh": 3}))
    context, usage = collecting_context()
    context.run(report_retrieval, None, "How old is the Sun?", [document_mark("s", "4.6 billion years")])
    with caplog.at_level(logging.INFO, logger="lean_plugins.cache"):
        qc.store("How old is the Sun?", "4.6 billion years", usage)
    assert cache.count(qc.namespace) == 0 and "could not be found" in caplog.text
    context, usage = collecting_context()
    context.run(report_retrieval, Shelf({}), "How old is the Sun?", [], {"filter": object()})
    qc.store("How old is the Sun?", "4.6 billion years", usage)
    assert cache.count(qc.namespace) == 0


def test_a_failing_check_is_a_miss_with_a_warning(cache, caplog) -> None:
    shelf = Shelf({"m": "Mars has two moons"})
    registry, qc = RetrieverRegistry(), QuestionCache(cache, namespace=question_namespace({"fresh": 4}))
    registry.register(shelf)
    answer_with(shelf, qc, "How many moons has Mars?")

    def broken(retriever: Shelf, retrieval: Retrieval) -> list[tuple[str, str]]:
        raise ConnectionError("vector store down")

    with caplog.at_level(logging.WARNING, logger="lean_plugins.cache"):
        assert qc.lookup("How many moons has Mars?", holds=lambda r: registry.holds(r, broken)) is None
    assert "vector store down" in caplog.text

    async def arerun(retriever: Shelf, retrieval: Retrieval) -> list[tuple[str, str]]:
        return rerun(retriever, retrieval)

    import asyncio

    hit = asyncio.run(qc.alookup("How many moons has Mars?", aholds=lambda r: registry.aholds(r, arerun)))
    assert hit is not None


def test_the_registry_keeps_one_of_equal_retrievers_and_a_bounded_number_per_class() -> None:
    registry = RetrieverRegistry()
    settings = Retriever(top_k=3)  # a dataclass: equal settings compare equal
    registry.register(settings)
    registry.register(Retriever(top_k=3))
    assert registry.candidates("tests.core.test_cache_question.Retriever") == [settings]
    shelves = [Shelf({str(i): "x"}) for i in range(20)]  # one new retriever per call
    for shelf in shelves:
        registry.register(shelf)
    kept = registry.candidates("tests.core.test_cache_question.Shelf")
    assert kept == shelves[-RetrieverRegistry.MAX_PER_SOURCE :]
