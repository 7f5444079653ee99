"""Loading and saving (pruned) causal LMs, and the pieces of model surgery they share.

A *uniformly* pruned model is a standard Hugging Face checkpoint. A Llama whose hidden size
is no longer a multiple of its head count (e.g. 6 of 8 heads kept) cannot be described by
``LlamaConfig`` (transformers rejects it even with ``head_dim`` set), so it is saved as
``MistralForCausalLM``: the same architecture and weight names without that check, which plain
``AutoModelForCausalLM.from_pretrained`` and vLLM load. A *non-uniformly* pruned model records
its per-layer shapes under ``lean_pruning.layers`` in ``config.json``; :func:`load_model`
rebuilds those shapes before loading the weights.
"""

from __future__ import annotations

import inspect
import json
import logging
import pickle
from pathlib import Path
from typing import Any

from lean_plugins._optional import require
from lean_plugins.devices import resolve_device, resolve_dtype
from lean_plugins.errors import ConfigurationError, ModelLoadError

logger = logging.getLogger("lean_plugins.pruning")

#: Key in config.json under which pruning metadata (and non-uniform layer shapes) live.
PRUNING_KEY = "lean_pruning"

ATTENTION_BACKENDS = ("auto", "flash_attention_2", "sdpa", "eager")


def resolve_attention(attention: str, device: str) -> str:
    """``auto`` -> flash_attention_2 (flash-attn installed and CUDA), else sdpa, else eager."""
    if attention not in ATTENTION_BACKENDS:
        raise ConfigurationError(f"Unknown attention backend {attention!r}; use one of {ATTENTION_BACKENDS}.")
    if attention != "auto":
        return attention
    torch = require("torch", "local")
    from transformers.utils import is_flash_attn_2_available

    if device.startswith("cuda") and torch.cuda.is_available() and is_flash_attn_2_available():
        return "flash_attention_2"
    if hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        return "sdpa"
    return "eager"


def decoder_layers(model: Any) -> Any:
    """The ``nn.ModuleList`` of decoder layers of a Llama-style causal LM."""
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ConfigurationError(
            f"{type(model).__name__} has no .model.layers; only Llama-architecture causal LMs "
            "(Llama, Mistral, Qwen2) are supported."
        )
    return layers


def layer_shapes(model: Any) -> list[dict[str, int]]:
    """Per-layer head and channel counts, read from the weights."""
    shapes = []
    for layer in decoder_layers(model):
        attn = layer.self_attn
        head_dim = attn.head_dim
        shapes.append(
            {
                "num_attention_heads": attn.q_proj.out_features // head_dim,
                "num_key_value_heads": attn.k_proj.out_features // head_dim,
                "intermediate_size": layer.mlp.gate_proj.out_features,
            }
        )
    return shapes


def sync_attention_attributes(model: Any) -> None:
    """Make each attention/MLP module's counters match its (possibly pruned) weights."""
    for idx, layer in enumerate(decoder_layers(model)):
        attn = layer.self_attn
        n_q = attn.q_proj.out_features // attn.head_dim
        n_kv = attn.k_proj.out_features // attn.head_dim
        attn.num_key_value_groups = n_q // n_kv
        attn.layer_idx = idx  # renumbered after layer removal so the KV cache indexes correctly
        for name, value in (("num_heads", n_q), ("num_key_value_heads", n_kv)):
            if hasattr(attn, name):
                setattr(attn, name, value)
        if hasattr(layer.mlp, "intermediate_size"):
            layer.mlp.intermediate_size = layer.mlp.gate_proj.out_features


def is_uniform(shapes: list[dict[str, int]]) -> bool:
    return all(s == shapes[0] for s in shapes)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def load_model(
    name_or_path: str | Path,
    *,
    device: str = "auto",
    dtype: Any = "auto",
    attention: str = "auto",
    progress: bool = False,
) -> tuple[Any, Any, str]:
    """Load a dense or pruned (uniform or non-uniform) causal LM and its tokenizer.

    Returns ``(model, tokenizer, attention_backend_used)``. Local folders always load; a hub
    name loads where the hub is reachable or the model is in the local hub cache, and fails at
    once with a message otherwise. A missing local path is reported as missing. ``progress``
    shows transformers' "Loading weights" bar (the CLI does; library calls stay quiet).
    """
    require("torch", "local")
    transformers = require("transformers", "local")
    from lean_plugins.model_source import resolve_model_source, transformers_progress

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    backend = resolve_attention(attention, device)
    source, local_only = resolve_model_source(name_or_path)
    path = Path(source)
    raw_config = _read_config(path) if path.is_dir() else {}
    per_layer = (raw_config.get(PRUNING_KEY) or {}).get("layers")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    except Exception as exc:
        raise ModelLoadError(
            f"Could not load a tokenizer from {name_or_path!s}: {exc}. Pass a model folder with "
            "its tokenizer files (tokenizer.json or tokenizer.model)."
        ) from exc
    tried = [backend] + [b for b in ("sdpa", "eager") if b != backend]
    last_exc: Exception | None = None
    for candidate in tried:
        try:
            with transformers_progress(show=progress):
                if per_layer:
                    model = _load_non_uniform(path, raw_config, per_layer, torch_dtype, candidate)
                else:
                    model = transformers.AutoModelForCausalLM.from_pretrained(
                        source, dtype=torch_dtype, attn_implementation=candidate, local_files_only=local_only
                    )
            backend = candidate
            break
        except ModelLoadError:
            raise
        except (ValueError, ImportError) as exc:  # backend unsupported by this model/install
            logger.warning("attention backend %s unavailable for %s (%s)", candidate, name_or_path, exc)
            last_exc = exc
        except pickle.UnpicklingError as exc:
            raise ModelLoadError(
                f"{name_or_path!s} holds pickled PyTorch weights (.bin) that do not load safely "
                "(torch weights_only refused them: they hold more than tensors). Use a folder with "
                "safetensors weights; if you trust the file, re-save it with "
                "save_pretrained(..., safe_serialization=True)."
            ) from exc
        except Exception as exc:  # a missing or corrupt file
            raise ModelLoadError(
                f"Could not load a causal LM from {name_or_path!s} ({type(exc).__name__}: {exc}). "
                "Pass a folder with config.json and safetensors weights (convert a pickled "
                "pytorch_model.bin with save_pretrained(..., safe_serialization=True))."
            ) from exc
    else:
        raise ModelLoadError(f"No attention backend could load {name_or_path!s}: {last_exc}")
    model.to(device).eval()
    return model, tokenizer, backend


def _load_non_uniform(
    path: Path, raw_config: dict[str, Any], per_layer: list[dict[str, int]], dtype: Any, attention: str
) -> Any:
    torch = require("torch", "local")
    transformers = require("transformers", "local")
    from safetensors.torch import load_file

    config = transformers.AutoConfig.from_pretrained(str(path))
    config._attn_implementation = attention
    if len(per_layer) != config.num_hidden_layers:
        raise ModelLoadError(
            f"{path}/config.json lists {len(per_layer)} layer shapes under {PRUNING_KEY}.layers but "
            f"num_hidden_layers is {config.num_hidden_layers}; the checkpoint is corrupt."
        )
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attention)
    for layer, shape in zip(decoder_layers(model), per_layer, strict=False):
        reshape_layer(layer, shape)
    state: dict[str, Any] = {}
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{path} has no .safetensors weights.")
    for file in files:
        state.update(load_file(str(file)))
    if getattr(config, "tie_word_embeddings", False) and "lm_head.weight" not in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(
        {k: v.to(dtype) for k, v in state.items()}, strict=False, assign=True
    )
    missing = [m for m in missing if "rotary_emb" not in m]
    if missing or unexpected:
        raise ModelLoadError(
            f"{path}: weights do not match the recorded shapes (missing {missing[:3]}, unexpected {unexpected[:3]})."
        )
    # Buffers (rotary inv_freq) were created on meta; rebuild them on CPU.
    base = model.model
    base.rotary_emb = type(base.rotary_emb)(config=config)
    if getattr(config, "tie_word_embeddings", False):
        model.lm_head.weight = base.embed_tokens.weight
    sync_attention_attributes(model)
    return model  # weights already in ``dtype``; the rotary buffer stays float32 as transformers keeps it


def reshape_layer(layer: Any, shape: dict[str, int]) -> None:
    """Replace a decoder layer's projections with empty ones of the given head/channel counts."""
    torch = require("torch", "local")
    attn, mlp = layer.self_attn, layer.mlp
    head_dim = attn.head_dim
    n_q, n_kv, inter = shape["num_attention_heads"], shape["num_key_value_heads"], shape["intermediate_size"]

    def linear(old: Any, in_features: int, out_features: int) -> Any:
        return torch.nn.Linear(
            in_features,
            out_features,
            bias=old.bias is not None,
            device=old.weight.device,
            dtype=old.weight.dtype,
        )

    hidden = attn.q_proj.in_features
    attn.q_proj = linear(attn.q_proj, hidden, n_q * head_dim)
    attn.k_proj = linear(attn.k_proj, hidden, n_kv * head_dim)
    attn.v_proj = linear(attn.v_proj, hidden, n_kv * head_dim)
    attn.o_proj = linear(attn.o_proj, n_q * head_dim, hidden)
    mlp.gate_proj = linear(mlp.gate_proj, hidden, inter)
    mlp.up_proj = linear(mlp.up_proj, hidden, inter)
    mlp.down_proj = linear(mlp.down_proj, inter, hidden)


def forward_cache_kwarg(model: Any) -> str:
    """The keyword of ``model.forward`` that takes the KV cache (``cache`` in transformers 5)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_kv_cache(model: Any) -> Any:
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # transformers < 4.56
        return DynamicCache()
