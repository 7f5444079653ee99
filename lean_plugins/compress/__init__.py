"""Layer 1: input compression (LLMLingua-2 token classification, offline by default).

``LeanCompressor`` and ``CompressionResult`` load lazily: importing this package does not
import torch or llmlingua.
"""

from __future__ import annotations

from lean_plugins._lazy import lazy_exports

_EXPORTS = {
    "LeanCompressor": "lean_plugins.compress.compressor",
    "CompressionResult": "lean_plugins.compress.compressor",
    "shipped_model_info": "lean_plugins.compress.model",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
