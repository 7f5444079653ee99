"""The output budget as a stopping criterion of LeanLocalLLM, on the real stories260K model."""

from __future__ import annotations

import re

import pytest

from lean_plugins.budget import OutputBudget, UsageAccountant
from lean_plugins.ledger import Ledger
from tests.budget_helpers import STORY_START, stories_llm_fixture

pytestmark = pytest.mark.slow


stories_llm = pytest.fixture(scope="module", name="stories_llm")(stories_llm_fixture)


@pytest.fixture(scope="module")
def prompt(stories_llm) -> list[int]:
    """Token ids: BOS then the story start, as llama2.c prompts the model."""
    return [1, *stories_llm.tokenizer(STORY_START).input_ids]


@pytest.fixture(scope="module")
def plain(stories_llm, prompt):
    """Greedy generation without a budget: the full answer."""
    return stories_llm.generate(prompt, max_new_tokens=200)


def test_budget_stop_is_exact_to_the_token(stories_llm, prompt, plain) -> None:
    assert plain.finish_reason == "natural" and len(plain.token_ids) > 60
    budget = OutputBudget(40, soft_window=0.0, model="stories260K", accountant=UsageAccountant())
    with Ledger() as ledger:
        result = budget.generate_local(stories_llm, prompt)
    assert result.stop_reason == "budget"
    assert result.tokens_used == result.tokens_generated == 40
    expected = stories_llm.tokenizer.decode(plain.token_ids[:40], skip_special_tokens=True)
    assert result.text == expected, "the partial text is the first 40 tokens of the full answer"
    assert ledger.totals("llm")["output_after"] == 40
    assert ledger.totals("budget")["output_after"] == 40


def test_soft_stop_ends_on_a_sentence_inside_the_window(stories_llm, prompt, plain) -> None:
    tok = stories_llm.tokenizer
    ends = [
        n
        for n in range(1, len(plain.token_ids))
        if re.search(r"[.!?][\"']?\Z", tok.decode(plain.token_ids[:n], skip_special_tokens=True))
    ]
    n_end = ends[1]  # the second sentence end of the story
    budget_tokens = n_end + 3  # that end lies in the final 15% of this budget
    result = OutputBudget(budget_tokens, record_usage=False).generate_local(stories_llm, prompt)
    assert result.stop_reason == "soft_budget"
    assert result.tokens_used == n_end and result.tokens_generated == budget_tokens
    assert result.text == tok.decode(plain.token_ids[:n_end], skip_special_tokens=True)


def test_natural_end_within_the_budget(stories_llm, prompt, plain) -> None:
    result = OutputBudget(200, record_usage=False).generate_local(stories_llm, prompt)
    assert result.stop_reason == "natural" and result.text == plain.text


def test_confidence_stop_saves_tokens_and_keeps_a_prefix(stories_llm, prompt, plain) -> None:
    budget = OutputBudget(200, confidence_threshold=0.2, record_usage=False)
    result = budget.generate_local(stories_llm, prompt)
    assert result.stop_reason == "confidence"
    assert result.tokens_generated < plain.completion_tokens
    assert plain.text.startswith(result.text) and re.search(r"[.!?\n][\"']?\s*$", result.text)


def test_streamed_text_is_a_prefix_of_the_result(stories_llm, prompt) -> None:
    for budget in (
        OutputBudget(50, record_usage=False),
        OutputBudget(200, confidence_threshold=0.2, record_usage=False),
    ):
        shown = ""
        stream = budget.stream_local(stories_llm, prompt)
        while True:
            try:
                piece = next(stream)
            except StopIteration as stop:
                result = stop.value
                break
            shown += piece
        assert shown == result.text and result.stopped
