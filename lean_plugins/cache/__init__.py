"""Layer 5: exact + semantic response cache on GPTCache's storage managers.

Light at import time: :class:`LeanCache` (which pulls gptcache, faiss and the encoder) loads on
first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LeanCache": "lean_plugins.cache.lean_cache",
    "CacheHit": "lean_plugins.cache.lean_cache",
    "SemanticGuard": "lean_plugins.cache.guard",
    "normalize_prompt": "lean_plugins.cache.keys",
    "namespace_for": "lean_plugins.cache.keys",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lean_plugins.cache' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
