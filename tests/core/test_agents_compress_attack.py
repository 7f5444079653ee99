"""Tool results that must not be reworded (issue 27): stack traces and tool errors keep their
exception lines verbatim and lose only whole middle frames (F3); source code sent without
fences is kept verbatim or cut by whole top-level blocks and still compiles (F4). One test per
rule and threshold of ``lean_plugins/data/tool_result_shapes.json``."""

from __future__ import annotations

import json
import re

import pytest

from lean_plugins.agents import FRAMES_OMITTED, TOOL_RESULT_SHAPES_PATH, ToolResultCompressor
from lean_plugins.tokens import count_tokens
from tests.core.test_agents import long_text

SHAPES = json.loads(TOOL_RESULT_SHAPES_PATH.read_text(encoding="utf-8"))
TRACE = SHAPES["traceback"]
CODE = SHAPES["code"]

EXCEPTION = 'psycopg.errors.UniqueViolation: duplicate key value violates unique constraint "invoices_number_key"'
DETAIL = "DETAIL:  Key (number)=(INV-2026-00731) already exists."


def python_traceback(frames: int = 20) -> str:
    return (
        "Traceback (most recent call last):\n"
        + "".join(
            f'  File "/app/pipeline/stage_{i}.py", line {10 + i}, in run_stage_{i}\n'
            f"    result = stage_{i + 1}.run(payload, retries=3)\n"
            for i in range(frames)
        )
        + EXCEPTION
        + "\n"
        + DETAIL
    )


JAVA_TRACE = (
    "com.acme.ImportException: invoice import failed for batch 2026-11\n"
    + "".join(f"\tat com.acme.pipeline.Stage{i}.run(Stage{i}.java:{40 + i})\n" for i in range(15))
    + "Caused by: org.postgresql.util.PSQLException: ERROR: duplicate key value violates unique constraint\n"
    + "".join(f"\tat org.postgresql.core.Executor{i}.execute(Executor{i}.java:{100 + i})\n" for i in range(12))
    + "\t... 23 more"
)

SOURCE = "\n".join(
    [f'def helper_{i}(x):\n    """Helper number {i} for formatting values."""\n    return str(x).rjust({i % 7 + 2})\n' for i in range(25)]
    + [
        "def fee(amount, tier):\n    if tier == 'gold':\n        return round(amount * 0.0125 + 0.10, 2)\n"
        "    return round(amount * 0.0275 + 0.30, 2)\n"
    ]
    + [f"def other_{i}(y):\n    return y * {i}\n" for i in range(15)]
)

JS_SOURCE = "\n".join(
    f"function step{i}(order) {{\n  const total = order.items.reduce((s, x) => s + x.price, 0);\n"
    f"  if (total > {i * 100}) {{\n    return applyDiscount(order, {i});\n  }}\n  return order;\n}}\n"
    for i in range(20)
)


@pytest.fixture(scope="module")
def compressor() -> ToolResultCompressor:
    from lean_plugins.compress import LeanCompressor

    return ToolResultCompressor(LeanCompressor(record_ledger=False), rate=0.33, min_tokens=60, min_string_tokens=30)


def verbatim_or_marker(sent: str, original: str, marker: str) -> bool:
    lines = set(original.splitlines())
    pattern = re.compile(re.escape(marker).replace(r"\{frames\}", r"\d+").replace(r"\{lines\}", r"\d+"))
    return all(line in lines or pattern.search(line) for line in sent.splitlines())


# -- the rule table, one test per rule ---------------------------------------------------------------
@pytest.mark.parametrize("rule", TRACE["frame_rules"], ids=lambda r: r["name"])
def test_frame_rule_examples(rule: dict) -> None:
    for line, matches in rule["examples"]:
        assert bool(re.match(rule["pattern"], line)) is matches, (rule["name"], line)


@pytest.mark.parametrize("rule", CODE["code_line_rules"], ids=lambda r: r["name"])
def test_code_line_rule_examples(rule: dict) -> None:
    for line, matches in rule["examples"]:
        assert bool(re.search(rule["pattern"], line)) is matches, (rule["name"], line)


# -- F3: stack traces and tool errors ------------------------------------------------------------------
@pytest.mark.parametrize("error", [True, False])
def test_python_traceback_keeps_exception_and_whole_frames(compressor: ToolResultCompressor, error: bool) -> None:
    text = python_traceback(20)
    done = compressor.compress(text, "Why did the invoice import fail?", error=error)
    assert done.kind == "traceback" and done.changed
    assert EXCEPTION in done.text and DETAIL in done.text and done.text.startswith("Traceback (most recent call last):")
    assert verbatim_or_marker(done.text, text, FRAMES_OMITTED)
    # The first keep_first and last keep_last frames stay, each with its source line.
    assert 'File "/app/pipeline/stage_0.py", line 10, in run_stage_0\n    result = stage_1.run' in done.text
    assert 'File "/app/pipeline/stage_19.py", line 29, in run_stage_19\n    result = stage_20.run' in done.text
    dropped = 20 - TRACE["keep_first"] - TRACE["keep_last"]
    assert f"  [{dropped} frames omitted]" in done.text
    assert done.text.count('  File "') == TRACE["keep_first"] + TRACE["keep_last"]


def test_java_trace_keeps_every_caused_by_and_trims_each_run(compressor: ToolResultCompressor) -> None:
    done = compressor.compress(JAVA_TRACE, "why did the import fail")
    assert done.kind == "traceback"
    assert verbatim_or_marker(done.text, JAVA_TRACE, FRAMES_OMITTED)
    for line in JAVA_TRACE.splitlines():
        if not line.startswith("\t"):
            assert line in done.text.splitlines()  # the exception and its cause
    assert done.text.count("frames omitted]") == 2  # one per run of frames
    assert done.text.endswith("\t... 23 more")


def test_tool_error_without_frames_is_sent_as_it_is(compressor: ToolResultCompressor) -> None:
    text = long_text(4)  # long prose that an ordinary result would lose most of
    assert compressor.compress(text, "what happened?").changed
    done = compressor.compress(text, "what happened?", error=True)
    assert done.kind == "error" and done.text == text and not done.changed


def test_min_frames_threshold(compressor: ToolResultCompressor) -> None:
    # Fewer than min_frames frame lines in an ordinary result: not a traceback, prose rules.
    few = long_text(4) + "\n\n" + python_traceback(TRACE["min_frames"] - 1)
    assert compressor.compress(few, "bridge").kind != "traceback"
    many = long_text(4) + "\n\n" + python_traceback(TRACE["min_frames"] + 4)
    done = compressor.compress(many, "bridge")
    assert done.kind == "traceback" and EXCEPTION in done.text and long_text(4) in done.text


def test_keep_first_and_last_threshold(compressor: ToolResultCompressor) -> None:
    # A run no longer than keep_first + keep_last + 1 frames has nothing worth a marker.
    short = python_traceback(TRACE["keep_first"] + TRACE["keep_last"] + 1) + "\n" + long_text(2)
    done = compressor.compress(short, "x", error=True)
    assert done.text == short and done.kind == "error"


# -- F4: source code without fences --------------------------------------------------------------------
def test_unfenced_python_is_cut_by_whole_definitions_and_compiles(compressor: ToolResultCompressor) -> None:
    goal = "What fee does fee() charge a gold customer on 1000?"
    done = compressor.compress(SOURCE, goal)
    assert done.kind == "code" and done.changed
    compile(done.text, "sent", "exec")
    assert verbatim_or_marker(done.text, SOURCE, "# [{lines} lines omitted]")
    assert "def fee(amount, tier):\n    if tier == 'gold':\n        return round(amount * 0.0125 + 0.10, 2)" in done.text
    assert count_tokens(done.text) <= 0.33 * count_tokens(SOURCE) + count_tokens("# [99 lines omitted]") * 2


def test_unfenced_javascript_keeps_lines_verbatim(compressor: ToolResultCompressor) -> None:
    done = compressor.compress(JS_SOURCE, "what discount does step7 apply")
    assert done.kind == "code" and done.changed
    assert verbatim_or_marker(done.text, JS_SOURCE, "[{lines} lines omitted]")
    assert "function step7(order) {" in done.text and "    return applyDiscount(order, 7);" in done.text


def test_code_paragraph_inside_prose_is_kept_verbatim(compressor: ToolResultCompressor) -> None:
    snippet = "\n".join(SOURCE.split("\n\n")[:3])  # three helpers, unfenced
    text = long_text(2) + "\n\n" + snippet + "\n\n" + long_text(2, answer_at=1)
    done = compressor.compress(text, "Who completed the bridge over the Tarn river?")
    assert done.kind == "text" and done.changed and snippet in done.text


def test_code_in_a_json_value_is_kept_verbatim(compressor: ToolResultCompressor) -> None:
    data = {"path": "billing.py", "content": JS_SOURCE[:1200], "notes": long_text(3)}
    done = compressor.compress(json.dumps(data), "what does step3 do")
    out = json.loads(done.text)
    assert out["content"] == data["content"] and out["notes"] != data["notes"]


def test_min_lines_threshold(compressor: ToolResultCompressor) -> None:
    from lean_plugins.agents import _looks_like_code

    lines = ["x = compute(a, b)", "y = x + 1", "if y > 3:", "    return y", "z = y * 2", "w = z - 1"]
    assert not _looks_like_code("\n".join(lines[: CODE["min_lines"] - 1]))
    assert _looks_like_code("\n".join(lines[: CODE["min_lines"]]))


def test_min_code_share_threshold() -> None:
    from lean_plugins.agents import _looks_like_code

    prose = [f"Line {i} of the report says the market was busy" for i in range(10)]
    code = [f"total_{i} = price * {i};" for i in range(10)]
    n = 10
    need = int(CODE["min_code_share"] * n + 0.999)
    # not Python either way (prose lines do not parse), so the share alone decides
    assert _looks_like_code("\n".join(code[:need] + prose[: n - need]))
    assert not _looks_like_code("\n".join(code[: need - 1] + prose[: n - need + 1]))


def test_numbers_and_csv_are_not_code(compressor: ToolResultCompressor) -> None:
    from lean_plugins.agents import _looks_like_code

    assert not _looks_like_code("\n".join(f"{i},{i * 3},{i * 7}.5" for i in range(40)))
    assert not _looks_like_code("\n".join(str(i) for i in range(40)))


def test_prose_with_inline_code_still_compresses(compressor: ToolResultCompressor) -> None:
    text = "\n\n".join(
        long_text(1) + f" Call `fee(amount, tier)` with tier `gold` for case {i}; see `billing.py` line {i}." for i in range(4)
    )
    done = compressor.compress(text, "which tier is cheaper?")
    assert done.kind == "text" and done.tokens < 0.6 * done.original_tokens


def test_short_unfenced_functions_between_prose_paragraphs_are_kept_verbatim(compressor: ToolResultCompressor) -> None:
    # Each function alone is under min_lines; together (blank lines between them) they are code.
    functions = "\n\n".join(SOURCE.split("\n\n")[24:28])  # helper_24, fee, other_0, other_1
    assert all(len(f.splitlines()) < CODE["min_lines"] for f in functions.split("\n\n")[2:])
    text = long_text(3) + "\n\nThe billing module:\n\n" + functions + "\n\n" + long_text(3, answer_at=1)
    done = compressor.compress(text, "Who completed the bridge over the Tarn river?")
    assert done.kind == "text" and done.changed and functions in done.text
