"""with_output_budget around our own LeanLLM: the budget is the model's stopping criterion."""

from __future__ import annotations

import pytest

from lean_plugins.budget import OutputBudget, UsageAccountant
from lean_plugins.ledger import Ledger
from tests.budget_helpers import STORY_START, stories_llm_fixture

pytestmark = pytest.mark.slow


core_llm = pytest.fixture(scope="module", name="core_llm")(stories_llm_fixture)


@pytest.fixture(scope="module")
def lean_llm(core_llm):
    lc_llm = pytest.importorskip("lean_plugins.langchain.llm")
    return lc_llm.LeanLLM(model="stories260K", client=core_llm, max_tokens=300)


def test_budget_stops_our_model_exactly_inside_generation(core_llm, lean_llm) -> None:
    from lean_plugins.langchain import with_output_budget

    plain = core_llm.generate(STORY_START, max_new_tokens=80)
    assert len(plain.token_ids) > 12
    accountant = UsageAccountant()
    budgeted = with_output_budget(lean_llm, OutputBudget(12, soft_window=0.0, accountant=accountant))
    with Ledger() as ledger:
        text = budgeted.invoke(STORY_START)
    assert text.stop_reason == "budget"
    assert text == core_llm.tokenizer.decode(plain.token_ids[:12], skip_special_tokens=True)
    assert text.output_budget["tokens_generated"] == 12, "the model generated exactly the budget"
    assert ledger.totals("llm")["output_after"] == 12
    assert accountant.totals().calls == 1


def test_streamed_pieces_are_a_prefix_of_the_soft_stopped_answer(core_llm, lean_llm) -> None:
    from lean_plugins.langchain import with_output_budget

    budgeted = with_output_budget(lean_llm, OutputBudget(20, record_usage=False))
    pieces = list(budgeted.stream(STORY_START))
    final = budgeted.invoke(STORY_START)
    assert "".join(pieces) == final
    assert final.output_budget["tokens_used"] <= 20
