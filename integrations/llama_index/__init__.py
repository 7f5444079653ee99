"""LlamaIndex adapters of lean-plugins (``pip install "lean-plugins[llamaindex]"``).

One class per module, loaded lazily.
"""

from __future__ import annotations

from lean_plugins._lazy import lazy_exports

_EXPORTS = {
    "PrefixCacheEventHandler": "lean_plugins.llama_index.prefix_cache",
    "CachedLLM": "lean_plugins.llama_index.cached_llm",
    "CachedQueryEngine": "lean_plugins.llama_index.cached_query_engine",
    "LeanCompressorPostprocessor": "lean_plugins.llama_index.compressor_postprocessor",
    "LeanCompressorTransform": "lean_plugins.llama_index.compressor_transform",
    "LeanPromptTemplate": "lean_plugins.llama_index.prompt_template",
    "lean_from": "lean_plugins.llama_index.prompt_template",
    "LeanLocalLLM": "lean_plugins.llama_index.local_llm",
    "OutputBudgetHandler": "lean_plugins.llama_index.budget",
    "BudgetedLLM": "lean_plugins.llama_index.budget",
    "OutputBudgetCallbackHandler": "lean_plugins.llama_index.budget",
    "with_output_budget": "lean_plugins.llama_index.budget",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
