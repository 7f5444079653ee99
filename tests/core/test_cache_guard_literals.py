"""Issue 26, user-style attack: details that MiniLM cannot see or that lemma folding erases.

Emoji and other symbols are invisible to the encoder (cosine 1.0 between "Is 😀 happy or sad?"
and "Is 😢 happy or sad?"), identifiers (emails, handles, URLs, paths) and quoted text must match
exactly, and a word asked *about* ("the word banana", "the past tense of run") is the question
itself, so its inflection is not folded away. Each pair below was served by the default core
LeanCache before this fix; each must now be refused by the named check, in both orders, and the
same details written identically on both sides must still pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lean_plugins.cache.guard import SemanticGuard

ATTACK_PAIRS = [
    ("Is 😀 happy or sad?", "Is 😢 happy or sad?", "symbols"),
    ("What does the 🍎 emoji mean?", "What does the 🍆 emoji mean?", "symbols"),
    ("What is the meaning of the emoji 🙏?", "What is the meaning of the emoji 🙌?", "symbols"),
    ("Is x ≤ 5 the same as x < 6 for integers?", "Is x ≥ 5 the same as x < 6 for integers?", "operators"),
    (
        "Extract the email from: contact jane.doe@acme.com for details",
        "Extract the email from: contact john.doe@acme.com for details",
        "identifiers",
    ),
    ("Look up the customer with email mary.smyth@shop.io", "Look up the customer with email mary.smith@shop.io", "identifiers"),
    (
        "Given the text 'The cat sat on the mat', what did the cat sit on?",
        "Given the text 'The cat sat on the rug', what did the cat sit on?",
        "quotes",
    ),
    ("How many letters are in the word banana?", "How many letters are in the word bananas?", "mentioned words"),
    ("What is the past tense of run?", "What is the past tense of ran?", "mentioned words"),
]

#: The same emails, quotes, emoji, handles and words asked about on both sides: paraphrases.
SAME_LITERALS = [
    ("Extract the email from: contact jane.doe@acme.com for details", "Get the email out of: contact jane.doe@acme.com for details"),
    ("Look up the customer with email mary.smith@shop.io", "Find the customer whose email is mary.smith@shop.io"),
    ("Send a reminder to bob@example.org tomorrow", "Send bob@example.org a reminder tomorrow"),
    ("What does the email Jane.Doe@Acme.com belong to?", "Who does the email jane.doe@acme.com belong to?"),
    ("Given the text 'The cat sat on the mat', what did the cat sit on?", "In the text 'The cat sat on the mat', what did the cat sit on?"),
    ('Translate "good morning" into French', 'How do I say "good morning" in French?'),
    ("What does 'carpe diem' mean?", "What is the meaning of 'carpe diem'?"),
    ("Is “to be or not to be” from Hamlet?", "Does “to be or not to be” come from Hamlet?"),
    ("Summarise 'the quick brown fox jumps over the lazy dog'", "Summarize 'The quick brown fox jumps over the lazy dog'"),
    ("Is 😀 happy or sad?", "Is 😀 sad or happy?"),
    ("What does the 🍎 emoji mean?", "What is the meaning of the 🍎 emoji?"),
    ("What does ❤️ mean in a text message?", "What does ❤ mean in a text message?"),
    ("Is x ≤ 5 the same as x < 6 for integers?", "For integers, is x ≤ 5 the same as x < 6?"),
    ("Is x <= 5 the same as x < 6 for integers?", "Is x ≤ 5 the same as x < 6 for integers?"),
    ("How many letters are in the word banana?", "How many letters does the word banana have?"),
    ("What is the past tense of run?", "What's the past tense of run?"),
    ("What is the plural of mouse?", "What is the plural form of mouse?"),
    ("How do you spell necessary?", "How is necessary spelled?"),
    ("Who is @elonmusk on Twitter?", "Who is the Twitter user @elonmusk?"),
    ("What is on https://example.com/docs/start?", "What can I find on https://example.com/docs/start?"),
    ("Why does /usr/local/bin not exist on my Mac?", "On my Mac, why does /usr/local/bin not exist?"),
    ("What is the capital of France?", "Which city is the capital of France?"),
    ("Is it the person´s car?", "Is it the person's car?"),
    ("What is 8 ÷ 2?", "What is 8 / 2?"),
]

#: Other identifiers and literals of the same kinds, each differing in one detail.
MORE_DIFFERENT = [
    ("Who is @elonmusk on Twitter?", "Who is @elonmask on Twitter?", "identifiers"),
    ("What is on https://example.com/docs/setup?", "What is on https://example.com/docs/billing?", "identifiers"),
    ("Why does /usr/local/bin not exist?", "Why does /usr/local/lib not exist?", "identifiers"),
    ("What is the status of order ORD-1234-AB?", "What is the status of order ORD-1234-AC?", "entities"),
    ("Open C:\\Users\\ann\\notes.txt", "Open C:\\Users\\ann\\todo.txt", "identifiers"),
    ('What does "hello" mean in Spanish?', 'What does "hallo" mean in Spanish?', "quotes"),
    ("What is the plural of mouse?", "What is the plural of mice?", "mentioned words"),
    ("What is a synonym of happy?", "What is a synonym of happily?", "mentioned words"),
    ("How do you spell necessary?", "How do you spell necessarily?", "mentioned words"),
    ("What does 👍🏻 mean?", "What does 👍🏿 mean?", "symbols"),
    ("Is 2 ≠ 3?", "Is 2 = 3?", "operators"),
    ("What does → mean in logic?", "What does ← mean in logic?", "symbols"),
    ("What is x² + 1?", "What is x³ + 1?", "symbols"),
    ("Is ½ cup the same as 4 tablespoons?", "Is ¼ cup the same as 4 tablespoons?", "symbols"),
    ("What does ÷ mean: 8 ÷ 2?", "What does × mean: 8 × 2?", "operators"),
]


@pytest.fixture(scope="module")
def guard() -> SemanticGuard:
    return SemanticGuard()


@pytest.mark.parametrize(("cached", "query", "rule"), ATTACK_PAIRS + MORE_DIFFERENT)
def test_guard_refuses_a_changed_literal_in_both_orders(guard: SemanticGuard, cached: str, query: str, rule: str) -> None:
    assert guard.refusal(query, cached) == rule
    assert guard.refusal(cached, query) == rule


@pytest.mark.parametrize(("cached", "query"), SAME_LITERALS)
def test_guard_passes_the_same_literals_written_on_both_sides(guard: SemanticGuard, cached: str, query: str) -> None:
    assert guard.refusal(query, cached) is None
    assert guard.refusal(cached, query) is None


def test_default_core_cache_misses_every_attack_pair(tmp_path: Path) -> None:
    """The issue's reproduction: put the first question, ask the second, on the default LeanCache
    (shared MiniLM encoder, shipped guard and verifier). It served all nine before."""
    pytest.importorskip("faiss")
    from lean_plugins.cache import LeanCache

    cache_ = LeanCache(path=tmp_path, record_hits=False)
    served = []
    for i, (cached, query, _) in enumerate(ATTACK_PAIRS):
        for first, second in ((cached, query), (query, cached)):
            namespace = f"pair-{i}-{first == cached}"
            cache_.put(first, f"answer for {first}", namespace=namespace)
            if cache_.lookup(second, namespace=namespace) is not None:
                served.append((first, second))
    assert served == []
    # The cache still serves an exact repeat (the miss above is the guard, not a broken cache).
    assert cache_.lookup(ATTACK_PAIRS[0][0], namespace="pair-0-True") is not None
