"""The semantic guard on real questions, and the adversarial set through the default LeanCache.

The adversarial set (tests/data/cache_adversarial.jsonl, written for these tests; see
tests/data/README.md) holds questions that differ in one detail that changes the answer, and
true paraphrases as controls. Nothing was fitted or tuned on it.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from lean_plugins.cache.guard import CHECKS, RULES_FILE, SemanticGuard
from lean_plugins.errors import ConfigurationError

ADVERSARIAL = Path(__file__).resolve().parents[1] / "data" / "cache_adversarial.jsonl"
CATEGORIES = {
    "negation", "negating_prefix", "antonym", "comparative", "number", "sign", "operator", "unit",
    "currency", "code", "case_in_code", "swapped_order", "quantifier", "modal", "date", "weekday",
    "relative_time", "pronoun", "entity",
}  # fmt: skip
#: Share of paraphrase controls the default cache must serve; the floor keeps a never-hitting
#: cache from passing. The cross-encoder verifier (issue 26), retrained with the cosine input,
#: serves 18 of these 45 (the first one 7, the logistic one 16; docs/cache-verifier.md). The
#: floor sits a little under that level, not at a target.
PARAPHRASE_FLOOR = 0.35


def adversarial_rows() -> list[dict]:
    return [json.loads(line) for line in ADVERSARIAL.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def guard() -> SemanticGuard:
    return SemanticGuard()


# The findings of issue 13: pairs the default cache served. Each must be refused by its rule.
ISSUE_PAIRS = [
    ("What is 12 + 5?", "What is 12 - 5?", "operators"),
    ("Is 7 > 3?", "Is 7 < 3?", "operators"),
    ("What does = do in Python?", "What does == do in Python?", "operators"),
    ("Is x != y in Python?", "Is x == y in Python?", "operators"),
    ("How much is $100 in yen?", "How much is €100 in yen?", "currencies"),
    ("Is 40 °C cold?", "Is -40 °C cold?", "numbers"),
    ("What does `WHERE id IN (1, 2)` do?", "What does `WHERE id in (1, 2)` do?", "code"),
    ("Is it safe to eat raw eggs?", "Is it unsafe to eat raw eggs?", "negating prefix"),
    ("How do I make my code thread-safe?", "How do I make my code thread-unsafe?", "negating prefix"),
    ("Should I use global variables?", "Should I avoid global variables?", "antonyms"),
    ("Which is bigger, Mars or Venus?", "Which is smaller, Mars or Venus?", "antonyms"),
    ("How long is a day on Mars?", "How long is a year on Mars?", "units"),
    ("What does Alice think of Bob?", "What does Bob think of Alice?", "order"),
    ("Convert 100 USD to EUR", "Convert 100 EUR to USD", "order"),
    ("Do all birds fly?", "Do some birds fly?", "quantifiers"),
    ("Must I file taxes this year?", "May I file taxes this year?", "modals"),
    ("What is the weather tomorrow?", "What was the weather yesterday?", "time"),
    ("Is the museum open on Monday?", "Is the museum open on Friday?", "time"),
    ("What did he say about the plan?", "What did she say about the plan?", "gender"),
    ("Is rice healthy?", "Is rice healthier?", "degree"),
    ("What is the population of Kerala?", "What is the population of Goa?", "entities"),
]


@pytest.mark.parametrize(("cached", "query", "rule"), ISSUE_PAIRS)
def test_guard_refuses_a_different_question_by_its_rule(
    guard: SemanticGuard, cached: str, query: str, rule: str
) -> None:
    assert guard.refusal(query, cached) == rule
    assert guard.refusal(cached, query) == rule
    assert not guard.agrees(query, cached)


@pytest.mark.parametrize(
    ("cached", "query"),
    [
        ("How tall is the Eiffel Tower?", "What is the height of the Eiffel Tower?"),
        ("How can I learn Python quickly?", "How do I learn Python quickly?"),
        ("What is the difference between Java and Python?", "What is the difference between Python and Java?"),
        ("Python: how to reverse a list", "How to reverse a list in Python"),
        ("What are some good books on chess?", "What are good books on chess?"),
        ("How should I prepare for an interview?", "How can I prepare for an interview?"),
        ("What is 40 degrees Celsius in Fahrenheit?", "What is 40 °C in Fahrenheit?"),
        ("What is 9 plus 3?", "What is 9 + 3?"),
        ("How much is 100 dollars in euros?", "How much is $100 in euros?"),
        ("What is a non-profit?", "What is a nonprofit?"),
        ("How many calories do I burn a day?", "How many calories do I burn daily?"),
    ],
)
def test_guard_lets_a_paraphrase_through(guard: SemanticGuard, cached: str, query: str) -> None:
    assert guard.refusal(query, cached) is None


def test_a_modal_that_opens_a_question_after_a_leading_clause_is_the_asked_one(guard: SemanticGuard) -> None:
    # The same question with its clause moved: the modal still opens the question.
    assert guard.refusal("When cooking pasta, should I salt the water?", "Should I salt the water when cooking pasta?") is None
    assert guard.refusal("After a workout, what should I eat?", "What should I eat after a workout?") is None
    # A different modal after the clause is still a different question.
    assert guard.refusal("When cooking pasta, can I salt the water?", "Should I salt the water when cooking pasta?") == "modals"
    assert guard.refusal("After a workout, what can I eat?", "What should I eat after a workout?") == "modals"


def test_signs_dates_and_code_spans(guard: SemanticGuard) -> None:
    assert guard.refusal("Is 12-5 a score?", "Is 12 - 5 a score?") == "numbers"  # a range, not a sum
    assert guard.refusal("What happened on 2024-03-01?", "What happened on 2024-01-03?") == "numbers"
    assert guard.refusal("What does `git reset --hard` do?", "What does `git reset --soft` do?") == "code"
    # A code span found bare in the other question is the same identifier.
    assert guard.refusal("What does `load_dataset` return?", "What does load_dataset return?") is None
    # Case is meaning in code, not in prose.
    assert guard.refusal("Why does myVar = 1 fail?", "Why does myvar = 1 fail?") == "code"
    assert guard.refusal("What does NASA do?", "What does Nasa do?") is None
    assert guard.refusal("How do I learn C++?", "How do I learn c++?") is None


@pytest.mark.parametrize(
    ("cached", "query"),
    [  # issue 26: written with brackets or braces, the symbols' order is the meaning
        ('{"a": 1}', "{'a': 1}"),
        ("What does x[1:] return?", "What does x[:1] return?"),
        ("x[:-1]", "x[-1:]"),
        ("Is [1, 2,] valid JSON?", "Is [1, 2] valid JSON?"),
        ("How does df.iloc[:, 1:] work?", "How does df.iloc[1:, :] work?"),
    ],
)
def test_notation_refuses_reordered_brackets_quotes_and_slices(guard: SemanticGuard, cached: str, query: str) -> None:
    assert guard.refusal(query, cached) == "notation"
    assert guard.refusal(cached, query) == "notation"


def test_notation_passes_the_same_notation_and_prose(guard: SemanticGuard) -> None:
    assert guard.refusal("What does arr[0] return", "what does arr[0] return?") is None
    assert guard.refusal("Why is France's GDP (nominal) high?", "Why is the GDP of France (nominal) high?") is None


def test_skip_switches_a_check_off_and_unknown_names_fail(guard: SemanticGuard) -> None:
    lenient = SemanticGuard(skip=["antonyms"])
    assert lenient.refusal("Should I use it?", "Should I avoid it?") is None
    assert guard.refusal("Should I use it?", "Should I avoid it?") == "antonyms"
    with pytest.raises(ConfigurationError, match="unknown checks"):
        SemanticGuard(skip=["antonym"])
    assert len(set(CHECKS)) == len(CHECKS)


def test_rules_ship_as_package_data() -> None:
    import tomllib

    from lean_plugins.paths import package_data

    assert json.loads(package_data(RULES_FILE).read_text(encoding="utf-8"))["antonyms"]
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8"))
    assert "*.json" in pyproject["tool"]["setuptools"]["package-data"]["lean_plugins.data"]


def test_adversarial_set_covers_every_category() -> None:
    rows = adversarial_rows()
    different = [r for r in rows if not r["same_meaning"]]
    paraphrases = [r for r in rows if r["same_meaning"]]
    assert len(different) >= 150 and len(paraphrases) >= 40
    assert {r["category"] for r in different} == CATEGORIES
    assert all(r["category"] == "paraphrase" for r in paraphrases)
    assert len({(r["cached"], r["query"]) for r in rows}) == len(rows), "every pair differs"
    assert all(r["cached"] != r["query"] for r in rows)


@cache
def _encoder_memo() -> dict[str, np.ndarray]:
    """MiniLM vectors of every question of the set, in one batch (the shared encoder)."""
    from lean_plugins.embeddings import get_encoder

    texts = sorted({t for r in adversarial_rows() for t in (r["cached"], r["query"])})
    return dict(zip(texts, get_encoder().encode(texts), strict=True))


def test_default_cache_serves_no_different_question_and_most_paraphrases(tmp_path: Path) -> None:
    """Cache the first question of each pair, ask the second: through the default LeanCache
    (exact + semantic, shipped guard and verifier). Vectors are the shared MiniLM encoder's,
    computed in one batch up front (the cache normalises them as it would its own)."""
    pytest.importorskip("gptcache")
    pytest.importorskip("faiss")
    from lean_plugins.cache import LeanCache

    vectors = _encoder_memo()
    cache_ = LeanCache(path=tmp_path, record_hits=False, embedding=lambda texts: np.stack([vectors[t] for t in texts]))
    served: Counter[str] = Counter()
    wrong = []
    rows = adversarial_rows()
    for i, row in enumerate(rows):
        namespace = f"pair-{i}"  # one fresh store per pair: only its own first question is cached
        cache_.put(row["cached"], f"answer {i}", namespace=namespace)
        hit = cache_.lookup(row["query"], namespace=namespace)
        if hit is not None:
            served[row["category"]] += 1
            if not row["same_meaning"]:
                wrong.append((row["category"], row["cached"], row["query"], hit.match))
    assert wrong == [], f"{len(wrong)} different questions served: {wrong}"
    paraphrases = sum(r["same_meaning"] for r in rows)
    assert served["paraphrase"] / paraphrases >= PARAPHRASE_FLOOR, served
