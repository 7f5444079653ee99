"""Savings ledger: arithmetic, scoping, concurrency, export."""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading

import pytest

from lean_plugins import ledger as ledger_mod
from lean_plugins.ledger import Ledger, LedgerEvent, record
from lean_plugins.pricing import Price


def test_summary_arithmetic_at_a_fixed_price() -> None:
    with Ledger() as lg:
        record(layer="compress", kind="compression", input_before=1000, input_after=400)
        record(layer="compress", kind="compression", input_before=500, input_after=100)
        record(layer="cache", kind="hit", input_before=300, output_before=200)
        record(layer="budget", kind="stop", output_before=512, output_after=128)
    summary = lg.summary(price=(2.0, 8.0))  # $ per 1M input / output tokens
    comp = summary.by_layer("compress")
    assert comp is not None
    assert (comp.events, comp.input_before, comp.input_after, comp.tokens_saved) == (2, 1500, 500, 1000)
    assert comp.dollars_saved == pytest.approx(1000 * 2.0 / 1e6)
    assert comp.percent_saved == pytest.approx(100 * 1000 / 1500)
    cache = summary.by_layer("cache")
    assert cache.dollars_before == pytest.approx((300 * 2 + 200 * 8) / 1e6)
    assert cache.dollars_saved == pytest.approx(cache.dollars_before)
    assert cache.percent_saved == pytest.approx(100.0)
    budget = summary.by_layer("budget")
    assert budget.tokens_saved == 384
    assert budget.percent_saved == pytest.approx(75.0)
    # Request-path order, whatever the recording order.
    assert [row.layer for row in summary.rows] == ["compress", "cache", "budget"]


def test_each_event_priced_at_its_model_and_unknown_models_are_unknown() -> None:
    lg = Ledger()
    lg.add(LedgerEvent("cache", "hit", input_before=1_000_000, output_before=1_000_000, model="gpt-4o-mini"))
    row = lg.summary().by_layer("cache")
    assert row.dollars_saved == pytest.approx(0.15 + 0.60)
    lg.add(LedgerEvent("cache", "hit", input_before=10, model="my-private-model"))
    row = lg.summary().by_layer("cache")
    assert row.dollars_saved is None  # never a silent zero
    assert "unpriced" in row.price_source
    assert row.percent_saved == pytest.approx(100.0)  # falls back to tokens


def test_rejects_negative_or_non_int_tokens() -> None:
    with pytest.raises(ValueError, match="input_before"):
        LedgerEvent("compress", "x", input_before=-1)
    with pytest.raises(ValueError, match="output_after"):
        LedgerEvent("compress", "x", output_after=1.5)  # type: ignore[arg-type]


def test_events_reach_default_and_every_active_ledger() -> None:
    default_before = ledger_mod.default_ledger().totals("prompts")["events"]
    outer, inner = Ledger("outer"), Ledger("inner")
    with outer:
        record(layer="prompts", kind="render", input_before=10, input_after=5)
        with inner.scope():
            record(layer="prompts", kind="render", input_before=10, input_after=5)
    record(layer="prompts", kind="render", input_before=10, input_after=5)
    assert outer.totals("prompts")["events"] == 2
    assert inner.totals("prompts")["events"] == 1
    assert ledger_mod.default_ledger().totals("prompts")["events"] == default_before + 3


def test_many_threads_recording_lose_nothing() -> None:
    lg = Ledger(max_events=100)
    n_threads, per_thread = 16, 2000
    barrier = threading.Barrier(n_threads)

    def work(i: int) -> None:
        barrier.wait()
        for j in range(per_thread):
            record(
                layer="cache", kind="hit", input_before=3, output_before=2, tenant=f"t{i % 4}", meta={"j": j}
            )

    with lg:
        ctx = contextvars.copy_context()
        threads = [threading.Thread(target=ctx.copy().run, args=(work, i)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    totals = lg.totals("cache")
    assert totals["events"] == n_threads * per_thread
    assert totals["input_before"] == 3 * n_threads * per_thread
    assert totals["output_before"] == 2 * n_threads * per_thread
    assert len(lg.events) == 100  # bounded memory
    per_tenant = {row["tenant"]: row["events"] for row in lg.breakdown()}
    assert per_tenant == {f"t{k}": n_threads // 4 * per_thread for k in range(4)}


async def test_async_tasks_keep_their_own_scope() -> None:
    a, b = Ledger("a"), Ledger("b")

    async def task(lg: Ledger, n: int) -> None:
        with lg:
            for _ in range(n):
                record(layer="compress", kind="compression", input_before=2, input_after=1)
                await asyncio.sleep(0)

    await asyncio.gather(task(a, 30), task(b, 50))
    assert a.totals("compress")["events"] == 30
    assert b.totals("compress")["events"] == 50


def test_json_export_round_trips() -> None:
    lg = Ledger("export")
    lg.add(
        LedgerEvent(
            "compress", "compression", input_before=100, input_after=40, model="gpt-4o", meta={"doc": 1}
        )
    )
    data = json.loads(lg.to_json(price=Price(1.0, 2.0)))
    assert data["name"] == "export"
    assert data["layers"][0]["tokens_saved"] == 60
    assert data["events"][0]["meta"] == {"doc": 1}
    assert data["breakdown"][0]["model"] == "gpt-4o"
    table = lg.summary(price=(1.0, 2.0)).to_table()
    assert "compress" in table and "60" in table


def test_reset() -> None:
    lg = Ledger()
    lg.add(LedgerEvent("cache", "hit", input_before=1))
    lg.reset()
    assert lg.summary().rows == [] and lg.events == []
