"""Layer 5: exact + semantic response cache on GPTCache's storage managers.

Light at import time: :class:`LeanCache` (which pulls gptcache, faiss and the encoder) loads on
first attribute access.
"""

from __future__ import annotations

from lean_plugins._lazy import lazy_exports

_EXPORTS = {
    "LeanCache": "lean_plugins.cache.lean_cache",
    "CacheHit": "lean_plugins.cache.lean_cache",
    "SemanticGuard": "lean_plugins.cache.guard",
    "normalize_prompt": "lean_plugins.cache.keys",
    "namespace_for": "lean_plugins.cache.keys",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
