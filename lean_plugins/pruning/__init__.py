"""Layer 3: structured pruning of Llama-architecture causal LMs and a local runtime for them.

Heavy names load lazily (no torch at ``import lean_plugins.pruning``):

- :func:`prune` (``lean_plugins.pruning.prune``): GQA-aware head, MLP-channel and layer pruning.
- :class:`LeanLocalLLM`: serve a dense or pruned model with streaming, stops, budgets and a
  prefix KV cache.
- :func:`convert_llama2c`: llama2.c checkpoint -> Hugging Face Llama folder.
- :func:`heal`: distil a pruned model from its dense original (full or LoRA merged back).
- :func:`load_model`, :func:`save_pruned`, :func:`perplexity`.
"""

from __future__ import annotations

from lean_plugins._lazy import lazy_exports

_EXPORTS = {
    "prune": "lean_plugins.pruning.pruner",
    "PruningReport": "lean_plugins.pruning.pruner",
    "save_pruned": "lean_plugins.pruning.pruner",
    "perplexity": "lean_plugins.pruning.evaluate",
    "heal": "lean_plugins.pruning.heal",
    "HealReport": "lean_plugins.pruning.heal",
    "LeanLocalLLM": "lean_plugins.pruning.runtime",
    "GenerationResult": "lean_plugins.pruning.runtime",
    "StreamChunk": "lean_plugins.pruning.runtime",
    "convert_llama2c": "lean_plugins.pruning.convert",
    "load_model": "lean_plugins.pruning.modeling",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
