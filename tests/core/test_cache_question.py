"""The framework-free question-level cache: namespaces from descriptions, entries, ledger."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from lean_plugins.cache import LeanCache
from lean_plugins.cache.question import (
    QuestionCache,
    collecting_context,
    describe,
    question_namespace,
    report_llm_call,
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
