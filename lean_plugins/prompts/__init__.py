"""Layer 2: lean prompt templates.

``LeanPrompt`` builds compact, structured templates with validated variables and few-shot
examples under a token budget; ``minify`` shortens an existing template with deterministic
rules; ``lean_text`` goes further (concise rewrites, compact examples, the layer-1 compressor
for long instruction blocks); ``stable_first`` lays a template out for providers' prefix
caches and ``prefix_cache`` prices and simulates them. Names load lazily so ``import lean_plugins.prompts`` stays light.
"""

from __future__ import annotations

from lean_plugins._lazy import lazy_exports

_EXPORTS = {
    "LeanPrompt": "lean_plugins.prompts.lean_prompt",
    "TokenReport": "lean_plugins.prompts.lean_prompt",
    "UnusedVariableWarning": "lean_plugins.prompts.lean_prompt",
    "SECTIONS": "lean_plugins.prompts.lean_prompt",
    "minify": "lean_plugins.prompts.minifier",
    "MINIFY_RULES": "lean_plugins.prompts.minifier",
    "Rule": "lean_plugins.prompts.minifier",
    "lean_text": "lean_plugins.prompts.lean",
    "LEAN_RULES": "lean_plugins.prompts.lean",
    "Example": "lean_plugins.prompts.examples",
    "select_examples": "lean_plugins.prompts.examples",
    "template_variables": "lean_plugins.prompts.template",
    "format_template": "lean_plugins.prompts.template",
    "strip_variables": "lean_plugins.prompts.template",
    "load_phrasebook": "lean_plugins.prompts.lean",
    "stable_first": "lean_plugins.prompts.layout",
    "stable_prefix": "lean_plugins.prompts.layout",
    "stable_prefix_tokens": "lean_plugins.prompts.layout",
    "split_at_stable_prefix": "lean_plugins.prompts.layout",
    "cached_usage": "lean_plugins.prompts.prefix_cache",
    "record_prefix_cache": "lean_plugins.prompts.prefix_cache",
    "PrefixCacheRule": "lean_plugins.prompts.prefix_cache",
    "simulate_prefix_cache": "lean_plugins.prompts.prefix_cache",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
