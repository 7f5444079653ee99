"""Prefix caches: cached-input prices, usage parsing, the ledger's `prefix cache` row, the
simulation."""

from __future__ import annotations

import pytest

from lean_plugins import pricing
from lean_plugins.errors import ConfigurationError
from lean_plugins.ledger import Ledger
from lean_plugins.prompts.prefix_cache import (
    PREFIX_CACHE_LAYER,
    CachedUsage,
    PrefixCacheRule,
    cached_usage,
    record_prefix_cache,
    simulate_prefix_cache,
)


def test_cached_input_is_billed_at_the_cache_price() -> None:
    # OpenAI's published example: 2,006 prompt tokens, 1,920 of them cached, gpt-4o.
    full = pricing.cost("gpt-4o", 2006, 300)
    cached = pricing.cost("gpt-4o", 2006, 300, cache_read=1920)
    assert full - cached == pytest.approx(1920 * (2.50 - 1.25) / 1e6)


def test_anthropic_reads_cost_a_tenth_and_writes_a_premium() -> None:
    price = pricing.get_price("claude-sonnet-4-20250514")
    assert price.cached_input_per_1m == pytest.approx(0.30)
    assert price.cache_write_per_1m == pytest.approx(3.75)
    assert price.cost(1000, 0, cache_write=1000) > price.cost(1000, 0)


def test_unknown_cache_price_claims_no_saving_and_overrides_take_cache_prices(tmp_path) -> None:
    assert pricing.cost("mistral-large", 1000, 0, cache_read=1000) == pricing.cost("mistral-large", 1000, 0)
    pricing.set_price("my-cached-model", 1.0, 2.0, cached_input_per_1m=0.1)
    assert pricing.cost("my-cached-model", 1_000_000, 0, cache_read=1_000_000) == pytest.approx(0.1)
    file = tmp_path / "prices.toml"
    file.write_text('[prices."file-model"]\ninput = 1.0\noutput = 2.0\ncached_input = 0.25\n', encoding="utf-8")
    pricing.load_prices(file)
    assert pricing.get_price("file-model").cached_input_per_1m == 0.25


def test_cached_tokens_must_be_part_of_the_input() -> None:
    with pytest.raises(ValueError, match="must include the cached tokens"):
        pricing.get_price("gpt-4o").cost(100, 0, cache_read=200)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (  # LangChain usage_metadata
            {"input_tokens": 1500, "output_tokens": 20, "input_token_details": {"cache_read": 1024, "cache_creation": 0}},
            CachedUsage(1500, 1024, 0),
        ),
        (  # OpenAI usage
            {"prompt_tokens": 2006, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1920}},
            CachedUsage(2006, 1920, 0),
        ),
        (  # Anthropic usage: input_tokens excludes the cache
            {"input_tokens": 50, "output_tokens": 10, "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 300},
            CachedUsage(2350, 2000, 300),
        ),
        ({"usage": {"prompt_tokens": 10, "prompt_tokens_details": None}}, CachedUsage(10, 0, 0)),  # a raw response
        ({"output_tokens": 5}, None),
    ],
)
def test_cached_usage_reads_every_reported_shape(usage, expected) -> None:
    assert cached_usage(usage) == expected


def test_ledger_shows_a_prefix_cache_row_priced_at_the_cache_price() -> None:
    with Ledger("t") as ledger:
        record_prefix_cache({"prompt_tokens": 2006, "prompt_tokens_details": {"cached_tokens": 1920}}, model="gpt-4o")
        record_prefix_cache(
            {"input_tokens": 10, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 1000},
            model="claude-sonnet-4",
        )
    summary = ledger.summary()
    row = summary.by_layer(PREFIX_CACHE_LAYER)
    assert row is not None and row.events == 2
    read_saving = 1920 * (2.50 - 1.25) / 1e6
    write_premium = 1000 * (3.75 - 3.00) / 1e6
    assert row.dollars_saved == pytest.approx(read_saving - write_premium)
    assert "prefix cache" in summary.to_table()
    # At one fixed price (no cache price known for it) a read saves nothing.
    assert ledger.summary(price=(1.0, 1.0)).by_layer(PREFIX_CACHE_LAYER).dollars_saved == pytest.approx(0.0)


def test_rule_counts_from_the_minimum_in_steps() -> None:
    rule = PrefixCacheRule(min_prefix_tokens=1024, step_tokens=128, discount=0.5)
    assert [rule.cacheable(n) for n in (1023, 1024, 1151, 1152, 5000)] == [0, 1024, 1024, 1152, 4992]
    with pytest.raises(ConfigurationError, match="discount"):
        PrefixCacheRule(discount=1.5)


def test_simulation_caches_only_a_shared_prefix() -> None:
    stable = " ".join(f"rule{i}" for i in range(200))
    rule = PrefixCacheRule(min_prefix_tokens=100, step_tokens=10, discount=0.5)
    stable_first = [f"{stable}\nQuestion: q{i}?" for i in range(3)]
    variable_first = [f"Question: q{i}?\n{stable}" for i in range(3)]
    good = simulate_prefix_cache(stable_first, rule)
    bad = simulate_prefix_cache(variable_first, rule)
    assert good.requests == 3 and good.cached_tokens >= 2 * 400
    assert bad.cached_tokens == 0 and bad.saved_share == 0
    assert good.billed_input_tokens < good.input_tokens


def test_report_lines_say_simulated_and_compare_the_layouts() -> None:
    from lean_plugins.prompts.prefix_cache import KV_BLOCK_RULE, prefix_cache_report

    rules = " ".join(f"Rule {i}: be precise." for i in range(40))
    plain = [f"Question: q{i}?\n{rules}" for i in range(4)]
    lean = [f"{rules}\nQuestion: q{i}?" for i in range(4)]
    (line,) = prefix_cache_report(plain, lean, rules=[KV_BLOCK_RULE])
    assert line.startswith("simulated prefix cache [KV-block reuse")
    assert "plain 0 of" in line and "lean 0 of" not in line
