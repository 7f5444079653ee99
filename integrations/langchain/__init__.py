"""LangChain adapters of lean-plugins (``pip install "lean-plugins[langchain]"``).

Names load lazily, so importing one component does not import the others' dependencies.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LeanCache": "lean_plugins.langchain.cache",
    "LeanCompressor": "lean_plugins.langchain.compressor",
    "LeanPromptTemplate": "lean_plugins.langchain.prompt_template",
    "LeanChatPromptTemplate": "lean_plugins.langchain.prompt_template",
    "lean_from": "lean_plugins.langchain.prompt_template",
    "LeanChatModel": "lean_plugins.langchain.chat_model",
    "LeanLLM": "lean_plugins.langchain.llm",
    "OutputBudgetCallbackHandler": "lean_plugins.langchain.budget",
    "with_output_budget": "lean_plugins.langchain.budget",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lean_plugins.langchain' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
