"""LangChain adapters of lean-plugins (``pip install "lean-plugins[langchain]"``).

Names load lazily, so importing one component does not import the others' dependencies.
"""

from __future__ import annotations

from lean_plugins._lazy import lazy_exports

_EXPORTS = {
    "PrefixCacheCallbackHandler": "lean_plugins.langchain.prefix_cache",
    "LeanCache": "lean_plugins.langchain.cache",
    "LeanCompressor": "lean_plugins.langchain.compressor",
    "LeanPromptTemplate": "lean_plugins.langchain.prompt_template",
    "LeanChatPromptTemplate": "lean_plugins.langchain.prompt_template",
    "lean_from": "lean_plugins.langchain.prompt_template",
    "LeanChatModel": "lean_plugins.langchain.chat_model",
    "LeanLLM": "lean_plugins.langchain.llm",
    "OutputBudgetCallbackHandler": "lean_plugins.langchain.budget",
    "BudgetedChatModel": "lean_plugins.langchain.budget",
    "with_output_budget": "lean_plugins.langchain.budget",
    "with_cache": "lean_plugins.langchain.question_cache",
    "CachedRunnable": "lean_plugins.langchain.question_cache",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
