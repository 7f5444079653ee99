"""Packaging: adapters importable under lean_plugins.*, the core import stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_adapters_map_to_integrations_folders() -> None:
    import lean_plugins.langchain as lc
    import lean_plugins.llama_index as li

    assert Path(lc.__file__).resolve().parent == ROOT / "integrations" / "langchain"
    assert Path(li.__file__).resolve().parent == ROOT / "integrations" / "llama_index"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        lc.Nope  # noqa: B018


@pytest.mark.parametrize(
    "module", ["lean_plugins", "lean_plugins.ledger", "lean_plugins.tokens", "lean_plugins.cli"]
)
def test_core_import_is_light(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "heavy = [m for m in ('torch', 'transformers', 'langchain_core', 'llama_index', 'gptcache') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == ""


def test_help_lists_commands_without_heavy_imports() -> None:
    code = (
        "import sys\nfrom lean_plugins.cli import build_parser\nbuild_parser()\n"
        "print(','.join(m for m in ('torch', 'transformers', 'gptcache', 'llmlingua') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    "package",
    [
        "lean_plugins.langchain",
        "lean_plugins.llama_index",
        "lean_plugins.prompts",
        "lean_plugins.pruning",
        "lean_plugins.cache",
        "lean_plugins.compress",
        "lean_plugins.budget",
    ],
)
def test_every_public_name_resolves(package: str) -> None:
    import importlib

    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
    assert set(module.__all__) <= set(dir(module))
