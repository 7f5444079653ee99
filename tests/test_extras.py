"""Extras match the install table: with only ``[langchain]`` (or only ``[llamaindex]``) installed,
every public class of that adapter package works, or fails at construction with
``pip install "lean-plugins[<extra>]"`` in the message. Each class is tried by
``tests/extras_probe.py``: here with the other extras' modules blocked (fast), and, as one slow
test, in a fresh virtual environment that installs the package and that extra only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from lean_plugins._optional import EXTRAS

ROOT = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).resolve().parent / "extras_probe.py"

#: What each adapter package needs from other extras, by class; everything else must just work.
EXPECTED_NEEDS = {
    "langchain": {
        "LeanCache": "cache",
        "with_cache": "cache",
        "CachedRunnable": "cache",
        "LeanCompressor": "compress",
        "LeanChatModel": "local",
        "LeanLLM": "local",
    },
    "llamaindex": {
        "CachedLLM": "cache",
        "CachedQueryEngine": "cache",
        "LeanCompressorPostprocessor": "compress",
        "LeanCompressorTransform": "compress",
        "LeanLocalLLM": "local",
    },
}


def blocked_modules(extra: str) -> list[str]:
    """Top-level import names of every optional dependency that ``extra`` does not install."""
    keep = {module.split(".")[0] for module in EXTRAS[extra].values()}
    every = {module.split(".")[0] for modules in EXTRAS.values() for module in modules.values()}
    # the other framework, and pieces the extras pull in without naming them
    every |= {"langchain_core", "llama_index", "safetensors", "sentence_transformers", "sqlalchemy"}
    if extra == "llamaindex":
        keep.add("sqlalchemy")  # a dependency of llama-index-core itself
    return sorted(every - keep)


def probe(python: str, extra: str, *args: str) -> dict[str, str]:
    run = subprocess.run(
        [python, str(PROBE), extra, *args], capture_output=True, text=True, timeout=600, cwd=ROOT.parent
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return {r["name"]: r["outcome"] for r in map(json.loads, run.stdout.splitlines())}


def check(outcomes: dict[str, str], extra: str) -> None:
    expected = EXPECTED_NEEDS[extra]
    wanted = {name: f"needs:{expected[name]}" if name in expected else "ok" for name in outcomes}
    assert outcomes == wanted


@pytest.mark.parametrize("extra", ["langchain", "llamaindex"])
def test_each_class_works_or_names_its_extra_at_construction(extra: str) -> None:
    check(probe(sys.executable, extra, "--block", ",".join(blocked_modules(extra))), extra)


@pytest.mark.slow
@pytest.mark.parametrize("extra", ["langchain", "llamaindex"])
def test_fresh_virtualenv_with_one_extra(extra: str, tmp_path: Path) -> None:
    """pip install ".[extra]" into an empty venv (from PyPI, or pip's cache), then probe."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / ("Scripts" if os.name == "nt" else "bin") / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{ROOT}[{extra}]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if install.returncode != 0 and os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        pytest.skip(f"pip could not install from the package index here: {install.stderr[-300:]}")
    assert install.returncode == 0, install.stderr[-3000:]
    check(probe(python, extra), extra)
