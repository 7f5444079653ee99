"""Usage and cost accounting of every LLM call, per model and per tenant: a view over the
savings ledger (:mod:`lean_plugins.ledger`), not a second store.

A call is booked once, in the ledger: a spent call as ``llm / call`` (``llm / stream`` when
streamed), with the tokens before == after; a call answered from a cache as the cache's own
``cache / hit`` event (the response carries :data:`~lean_plugins.ledger.CACHE_HIT_KEY`), which
the accounting counts as a cached call whose tokens and dollars were avoided.
:class:`UsageAccountant` reads its totals from its ledger's running totals.

Thread-safe (the ledger's lock), hence also safe from asyncio tasks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lean_plugins.ledger import CACHE_HIT_KEY, Ledger, LedgerEvent, active_ledgers, default_ledger, record

__all__ = ["CACHE_HIT_KEY", "UsageAccountant", "UsageTotals", "default_accountant"]


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
    """Usage and cost totals per (model, tenant), read from ``ledger``.

    ``ledger``: the ledger this accountant reads (default: a new one of its own). Every call it
    records goes to the active ledgers (:func:`lean_plugins.ledger.record`) and to this one.
    The process-wide :func:`default_accountant` reads the default ledger.
    """

    def __init__(self, ledger: Ledger | None = None) -> None:
        self.ledger = ledger if ledger is not None else Ledger("usage")

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
    ) -> LedgerEvent | None:
        """Account one call. ``cached``: a cache served it; the cache booked the hit in the
        active ledgers already, so nothing more is booked there (this accountant's own ledger
        gets the hit, when it is not active, so its totals count the cached call)."""
        if input_tokens < 0 or output_tokens < 0:
            raise ValueError(f"token counts must be >= 0, got {input_tokens}, {output_tokens}")
        info = {"streamed": streamed, **(meta or {})}
        if cached:
            if any(ledger is self.ledger for ledger in active_ledgers()):
                return None
            event = LedgerEvent(
                layer="cache",
                kind="hit",
                input_before=input_tokens,
                output_before=output_tokens,
                model=model,
                tenant=tenant,
                meta=info,
            )
            self.ledger.add(event)
            return event
        event = record(
            layer="llm",
            kind="stream" if streamed else "call",
            input_before=input_tokens,
            input_after=input_tokens,
            output_before=output_tokens,
            output_after=output_tokens,
            model=model,
            tenant=tenant,
            meta=info,
        )
        if not any(ledger is self.ledger for ledger in active_ledgers()):
            self.ledger.add(event)
        return event

    def totals(self, model: str | None = ..., tenant: str | None = ...) -> UsageTotals:  # type: ignore[assignment]
        """Totals over the calls matching ``model`` and ``tenant`` (omit one to match all)."""
        select = self.ledger.select
        spent = [select("llm", kind, model=model, tenant=tenant) for kind in ("call", "stream")]
        hits = select("cache", "hit", model=model, tenant=tenant)
        return UsageTotals(
            calls=spent[0]["events"] + spent[1]["events"] + hits["events"],
            streamed_calls=spent[1]["events"],
            cached_calls=hits["events"],
            input_tokens=spent[0]["input_after"] + spent[1]["input_after"],
            output_tokens=spent[0]["output_after"] + spent[1]["output_after"],
            avoided_input_tokens=hits["input_before"] - hits["input_after"],
            avoided_output_tokens=hits["output_before"] - hits["output_after"],
            dollars=spent[0]["dollars_after"] + spent[1]["dollars_after"],
            avoided_dollars=hits["dollars_before"] - hits["dollars_after"],
            unpriced_calls=spent[0]["unpriced_events"] + spent[1]["unpriced_events"] + hits["unpriced_events"],
        )

    def report(self) -> list[dict[str, Any]]:
        """One row per (model, tenant): calls, tokens, dollars spent and avoided."""
        keys = sorted(
            set(self.ledger.keys("llm")) | set(self.ledger.keys("cache")),
            key=lambda k: (str(k[0]), str(k[1])),
        )
        return [{"model": m, "tenant": t, **asdict(self.totals(m, t))} for m, t in keys]

    def reset(self) -> None:
        """Forget this accountant's ledger (the default accountant: the default ledger)."""
        self.ledger.reset()


_default: UsageAccountant | None = None


def default_accountant() -> UsageAccountant:
    """The process-wide accountant: a view over the default ledger."""
    global _default
    if _default is None:
        _default = UsageAccountant(default_ledger())
    return _default

