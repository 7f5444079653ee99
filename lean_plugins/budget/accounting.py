"""Usage and cost accounting of every LLM call, per model and per tenant.

Every call, streamed or not, is recorded once: in the savings ledger
(:mod:`lean_plugins.ledger`, layer ``llm``) and in a :class:`UsageAccountant`'s running totals
priced with :mod:`lean_plugins.pricing`. A call answered from a cache spent nothing: it is
recorded as kind ``cache_hit`` with zero tokens spent, and the tokens (and dollars) it avoided
are counted separately here. The ledger's *savings* row for a cache hit belongs to the cache
layer, so it is not counted twice.

Thread-safe (one lock, no await inside it), hence also safe from asyncio tasks.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

from lean_plugins.ledger import LedgerEvent, record
from lean_plugins.pricing import cost

#: Key a cache sets to ``True`` in the metadata of a response it served (LangChain
#: ``generation_info`` or ``response_metadata``, LlamaIndex ``additional_kwargs`` or ``raw``),
#: so the budget handlers account the call as avoided, not spent.
CACHE_HIT_KEY = "cache_hit"


@dataclass
class UsageTotals:
    """Running totals of one (model, tenant) pair."""

    calls: int = 0
    streamed_calls: int = 0
    cached_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    avoided_input_tokens: int = 0
    avoided_output_tokens: int = 0
    dollars: float = 0.0
    avoided_dollars: float = 0.0
    unpriced_calls: int = 0
    """Calls of a model with no known price: their dollars are not in ``dollars``."""

    def add(self, other: UsageTotals) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


class UsageAccountant:
    """Running usage and cost totals per (model, tenant); every call also goes to the ledger."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[tuple[str | None, str | None], UsageTotals] = {}

    def record_call(
        self,
        *,
        model: str | None,
        input_tokens: int,
        output_tokens: int,
        tenant: str | None = None,
        cached: bool = False,
        streamed: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> LedgerEvent:
        """Account one call. ``cached``: answered from a cache, so the tokens were avoided."""
        if input_tokens < 0 or output_tokens < 0:
            raise ValueError(f"token counts must be >= 0, got {input_tokens}, {output_tokens}")
        dollars = cost(model, input_tokens, output_tokens)
        with self._lock:
            totals = self._totals.setdefault((model, tenant), UsageTotals())
            totals.calls += 1
            totals.streamed_calls += int(streamed)
            if dollars is None:
                totals.unpriced_calls += 1
            if cached:
                totals.cached_calls += 1
                totals.avoided_input_tokens += input_tokens
                totals.avoided_output_tokens += output_tokens
                totals.avoided_dollars += dollars or 0.0
            else:
                totals.input_tokens += input_tokens
                totals.output_tokens += output_tokens
                totals.dollars += dollars or 0.0
        info = {"streamed": streamed, **(meta or {})}
        if cached:
            info.update(avoided_input_tokens=input_tokens, avoided_output_tokens=output_tokens)
            return record(layer="llm", kind="cache_hit", model=model, tenant=tenant, meta=info)
        return record(
            layer="llm",
            kind="call",
            input_before=input_tokens,
            input_after=input_tokens,
            output_before=output_tokens,
            output_after=output_tokens,
            model=model,
            tenant=tenant,
            meta=info,
        )

    def totals(self, model: str | None = ..., tenant: str | None = ...) -> UsageTotals:  # type: ignore[assignment]
        """Totals over the calls matching ``model`` and ``tenant`` (omit one to match all)."""
        out = UsageTotals()
        with self._lock:
            for (m, t), totals in self._totals.items():
                if (model is ... or m == model) and (tenant is ... or t == tenant):
                    out.add(totals)
        return out

    def report(self) -> list[dict[str, Any]]:
        """One row per (model, tenant): calls, tokens, dollars spent and avoided."""
        with self._lock:
            return [
                {"model": model, "tenant": tenant, **asdict(totals)}
                for (model, tenant), totals in sorted(
                    self._totals.items(), key=lambda item: (str(item[0][0]), str(item[0][1]))
                )
            ]

    def reset(self) -> None:
        with self._lock:
            self._totals.clear()


_default = UsageAccountant()


def default_accountant() -> UsageAccountant:
    """The process-wide accountant that budgets and handlers record into by default."""
    return _default
