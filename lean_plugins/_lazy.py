"""Lazy re-exports for package ``__init__`` modules.

A layer's package must import fast and light (``lean-plugins --help`` imports every layer
package), yet users expect ``from lean_plugins.pruning import LeanLocalLLM``. Each package
names where its public names live, and this module imports one only on first access.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` for ``package``.

    ``exports`` maps each public name to the module that defines it. Usage, in the package's
    ``__init__``::

        __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
    """
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__
