"""Layer 1: input compression (LLMLingua-2 token classification, offline by default).

``LeanCompressor`` and ``CompressionResult`` load lazily: importing this package does not
import torch or llmlingua.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LeanCompressor": "lean_plugins.compress.compressor",
    "CompressionResult": "lean_plugins.compress.compressor",
    "shipped_model_info": "lean_plugins.compress.model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lean_plugins.compress' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
