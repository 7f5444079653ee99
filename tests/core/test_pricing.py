"""Prices: lookup, dated snapshots, overrides, unknown models."""

from __future__ import annotations

import json

import pytest

from lean_plugins import pricing
from lean_plugins.errors import ConfigurationError


def test_known_model_cost() -> None:
    assert pricing.cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert pricing.cost("gpt-4o", 2000, 500) == pytest.approx((2000 * 2.5 + 500 * 10) / 1e6)


def test_snapshot_and_provider_prefix_resolve_to_family() -> None:
    assert pricing.get_price("gpt-4o-2024-08-06") == pricing.get_price("gpt-4o")
    assert pricing.get_price("gpt-4o-mini-2024-07-18") == pricing.get_price("gpt-4o-mini")
    assert pricing.get_price("openai:gpt-4.1-nano") == pricing.get_price("gpt-4.1-nano")
    assert pricing.get_price("claude-3-5-sonnet-20241022") == pricing.get_price("claude-3-5-sonnet")


def test_unknown_model_is_none_not_zero() -> None:
    assert pricing.get_price("not-a-model") is None
    assert pricing.cost("not-a-model", 10, 10) is None
    assert pricing.cost(None, 10, 10) is None
    with pytest.raises(ConfigurationError, match="set_price"):
        pricing.resolve_price("not-a-model")


def test_overrides_from_code_and_files(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(pricing, "_prices", dict(pricing._prices))
    pricing.set_price("my-model", 1.0, 3.0)
    assert pricing.cost("my-model", 1_000_000, 0) == pytest.approx(1.0)
    toml = tmp_path / "prices.toml"
    toml.write_text('[prices."my-model"]\ninput = 2.0\noutput = 4.0\n')
    pricing.load_prices(toml)
    assert pricing.get_price("my-model").output_per_1m == 4.0
    js = tmp_path / "prices.json"
    js.write_text(json.dumps({"gpt-4o": {"input": 0.1, "output": 0.2}}))
    pricing.load_prices(js)
    assert pricing.get_price("gpt-4o").input_per_1m == 0.1
    assert "user override" in pricing.get_price("gpt-4o").source


def test_env_file_is_loaded(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(pricing, "_prices", dict(pricing._prices))
    monkeypatch.setattr(pricing, "_env_loaded", False)
    path = tmp_path / "p.toml"
    path.write_text('[prices."env-model"]\ninput = 5\noutput = 6\n')
    monkeypatch.setenv(pricing.PRICES_ENV, str(path))
    assert pricing.cost("env-model", 1_000_000, 1_000_000) == pytest.approx(11.0)


def test_bad_price_files_name_the_problem(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[prices."m"]\ninput = "cheap"\n')
    with pytest.raises(ConfigurationError, match="'input' and 'output'"):
        pricing.load_prices(bad)
    with pytest.raises(ConfigurationError, match="does not exist"):
        pricing.load_prices(tmp_path / "missing.toml")
    with pytest.raises(ConfigurationError, match=">= 0"):
        pricing.set_price("m", -1, 1)
