"""A tiny seeded Llama written as a GGUF file, shaped like SmolLM2's (byte-level BPE vocabulary
with ChatML control tokens and a chat template, grouped-query attention, tied embeddings), so
tests exercise the GGUF conversion without the 98 MB file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: SmolLM2's chat template, shortened (the same ChatML turns).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["h e", "l l", "Ġ t", "Ġt he", "o r"]


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in byte order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def tokens() -> list[str]:
    merged = ["".join(m.split(" ")) for m in MERGES]
    return SPECIAL_TOKENS + byte_alphabet() + merged


def write_tiny_gguf(path: Path, *, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """Write a float32 Llama GGUF of ``layers`` blocks (4 query / 2 key-value heads) to ``path``."""
    import gguf

    vocab = tokens()
    heads, kv_heads, ffn = 4, 2, 2 * hidden
    head_dim = hidden // heads
    rng = np.random.default_rng(seed)

    def weight(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny test llama")
    writer.add_block_count(layers)
    writer.add_context_length(8192)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(len(vocab))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(vocab)
    writer.add_token_types([3 if t in SPECIAL_TOKENS else 1 for t in vocab])
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    writer.add_tensor("token_embd.weight", weight(len(vocab), hidden, scale=1.0))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", 1 + weight(hidden, scale=0.1))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(hidden, hidden))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(kv_heads * head_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(kv_heads * head_dim, hidden))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(hidden, hidden))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", 1 + weight(hidden, scale=0.1))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(ffn, hidden))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(ffn, hidden))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(hidden, ffn))
    writer.add_tensor("output_norm.weight", 1 + weight(hidden, scale=0.1))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def install_tiny_package(tmp_path: Path, monkeypatch, name: str = "tiny-test-instruct"):
    """Put a package folder holding a tiny GGUF on ``sys.path`` (its ``__init__`` raises, so a
    test fails if anything imports it) and register it as the packaged model ``name`` (hub id
    ``test-org/Tiny-Instruct``). Returns the :class:`~lean_plugins.packaged_models.PackagedModel`."""
    import importlib

    from lean_plugins import packaged_models

    package = "lean_plugins_test_tiny_gguf_pkg"
    folder = tmp_path / "site" / package
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("raise ImportError('the package must not be imported')\n")
    gguf_file = write_tiny_gguf(folder / "tiny.gguf")
    model = packaged_models.PackagedModel(
        name=name,
        hub_id="test-org/Tiny-Instruct",
        package=package,
        distribution="tiny-test-pkg",
        filename="tiny.gguf",
        sha256=packaged_models.file_sha256(gguf_file),
        size=gguf_file.stat().st_size,
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    monkeypatch.setitem(packaged_models.PACKAGED_MODELS, model.name, model)
    return model
