"""Shared fixtures: the evaluation data folder, service URLs, an isolated cache dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lean_plugins.paths import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` or ``$LEAN_PLUGINS_DATA``; skips the test when neither exists."""
    path = shared_data_dir()
    if path is None:
        pytest.skip(
            "evaluation data not found: put it at ../shared/data beside the checkout or set "
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
                pytest.mark.skip(reason="evaluation data not found (../shared/data or LEAN_PLUGINS_DATA)")
            )
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; this machine has none"))


@pytest.fixture(scope="session")
def shared_data_or_none() -> Path | None:
    """The evaluation data folder, or None: for tests that use it when present."""
    return shared_data_dir()
