"""Convert a llama2.c checkpoint (``model.bin`` + sentencepiece ``tokenizer.model``) into a
Hugging Face Llama folder that ``AutoModelForCausalLM.from_pretrained`` loads.

The llama2.c "legacy" format is a 7-int header (dim, hidden_dim, n_layers, n_heads,
n_kv_heads, vocab_size, seq_len; a negative vocab_size means an unshared classifier) followed
by float32 tensors in a fixed order. llama2.c applies RoPE to interleaved pairs (0,1), (2,3)...
while Hugging Face rotates halves (i, i + head_dim/2), so the q/k rows of every head are
permuted here; without that the converted model's loss is ~5.1 instead of ~1.29 nats/token.
"""

from __future__ import annotations

import logging
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lean_plugins.errors import ModelLoadError
from lean_plugins.model_source import transformers_progress

logger = logging.getLogger("lean_plugins.pruning")

_HEADER = struct.Struct("7i")


@dataclass(frozen=True)
class Llama2cHeader:
    """The hyper-parameters stored at the start of a llama2.c checkpoint."""

    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared_classifier: bool

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


def read_llama2c(checkpoint: str | Path) -> tuple[Llama2cHeader, dict[str, np.ndarray]]:
    """Read a llama2.c legacy checkpoint into its header and named float32 arrays.

    Array names follow llama2.c (``wq`` is ``(n_layers, dim, dim)`` in ``nn.Linear`` layout,
    rows = outputs); RoPE rows are still interleaved as llama2.c stores them.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise ModelLoadError(f"llama2.c checkpoint {path} not found; pass the path of a .bin file.")
    raw = path.read_bytes()
    if len(raw) < _HEADER.size:
        raise ModelLoadError(f"{path} is too short to be a llama2.c checkpoint.")
    if raw[:4] == b"PK\x03\x04" or raw[:1] == b"\x80":  # torch.save's zip, or a bare pickle
        raise ModelLoadError(
            f"{path} is a pickled PyTorch file (torch.save), not a llama2.c checkpoint: export it "
            "with llama2.c's export.py --version 0, or load a Hugging Face folder with "
            "lean_plugins.pruning.load_model."
        )
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = _HEADER.unpack_from(raw)
    header = Llama2cHeader(dim, hidden, n_layers, n_heads, n_kv, abs(vocab), seq_len, vocab > 0)
    if min(dim, hidden, n_layers, n_heads, n_kv, abs(vocab), seq_len) <= 0 or dim % n_heads:
        raise ModelLoadError(
            f"{path} has an invalid llama2.c header {header}; is it a legacy (version 0) export?"
        )
    data = np.frombuffer(raw, dtype=np.float32, offset=_HEADER.size)
    kv_dim = n_kv * header.head_dim
    shapes = [
        ("tok_embeddings", (header.vocab_size, dim)),
        ("rms_att", (n_layers, dim)),
        ("wq", (n_layers, dim, dim)),
        ("wk", (n_layers, kv_dim, dim)),
        ("wv", (n_layers, kv_dim, dim)),
        ("wo", (n_layers, dim, dim)),
        ("rms_ffn", (n_layers, dim)),
        ("w1", (n_layers, hidden, dim)),
        ("w2", (n_layers, dim, hidden)),
        ("w3", (n_layers, hidden, dim)),
        ("rms_final", (dim,)),
        ("freq_cis_real", (seq_len, header.head_dim // 2)),
        ("freq_cis_imag", (seq_len, header.head_dim // 2)),
    ]
    if not header.shared_classifier:
        shapes.append(("wcls", (header.vocab_size, dim)))
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for name, shape in shapes:
        size = int(np.prod(shape))
        if offset + size > data.size:
            raise ModelLoadError(
                f"{path} ends early (while reading {name}); the header says {header}. "
                "Only llama2.c legacy exports (export.py --version 0 / model.bin) are supported."
            )
        arrays[name] = data[offset : offset + size].reshape(shape)
        offset += size
    if offset != data.size:
        raise ModelLoadError(
            f"{path} has {data.size - offset} float32 values left over after the tensors of {header}; "
            "it is not a llama2.c legacy export."
        )
    return header, arrays


def interleaved_to_halves(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder the rows of a q/k projection from interleaved RoPE pairs to rotated halves."""
    out_dim, in_dim = weight.shape
    head_dim = out_dim // n_heads
    return weight.reshape(n_heads, head_dim // 2, 2, in_dim).transpose(0, 2, 1, 3).reshape(out_dim, in_dim)


def convert_llama2c(
    checkpoint: str | Path, tokenizer_model: str | Path, out_dir: str | Path, *, rope_theta: float = 10000.0
) -> Path:
    """Write a Hugging Face ``LlamaForCausalLM`` folder from a llama2.c checkpoint.

    ``tokenizer_model`` is the sentencepiece ``.model`` file (e.g. ``tok512.model``); it is
    copied as ``tokenizer.model`` so ``AutoTokenizer.from_pretrained(out_dir)`` loads it
    (``LlamaTokenizer(vocab_file=...)`` silently builds a 3-token tokenizer instead).
    Returns ``out_dir``.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    tok_path = Path(tokenizer_model)
    if not tok_path.is_file():
        raise ModelLoadError(
            f"tokenizer model {tok_path} not found; pass the sentencepiece .model file (e.g. tok512.model)."
        )
    header, w = read_llama2c(checkpoint)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(
        vocab_size=header.vocab_size,
        hidden_size=header.dim,
        intermediate_size=header.hidden_dim,
        num_hidden_layers=header.n_layers,
        num_attention_heads=header.n_heads,
        num_key_value_heads=header.n_kv_heads,
        head_dim=header.head_dim,
        max_position_embeddings=header.seq_len,
        rms_norm_eps=1e-5,
        rope_theta=rope_theta,
        tie_word_embeddings=header.shared_classifier,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        torch_dtype="float32",
    )
    state: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": w["tok_embeddings"],
        "model.norm.weight": w["rms_final"],
        "lm_head.weight": w["tok_embeddings"] if header.shared_classifier else w["wcls"],
    }
    for i in range(header.n_layers):
        p = f"model.layers.{i}."
        state[p + "input_layernorm.weight"] = w["rms_att"][i]
        state[p + "post_attention_layernorm.weight"] = w["rms_ffn"][i]
        state[p + "self_attn.q_proj.weight"] = interleaved_to_halves(w["wq"][i], header.n_heads)
        state[p + "self_attn.k_proj.weight"] = interleaved_to_halves(w["wk"][i], header.n_kv_heads)
        state[p + "self_attn.v_proj.weight"] = w["wv"][i]
        state[p + "self_attn.o_proj.weight"] = w["wo"][i]
        state[p + "mlp.gate_proj.weight"] = w["w1"][i]
        state[p + "mlp.down_proj.weight"] = w["w2"][i]
        state[p + "mlp.up_proj.weight"] = w["w3"][i]
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict({k: torch.tensor(np.array(v)) for k, v in state.items()}, strict=True, assign=True)
    model.tie_weights()
    # llama2.c ends a sequence by emitting BOS (run.c stops on token 1), and never EOS: without 1
    # here, generation would run to max_new_tokens and p(eos) would say nothing.
    model.generation_config.eos_token_id = [config.eos_token_id, config.bos_token_id]
    with transformers_progress(show=False):
        model.save_pretrained(out)
    shutil.copyfile(tok_path, out / "tokenizer.model")
    tokenizer = LlamaTokenizer.from_pretrained(out)
    tokenizer.save_pretrained(out)
    logger.info("converted %s (%s) to %s", checkpoint, header, out)
    return out
