"""A fresh clone tests everything: fixtures stay small, and on CI a skip for missing data fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lean_plugins.paths import shared_data_dir

TESTS = Path(__file__).resolve().parent


def test_fixtures_stay_small_and_note_their_licences() -> None:
    files = [p for p in (TESTS / "fixtures").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 2 * 1024 * 1024
    for folder in {p.parent for p in files}:
        notes = (folder / "README.md").read_text(encoding="utf-8")
        for path in folder.iterdir():
            if path.name != "README.md":
                assert f"`{path.name}`" in notes, f"{path} has no provenance/licence line"
        assert "Licence" in notes


def test_data_variable_set_to_a_missing_folder_means_no_data(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LEAN_PLUGINS_DATA", str(tmp_path / "none"))
    assert shared_data_dir() is None  # ../shared/data beside the checkout is not looked at
    monkeypatch.setenv("LEAN_PLUGINS_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path


def run_inner_pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """pytest on a file of four tests, with this project's conftest and no evaluation data."""
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text(encoding="utf-8"))
    (tmp_path / "test_inner.py").write_text(
        "import pytest\n\n"
        "def test_reads_data(shared_data):\n    pass\n\n"
        "@pytest.mark.shared_data\ndef test_marked():\n    pass\n\n"
        "@pytest.mark.skip(reason='feature not supported')\ndef test_other_skip():\n    pass\n\n"
        "def test_own_words():\n    pytest.skip('needs ../shared/data/qa')\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["LEAN_PLUGINS_DATA"] = str(tmp_path / "no-data-here")
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_skip_for_missing_data_fails_the_run_on_ci(tmp_path: Path) -> None:
    local = run_inner_pytest(tmp_path, ci=None)
    assert local.returncode == 0 and "4 skipped" in local.stdout, local.stdout
    ci = run_inner_pytest(tmp_path, ci="true")
    assert ci.returncode == 1, ci.stdout
    # A skip in setup counts as an error, one in the test as a failure; an unsupported feature
    # still skips.
    assert "1 failed, 1 skipped, 2 errors" in ci.stdout, ci.stdout
    assert "skipped for missing data on CI" in ci.stdout
