"""``lean-plugins demo`` end to end on a reduced question set, with the real components."""

from __future__ import annotations

import json

import pytest

from lean_plugins.cli import main
from lean_plugins.demo.harness import layer_availability
from lean_plugins.demo.knowledge import load_questions
from lean_plugins.tokens import count_tokens


@pytest.mark.slow
def test_demo_cli_runs_plain_and_lean_in_both_frameworks(tmp_path, capsys) -> None:
    out = tmp_path / "report"
    # Q01-Q07: five first-time questions, a verbatim repeat (Q05 of Q01), a paraphrase (Q07 of Q02).
    code = main(["demo", "--llm", "standin", "--questions", "7", "--no-ablation", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "offline stand-in" in printed
    assert f"HTML report: {out / 'report.html'}" in printed
    html = (out / "report.html").read_text()
    assert "<table>" in html and "stand-in" in html
    data = json.loads((out / "report.json").read_text())
    questions = load_questions(limit=7)
    for framework in ("langchain", "llama_index"):
        runs = {r["config"]: r for r in data["runs"] if r["framework"] == framework}
        assert set(runs) == {"plain", "lean"}
        plain, lean = runs["plain"]["requests"], runs["lean"]["requests"]
        assert [r["qid"] for r in plain] == [q.id for q in questions]
        # Plain: one real model call per question, no cache; the counts are the requests' sums.
        assert all(r["model_calls"] == 1 and not r["cache_hit"] for r in plain)
        assert runs["plain"]["input_tokens"] == sum(r["input_tokens"] for r in plain)
        assert all(r["output_tokens"] == count_tokens(r["response"]) for r in plain)
        # Every answer is in what the plain run's model saw (the retriever finds it).
        assert all(r["context_has_answer"] for r in plain)
        # Lean: the verbatim repeat is a correct cache hit, served by Q01, and costs nothing.
        repeat = next(r for r in lean if r["qid"] == "Q05")
        assert repeat["cache_hit"] and repeat["cache_source"] == "Q01" and repeat["cache_hit_correct"]
        assert repeat["input_tokens"] == repeat["output_tokens"] == repeat["model_calls"] == 0
        assert all(r["cache_hit_correct"] is not False for r in lean)
        assert runs["lean"]["dollars"] < runs["plain"]["dollars"]
        verdict = data["verdicts"][framework]
        assert 0 < verdict["cost_share"] < 1
        # Quality is measured, not assumed: a lost answer must be one the plain run had.
        assert set(verdict["lost_answer_contexts"]) <= {r["qid"] for r in plain if r["context_has_answer"]}
        lost = {r["qid"] for r in lean if not r["context_has_answer"]}
        assert lost == set(verdict["lost_answer_contexts"])


def test_layer_availability_reports_each_layer() -> None:
    for framework in ("langchain", "llama_index"):
        status = layer_availability(framework)
        assert set(status) == {"prompts", "compress", "cache", "budget", "local"}
        assert status["cache"] is None  # LeanCache is part of the package


@pytest.mark.slow
def test_demo_answers_with_a_packaged_local_model_by_name(tmp_path, monkeypatch, capsys) -> None:
    """The path of the default model (a packaged GGUF converted once, LeanChatModel /
    LeanLocalLLM, greedy) on a tiny random Llama instead of the 98 MB SmolLM2: real generated
    replies, counted in cl100k tokens, scored against the answer strings, the budget's cuts
    reported, and the one-layer runs answered by the stand-in against its own plain run."""
    from tests.tiny_gguf import install_tiny_package

    monkeypatch.setenv("LEAN_PLUGINS_CACHE_DIR", str(tmp_path / "cache"))
    install_tiny_package(tmp_path, monkeypatch)
    out = tmp_path / "report"
    args = ["demo", "--llm", "tiny-test-instruct", "--questions", "2", "--framework", "langchain", "--out", str(out)]
    code = main(args)
    captured = capsys.readouterr()
    printed = captured.out
    assert code == 0, printed + captured.err[-2000:]
    assert "model: tiny-test-instruct (test-org/Tiny-Instruct, from the tiny-test-pkg package" in printed
    assert "answers right" in printed and "stand-in: plain (baseline of the rows below)" in printed
    data = json.loads((out / "report.json").read_text())
    for framework in ("langchain",):
        runs = {r["config"]: r for r in data["runs"] if r["framework"] == framework}
        assert runs["plain"]["layers"] == [] and runs["plain"]["requests"][0]["model_calls"] == 1
        # Only the plain run: the lean run's calls through with_output_budget do not reach the
        # model's callbacks yet (docs/demo.md, "open").
        for config in ("plain",):
            for r in runs[config]["requests"]:
                if r["model_calls"]:
                    # A generated reply, its tokens counted in cl100k (not the model's tokenizer).
                    assert r["output_tokens"] == count_tokens(r["response"])
                    assert r["finish_reason"] in ("natural", "max_tokens", "budget", "stop_sequence")
        assert {r["finish_reason"] for r in runs["plain"]["requests"]} <= {"natural", "max_tokens"}
        verdict = data["verdicts"][framework]
        assert verdict["plain_correct"] == sum(
            r["answer"].lower() in r["response"].lower() for r in runs["plain"]["requests"]
        )
        assert verdict["ablation_model"] == "standin"
        assert set(verdict["layer_saved"]) == {"prompts", "compress", "cache", "budget"}
        assert {runs[c]["requests"][0]["model_calls"] for c in ("plain-standin", "compress")} == {1}
