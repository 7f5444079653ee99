"""The demo's report: the per-layer table for stdout and an HTML page with the same tables
and two charts (cost per request, plain vs lean; savings per layer)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lean_plugins.demo.harness import STANDIN_PLAIN, DemoResult, RunResult
from lean_plugins.demo.settings import LAYER_TITLES

#: The lean run must cost at most this share of the plain run (the five-layer claim: 85% cut).
TARGET_COST_SHARE = 0.15
FRAMEWORK_TITLES = {"langchain": "LangChain RAG chain", "llama_index": "LlamaIndex query engine"}


@dataclass(frozen=True)
class FrameworkVerdict:
    """The measured outcome of one framework against the target."""

    framework: str
    plain_dollars: float
    lean_dollars: float
    layer_saved: dict[str, float]
    """Percent of the plain run's dollars each layer saves alone."""
    multiplicative_saved: float
    """``100 * (1 - prod(1 - saved_layer))``: the total if the layers' savings compounded."""
    measured_saved: float
    plain_answer_contexts: int
    lost_answer_contexts: list[str]
    """Questions whose answer was in the plain run's context but not in the lean run's."""
    cache_hits: int
    wrong_cache_hits: list[str]
    requests: int
    ledger_saved: float | None = None
    """Dollars the lean run's ledger books as saved by its layers (all but ``llm``), to check
    against ``plain_dollars - lean_dollars`` measured on the same requests."""
    plain_correct: int = 0
    """Plain replies containing the question's answer string."""
    lean_correct: int = 0
    """Lean replies (cache hits: the reply served) containing the answer string of the question asked."""
    budget_cuts: list[str] = ()  # type: ignore[assignment]
    """Lean requests whose answer the output budget stopped."""
    budget_cuts_correct: int = 0
    """Of those, replies that still contain the answer string."""
    budget_cuts_plain_correct: int = 0
    """Of those, plain replies (uncut) that contained it."""
    ablation_model: str | None = None
    """The model of the one-layer runs when it is not the plain and lean runs' model."""

    @property
    def cost_share(self) -> float:
        return self.lean_dollars / self.plain_dollars if self.plain_dollars else math.nan

    @property
    def cost_met(self) -> bool:
        return self.cost_share <= TARGET_COST_SHARE

    @property
    def met(self) -> bool:
        return self.cost_met and not self.lost_answer_contexts and not self.wrong_cache_hits


def _pct(part: float, whole: float) -> float:
    return 100.0 * (1.0 - part / whole) if whole else math.nan


def baseline(result: DemoResult, run: RunResult) -> RunResult | None:
    """The plain run a run is compared with: the same framework's, answered by the same model."""
    return next(
        (
            r
            for r in result.runs
            if r.framework == run.framework and r.config in ("plain", STANDIN_PLAIN) and r.model == run.model
        ),
        None,
    )


def verdict(result: DemoResult, framework: str) -> FrameworkVerdict | None:
    plain = result.run(framework, "plain")
    lean = result.run(framework, "lean")
    if plain is None or lean is None:
        return None
    layer_saved = {}
    ablation_model = None
    for run in result.runs:
        if run.framework != framework or run.config in ("plain", "lean", STANDIN_PLAIN):
            continue
        base = baseline(result, run)
        if base is not None:
            layer_saved[run.config] = _pct(run.dollars, base.dollars)
            if run.model != plain.model:
                ablation_model = run.model
    remaining = 1.0
    for saved in layer_saved.values():
        remaining *= 1.0 - saved / 100.0
    plain_ctx = {r.qid for r in plain.requests if r.context_has_answer}
    lean_ctx = {r.qid for r in lean.requests if r.context_has_answer}
    plain_by_id = {r.qid: r for r in plain.requests}
    cuts = lean.budget_cuts
    return FrameworkVerdict(
        framework=framework,
        plain_dollars=plain.dollars,
        lean_dollars=lean.dollars,
        layer_saved=layer_saved,
        multiplicative_saved=100.0 * (1.0 - remaining),
        measured_saved=_pct(lean.dollars, plain.dollars),
        plain_answer_contexts=len(plain_ctx),
        lost_answer_contexts=sorted(plain_ctx - lean_ctx),
        cache_hits=lean.cache_hits,
        wrong_cache_hits=[r.qid for r in lean.requests if r.cache_hit_correct is False],
        requests=len(lean.requests),
        ledger_saved=_ledger_saved(lean.ledger),
        plain_correct=plain.correct_answers,
        lean_correct=lean.correct_answers,
        budget_cuts=[r.qid for r in cuts],
        budget_cuts_correct=sum(r.response_has_answer for r in cuts),
        budget_cuts_plain_correct=sum(
            plain_by_id[r.qid].response_has_answer for r in cuts if r.qid in plain_by_id
        ),
        ablation_model=ablation_model,
    )


def _ledger_saved(ledger: dict[str, Any]) -> float | None:
    """Dollars saved per the ledger, summed over the layers (``llm`` books spending, not saving)."""
    rows = [row for row in ledger.get("layers", []) if row["layer"] != "llm"]
    if any(row["dollars_saved"] is None for row in rows):
        return None
    return sum(row["dollars_saved"] for row in rows)


def _run_title(run: RunResult, main_model: str | None = None) -> str:
    if run.config == "plain":
        return "plain (framework defaults)"
    if run.config == "lean":
        return "lean: all layers"
    if run.config == STANDIN_PLAIN:
        return "stand-in: plain (baseline of the rows below)"
    title = f"+ {LAYER_TITLES.get(run.config, run.config)} only"
    return f"stand-in: {title}" if main_model is not None and run.model != main_model else title


def framework_rows(result: DemoResult, framework: str) -> list[dict[str, Any]]:
    """One row per run of ``framework``: tokens, hits, dollars, percent saved, quality."""
    plain = result.run(framework, "plain")
    rows = []
    for run in (r for r in result.runs if r.framework == framework):
        base = baseline(result, run)
        rows.append(
            {
                "run": _run_title(run, plain.model if plain else None),
                "config": run.config,
                "input_tokens": run.input_tokens,
                "output_tokens": run.output_tokens,
                "cache_hits": run.cache_hits,
                "dollars": run.dollars,
                "saved_pct": _pct(run.dollars, base.dollars) if base and base is not run else math.nan,
                "answers_right": f"{run.correct_answers}/{len(run.requests)}",
                "answer_contexts": f"{run.answer_contexts}/{len(run.requests)}",
                "wrong_hits": run.wrong_cache_hits,
                "seconds": run.seconds,
            }
        )
    return rows


def _fmt_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = lambda cells: "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


TABLE_HEADER = [
    "run",
    "input tok",
    "output tok",
    "cache hits",
    "dollars",
    "% saved",
    "answers right",
    "answer in context",
    "wrong hits",
]


def _table_cells(row: dict[str, Any]) -> list[str]:
    saved = "" if math.isnan(row["saved_pct"]) else f"{row['saved_pct']:.1f}%"
    return [
        row["run"],
        f"{row['input_tokens']:,}",
        f"{row['output_tokens']:,}",
        str(row["cache_hits"]),
        f"${row['dollars']:.6f}",
        saved,
        row["answers_right"],
        row["answer_contexts"],
        str(row["wrong_hits"]),
    ]


def _verdict_lines(v: FrameworkVerdict) -> list[str]:
    lines = [
        (
            f"multiplicative total of the layers alone: {v.multiplicative_saved:.1f}% saved "
            f"(1 - prod(1 - layer share)); measured with all layers: {v.measured_saved:.1f}% saved"
            if v.layer_saved
            else f"measured with all layers: {v.measured_saved:.1f}% saved (one-layer runs skipped)"
        ),
        f"lean run costs {100 * v.cost_share:.1f}% of the plain run at the same price "
        f"(target <= {100 * TARGET_COST_SHARE:.0f}%): {'met' if v.cost_met else 'NOT met'}",
        f"answers right (the reply contains the answer string; a cache hit counts only if right for "
        f"the question asked): plain {v.plain_correct}/{v.requests}, lean {v.lean_correct}/{v.requests}",
        f"answer-bearing context: {v.plain_answer_contexts} of {v.requests} in the plain run; lost by "
        f"the lean run: {', '.join(v.lost_answer_contexts) or 'none'}",
        f"cache hits: {v.cache_hits}, wrong: {', '.join(v.wrong_cache_hits) or 'none'}",
    ]
    if v.budget_cuts:
        lines.append(
            f"output budget: stopped {len(v.budget_cuts)} lean answers ({', '.join(v.budget_cuts)}); "
            f"{v.budget_cuts_correct} of them still contain the answer string "
            f"(the plain, uncut replies to the same questions: {v.budget_cuts_plain_correct})"
        )
    else:
        lines.append("output budget: stopped no answer (every reply ended on its own or at max_tokens)")
    if v.ablation_model:
        lines.append(
            f"the one-layer rows are answered by the "
            f"{'offline stand-in' if v.ablation_model == 'standin' else v.ablation_model} (a real model for 4 more passes "
            "does not fit the demo's time); their savings are against the stand-in's own plain run"
        )
    if v.ledger_saved is not None:
        measured = v.plain_dollars - v.lean_dollars
        lines.append(
            f"ledger check: the layers booked ${v.ledger_saved:.6f} saved; plain - lean measured on the "
            f"same requests ${measured:.6f} (difference ${v.ledger_saved - measured:+.6f}, "
            f"{100 * abs(v.ledger_saved - measured) / v.plain_dollars if v.plain_dollars else 0:.1f}% of plain)"
        )
    if not v.met:
        lines.append("short of target: " + shortfall(v))
    return lines


def shortfall(v: FrameworkVerdict) -> str:
    """Which check fails and which layer it points at."""
    parts = []
    if not v.cost_met:
        weakest = sorted(v.layer_saved.items(), key=lambda kv: kv[1])
        listed = ", ".join(f"{name} {pct:.1f}%" for name, pct in weakest)
        parts.append(
            f"cost at {100 * v.cost_share:.1f}% of plain, not <= {100 * TARGET_COST_SHARE:.0f}%"
            + (f" (each layer alone saves: {listed})" if listed else "")
        )
    if v.lost_answer_contexts:
        parts.append(f"compression dropped the answer of {', '.join(v.lost_answer_contexts)}")
    if v.wrong_cache_hits:
        parts.append(f"the cache served wrong answers to {', '.join(v.wrong_cache_hits)}")
    return "; ".join(parts)


def question_mix(result: DemoResult) -> str:
    kinds = Counter(q.kind for q in result.questions)
    return (
        f"{len(result.questions)} requests: {kinds['first']} first-time questions, "
        f"{kinds['repeat']} verbatim repeats, {kinds['paraphrase']} paraphrases"
    )


def text_report(result: DemoResult) -> str:
    """The report printed to stdout."""
    p = result.price
    out = [
        "lean-plugins demo",
        f"model: {result.llm_name}",
        f"price: {result.settings.price_model} at ${p.input_per_1m:g} / ${p.output_per_1m:g} per 1M "
        f"input / output tokens ({p.source}); token counts are cl100k_base counts of what was sent "
        "and received",
        f"questions: {question_mix(result)} (fixed set, lean_plugins/demo/questions.json)",
    ]
    for framework in result.settings.frameworks:
        rows = framework_rows(result, framework)
        if not rows:
            continue
        out += ["", f"== {FRAMEWORK_TITLES[framework]} =="]
        missing = {k: v for k, v in result.availability.get(framework, {}).items() if v and k != "local"}
        for layer, why in missing.items():
            out.append(f"layer {layer}: not available ({why})")
        out.append(_fmt_table(TABLE_HEADER, [_table_cells(r) for r in rows]))
        v = verdict(result, framework)
        if v is not None:
            out += _verdict_lines(v)
        lean = result.run(framework, "lean")
        if lean is not None:
            out += ["", "ledger of the lean run (what each layer recorded, priced at the same model):"]
            out.append(lean.ledger_table)
        plain = result.run(framework, "plain")
        if lean is not None and plain is not None and plain.prompts and lean.prompts:
            from lean_plugins.prompts.prefix_cache import prefix_cache_report

            out += ["", *prefix_cache_report(plain.prompts, lean.prompts)]
    return "\n".join(out)


def question_table(result: DemoResult, framework: str) -> list[dict[str, Any]]:
    plain = result.run(framework, "plain")
    lean = result.run(framework, "lean")
    if plain is None or lean is None:
        return []
    rows = []
    for p, q in zip(plain.requests, lean.requests, strict=True):
        rows.append(
            {
                "id": q.qid,
                "kind": q.kind,
                "label": q.label,
                "question": q.question,
                "answer": q.answer,
                "plain_context_has_answer": p.context_has_answer,
                "lean_context_has_answer": q.context_has_answer,
                "plain_dollars": p.dollars,
                "lean_dollars": q.dollars,
                "cache_hit": q.cache_hit,
                "cache_match": q.cache_match,
                "cache_source": q.cache_source,
                "cache_hit_correct": q.cache_hit_correct,
                "lean_response": q.response,
            }
        )
    return rows


def _chart_png(result: DemoResult) -> str | None:
    """Base64 PNG: cost per request (plain vs lean) and savings per layer, per framework."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    frameworks = [f for f in result.settings.frameworks if result.run(f, "plain")]
    if not frameworks:
        return None
    fig, axes = plt.subplots(len(frameworks), 2, figsize=(12, 3.6 * len(frameworks)), squeeze=False)
    for row, framework in enumerate(frameworks):
        plain = result.run(framework, "plain")
        lean = result.run(framework, "lean")
        ax = axes[row][0]
        xs = range(1, len(plain.requests) + 1)
        ax.bar([x - 0.2 for x in xs], [1e6 * r.dollars for r in plain.requests], 0.4, label="plain")
        if lean is not None:
            ax.bar([x + 0.2 for x in xs], [1e6 * r.dollars for r in lean.requests], 0.4, label="lean")
        ax.set_title(f"{FRAMEWORK_TITLES[framework]}: cost per request")
        ax.set_xlabel("request")
        ax.set_ylabel(f"micro-dollars ({result.settings.price_model})")
        ax.legend()
        v = verdict(result, framework)
        ax2 = axes[row][1]
        if v is not None:
            names = [*v.layer_saved, "multiplicative", "measured (all)"]
            values = [*v.layer_saved.values(), v.multiplicative_saved, v.measured_saved]
            ax2.barh(names, values, color=["#4c72b0"] * len(v.layer_saved) + ["#999999", "#55a868"])
            ax2.axvline(100 * (1 - TARGET_COST_SHARE), color="red", linestyle="--", label="target 85%")
            ax2.set_xlim(0, 100)
            ax2.invert_yaxis()
            ax2.legend(loc="lower right")
        ax2.set_title(f"{FRAMEWORK_TITLES[framework]}: % of plain cost saved")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_report(result: DemoResult) -> str:
    p = result.price
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>lean-plugins demo</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px}td{text-align:right}td:first-child{text-align:left}"
        ".bad{color:#b00}.ok{color:#070}</style></head><body>",
        "<h1>lean-plugins demo</h1>",
        f"<p>Model: <b>{html.escape(result.llm_name)}</b>. Price: {html.escape(result.settings.price_model)} at "
        f"${p.input_per_1m:g} / ${p.output_per_1m:g} per 1M input / output tokens "
        f"({html.escape(p.source)}). Token counts are cl100k_base counts of what was sent and received.</p>",
        f"<p>Questions: {html.escape(question_mix(result))}; the set is fixed "
        "(<code>lean_plugins/demo/questions.json</code>) and was written before any layer was tuned.</p>",
        f"<p>Settings: <code>{html.escape(json.dumps(result.settings.to_dict()))}</code></p>",
    ]
    png = _chart_png(result)
    if png:
        parts.append(f"<img alt='cost per request and savings per layer' src='data:image/png;base64,{png}'>")
    else:
        parts.append("<p>(charts need matplotlib: pip install matplotlib)</p>")
    for framework in result.settings.frameworks:
        rows = framework_rows(result, framework)
        if not rows:
            continue
        parts.append(f"<h2>{FRAMEWORK_TITLES[framework]}</h2>")
        for layer, why in result.availability.get(framework, {}).items():
            if why and layer != "local":
                parts.append(f"<p class='bad'>layer {layer}: not available ({html.escape(why)})</p>")
        parts.append(_html_table(TABLE_HEADER, [_table_cells(r) for r in rows]))
        v = verdict(result, framework)
        if v is not None:
            cls = "ok" if v.met else "bad"
            parts.append(
                f"<ul class='{cls}'>"
                + "".join(f"<li>{html.escape(line)}</li>" for line in _verdict_lines(v))
                + "</ul>"
            )
        lean = result.run(framework, "lean")
        if lean is not None:
            parts.append(f"<h3>Ledger of the lean run</h3><pre>{html.escape(lean.ledger_table)}</pre>")
        qrows = question_table(result, framework)
        if qrows:
            parts.append("<h3>Per question</h3>")
            parts.append(
                _html_table(
                    [
                        "id",
                        "kind",
                        "label",
                        "question",
                        "answer",
                        "plain ctx",
                        "lean ctx",
                        "plain $",
                        "lean $",
                        "cache hit (source)",
                        "hit correct",
                        "lean answer",
                    ],
                    [
                        [
                            r["id"],
                            r["kind"],
                            r["label"],
                            r["question"],
                            r["answer"],
                            "yes" if r["plain_context_has_answer"] else "NO",
                            "yes" if r["lean_context_has_answer"] else "NO",
                            f"{r['plain_dollars']:.7f}",
                            f"{r['lean_dollars']:.7f}",
                            f"{r['cache_match']} ({r['cache_source']})" if r["cache_hit"] else "",
                            ""
                            if r["cache_hit_correct"] is None
                            else ("yes" if r["cache_hit_correct"] else "WRONG"),
                            r["lean_response"][:120],
                        ]
                        for r in qrows
                    ],
                )
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def to_json(result: DemoResult) -> str:
    data = {
        "settings": result.settings.to_dict(),
        "llm": result.llm_name,
        "price_model": result.settings.price_model,
        "questions": [asdict(q) for q in result.questions],
        "availability": result.availability,
        "runs": [
            {
                "framework": r.framework,
                "config": r.config,
                "layers": list(r.layers),
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "cache_hits": r.cache_hits,
                "dollars": r.dollars,
                "seconds": r.seconds,
                "ledger": r.ledger,
                "requests": [asdict(x) for x in r.requests],
            }
            for r in result.runs
        ],
        "verdicts": {
            f: asdict(v) | {"cost_share": v.cost_share, "met": v.met}
            for f in result.settings.frameworks
            if (v := verdict(result, f)) is not None
        },
    }
    return json.dumps(data, indent=2, default=str)


def write_report(result: DemoResult, out_dir: str | Path) -> Path:
    """Write ``report.html`` and ``report.json`` under ``out_dir``; returns the HTML path."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    page = out / "report.html"
    page.write_text(html_report(result), encoding="utf-8")
    (out / "report.json").write_text(to_json(result), encoding="utf-8")
    return page
