"""The savings ledger: what each layer saved, in tokens and dollars, measured per event.

Every layer records :class:`LedgerEvent` s through :func:`record`. An event says how many
input and output tokens the request would have used without the layer (``*_before``) and how
many it used with it (``*_after``). Examples:

=================  ==========================================================================
layer / kind       before -> after
=================  ==========================================================================
compress           input: tokens of the documents -> tokens of the compressed documents
prompts            input: tokens of the source template -> tokens of the lean render
cache / hit        input and output of the avoided call -> 0 and 0
budget / stop      output: the budget the caller would have paid for -> tokens generated
local / serve      input and output served by a local model instead of an API -> 0 and 0
llm / call         plain accounting of a call (before == after): tokens and dollars spent
llm / stream       the same for a streamed call
prefix cache /     input tokens the provider served from its prompt-prefix cache (``read``) or
read, write        wrote to it (``write``): same tokens before and after, the after side priced
                   at the cache price (``meta["cache_read"]`` / ``meta["cache_write"]``)
=================  ==========================================================================

A cache hit is booked once, by the cache, as ``cache / hit``; the response it serves carries
:data:`CACHE_HIT_KEY` in its metadata, so whoever accounts calls (the output budget, usage
accounting) books nothing more for it (see :func:`is_cache_hit`).

Events go to every ledger active in the current context (``with ledger:`` or
``with ledger.scope():``) and to the process-wide default ledger. Recording is thread-safe and
async-safe (``contextvars``), and a ledger keeps running totals, so memory does not grow
with traffic (only the last ``max_events`` events are kept for export).
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from lean_plugins.pricing import Price, cost, resolve_price

#: Layers in the order of a request's path (see DESIGN.md); the summary lists them this way.
LAYERS = ("prompts", "compress", "cache", "local", "budget", "prefix cache", "llm")

#: The cache-hit contract: a cache that serves a response sets this key to ``True`` in the
#: response's metadata (LangChain ``response_metadata`` and ``generation_info``, LlamaIndex
#: ``additional_kwargs``) and books the hit itself as ``cache / hit`` (the avoided call's
#: tokens before, 0 after). Call accounting then treats the response as avoided, not spent.
CACHE_HIT_KEY = "cache_hit"


def mark_cache_hit(metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """``metadata`` (a copy) marked as served from a cache."""
    return {**(metadata or {}), CACHE_HIT_KEY: True}


def is_cache_hit(*metadata: Any) -> bool:
    """True when any of the given metadata dicts (``None`` and non-dicts are skipped) says a
    cache served the response."""
    return any(isinstance(m, dict) and bool(m.get(CACHE_HIT_KEY)) for m in metadata)


@dataclass(frozen=True)
class LedgerEvent:
    """One measured saving (or, for ``layer="llm"``, one plain call)."""

    layer: str
    kind: str
    input_before: int = 0
    input_after: int = 0
    output_before: int = 0
    output_after: int = 0
    model: str | None = None
    tenant: str | None = None
    timestamp: float = field(default_factory=time.time)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("input_before", "input_after", "output_before", "output_after"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"LedgerEvent.{name} must be a non-negative int, got {value!r}")

    @property
    def input_saved(self) -> int:
        return self.input_before - self.input_after

    @property
    def output_saved(self) -> int:
        return self.output_before - self.output_after


@dataclass
class _Totals:
    events: int = 0
    input_before: int = 0
    input_after: int = 0
    output_before: int = 0
    output_after: int = 0
    known_cost_before: float = 0.0
    known_cost_after: float = 0.0
    unpriced_events: int = 0
    cache_read: int = 0
    cache_write: int = 0

    def add(self, event: LedgerEvent) -> None:
        self.events += 1
        self.input_before += event.input_before
        self.input_after += event.input_after
        self.output_before += event.output_before
        self.output_after += event.output_after
        # Prefix-cache tokens (after side only): billed at the provider's cache prices.
        cached = {k: int(event.meta.get(k, 0)) for k in ("cache_read", "cache_write")}
        self.cache_read += cached["cache_read"]
        self.cache_write += cached["cache_write"]
        before = cost(event.model, event.input_before, event.output_before)
        if before is None:
            self.unpriced_events += 1
        else:
            self.known_cost_before += before
            self.known_cost_after += cost(event.model, event.input_after, event.output_after, **cached) or 0.0


@dataclass(frozen=True)
class LayerSummary:
    """One row of :meth:`Ledger.summary`."""

    layer: str
    events: int
    input_before: int
    input_after: int
    output_before: int
    output_after: int
    dollars_before: float | None
    dollars_after: float | None
    price_source: str

    @property
    def tokens_before(self) -> int:
        return self.input_before + self.output_before

    @property
    def tokens_saved(self) -> int:
        return self.tokens_before - (self.input_after + self.output_after)

    @property
    def dollars_saved(self) -> float | None:
        if self.dollars_before is None or self.dollars_after is None:
            return None
        return self.dollars_before - self.dollars_after

    @property
    def percent_saved(self) -> float | None:
        """Percent of this layer's baseline: dollars when priced, tokens otherwise."""
        if self.dollars_before:
            return 100.0 * (self.dollars_saved or 0.0) / self.dollars_before
        if self.tokens_before:
            return 100.0 * self.tokens_saved / self.tokens_before
        return None


@dataclass(frozen=True)
class LedgerSummary:
    """Per-layer table of savings; :meth:`to_table` prints it, :meth:`to_dict` exports it."""

    rows: list[LayerSummary]

    def by_layer(self, layer: str) -> LayerSummary | None:
        return next((row for row in self.rows if row.layer == layer), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [
                {
                    **asdict(row),
                    "tokens_saved": row.tokens_saved,
                    "dollars_saved": row.dollars_saved,
                    "percent_saved": row.percent_saved,
                }
                for row in self.rows
            ]
        }

    def to_table(self) -> str:
        header = (
            "layer",
            "events",
            "in before",
            "in after",
            "out before",
            "out after",
            "tokens saved",
            "$ saved",
            "% saved",
        )
        lines = [header]
        for row in self.rows:
            dollars = "n/a" if row.dollars_saved is None else f"{row.dollars_saved:.6f}"
            pct = "n/a" if row.percent_saved is None else f"{row.percent_saved:.1f}"
            lines.append(
                (
                    row.layer,
                    str(row.events),
                    str(row.input_before),
                    str(row.input_after),
                    str(row.output_before),
                    str(row.output_after),
                    str(row.tokens_saved),
                    dollars,
                    pct,
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        out = [
            "  ".join(
                cell.rjust(w) if i else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
            for line in lines
        ]
        out.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(out)

    def __str__(self) -> str:
        return self.to_table()


_active: contextvars.ContextVar[tuple[Ledger, ...]] = contextvars.ContextVar(
    "lean_plugins_ledgers", default=()
)


class Ledger:
    """A thread-safe collection of savings events with running per-layer totals.

    Use it as a context manager to collect the events of a block of code::

        with Ledger() as ledger:
            chain.invoke(...)
        print(ledger.summary(price="gpt-4o-mini"))
    """

    def __init__(self, name: str = "ledger", *, max_events: int = 10_000) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._events: deque[LedgerEvent] = deque(maxlen=max_events)
        self._totals: dict[str, _Totals] = {}
        self._by_key: dict[tuple[str, str | None, str | None], _Totals] = {}
        self._by_kind: dict[tuple[str, str, str | None, str | None], _Totals] = {}
        self._tokens: list[contextvars.Token] = []

    # -- recording ---------------------------------------------------------------------------
    def add(self, event: LedgerEvent) -> None:
        """Add one event to this ledger only (use :func:`record` to reach every active ledger)."""
        with self._lock:
            self._events.append(event)
            self._totals.setdefault(event.layer, _Totals()).add(event)
            self._by_key.setdefault((event.layer, event.model, event.tenant), _Totals()).add(event)
            key = (event.layer, event.kind, event.model, event.tenant)
            self._by_kind.setdefault(key, _Totals()).add(event)

    # -- scoping -----------------------------------------------------------------------------
    @contextmanager
    def scope(self) -> Iterator[Ledger]:
        """Within the block, events recorded in this context also go to this ledger."""
        token = _active.set((*_active.get(), self))
        try:
            yield self
        finally:
            _active.reset(token)

    def __enter__(self) -> Ledger:
        self._tokens.append(_active.set((*_active.get(), self)))
        return self

    def __exit__(self, *exc: object) -> None:
        _active.reset(self._tokens.pop())

    # -- reading -----------------------------------------------------------------------------
    @property
    def events(self) -> list[LedgerEvent]:
        """The most recent events (at most ``max_events``), oldest first."""
        with self._lock:
            return list(self._events)

    def totals(self, layer: str) -> dict[str, int]:
        """Token totals of one layer: ``events``, ``input_before`` ... ``output_after``."""
        with self._lock:
            t = self._totals.get(layer, _Totals())
            return {
                "events": t.events,
                "input_before": t.input_before,
                "input_after": t.input_after,
                "output_before": t.output_before,
                "output_after": t.output_after,
            }

    def summary(self, price: str | Price | tuple[float, float] | None = None) -> LedgerSummary:
        """Per-layer table. With ``price`` (a model name, :class:`Price` or ``(in, out)`` per 1M)
        every event is priced at it; without, each event is priced at its own model's list
        price, and a layer with any unpriced event shows unknown dollars."""
        fixed = resolve_price(price)
        with self._lock:
            layers = sorted(
                self._totals, key=lambda name: (LAYERS.index(name) if name in LAYERS else len(LAYERS), name)
            )
            rows = []
            for layer in layers:
                t = self._totals[layer]
                if fixed is not None:
                    before: float | None = fixed.cost(t.input_before, t.output_before)
                    after: float | None = fixed.cost(
                        t.input_after, t.output_after, cache_read=t.cache_read, cache_write=t.cache_write
                    )
                    source = fixed.source
                elif t.unpriced_events == 0:
                    before, after, source = t.known_cost_before, t.known_cost_after, "each event's model"
                else:
                    before = after = None
                    source = f"unknown: {t.unpriced_events} event(s) of unpriced models"
                rows.append(
                    LayerSummary(
                        layer,
                        t.events,
                        t.input_before,
                        t.input_after,
                        t.output_before,
                        t.output_after,
                        before,
                        after,
                        source,
                    )
                )
        return LedgerSummary(rows)

    def breakdown(self) -> list[dict[str, Any]]:
        """Totals per (layer, model, tenant), with dollars at each model's list price."""
        with self._lock:
            return [
                {
                    "layer": layer,
                    "model": model,
                    "tenant": tenant,
                    "events": t.events,
                    "input_before": t.input_before,
                    "input_after": t.input_after,
                    "output_before": t.output_before,
                    "output_after": t.output_after,
                    "dollars_before": None if t.unpriced_events else t.known_cost_before,
                    "dollars_after": None if t.unpriced_events else t.known_cost_after,
                }
                for (layer, model, tenant), t in self._by_key.items()
            ]

    def select(
        self,
        layer: str,
        kind: str | None = None,
        *,
        model: str | None = ...,  # type: ignore[assignment]
        tenant: str | None = ...,  # type: ignore[assignment]
    ) -> dict[str, Any]:
        """Running totals of the events of ``layer`` (and ``kind``), for one ``model`` and
        ``tenant`` (omit either to match all): ``events``, the four token sums, and
        ``dollars_before`` / ``dollars_after`` at each event's model price (unpriced events are
        left out of the dollars and counted in ``unpriced_events``)."""
        out = _Totals()
        with self._lock:
            for (lay, kin, mod, ten), t in self._by_kind.items():
                if lay != layer or (kind is not None and kin != kind):
                    continue
                if (model is ... or mod == model) and (tenant is ... or ten == tenant):
                    for name in asdict(out):
                        setattr(out, name, getattr(out, name) + getattr(t, name))
        data = asdict(out)
        data["dollars_before"] = data.pop("known_cost_before")
        data["dollars_after"] = data.pop("known_cost_after")
        return data

    def keys(self, layer: str) -> list[tuple[str | None, str | None]]:
        """The (model, tenant) pairs with events in ``layer``."""
        with self._lock:
            return sorted(
                {(m, t) for (lay, m, t) in self._by_key if lay == layer}, key=lambda k: (str(k[0]), str(k[1]))
            )

    def to_json(
        self, *, price: str | Price | tuple[float, float] | None = None, include_events: bool = True
    ) -> str:
        """JSON export: the summary, the per-model/tenant breakdown and (optionally) the events."""
        data: dict[str, Any] = {
            "name": self.name,
            **self.summary(price).to_dict(),
            "breakdown": self.breakdown(),
        }
        if include_events:
            data["events"] = [asdict(e) for e in self.events]
        return json.dumps(data, indent=2, default=str)

    def reset(self) -> None:
        """Forget all events and totals."""
        with self._lock:
            self._events.clear()
            self._totals.clear()
            self._by_key.clear()
            self._by_kind.clear()

    def __repr__(self) -> str:
        with self._lock:
            return f"Ledger(name={self.name!r}, events={sum(t.events for t in self._totals.values())})"


_default = Ledger("default")


def default_ledger() -> Ledger:
    """The process-wide ledger that receives every event."""
    return _default


def active_ledgers() -> tuple[Ledger, ...]:
    """The ledgers an event recorded now would reach (the default one first)."""
    return (_default, *(ledger for ledger in _active.get() if ledger is not _default))


def record(event: LedgerEvent | None = None, /, **fields: Any) -> LedgerEvent:
    """Record an event in every active ledger. Pass a :class:`LedgerEvent` or its fields."""
    if event is None:
        event = LedgerEvent(**fields)
    elif fields:
        raise TypeError("record() takes either an event or keyword fields, not both")
    for ledger in active_ledgers():
        ledger.add(event)
    return event
