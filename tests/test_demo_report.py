"""The demo's verdict arithmetic and report writers, on hand-made run results."""

from __future__ import annotations

import json

import pytest

from lean_plugins.demo.harness import DemoResult, RequestResult, RunResult
from lean_plugins.demo.knowledge import load_questions
from lean_plugins.demo.report import text_report, verdict, write_report
from lean_plugins.demo.settings import DemoSettings
from lean_plugins.pricing import resolve_price

PRICE = resolve_price("gpt-4o-mini")


def request(
    qid: str, label: str, tokens_in: int, tokens_out: int, *, ctx: bool = True, **kw
) -> RequestResult:
    return RequestResult(
        qid=qid,
        kind="first",
        label=label,
        question=f"question {label}?",
        answer="x",
        response="x",
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        model_calls=1 if tokens_in else 0,
        dollars=PRICE.cost(tokens_in, tokens_out),
        seconds=0.0,
        context_has_answer=ctx,
        **kw,
    )


def run(config: str, requests: list[RequestResult]) -> RunResult:
    return RunResult("langchain", config, (), requests, ledger={}, ledger_table="", seconds=0.0)


def demo_result() -> DemoResult:
    result = DemoResult(
        DemoSettings(frameworks=("langchain",)), "stand-in", PRICE, load_questions(limit=2), {"langchain": {}}
    )
    result.runs = [
        run("plain", [request("Q01", "F01", 1000, 0), request("Q02", "F01", 1000, 0)]),
        run("compress", [request("Q01", "F01", 500, 0), request("Q02", "F01", 500, 0)]),  # saves 50%
        run(
            "cache",
            [
                request("Q01", "F01", 1000, 0),
                request("Q02", "F01", 0, 0, cache_hit=True, cache_source="Q01", cache_hit_correct=True),
            ],
        ),
        run(
            "lean",
            [
                request("Q01", "F01", 100, 0, ctx=False),
                request("Q02", "F02", 0, 0, cache_hit=True, cache_source="Q01", cache_hit_correct=False),
            ],
        ),
    ]
    return result


def test_verdict_multiplies_layer_savings_and_finds_quality_losses() -> None:
    v = verdict(demo_result(), "langchain")
    assert v.layer_saved == pytest.approx({"compress": 50.0, "cache": 50.0})
    assert v.multiplicative_saved == pytest.approx(75.0)  # 1 - 0.5 * 0.5
    assert v.measured_saved == pytest.approx(95.0)
    assert v.cost_share == pytest.approx(0.05) and v.cost_met
    assert v.lost_answer_contexts == ["Q01"]
    assert v.wrong_cache_hits == ["Q02"]
    assert not v.met


def test_reports_state_the_shortfall_and_write_html_and_json(tmp_path) -> None:
    result = demo_result()
    text = text_report(result)
    assert "measured with all layers: 95.0% saved" in text
    assert "short of target" in text and "Q01" in text and "wrong answers to Q02" in text
    page = write_report(result, tmp_path)
    html = page.read_text()
    assert "data:image/png;base64," in html and "WRONG" in html
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["verdicts"]["langchain"]["met"] is False
