"""List prices per 1M tokens, and cost computation.

The built-in table holds providers' published list prices (standard tier, no batch or cache
discounts) as the maintainers read them on :data:`PRICES_READ_ON`. Prices change: override them
with :func:`set_price`, :func:`load_prices` (a JSON or TOML file), or the environment variable
``LEAN_PLUGINS_PRICES`` pointing at such a file. An unknown model has an unknown cost
(``None``), never a silent zero.

File format (TOML; JSON is the same shape)::

    [prices."my-model"]
    input = 0.5            # dollars per 1M input tokens
    output = 1.5           # dollars per 1M output tokens
    cached_input = 0.05    # optional: 1M input tokens read from the provider's prefix cache
    cache_write = 0.625    # optional: 1M input tokens written to it (Anthropic bills a premium)

Prefix-cache prices (:data:`CACHE_PRICES_READ_ON`): a provider bills input tokens it serves
from its prompt-prefix cache at a discount, and Anthropic bills writing them at a premium.
Without a cached price, cached tokens are priced as ordinary input (no saving is claimed).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lean_plugins.errors import ConfigurationError

PRICES_ENV = "LEAN_PLUGINS_PRICES"
PRICES_READ_ON = "2025-06-01"
#: When the prefix-cache prices below were read. Sources: OpenAI "Prompt Caching in the API"
#: (openai.com/index/api-prompt-caching: cached input at 50% for gpt-4o, gpt-4o-mini, o1;
#: prefixes of >= 1,024 tokens, in 128-token steps) and OpenAI's pricing page for the gpt-4.1
#: and o3/o4-mini families (75% off); Anthropic's prompt-caching docs (read 0.1x the base input
#: price, 5-minute write 1.25x; breakpoints by ``cache_control``); Google's Gemini 2.5 implicit
#: caching (25% of the input price).
CACHE_PRICES_READ_ON = "2026-11-30"


@dataclass(frozen=True)
class Price:
    """Dollars per 1M input and output tokens, and where the figure came from."""

    input_per_1m: float
    output_per_1m: float
    source: str = f"provider list price, read {PRICES_READ_ON}"
    cached_input_per_1m: float | None = None
    """Dollars per 1M input tokens read from the provider's prefix cache (None: not known)."""
    cache_write_per_1m: float | None = None
    """Dollars per 1M input tokens written to the prefix cache, where billed apart (Anthropic)."""

    def cost(self, input_tokens: int, output_tokens: int, *, cache_read: int = 0, cache_write: int = 0) -> float:
        """Dollars for this many tokens. ``input_tokens`` counts every input token, the
        ``cache_read`` and ``cache_write`` ones included (as LangChain's ``usage_metadata`` and
        OpenAI's ``prompt_tokens`` do); those are billed at the cache prices when known."""
        if cache_read + cache_write > input_tokens:
            raise ValueError(
                f"cache_read ({cache_read}) + cache_write ({cache_write}) exceed input_tokens ({input_tokens}); "
                "input_tokens must include the cached tokens."
            )
        read_price = self.input_per_1m if self.cached_input_per_1m is None else self.cached_input_per_1m
        write_price = self.input_per_1m if self.cache_write_per_1m is None else self.cache_write_per_1m
        plain = input_tokens - cache_read - cache_write
        dollars = (
            plain * self.input_per_1m
            + cache_read * read_price
            + cache_write * write_price
            + output_tokens * self.output_per_1m
        )
        return dollars / 1_000_000


_BUILTIN: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o1": (15.00, 60.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    # Anthropic
    "claude-opus-4": (15.00, 75.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-haiku": (0.25, 1.25),
    # Google (prompts up to 200k / 128k tokens)
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-1.5-pro": (1.25, 5.00),
    "gemini-1.5-flash": (0.075, 0.30),
    # Mistral
    "mistral-large": (2.00, 6.00),
    "mistral-small": (0.20, 0.60),
}

#: (cached input, cache write) per 1M tokens, read on :data:`CACHE_PRICES_READ_ON`; a write
#: costs ordinary input (None) except at Anthropic.
_BUILTIN_CACHE: dict[str, tuple[float, float | None]] = {
    "gpt-4o": (1.25, None),
    "gpt-4o-mini": (0.075, None),
    "gpt-4.1": (0.50, None),
    "gpt-4.1-mini": (0.10, None),
    "gpt-4.1-nano": (0.025, None),
    "o1": (7.50, None),
    "o3-mini": (0.55, None),
    "o4-mini": (0.275, None),
    **{
        name: (round(_BUILTIN[name][0] * 0.1, 6), round(_BUILTIN[name][0] * 1.25, 6))
        for name in ("claude-opus-4", "claude-sonnet-4", "claude-3-7-sonnet", "claude-3-5-sonnet", "claude-3-5-haiku", "claude-3-haiku")
    },
    "gemini-2.5-pro": (0.31, None),
}


def _builtin_price(name: str, input_per_1m: float, output_per_1m: float) -> Price:
    cached, write = _BUILTIN_CACHE.get(name, (None, None))
    return Price(input_per_1m, output_per_1m, cached_input_per_1m=cached, cache_write_per_1m=write)


_lock = threading.Lock()
_prices: dict[str, Price] = {name: _builtin_price(name, i, o) for name, (i, o) in _BUILTIN.items()}
_env_loaded = False


def _normalise(model: str) -> str:
    name = model.strip().lower()
    for prefix in ("openai:", "openai/", "anthropic:", "anthropic/", "google:", "models/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def _optional_price(value: Any) -> float | None:
    return None if value is None else float(value)


def _parse_table(data: dict[str, Any], origin: str) -> dict[str, Price]:
    table = data.get("prices", data)
    if not isinstance(table, dict):
        raise ConfigurationError(f"{origin}: expected a table of models, got {type(table).__name__}.")
    parsed: dict[str, Price] = {}
    for model, entry in table.items():
        try:
            parsed[_normalise(model)] = Price(
                float(entry["input"]),
                float(entry["output"]),
                source=f"user override ({origin})",
                cached_input_per_1m=_optional_price(entry.get("cached_input")),
                cache_write_per_1m=_optional_price(entry.get("cache_write")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"{origin}: price of {model!r} must be a table with numeric 'input' and 'output' "
                f"(dollars per 1M tokens), got {entry!r}."
            ) from exc
    return parsed


def _ensure_env_loaded() -> None:
    global _env_loaded
    if _env_loaded:
        return
    _env_loaded = True
    path = os.environ.get(PRICES_ENV)
    if path:
        load_prices(path)


def load_prices(path: str | Path) -> None:
    """Merge a JSON or TOML price file into the table (see the module docstring)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigurationError(f"Price file {file} does not exist (set by {PRICES_ENV} or load_prices).")
    text = file.read_text(encoding="utf-8")
    if file.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        data = tomllib.loads(text)
    parsed = _parse_table(data, str(file))
    with _lock:
        _prices.update(parsed)


def set_price(
    model: str,
    input_per_1m: float,
    output_per_1m: float,
    *,
    cached_input_per_1m: float | None = None,
    cache_write_per_1m: float | None = None,
) -> None:
    """Set or override one model's price (dollars per 1M tokens), optionally with its
    prefix-cache read and write prices."""
    given = [p for p in (input_per_1m, output_per_1m, cached_input_per_1m, cache_write_per_1m) if p is not None]
    if any(p < 0 for p in given):
        raise ConfigurationError(f"Prices must be >= 0, got {given} for {model!r}.")
    with _lock:
        _prices[_normalise(model)] = Price(
            float(input_per_1m),
            float(output_per_1m),
            source="user override",
            cached_input_per_1m=_optional_price(cached_input_per_1m),
            cache_write_per_1m=_optional_price(cache_write_per_1m),
        )


def set_prices(prices: dict[str, dict[str, float] | tuple[float, float]]) -> None:
    """Override several prices: ``{"model": {"input": 1.0, "output": 2.0}}`` or ``(1.0, 2.0)``."""
    for model, value in prices.items():
        if isinstance(value, dict):
            set_price(model, value["input"], value["output"])
        else:
            set_price(model, *value)


def get_price(model: str | None) -> Price | None:
    """The price of ``model``, or ``None`` when unknown.

    Dated snapshots resolve to their family: ``gpt-4o-2024-08-06`` -> ``gpt-4o``,
    ``claude-3-5-sonnet-20241022`` -> ``claude-3-5-sonnet``. The longest known prefix wins.
    """
    if not model:
        return None
    _ensure_env_loaded()
    name = _normalise(model)
    with _lock:
        if name in _prices:
            return _prices[name]
        candidates = [
            known for known in _prices if name.startswith(known + "-") or name.startswith(known + "@")
        ]
        return _prices[max(candidates, key=len)] if candidates else None


def known_models() -> list[str]:
    """Names in the price table."""
    _ensure_env_loaded()
    with _lock:
        return sorted(_prices)


def cost(
    model: str | None, input_tokens: int, output_tokens: int, *, cache_read: int = 0, cache_write: int = 0
) -> float | None:
    """Dollars for a call, or ``None`` when the model's price is unknown (see :meth:`Price.cost`
    for the prefix-cache tokens)."""
    price = get_price(model)
    if price is None:
        return None
    return price.cost(input_tokens, output_tokens, cache_read=cache_read, cache_write=cache_write)


def resolve_price(price: str | Price | tuple[float, float] | None) -> Price | None:
    """Accept a model name, a :class:`Price` or ``(input_per_1m, output_per_1m)``."""
    if price is None or isinstance(price, Price):
        return price
    if isinstance(price, str):
        found = get_price(price)
        if found is None:
            raise ConfigurationError(
                f"No price known for model {price!r}. Known: {', '.join(known_models())}. "
                "Add one with lean_plugins.pricing.set_price(model, input_per_1m, output_per_1m)."
            )
        return found
    input_per_1m, output_per_1m = price
    return Price(float(input_per_1m), float(output_per_1m), source="given")
