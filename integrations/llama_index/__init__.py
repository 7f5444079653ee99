"""LlamaIndex adapters of lean-plugins (``pip install "lean-plugins[llamaindex]"``).

One class per module, loaded lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CachedLLM": "lean_plugins.llama_index.cached_llm",
    "LeanCompressorPostprocessor": "lean_plugins.llama_index.compressor_postprocessor",
    "LeanCompressorTransform": "lean_plugins.llama_index.compressor_transform",
    "LeanPromptTemplate": "lean_plugins.llama_index.prompt_template",
    "lean_from": "lean_plugins.llama_index.prompt_template",
    "LeanLocalLLM": "lean_plugins.llama_index.local_llm",
    "OutputBudgetHandler": "lean_plugins.llama_index.budget",
    "OutputBudgetCallbackHandler": "lean_plugins.llama_index.budget",
    "with_output_budget": "lean_plugins.llama_index.budget",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lean_plugins.llama_index' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
