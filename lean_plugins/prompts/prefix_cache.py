"""Providers' prompt-prefix caches: cached tokens read from reported usage, booked in the
ledger at the cache prices, and a simulation of what a cache would save on given requests.

Providers bill a prompt prefix they have seen recently at a fraction of the input price
(OpenAI: automatically, for prompts of >= 1,024 tokens, the cached part growing in 128-token
steps, at 50% or 25% of the input price; Anthropic: up to an explicit ``cache_control``
breakpoint, reads at 10%, writes at 125%). What a call got from the cache is in its usage:

==========================  ===============================================================
source                      fields
==========================  ===============================================================
LangChain usage_metadata    ``input_tokens`` (all input), ``input_token_details.cache_read``,
                            ``input_token_details.cache_creation``
OpenAI usage                ``prompt_tokens`` (all input), ``prompt_tokens_details.cached_tokens``
Anthropic usage             ``input_tokens`` (uncached only), ``cache_read_input_tokens``,
                            ``cache_creation_input_tokens``
==========================  ===============================================================

:func:`cached_usage` reads any of them (dicts or the SDKs' objects); :func:`record_prefix_cache`
books them in the ledger as layer ``"prefix cache"`` (kinds ``read`` and ``write``), priced by
:mod:`lean_plugins.pricing`'s dated cache prices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lean_plugins.errors import ConfigurationError
from lean_plugins.tokens import Tokenizer, encode

#: The ledger layer of prefix-cache events.
PREFIX_CACHE_LAYER = "prefix cache"


@dataclass(frozen=True)
class CachedUsage:
    """Input tokens of one call, and how many of them the provider's prefix cache read or wrote."""

    input_tokens: int
    cache_read: int = 0
    cache_write: int = 0


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and value > 0 else 0


def cached_usage(usage: Any) -> CachedUsage | None:
    """The cached-token counts in a reported ``usage`` (see the module doc for the shapes),
    or None when it reports no input tokens. Also accepts a response-like object or dict
    holding ``usage`` / ``usage_metadata`` (an OpenAI or Anthropic raw response)."""
    if usage is None:
        return None
    for key in ("usage_metadata", "usage"):
        inner = _field(usage, key)
        if inner is not None and not isinstance(inner, (int, float, str)):
            found = cached_usage(inner)
            if found is not None:
                return found
    details = _field(usage, "input_token_details")
    if details is not None or (_field(usage, "input_tokens") is not None and _field(usage, "cache_read_input_tokens") is None):
        # LangChain: input_tokens is every input token.
        total = _int(_field(usage, "input_tokens"))
        if not total:
            return None
        read, write = _int(_field(details, "cache_read")), _int(_field(details, "cache_creation"))
        return CachedUsage(total, min(read, total), min(write, max(0, total - read)))
    if _field(usage, "prompt_tokens") is not None:  # OpenAI
        total = _int(_field(usage, "prompt_tokens"))
        read = _int(_field(_field(usage, "prompt_tokens_details"), "cached_tokens"))
        return CachedUsage(total, min(read, total)) if total else None
    if _field(usage, "cache_read_input_tokens") is not None or _field(usage, "cache_creation_input_tokens") is not None:
        # Anthropic: input_tokens excludes the cache reads and writes.
        read = _int(_field(usage, "cache_read_input_tokens"))
        write = _int(_field(usage, "cache_creation_input_tokens"))
        total = _int(_field(usage, "input_tokens")) + read + write
        return CachedUsage(total, read, write) if total else None
    return None


def record_prefix_cache(
    usage: Any, *, model: str | None, tenant: str | None = None, meta: Mapping[str, Any] | None = None
) -> CachedUsage | None:
    """Book the prefix-cache reads and writes of one call's ``usage`` in the active ledgers.

    A read saves (input price - cached price) per token, a write costs (write price - input
    price) more; both are events with the same tokens before and after, the after side priced
    at the cache price. Returns what was read from ``usage`` (None: nothing reported)."""
    from lean_plugins.ledger import record

    found = cached_usage(usage)
    if found is None:
        return None
    for kind, tokens in (("read", found.cache_read), ("write", found.cache_write)):
        if tokens:
            record(
                layer=PREFIX_CACHE_LAYER,
                kind=kind,
                input_before=tokens,
                input_after=tokens,
                model=model,
                tenant=tenant,
                meta={**(meta or {}), f"cache_{kind}": tokens},
            )
    return found


# -- simulation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrefixCacheRule:
    """How a provider's automatic prefix cache bills, for :func:`simulate_prefix_cache`.

    The cached part of a prompt is its longest token prefix shared with an earlier request,
    counted only from ``min_prefix_tokens`` and rounded down to ``step_tokens`` steps above it;
    cached tokens cost ``1 - discount`` of the input price. The default is OpenAI's published
    rule for gpt-4o (1,024 tokens, 128-token steps, 50% off)."""

    min_prefix_tokens: int = 1024
    step_tokens: int = 128
    discount: float = 0.5
    name: str = "OpenAI automatic caching (gpt-4o): >= 1,024 tokens, 128-token steps, 50% off"

    def __post_init__(self) -> None:
        if self.min_prefix_tokens < 1 or self.step_tokens < 1 or not 0 <= self.discount <= 1:
            raise ConfigurationError(
                "PrefixCacheRule needs min_prefix_tokens >= 1, step_tokens >= 1 and 0 <= discount <= 1; "
                f"got {self.min_prefix_tokens}, {self.step_tokens}, {self.discount}."
            )

    def cacheable(self, shared_tokens: int) -> int:
        """Tokens billed as cached when ``shared_tokens`` lead the prompt as before."""
        if shared_tokens < self.min_prefix_tokens:
            return 0
        return self.min_prefix_tokens + (shared_tokens - self.min_prefix_tokens) // self.step_tokens * self.step_tokens


@dataclass(frozen=True)
class PrefixCacheSimulation:
    """What a prefix cache under ``rule`` would bill on a sequence of requests (simulated)."""

    rule: PrefixCacheRule
    requests: int
    input_tokens: int
    cached_tokens: int

    @property
    def billed_input_tokens(self) -> float:
        """Input tokens at full-price equivalents: cached ones count ``1 - discount``."""
        return self.input_tokens - self.cached_tokens * self.rule.discount

    @property
    def saved_share(self) -> float:
        """Share of the input bill the cache saves."""
        return self.cached_tokens * self.rule.discount / self.input_tokens if self.input_tokens else 0.0


def _shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def simulate_prefix_cache(
    prompts: Iterable[str], rule: PrefixCacheRule | None = None, *, tokenizer: str | Tokenizer = "cl100k_base"
) -> PrefixCacheSimulation:
    """Bill ``prompts`` (in order; chat messages joined into one string per request) under a
    prefix cache that keeps every earlier request: each request's cached part is its longest
    shared token prefix with any earlier one, per ``rule``. A simulation, not a provider's
    bill: real caches also expire (minutes) and route requests to different servers."""
    rule = rule or PrefixCacheRule()
    seen: list[list[int]] = []
    total = cached = 0
    for prompt in prompts:
        ids = encode(prompt, tokenizer)
        shared = max((_shared_prefix(ids, earlier) for earlier in seen), default=0)
        total += len(ids)
        cached += rule.cacheable(shared)
        seen.append(ids)
    return PrefixCacheSimulation(rule, len(seen), total, cached)


#: OpenAI's automatic prompt caching as published for gpt-4o (read 2026-11-30).
OPENAI_RULE = PrefixCacheRule()
#: vLLM-style automatic prefix caching (also LeanLocalLLM's KV reuse): whole 16-token KV
#: blocks are reused, their prefill skipped; "discount" is the prefill compute saved.
KV_BLOCK_RULE = PrefixCacheRule(
    min_prefix_tokens=16, step_tokens=16, discount=1.0, name="KV-block reuse (vLLM-style): 16-token blocks, prefill skipped"
)


def prefix_cache_report(
    plain_prompts: Sequence[str],
    lean_prompts: Sequence[str],
    rules: Sequence[PrefixCacheRule] = (OPENAI_RULE, KV_BLOCK_RULE),
) -> list[str]:
    """Report lines: what each ``rule``'s prefix cache would save on the prompts two runs sent
    (plain layout vs lean, stable-first layout). Simulated, and said so in every line."""
    lines = []
    for rule in rules:
        plain = simulate_prefix_cache(plain_prompts, rule)
        lean = simulate_prefix_cache(lean_prompts, rule)
        lines.append(
            f"simulated prefix cache [{rule.name}]: plain {plain.cached_tokens:,} of {plain.input_tokens:,} "
            f"input tokens cached, billed as {plain.billed_input_tokens:,.0f} ({plain.saved_share:.1%} saved); "
            f"lean {lean.cached_tokens:,} of {lean.input_tokens:,}, billed as {lean.billed_input_tokens:,.0f} "
            f"({lean.saved_share:.1%} saved)"
        )
    return lines
