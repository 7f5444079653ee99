"""Where the package keeps files it makes at run time, and where evaluation data lives."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_ENV = "LEAN_PLUGINS_CACHE_DIR"
DATA_DIR_ENV = "LEAN_PLUGINS_DATA"

#: The repository root when running from a source checkout (``None`` for a wheel install).
_SOURCE_ROOT = Path(__file__).resolve().parent.parent
SOURCE_ROOT: Path | None = _SOURCE_ROOT if (_SOURCE_ROOT / "pyproject.toml").is_file() else None


def cache_dir(*parts: str) -> Path:
    """A directory under the user cache dir (``$LEAN_PLUGINS_CACHE_DIR`` overrides), created."""
    root = os.environ.get(CACHE_DIR_ENV)
    if root:
        base = Path(root).expanduser()
    else:
        from platformdirs import user_cache_dir

        base = Path(user_cache_dir("lean-plugins", appauthor=False))
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_data_dir() -> Path | None:
    """The evaluation data folder: ``$LEAN_PLUGINS_DATA``, else ``../shared/data`` beside the checkout.

    When ``$LEAN_PLUGINS_DATA`` is set it is the only place looked at, so pointing it to a folder
    that does not exist (``LEAN_PLUGINS_DATA=none``) runs as a fresh clone would, with no data.
    Returns ``None`` when there is no folder; callers (tests, benchmarks) say so clearly.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        path = Path(env).expanduser()
        return path if path.is_dir() else None
    candidates = []
    if SOURCE_ROOT is not None:
        candidates.append(SOURCE_ROOT.parent / "shared" / "data")
    candidates.append(Path.cwd().parent / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def package_data(name: str) -> Path:
    """Path of a file shipped inside ``lean_plugins/data``."""
    return Path(__file__).resolve().parent / "data" / name
