"""Structured, GQA-aware pruning of Llama-architecture causal LMs (Llama, Mistral, Qwen2).

What can go: whole KV groups (a KV head and the query heads that read it), query heads inside
every group (keeping the same number per group, so the query-per-KV ratio stays valid), MLP
channels, and whole layers (lowest ShortGPT block influence; ``layer_idx`` is renumbered so
the KV cache stays correct). The model is pruned in place; :func:`save_pruned` writes it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lean_plugins._optional import require
from lean_plugins.errors import ConfigurationError
from lean_plugins.model_source import transformers_progress
from lean_plugins.pruning.evaluate import tokenize_documents
from lean_plugins.pruning.importance import METHODS, LayerScores, block_influence, compute_importance
from lean_plugins.pruning.modeling import (
    PRUNING_KEY,
    decoder_layers,
    is_uniform,
    layer_shapes,
    sync_attention_attributes,
)

logger = logging.getLogger("lean_plugins.pruning")

#: The method the benchmark (scripts/bench_pruning.py) found best on stories260K.
DEFAULT_METHOD = "taylor"


@dataclass
class PruningReport:
    """What :func:`prune` did."""

    method: str
    ratio: float
    params_before: int
    params_after: int
    uniform: bool
    dropped_layers: list[int] = field(default_factory=list)
    layer_shapes: list[dict[str, int]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def removed_fraction(self) -> float:
        return 1 - self.params_after / self.params_before

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_parameters(model: Any) -> int:
    """Parameters, with tied embeddings counted once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _attention_params(hidden: int, head_dim: int, n_q: int, n_kv: int) -> int:
    return 2 * hidden * head_dim * (n_q + n_kv)


def _plan_counts(
    model: Any,
    ratio: float,
    *,
    attention_ratio: float | None,
    mlp_ratio: float | None,
    within_groups: bool,
    channel_multiple: int,
) -> tuple[int, int, int]:
    """(kv groups kept, query heads kept per group, MLP channels kept) for every layer.

    With only ``ratio`` given, attention and MLP lose about the same fraction of their
    parameters and together ``ratio`` of the whole model's.
    """
    layers = list(decoder_layers(model))
    attn = layers[0].self_attn
    hidden, hd = attn.q_proj.in_features, attn.head_dim
    shape = layer_shapes(model)[0]
    n_q, n_kv, inter = shape["num_attention_heads"], shape["num_key_value_heads"], shape["intermediate_size"]
    per_group = n_q // n_kv
    n_layers = len(layers)
    attn_full = _attention_params(hidden, hd, n_q, n_kv)
    mlp_channel = 3 * hidden
    mlp_full = inter * mlp_channel

    def round_channels(kept: float) -> int:
        kept_int = max(channel_multiple, round(kept / channel_multiple) * channel_multiple)
        return min(inter, kept_int)

    options = [
        (kv, q)
        for kv in range(1, n_kv + 1)
        for q in (range(1, per_group + 1) if within_groups else [per_group])
    ]
    if attention_ratio is not None or mlp_ratio is not None:
        a, m = attention_ratio or 0.0, mlp_ratio or 0.0
        kv, q = min(
            options,
            key=lambda o: (abs(1 - _attention_params(hidden, hd, o[0] * o[1], o[0]) / attn_full - a), -o[0]),
        )
        return kv, q, round_channels(inter * (1 - m))
    target = ratio * count_parameters(model) / n_layers  # parameters to remove per layer
    best: tuple[float, tuple[int, int, int]] | None = None
    for kv, q in options:
        attn_removed = attn_full - _attention_params(hidden, hd, kv * q, kv)
        mlp_removed = target - attn_removed
        if mlp_removed < 0 or mlp_removed > 0.95 * mlp_full:
            continue
        kept = round_channels(inter - mlp_removed / mlp_channel)
        gap = abs(attn_removed / attn_full - (inter - kept) / inter)
        if best is None or gap < best[0] - 1e-9:
            best = (gap, (kv, q, kept))
    if best is None:
        raise ConfigurationError(
            f"ratio={ratio} cannot be reached by pruning heads and MLP channels of this model; "
            "use a ratio below ~0.6, or drop layers (drop_layers=N)."
        )
    return best[1]


def _slice_linear(linear: Any, out_idx: Any = None, in_idx: Any = None) -> Any:
    torch = require("torch", "local")
    w = linear.weight.data
    b = linear.bias.data if linear.bias is not None else None
    if out_idx is not None:
        w = w[out_idx]
        b = b[out_idx] if b is not None else None
    if in_idx is not None:
        w = w[:, in_idx]
    new = torch.nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    new.weight.data.copy_(w)
    if b is not None:
        new.bias.data.copy_(b)
    new.weight.requires_grad_(linear.weight.requires_grad)
    return new


def _head_rows(heads: Sequence[int], head_dim: int) -> list[int]:
    return [h * head_dim + j for h in heads for j in range(head_dim)]


def _apply(layer: Any, groups: Sequence[int], q_heads: Sequence[int], channels: Sequence[int]) -> None:
    """Keep ``groups`` (kv heads), ``q_heads`` (group-major) and MLP ``channels`` of a layer."""
    torch = require("torch", "local")
    attn, mlp = layer.self_attn, layer.mlp
    hd = attn.head_dim
    q_rows = torch.tensor(_head_rows(q_heads, hd))
    kv_rows = torch.tensor(_head_rows(groups, hd))
    attn.q_proj = _slice_linear(attn.q_proj, out_idx=q_rows)
    attn.k_proj = _slice_linear(attn.k_proj, out_idx=kv_rows)
    attn.v_proj = _slice_linear(attn.v_proj, out_idx=kv_rows)
    attn.o_proj = _slice_linear(attn.o_proj, in_idx=q_rows)
    ch = torch.tensor(sorted(channels))
    mlp.gate_proj = _slice_linear(mlp.gate_proj, out_idx=ch)
    mlp.up_proj = _slice_linear(mlp.up_proj, out_idx=ch)
    mlp.down_proj = _slice_linear(mlp.down_proj, in_idx=ch)


def _top(scores: Any, k: int) -> list[int]:
    return sorted(int(i) for i in scores.topk(k).indices)


def _select_uniform(
    scores: LayerScores, n_kv_keep: int, q_keep: int, inter_keep: int
) -> tuple[list[int], list[int], list[int]]:
    n_kv = scores.kv_groups.shape[0]
    per_group = scores.q_heads.shape[0] // n_kv
    groups = _top(scores.kv_groups, n_kv_keep)
    q_heads = []
    for g in groups:
        members = scores.q_heads[g * per_group : (g + 1) * per_group]
        q_heads += [g * per_group + j for j in _top(members, q_keep)]
    return groups, q_heads, _top(scores.mlp_channels, inter_keep)


def drop_layers(model: Any, indices: Sequence[int]) -> None:
    """Remove decoder layers and renumber the rest (``layer_idx``) for the KV cache."""
    torch = require("torch", "local")
    layers = decoder_layers(model)
    drop = set(indices)
    kept = [layer for i, layer in enumerate(layers) if i not in drop]
    if not kept:
        raise ConfigurationError("Cannot drop every layer of the model.")
    model.model.layers = torch.nn.ModuleList(kept)
    config = model.config
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        config.layer_types = [t for i, t in enumerate(layer_types) if i not in drop]
    config.num_hidden_layers = len(kept)
    sync_attention_attributes(model)


def prune(
    model: Any,
    tokenizer: Any,
    *,
    ratio: float = 0.2,
    method: str = DEFAULT_METHOD,
    calibration: Sequence[str] | None = None,
    uniform: bool = True,
    drop_layers_count: int = 0,
    attention_ratio: float | None = None,
    mlp_ratio: float | None = None,
    within_groups: bool = True,
    channel_multiple: int | None = None,
    max_calibration_tokens: int = 512,
    seed: int = 0,
    progress: bool = False,
) -> PruningReport:
    """Prune ``model`` in place and return what was done.

    ``ratio``: fraction of all parameters to remove with heads and MLP channels (0 with
    ``drop_layers_count`` to only drop layers). ``attention_ratio`` / ``mlp_ratio`` set the
    fraction of each kind directly instead. ``uniform=False`` ranks KV groups and channels
    across layers, so layers keep different counts (reloadable only with
    :func:`~lean_plugins.pruning.modeling.load_model`). ``calibration``: a few dozen to a few
    hundred texts like the model's use (not the evaluation texts).
    """
    if method not in METHODS:
        raise ConfigurationError(f"Unknown pruning method {method!r}; use one of {METHODS}.")
    if not 0 <= ratio < 1:
        raise ConfigurationError(f"ratio must be in [0, 1), got {ratio}.")
    start = time.perf_counter()
    params_before = count_parameters(model)
    window = min(max_calibration_tokens, int(getattr(model.config, "max_position_embeddings", 2048) or 2048))
    sequences = tokenize_documents(tokenizer, calibration or [], window)
    dropped: list[int] = []
    if drop_layers_count:
        influence = block_influence(model, sequences, progress=progress)
        dropped = sorted(sorted(range(len(influence)), key=influence.__getitem__)[:drop_layers_count])
        drop_layers(model, dropped)
        logger.info("dropped layers %s (block influence %s)", dropped, [round(b, 4) for b in influence])
    if ratio > 0 or attention_ratio or mlp_ratio:
        hidden = decoder_layers(model)[0].self_attn.q_proj.in_features
        multiple = channel_multiple or (64 if hidden >= 1024 else 1)
        # The ratio is of the model as it was before any layer was dropped.
        remaining = max(0.0, ratio * params_before - (params_before - count_parameters(model)))
        kv_keep, q_keep, inter_keep = _plan_counts(
            model,
            remaining / count_parameters(model),
            attention_ratio=attention_ratio,
            mlp_ratio=mlp_ratio,
            within_groups=within_groups and uniform,
            channel_multiple=multiple,
        )
        scores = compute_importance(model, sequences, method, seed=seed, progress=progress)
        layers = list(decoder_layers(model))
        if uniform:
            for layer, s in zip(layers, scores, strict=False):
                _apply(layer, *_select_uniform(s, kv_keep, q_keep, inter_keep))
        else:
            _apply_non_uniform(layers, scores, kv_keep, inter_keep)
        sync_attention_attributes(model)
    shapes = layer_shapes(model)
    uniform_result = is_uniform(shapes)
    _update_config(model, shapes, uniform_result)
    report = PruningReport(
        method=method,
        ratio=ratio,
        params_before=params_before,
        params_after=count_parameters(model),
        uniform=uniform_result,
        dropped_layers=dropped,
        layer_shapes=shapes,
        seconds=time.perf_counter() - start,
    )
    model.config.__dict__[PRUNING_KEY] = {
        "method": method,
        "ratio": ratio,
        "params_before": params_before,
        "params_after": report.params_after,
        "dropped_layers": dropped,
        "layers": None if uniform_result else shapes,
    }
    logger.info(
        "pruned %d -> %d parameters (%.1f%%)",
        params_before,
        report.params_after,
        100 * report.removed_fraction,
    )
    return report


def _apply_non_uniform(layers: list[Any], scores: list[LayerScores], kv_keep: int, inter_keep: int) -> None:
    """Rank whole KV groups and MLP channels across layers; every layer keeps at least one
    group and 5% of its channels."""
    n_layers = len(layers)

    def global_keep(per_layer: list[Any], total_keep: int, minimum: int) -> list[list[int]]:
        keep = [set(_top(s, min(minimum, s.shape[0]))) for s in per_layer]
        ranked = sorted(
            ((float(s[j]), i, j) for i, s in enumerate(per_layer) for j in range(s.shape[0])), reverse=True
        )
        budget = total_keep - sum(len(k) for k in keep)
        for _score, i, j in ranked:
            if budget <= 0:
                break
            if j not in keep[i]:
                keep[i].add(j)
                budget -= 1
        return [sorted(k) for k in keep]

    # Per-layer score scales differ; normalise so the ranking compares like with like.
    groups = global_keep([s.kv_groups / s.kv_groups.mean() for s in scores], kv_keep * n_layers, 1)
    inter = scores[0].mlp_channels.shape[0]
    channels = global_keep(
        [s.mlp_channels / s.mlp_channels.mean() for s in scores],
        inter_keep * n_layers,
        max(1, math.ceil(0.05 * inter)),
    )
    for layer, s, g, c in zip(layers, scores, groups, channels, strict=False):
        per_group = s.q_heads.shape[0] // s.kv_groups.shape[0]
        q_heads = [gi * per_group + j for gi in g for j in range(per_group)]
        _apply(layer, g, q_heads, c)


def _update_config(model: Any, shapes: list[dict[str, int]], uniform: bool) -> None:
    config = model.config
    config.num_hidden_layers = len(shapes)
    if uniform:
        config.num_attention_heads = shapes[0]["num_attention_heads"]
        config.num_key_value_heads = shapes[0]["num_key_value_heads"]
        config.intermediate_size = shapes[0]["intermediate_size"]
    config.head_dim = decoder_layers(model)[0].self_attn.head_dim


_MISTRAL_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "use_cache",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "tie_word_embeddings",
    "rope_parameters",
    "rope_theta",
    "rope_scaling",
    "attention_dropout",
    "dtype",
)


def saved_architecture(config: Any) -> str:
    """The architecture a uniformly pruned model is saved as (see the module docstring of
    :mod:`lean_plugins.pruning.modeling`): Llama unless ``LlamaConfig`` would reject the head
    count, then Mistral."""
    if config.model_type == "llama" and config.hidden_size % config.num_attention_heads:
        if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
            raise ConfigurationError(
                "This Llama has biases and its pruned head count does not divide hidden_size, so no "
                "standard architecture can describe it; prune with within_groups=False or another "
                "ratio, or save with uniform=False."
            )
        return "mistral"
    return config.model_type


def save_pruned(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    """Save a pruned model (and tokenizer) so it reloads: uniform ones with plain
    ``AutoModelForCausalLM.from_pretrained``, non-uniform ones with ``load_model``."""
    transformers = require("transformers", "local")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    config = model.config
    meta = config.__dict__.get(PRUNING_KEY)
    if not (is_uniform(layer_shapes(model)) and saved_architecture(config) == "mistral"):
        with transformers_progress(show=False):
            model.save_pretrained(out)
        return out
    values = {k: getattr(config, k) for k in _MISTRAL_FIELDS if hasattr(config, k)}
    mistral = transformers.MistralConfig(**values, sliding_window=None)
    if meta:
        mistral.__dict__[PRUNING_KEY] = {**meta, "source_architecture": "llama"}
    # save_pretrained validates the config it writes; LlamaConfig would reject this head count.
    model.config = mistral
    try:
        with transformers_progress(show=False):
            model.save_pretrained(out)
    finally:
        model.config = config
    mistral.architectures = ["MistralForCausalLM"]
    mistral.save_pretrained(out)
    logger.info(
        "saved as MistralForCausalLM: LlamaConfig rejects %d heads for hidden size %d",
        config.num_attention_heads,
        config.hidden_size,
    )
    return out
