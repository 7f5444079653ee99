"""Shared fixtures: the evaluation data folder, service URLs, an isolated cache dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lean_plugins.paths import shared_data_dir

#: The start of every skip reason for missing evaluation data; with ``CI=true`` such a skip fails.
MISSING_DATA = "evaluation data not found"
#: A skip reason naming any of these is a skip for missing data too (tests written another way).
DATA_WORDS = (MISSING_DATA, "../shared/data", "LEAN_PLUGINS_DATA")


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` or ``$LEAN_PLUGINS_DATA``; skips the test when neither exists."""
    path = shared_data_dir()
    if path is None:
        pytest.skip(
            f"{MISSING_DATA}: put it at ../shared/data beside the checkout or set "
            "LEAN_PLUGINS_DATA to its folder"
        )
    return path


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep run-time files of the tests out of the user's real cache dir."""
    if "LEAN_PLUGINS_CACHE_DIR" not in os.environ:
        os.environ["LEAN_PLUGINS_CACHE_DIR"] = str(tmp_path_factory.mktemp("lean_plugins_cache"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``shared_data`` skip when the data folder is absent; ``gpu`` without CUDA."""
    has_data = shared_data_dir() is not None
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    for item in items:
        if "shared_data" in item.keywords and not has_data:
            item.add_marker(
                pytest.mark.skip(reason=f"{MISSING_DATA} (../shared/data or LEAN_PLUGINS_DATA)")
            )
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; this machine has none"))


@pytest.fixture(scope="session")
def shared_data_or_none() -> Path | None:
    """The evaluation data folder, or None: for tests that use it when present."""
    return shared_data_dir()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """With ``CI=true`` a test skipped for missing evaluation data fails the run: every test of
    behaviour must run on a fresh clone (tiny models and fixtures in ``tests/``); only
    benchmarks read ``../shared/data``."""
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and _on_ci()) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if any(word in reason for word in DATA_WORDS):
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} skipped for missing data on CI ({reason}). Tests must not need "
            "../shared/data: build a tiny model or ship a small fixture in tests/fixtures."
        )
