"""llama2.c -> Hugging Face conversion, checked against a reference forward written here."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest

from lean_plugins.errors import ModelLoadError
from tests.stories260k import CHECKPOINT, TOKENIZER, stories, stories_dir

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def hf_dir() -> Path:
    return stories_dir()


def reference_logits(checkpoint: Path, tokens: list[int]) -> np.ndarray:
    """llama2.c's forward (run.c), in numpy, with its interleaved RoPE, from the raw file."""
    raw = checkpoint.read_bytes()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = np.frombuffer(raw[:28], dtype=np.int32)
    tied = vocab > 0  # llama2.c: a negative vocab size means a separate classifier follows
    vocab = abs(int(vocab))
    hd = dim // n_heads
    kv_dim = n_kv * hd
    flat = np.frombuffer(raw[28:], dtype=np.float32)
    pos = 0

    def take(*shape: int) -> np.ndarray:
        nonlocal pos
        n = int(np.prod(shape))
        out = flat[pos : pos + n].reshape(shape)
        pos += n
        return out

    emb = take(vocab, dim)
    rms_att, wq, wk, wv = (
        take(n_layers, dim),
        take(n_layers, dim, dim),
        take(n_layers, kv_dim, dim),
        take(n_layers, kv_dim, dim),
    )
    wo, rms_ffn = take(n_layers, dim, dim), take(n_layers, dim)
    w1, w2, w3 = take(n_layers, hidden, dim), take(n_layers, dim, hidden), take(n_layers, hidden, dim)
    rms_final = take(dim)
    take(2, seq_len, hd // 2)  # freq_cis_real, freq_cis_imag: unused (RoPE is computed below)
    classifier = emb if tied else take(vocab, dim)

    def rmsnorm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * w

    def rope(x: np.ndarray) -> np.ndarray:  # x: (T, heads, hd), pairs (2i, 2i+1) rotate together
        t = np.arange(x.shape[0])[:, None]
        freqs = 1.0 / (10000.0 ** (np.arange(0, hd, 2) / hd))
        ang = t * freqs[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    T = len(tokens)
    x = emb[tokens].astype(np.float64)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for layer in range(n_layers):
        h = rmsnorm(x, rms_att[layer])
        q = rope((h @ wq[layer].T).reshape(T, n_heads, hd))
        k = rope((h @ wk[layer].T).reshape(T, n_kv, hd))
        v = (h @ wv[layer].T).reshape(T, n_kv, hd)
        heads = []
        for head in range(n_heads):
            kvh = head // (n_heads // n_kv)
            att = q[:, head] @ k[:, kvh].T / math.sqrt(hd) + mask
            att = np.exp(att - att.max(-1, keepdims=True))
            heads.append((att / att.sum(-1, keepdims=True)) @ v[:, kvh])
        x = x + np.concatenate(heads, -1) @ wo[layer].T
        h = rmsnorm(x, rms_ffn[layer])
        gate = h @ w1[layer].T
        x = x + ((gate / (1 + np.exp(-gate))) * (h @ w3[layer].T)) @ w2[layer].T
    return rmsnorm(x, rms_final) @ classifier.T


def test_converted_model_matches_reference_forward(hf_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    ids = tokenizer("Once upon a time, there was a little dog named Max.")["input_ids"]
    with torch.no_grad():
        ours = model(torch.tensor([ids])).logits[0].numpy()
    ref = reference_logits(CHECKPOINT, ids)
    np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=1e-3)


def write_llama2c(path: Path, *, dim: int, hidden: int, n_layers: int, n_heads: int, n_kv: int,
                  tied: bool, vocab: int = 512, seq_len: int = 64, seed: int = 0) -> Path:  # fmt: skip
    """A random llama2.c legacy checkpoint (header, then every float32 array in export order)."""
    hd, rng = dim // n_heads, np.random.default_rng(seed)
    sizes = [vocab * dim, n_layers * dim, n_layers * dim * dim, 2 * n_layers * n_kv * hd * dim]
    sizes += [n_layers * dim * dim, n_layers * dim, 3 * n_layers * hidden * dim, dim, seq_len * hd]
    sizes += [] if tied else [vocab * dim]
    header = struct.pack("7i", dim, hidden, n_layers, n_heads, n_kv, vocab if tied else -vocab, seq_len)
    path.write_bytes(header + rng.normal(0, 0.3, sum(sizes)).astype(np.float32).tobytes())
    return path


@pytest.mark.parametrize(
    "shape",
    [
        {"dim": 32, "hidden": 48, "n_layers": 2, "n_heads": 4, "n_kv": 4, "tied": False},  # MHA, own classifier
        {"dim": 48, "hidden": 64, "n_layers": 3, "n_heads": 6, "n_kv": 2, "tied": True},  # GQA 3:1
    ],
)
def test_written_checkpoints_of_other_shapes_convert_exactly(tmp_path: Path, shape: dict) -> None:
    from transformers import AutoModelForCausalLM

    from lean_plugins.pruning import convert_llama2c

    checkpoint = write_llama2c(tmp_path / "model.bin", **shape)
    out = convert_llama2c(checkpoint, TOKENIZER, tmp_path / "hf")
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.config.tie_word_embeddings is shape["tied"]
    ids = [1, 403, 261, 370, 280, 33, 17]
    with torch.no_grad():
        ours = model(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(ours, reference_logits(checkpoint, ids), atol=2e-4, rtol=1e-3)


def test_tokenizer_is_the_full_sentencepiece_vocabulary(hf_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    assert len(tokenizer) == 512  # LlamaTokenizer(vocab_file=...) would give 3
    text = "Lily and Tom played in the park."
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text


def test_generation_ends_where_llama2c_ends_a_story(hf_dir: Path) -> None:
    """llama2.c's run.c stops on BOS (id 1); the converted model must too, or it never stops."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    assert model.generation_config.eos_token_id == [2, 1]
    out = model.generate(torch.tensor([[1]]), max_new_tokens=400, do_sample=False)
    assert out.shape[1] < 401 and int(out[0, -1]) in (1, 2)  # ended by itself, not by the limit


def test_loss_on_tinystories_is_about_1_29_nats(hf_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lean_plugins.pruning.evaluate import negative_log_likelihood, tokenize_documents

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    total, count = negative_log_likelihood(
        model, tokenize_documents(tokenizer, stories()[:50], 512)
    )
    assert 1.2 < total / count < 1.4  # 5.1 without the RoPE permutation


def test_truncated_checkpoint_is_rejected(tmp_path: Path) -> None:
    from lean_plugins.pruning import convert_llama2c

    bad = tmp_path / "cut.bin"
    bad.write_bytes(CHECKPOINT.read_bytes()[:50_000])
    with pytest.raises(ModelLoadError, match="ends early"):
        convert_llama2c(bad, TOKENIZER, tmp_path / "out")
    with pytest.raises(ModelLoadError, match="tokenizer model"):
        convert_llama2c(CHECKPOINT, tmp_path / "missing.model", tmp_path / "out")
