"""The one budgeted call both adapters drive, its unit of count, and usage as a ledger view."""

from __future__ import annotations

from pathlib import Path

from lean_plugins.budget import BudgetRun, OutputBudget, UsageAccountant
from lean_plugins.budget.call import BudgetedCall, capped_limits, is_length_stop
from lean_plugins.generation import GenerationStep
from lean_plugins.ledger import CACHE_HIT_KEY, Ledger, is_cache_hit, mark_cache_hit
from lean_plugins.tokens import encode, get_tokenizer

TEXT = "The Normans gave their name to Normandy. They descended from Norse raiders and pirates. " * 3


def first(text: str, n: int) -> str:
    return get_tokenizer().decode_bytes(encode(text)[:n]).decode("utf-8", errors="ignore")


def test_a_whole_answer_without_steps_is_cut_in_the_unit_it_is_counted_in() -> None:
    # Old code: "budget" with tokens_used=10, but the whole text kept (never decoded).
    result = BudgetRun(10, soft_window=0.0).finish(TEXT)
    assert result.stop_reason == "budget" and result.text == first(TEXT, 10)
    assert result.tokens_used == len(encode(result.text)) == 10 and result.unit == "cl100k_base"


def test_token_steps_count_in_the_model_unit() -> None:
    run = BudgetRun(3, soft_window=0.0)
    for n in range(1, 4):
        if run(GenerationStep(token_ids=tuple(range(n)), text="ab" * n)):
            break
    result = run.finish("ab" * 3)
    assert (result.unit, result.tokens_used, result.tokens_generated) == ("model", 3, 3)
    assert result.to_metadata()["unit"] == "model"


def test_provider_count_is_the_unit_when_reported_and_the_text_was_not_cut() -> None:
    run = BudgetRun(100)
    run.feed("Rollo led them.")
    result = run.finish(output_tokens=7, input_tokens=3)
    assert (result.unit, result.tokens_used, result.tokens_generated) == ("provider", 7, 7)
    cut = BudgetRun(5, soft_window=0.0)
    cut.feed(TEXT)
    result = cut.finish(output_tokens=60)
    assert result.stopped and result.unit == "cl100k_base" and result.tokens_used == 5


def test_budgeted_call_streams_only_kept_text_and_says_when_to_close() -> None:
    call = BudgetedCall(OutputBudget(12, soft_window=0.0, record_usage=False).start("q"))
    shown = ""
    for word in TEXT.split(" "):
        shown += call.step(word + " ")
        if call.should_close:
            break
    result = call.finish()
    shown += call.take()
    assert shown == result.text == first(TEXT, 12)


def test_budgeted_call_judges_an_answer_that_was_not_streamed() -> None:
    call = BudgetedCall(OutputBudget(8, soft_window=0.0, record_usage=False).start("q"))
    result = call.finish(TEXT, output_tokens=57)
    assert result.text == first(TEXT, 8) and call.take() == result.text


def test_max_tokens_rules() -> None:
    assert capped_limits(["temperature", "max_tokens"], {"max_tokens": None}, 20) == {"max_tokens": 20}
    assert capped_limits(["num_output"], {"num_output": 8}, 20) == {"num_output": 8}
    assert capped_limits(["max_new_tokens"], {"max_new_tokens": 300}, 20) == {"max_new_tokens": 20}
    assert capped_limits(["temperature"], {}, 20) == {}
    assert is_length_stop("length") and is_length_stop("max_tokens") and not is_length_stop("stop")


def test_cache_hit_contract_helpers() -> None:
    assert mark_cache_hit({"a": 1}) == {"a": 1, CACHE_HIT_KEY: True}
    assert is_cache_hit(None, "x", {CACHE_HIT_KEY: True}) and not is_cache_hit({}, None)


def test_usage_is_a_view_over_the_ledger_and_a_real_cache_hit_is_booked_once(tmp_path: Path) -> None:
    from lean_plugins.cache import LeanCache

    cache = LeanCache(path=tmp_path, mode="exact")
    cache.put("Who led the Normans?", "Rollo led them.")
    ledger = Ledger()
    accountant = UsageAccountant(ledger)
    budget = OutputBudget(50, model="gpt-4o-mini", accountant=accountant)
    with ledger:
        budget.apply("Rollo led them and more.", "Who led the Normans?")  # a spent call
        hit = cache.lookup("Who led the Normans?", model="gpt-4o-mini")  # the cache books it
        assert hit is not None
        budget.apply(hit.response, "Who led the Normans?", cached=True)  # marked: nothing more
    kinds = [(e.layer, e.kind) for e in ledger.events]
    assert kinds == [("budget", "stop"), ("llm", "call"), ("cache", "hit")]
    totals = accountant.totals(model="gpt-4o-mini")
    assert (totals.calls, totals.cached_calls) == (2, 1)
    assert totals.output_tokens == len(encode("Rollo led them and more."))
    assert totals.avoided_output_tokens == len(encode("Rollo led them."))
    assert totals.dollars == ledger.select("llm", model="gpt-4o-mini")["dollars_after"] > 0
    assert totals.avoided_dollars == ledger.summary().by_layer("cache").dollars_saved > 0


def test_tool_call_tokens_are_added_where_the_provider_count_is_not_used() -> None:
    # without usage: the text's count plus the tool calls', kept whole also when the text is cut
    natural = BudgetedCall(BudgetRun(100)).finish("Rollo led them.", tool_call_tokens=12)
    assert (natural.stop_reason, natural.tokens_used, natural.tokens_generated) == ("natural", 5 + 12, 5 + 12)
    cut = BudgetedCall(BudgetRun(10, soft_window=0.0)).finish(TEXT, tool_call_tokens=12)
    assert cut.text == first(TEXT, 10) and cut.tokens_used == 10 + 12
    assert cut.tokens_generated == len(encode(TEXT)) + 12
    # with the provider's count: it covers the tool calls already
    reported = BudgetedCall(BudgetRun(100)).finish("Rollo led them.", output_tokens=20, tool_call_tokens=12)
    assert (reported.tokens_used, reported.tokens_generated, reported.unit) == (20, 20, "provider")
