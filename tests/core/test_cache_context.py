"""LeanCache core applies the context rules itself (lean_plugins.cache.keys.split_prompt): a
prompt that carries context is matched by meaning on its question only, within identical
context; long prompts and pasted text with an instruction are served on exact repeats only.
Real SQLite + FAISS; real MiniLM where the rule depends on it, a tiny deterministic embedding
where it does not."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gptcache")
pytest.importorskip("faiss")

from lean_plugins.cache import LeanCache
from lean_plugins.ledger import Ledger
from lean_plugins.tokens import count_tokens
from tests.cache_prompts import EMAIL, EMAIL_PAIRS, LONG_PAIRS, RAG_FRANCE, RAG_GERMANY, TERMS


def test_the_examples_are_what_the_findings_say() -> None:
    assert len(TERMS.split()) >= 300 and len(re.findall(r"\w+", EMAIL)) == 56 and "\n" not in EMAIL


@pytest.fixture(scope="module")
def minilm_cache(tmp_path_factory: pytest.TempPathFactory) -> LeanCache:
    """The default cache (MiniLM, guard, verifier), one per module: each test uses its own namespace."""
    cache = LeanCache(path=tmp_path_factory.mktemp("minilm"), record_hits=False)
    yield cache
    cache.close()


def test_a_rag_prompt_in_one_string_is_not_served_to_another_question(minilm_cache: LeanCache) -> None:
    # Old code: the whole prompts (both names on both sides) matched: "Paris" served for Germany.
    minilm_cache.put(RAG_FRANCE, "Paris", namespace="rag")
    assert minilm_cache.get(RAG_GERMANY, namespace="rag") is None
    hit = minilm_cache.lookup(RAG_FRANCE, namespace="rag")
    assert hit is not None and (hit.response, hit.match, hit.cached_prompt) == ("Paris", "exact", RAG_FRANCE)


@pytest.mark.parametrize(
    ("first", "second"),
    LONG_PAIRS + EMAIL_PAIRS,
    ids=["long", "long-paragraph", "long-instruction-first", "long-question", "email-following", "email-this", "email-paragraph"],
)
def test_long_prompts_and_pasted_text_are_never_served_each_others_answer(
    minilm_cache: LeanCache, first: str, second: str
) -> None:
    # Old code: served both ways (the difference drowns in the shared words or falls outside
    # MiniLM's 256-word-piece window).
    namespace = hashlib.sha256(first.encode()).hexdigest()[:12]
    minilm_cache.put(first, "answer to the first", namespace=namespace)
    assert minilm_cache.get(second, namespace=namespace) is None
    minilm_cache.put(second, "answer to the second", namespace=namespace)
    assert minilm_cache.get(first, namespace=namespace) == "answer to the first"
    assert minilm_cache.get(second, namespace=namespace) == "answer to the second"


def test_put_many_applies_the_same_rules(minilm_cache: LeanCache) -> None:
    minilm_cache.put_many([RAG_FRANCE, EMAIL_PAIRS[0][0]], ["Paris", "summary"], namespace="many")
    assert minilm_cache.get(RAG_GERMANY, namespace="many") is None
    assert minilm_cache.get(EMAIL_PAIRS[0][1], namespace="many") is None
    assert minilm_cache.get(RAG_FRANCE, namespace="many") == "Paris"
    assert minilm_cache.get(EMAIL_PAIRS[0][0], namespace="many") == "summary"


# -- the rule's mechanics, with a tiny deterministic embedding -----------------------------------
_WORD = re.compile(r"[a-z]+")


def bag_of_words(texts: Sequence[str]) -> np.ndarray:
    """Lower-cased words hashed into 64 dimensions: equal word bags give cosine 1."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in _WORD.findall(text.lower()):
            out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1.0
    return out


@pytest.fixture
def bow_cache(tmp_path: Path) -> LeanCache:
    cache = LeanCache(path=tmp_path, embedding=bag_of_words, guard=False, verifier=False, threshold=0.8, overlap_penalty=0.0)
    yield cache
    cache.close()


def test_a_paraphrase_is_served_within_identical_context_only(bow_cache: LeanCache) -> None:
    context = "Context: The Eiffel Tower is 330 metres tall.\n\nQuestion: "
    bow_cache.put(context + "How tall is the Eiffel Tower?", "330 m")
    hit = bow_cache.lookup(context + "how tall is the eiffel tower")
    assert hit is not None and (hit.response, hit.match) == ("330 m", "semantic")
    # the same question in other context (most words shared): another scope, never served.
    # Old code: the whole prompts have equal word bags (digits are not words here): served.
    other = context.replace("330", "324")
    assert bow_cache.get(other + "How tall is the Eiffel Tower?") is None


def test_the_question_alone_is_compared_not_the_shared_context(bow_cache: LeanCache) -> None:
    context = "Context: " + " ".join(f"fact {w} about towers and bridges" for w in "abcdefghij") + "\n\nQuestion: "
    bow_cache.put(context + "How tall is the Eiffel Tower?", "330 m")
    # Old code: the shared context made the whole prompts' cosine > 0.8.
    assert bow_cache.get(context + "Who designed the Golden Gate Bridge?") is None


def test_a_hit_books_the_whole_prompt_as_the_input_saved(tmp_path: Path) -> None:
    cache = LeanCache(path=tmp_path, mode="exact")
    cache.put(RAG_FRANCE, "Paris")
    with Ledger() as ledger:
        assert cache.get(RAG_FRANCE) == "Paris"
    (event,) = ledger.events
    assert event.input_before == count_tokens(RAG_FRANCE)
    cache.close()
