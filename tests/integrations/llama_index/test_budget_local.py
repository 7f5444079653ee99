"""with_output_budget around our own LlamaIndex LeanLocalLLM: the budget is its stopping criterion."""

from __future__ import annotations

import pytest

from lean_plugins.budget import OutputBudget, UsageAccountant
from lean_plugins.ledger import Ledger
from tests.budget_helpers import STORY_START, stories_llm_fixture

pytestmark = pytest.mark.slow


core_llm = pytest.fixture(scope="module", name="core_llm")(stories_llm_fixture)


@pytest.fixture(scope="module")
def local_llm(core_llm):
    module = pytest.importorskip("lean_plugins.llama_index.local_llm")
    return module.LeanLocalLLM(client=core_llm, model="stories260K", max_new_tokens=300)


def test_budget_stops_our_model_exactly_inside_generation(core_llm, local_llm) -> None:
    from lean_plugins.llama_index import with_output_budget

    plain = core_llm.generate(STORY_START, max_new_tokens=80)
    assert len(plain.token_ids) > 12
    accountant = UsageAccountant()
    budgeted = with_output_budget(local_llm, OutputBudget(12, soft_window=0.0, accountant=accountant))
    with Ledger() as ledger:
        response = budgeted.complete(STORY_START)
    assert response.additional_kwargs["stop_reason"] == "budget"
    assert response.text == core_llm.tokenizer.decode(plain.token_ids[:12], skip_special_tokens=True)
    assert response.additional_kwargs["output_budget"]["tokens_generated"] == 12
    assert ledger.totals("llm")["output_after"] == 12 and accountant.totals().calls == 1


def test_confidence_stop_through_the_wrapper(core_llm, local_llm) -> None:
    from lean_plugins.llama_index import with_output_budget

    prompt = STORY_START
    plain = core_llm.generate(prompt, max_new_tokens=200)
    budget = OutputBudget(200, confidence_threshold=0.2, record_usage=False)
    responses = list(with_output_budget(local_llm, budget).stream_complete(prompt))
    final = responses[-1]
    assert "".join(r.delta for r in responses) == final.text
    assert plain.text.startswith(final.text)
    meta = final.additional_kwargs["output_budget"]
    assert meta["tokens_generated"] <= plain.completion_tokens
