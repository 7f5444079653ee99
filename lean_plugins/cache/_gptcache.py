"""Load GPTCache safely.

GPTCache's ``gptcache.utils._check_library`` runs ``pip install`` for any optional package it
misses (``gptcache.utils.dependency_control.prompt_install``). A cache must never install
software, so before GPTCache is first imported we put a module in its place whose
``prompt_install`` refuses; if GPTCache was imported already, we replace the function on both
modules. Only the storage managers are imported (``manager.scalar_data.sql_storage``,
``manager.vector_data.faiss`` / ``pgvector``): no adapter, no YAML config loader, and no
``MapDataManager`` (which unpickles its file).
"""

from __future__ import annotations

import logging
import sys
import threading
import types
from typing import Any

from lean_plugins._optional import require
from lean_plugins.errors import MissingDependencyError

_DEPENDENCY_CONTROL = "gptcache.utils.dependency_control"
_lock = threading.Lock()


def refuse_install(package: str, warn: bool = False) -> None:
    """Stand-in for GPTCache's ``prompt_install``: never installs, names the package instead."""
    raise MissingDependencyError(
        f"GPTCache asked to pip-install {package!r}; lean-plugins never installs packages at run "
        f"time. Install it yourself (pip install {package}) if you need that GPTCache feature."
    )


def block_pip_installs() -> None:
    """Make every GPTCache code path that would run pip raise instead (idempotent)."""
    with _lock:
        module = sys.modules.get(_DEPENDENCY_CONTROL)
        if module is None:
            stub = types.ModuleType(_DEPENDENCY_CONTROL)
            stub.prompt_install = refuse_install  # type: ignore[attr-defined]
            stub.__doc__ = "lean-plugins: GPTCache's installer, disabled."
            sys.modules[_DEPENDENCY_CONTROL] = stub
        else:
            module.prompt_install = refuse_install  # type: ignore[attr-defined]
        utils = sys.modules.get("gptcache.utils")
        if utils is not None:
            utils.prompt_install = refuse_install  # type: ignore[attr-defined]


def load(module: str) -> Any:
    """Import a GPTCache module (``"gptcache.manager..."``) with installs blocked."""
    block_pip_installs()
    if "gptcache" not in sys.modules:
        # GPTCache calls logging.basicConfig() at import, which would configure the
        # application's root logger; undo that.
        root = logging.getLogger()
        before = list(root.handlers)
        require("gptcache", "cache")
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
    imported = require(module, "cache")
    block_pip_installs()  # gptcache.utils now exists: patch its bound name too
    return imported
