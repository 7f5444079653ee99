"""Importance scores of prunable units from a small calibration set.

Units per decoder layer: query heads, KV groups (a KV head with the query heads that read it),
MLP channels, and the layer itself (block influence, ShortGPT). Methods:

- ``taylor``: first-order Taylor importance (LLM-Pruner, element-wise): ``|w * dL/dw|`` per
  calibration sample, accumulated over samples and summed over the unit. Taking the absolute
  value per sample matters: ``|w * mean gradient|`` cancels out and picks bad KV groups (0.71-0.96x
  the random baseline's damage on stories260K), and so does ``|sum over the unit|`` per sample
  (0.62x) against 0.42x for this form.
- ``activation``: activation-weighted magnitude (Wanda-style, forward only): each weight's
  ``|w|`` times the norm of the input feature it multiplies, summed over the unit.
- ``magnitude``: ``|w|`` summed over the unit (no data).
- ``random``: uniform random scores from ``seed`` (the baseline).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lean_plugins._optional import require
from lean_plugins.errors import ConfigurationError
from lean_plugins.pruning.modeling import decoder_layers

METHODS = ("taylor", "activation", "magnitude", "random")


@dataclass
class LayerScores:
    """Scores of one decoder layer's units (higher = more important)."""

    q_heads: Any  # (n_q,)
    kv_groups: Any  # (n_kv,): KV head plus its query heads
    mlp_channels: Any  # (intermediate,)


def _progress(items: Sequence[Any], desc: str, enabled: bool) -> Iterable[Any]:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="sample")


def _head_sums(rows: Any, head_dim: int) -> Any:
    """Sum a per-row vector into per-head totals."""
    return rows.reshape(-1, head_dim).sum(-1)


def _unit_contributions(layer: Any, values: dict[str, Any]) -> tuple[Any, Any, Any]:
    """Per-q-head, per-kv-head and per-channel sums of ``values`` (one tensor per weight name)."""
    attn = layer.self_attn
    hd = attn.head_dim

    def rows(name: str) -> Any:
        total = values[name + ".weight"].sum(-1)
        if name + ".bias" in values:
            total = total + values[name + ".bias"]
        return total

    q = _head_sums(rows("self_attn.q_proj"), hd) + _head_sums(values["self_attn.o_proj.weight"].sum(0), hd)
    kv = _head_sums(rows("self_attn.k_proj"), hd) + _head_sums(rows("self_attn.v_proj"), hd)
    mlp = rows("mlp.gate_proj") + rows("mlp.up_proj") + values["mlp.down_proj.weight"].sum(0)
    return q, kv, mlp


def _group_totals(q: Any, kv: Any) -> Any:
    return kv + q.reshape(kv.shape[0], -1).sum(-1)


_PRUNABLE = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def _layer_params(layer: Any) -> dict[str, Any]:
    named = dict(layer.named_parameters())
    return {k: v for k, v in named.items() if k.rsplit(".", 1)[0] in _PRUNABLE}


def compute_importance(
    model: Any,
    sequences: Sequence[Sequence[int]],
    method: str,
    *,
    seed: int = 0,
    progress: bool = False,
) -> list[LayerScores]:
    """Scores of every layer's units by ``method`` over the calibration ``sequences``."""
    torch = require("torch", "local")
    if method not in METHODS:
        raise ConfigurationError(f"Unknown importance method {method!r}; use one of {METHODS}.")
    layers = list(decoder_layers(model))
    if method == "random":
        gen = torch.Generator().manual_seed(seed)
        out = []
        for layer in layers:
            n_q = layer.self_attn.q_proj.out_features // layer.self_attn.head_dim
            n_kv = layer.self_attn.k_proj.out_features // layer.self_attn.head_dim
            out.append(
                LayerScores(
                    torch.rand(n_q, generator=gen),
                    torch.rand(n_kv, generator=gen),
                    torch.rand(layer.mlp.gate_proj.out_features, generator=gen),
                )
            )
        return out
    if method != "magnitude" and not sequences:
        raise ConfigurationError(f"Method {method!r} needs calibration text; pass calibration=[...].")
    if method == "taylor":
        return _taylor(model, layers, sequences, progress)
    return _weighted_magnitude(model, layers, sequences if method == "activation" else None, progress)


def _taylor(
    model: Any, layers: list[Any], sequences: Sequence[Sequence[int]], progress: bool
) -> list[LayerScores]:
    torch = require("torch", "local")
    device = next(model.parameters()).device
    params = [_layer_params(layer) for layer in layers]
    saved_flags = {id(p): p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for group in params:
        for p in group.values():
            p.requires_grad_(True)
    sums: list[list[Any]] = [[0.0, 0.0, 0.0] for _ in layers]
    was_training = model.training
    model.eval()
    try:
        for ids in _progress(sequences, "taylor importance", progress):
            x = torch.tensor([list(ids)], device=device)
            loss = model(input_ids=x, labels=x, use_cache=False).loss
            grads = torch.autograd.grad(loss, [p for g in params for p in g.values()])
            it = iter(grads)
            for i, (layer, group) in enumerate(zip(layers, params, strict=False)):
                values = {name: (p.detach().float() * next(it).float()).abs() for name, p in group.items()}
                q, kv, mlp = _unit_contributions(layer, values)
                sums[i][0] = sums[i][0] + q
                sums[i][1] = sums[i][1] + _group_totals(q, kv)
                sums[i][2] = sums[i][2] + mlp
    finally:
        for p in model.parameters():
            p.requires_grad_(saved_flags[id(p)])
        model.train(was_training)
    return [LayerScores(q.cpu(), g.cpu(), m.cpu()) for q, g, m in sums]


def _weighted_magnitude(
    model: Any, layers: list[Any], sequences: Sequence[Sequence[int]] | None, progress: bool
) -> list[LayerScores]:
    """``|w|`` times the RMS of the input feature it multiplies (1 when ``sequences`` is None)."""
    torch = require("torch", "local")
    device = next(model.parameters()).device
    watched = ("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj")
    sq: dict[tuple[int, str], Any] = {}
    counts = {"n": 0}
    hooks = []
    if sequences is not None:
        for i, layer in enumerate(layers):
            for name in watched:
                module = layer.get_submodule(name)

                def hook(_m: Any, args: tuple[Any, ...], key: tuple[int, str] = (i, name)) -> None:
                    x = args[0].detach().float().reshape(-1, args[0].shape[-1])
                    sq[key] = sq.get(key, 0.0) + (x * x).sum(0)

                hooks.append(module.register_forward_pre_hook(hook))
        try:
            with torch.inference_mode():
                for ids in _progress(sequences, "activation importance", progress):
                    model(input_ids=torch.tensor([list(ids)], device=device), use_cache=False)
                    counts["n"] += len(ids)
        finally:
            for h in hooks:
                h.remove()

    def norm(i: int, name: str, size: int) -> Any:
        if sequences is None:
            return torch.ones(size, device=device)
        return (sq[(i, name)] / counts["n"]).sqrt()

    out = []
    with torch.no_grad():
        for i, layer in enumerate(layers):
            hidden = layer.self_attn.q_proj.in_features
            x_attn, x_mlp = norm(i, "self_attn.q_proj", hidden), norm(i, "mlp.gate_proj", hidden)
            x_o = norm(i, "self_attn.o_proj", layer.self_attn.o_proj.in_features)
            x_down = norm(i, "mlp.down_proj", layer.mlp.down_proj.in_features)
            values = {}
            for name, p in _layer_params(layer).items():
                w = p.detach().float().abs()
                if name.endswith(".bias"):
                    values[name] = torch.zeros_like(w)
                    continue
                scale = {
                    "self_attn.o_proj.weight": x_o,
                    "mlp.down_proj.weight": x_down,
                }.get(name, x_mlp if name.startswith("mlp.") else x_attn)
                values[name] = w * scale[None, :]
            q, kv, mlp = _unit_contributions(layer, values)
            out.append(LayerScores(q.cpu(), _group_totals(q, kv).cpu(), mlp.cpu()))
    return out


def block_influence(model: Any, sequences: Sequence[Sequence[int]], *, progress: bool = False) -> list[float]:
    """ShortGPT block influence of each layer: 1 - mean cosine(input, output) over tokens."""
    torch = require("torch", "local")
    if not sequences:
        raise ConfigurationError(
            "Dropping layers needs calibration text to score them; pass calibration=[...]."
        )
    device = next(model.parameters()).device
    layers = list(decoder_layers(model))
    totals = [0.0] * len(layers)
    tokens = 0
    hooks = []

    for i, layer in enumerate(layers):

        def hook(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any, idx: int = i) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            y = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(x.float(), y.float(), dim=-1)
            totals[idx] += float((1 - cos).sum())

        hooks.append(layer.register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.inference_mode():
            for ids in _progress(sequences, "block influence", progress):
                model(input_ids=torch.tensor([list(ids)], device=device), use_cache=False)
                tokens += len(ids)
    finally:
        for h in hooks:
            h.remove()
    return [t / tokens for t in totals]
