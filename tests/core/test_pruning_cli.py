"""The prune / ppl / convert-llama2c commands, end to end on stories260K."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lean_plugins.cli import main
from tests.stories260k import CHECKPOINT, STORIES, TOKENIZER

pytest.importorskip("torch")


def test_convert_prune_and_ppl_commands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    text = STORIES
    dense, pruned = tmp_path / "dense", tmp_path / "pruned"
    assert (
        main(
            [
                "convert-llama2c",
                str(CHECKPOINT),
                "--tokenizer",
                str(TOKENIZER),
                "--out",
                str(dense),
            ]
        )
        == 0
    )
    assert "260,032 parameters" in capsys.readouterr().out
    argv = ["prune", str(dense), "--ratio", "0.2", "--calib", str(text), "--calib-docs", "20"]
    argv += ["--eval", str(text), "--eval-docs", "20", "--out", str(pruned)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "before  params       260,032" in out and "after   params       208,192" in out
    before, after = (
        float(line.rsplit("perplexity", 1)[1]) for line in out.splitlines() if "perplexity" in line
    )
    assert after > before
    assert json.loads((pruned / "config.json").read_text())["architectures"] == ["MistralForCausalLM"]
    assert main(["ppl", str(pruned), "--text", str(text), "--docs", "20"]) == 0
    assert f"perplexity {after:.3f}" in capsys.readouterr().out


def test_help_lists_the_commands(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    assert "--ratio" in capsys.readouterr().out


def test_cli_default_method_is_the_library_default() -> None:
    import argparse

    from lean_plugins.pruning.cli import register
    from lean_plugins.pruning.pruner import DEFAULT_METHOD

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["prune", "m", "--ratio", "0.2", "--calib", "c", "--out", "o"])
    assert args.method == DEFAULT_METHOD
