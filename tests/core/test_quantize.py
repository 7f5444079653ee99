"""The int8 CPU path (``lean_plugins.quantize``) and how ``dtype="auto"`` picks it."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lean_plugins import devices, quantize  # noqa: E402
from lean_plugins.compress import LeanCompressor  # noqa: E402
from lean_plugins.embeddings import SentenceEncoder, get_encoder  # noqa: E402
from tests.core.test_compress import ARTICLE as TEXT  # noqa: E402  (the Normans paragraph)


@pytest.mark.parametrize(
    ("native_bf16", "int8_fast", "cpu_auto", "device", "expected"),
    [
        (True, True, "int8", "cpu", "bfloat16"),  # bfloat16 in hardware wins
        (False, True, "int8", "cpu", "int8"),  # x86 with AVX2 or better, no bfloat16
        (False, False, "int8", "cpu", "float32"),  # e.g. ARM: torch's int8 kernels are slow there
        (False, True, "float32", "cpu", "float32"),  # the shipped choice may keep float32
        (False, True, "int8", "cuda", "bfloat16"),
        (False, True, "int8", "mps", "float32"),  # int8 runs on CPU only
    ],
)
def test_auto_picks_int8_only_on_cpus_without_bfloat16_where_int8_is_fast(
    monkeypatch, native_bf16: bool, int8_fast: bool, cpu_auto: str, device: str, expected: str
) -> None:
    """Both probes are looked up at call time, so any CPU can stand in for the others."""
    monkeypatch.setattr(devices, "cpu_has_native_bfloat16", lambda: native_bf16)
    monkeypatch.setattr(quantize, "int8_is_fast", lambda: int8_fast)
    monkeypatch.setattr(devices, "CPU_AUTO_WITHOUT_BFLOAT16", cpu_auto)
    assert devices.resolve_precision("auto", device) == expected
    assert devices.resolve_precision(None, device) == expected
    if device != "mps":
        assert LeanCompressor(device=device, record_ledger=False).resolved_dtype == expected
        assert SentenceEncoder(dtype="auto", device=device).dtype == expected
    # forced paths are what they say, whatever the CPU
    assert devices.resolve_precision("float32", device) == "float32"
    if device == "cpu":
        assert devices.resolve_precision("int8", device) == "int8"
    # the cache's shared encoder stays float32: its thresholds were set on float32 vectors
    assert get_encoder().dtype == "float32"


def _tiny_bert() -> tuple[object, dict]:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    model = BertModel(config, add_pooling_layer=False).eval()
    ids = torch.randint(1, 100, (2, 24), generator=torch.Generator().manual_seed(1))
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("keep", [(), ("layer.0.output.dense",), ("output.dense",)])
def test_layers_named_in_keep_float32_stay_float32(keep: tuple[str, ...]) -> None:
    """On a tiny seeded BERT: the named linear layers stay float32, every other one is int8,
    and the output stays close to float32's."""
    model, batch = _tiny_bert()
    with torch.inference_mode():
        reference = model(**batch).last_hidden_state
    quantize.quantize_int8(model, [batch], keep_float32=keep)
    plain = {n for n, m in model.named_modules() if type(m) is torch.nn.Linear and not n.endswith(".linear")}
    quantised = [n for n, m in model.named_modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    names = {f"encoder.layer.{i}.{part}" for i in range(2) for part in (
        "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
        "intermediate.dense", "output.dense")}
    expected_plain = {n for n in names if n.endswith(keep)} if keep else set()
    assert plain == expected_plain
    assert len(quantised) == len(names) - len(expected_plain)
    with torch.inference_mode():
        out = model(**batch).last_hidden_state
    cosine = torch.nn.functional.cosine_similarity(out.flatten(1), reference.flatten(1), dim=1)
    assert cosine.min() > 0.95


def test_shipped_float32_layers_are_kept_by_both_encoders() -> None:
    """The compressor's classifier and the int8 sentence encoder leave
    :data:`quantize.FLOAT32_LINEARS` (and the classifier's head) in float32."""
    compressor = LeanCompressor(dtype="int8", record_ledger=False)
    model = compressor.prompt_compressor.model
    plain = sorted(n for n, m in model.named_modules() if type(m) is torch.nn.Linear and not n.endswith(".linear"))
    expected = sorted(
        n for n, m in model.named_modules()
        if n == "classifier" or (n and n.endswith(quantize.FLOAT32_LINEARS) and not n.endswith(".linear"))
    )
    assert plain == expected and "classifier" in plain
    encoder = get_encoder(dtype="int8")
    encoder.encode("load")
    kept = [n for n, m in encoder._model.named_modules() if type(m) is torch.nn.Linear and not n.endswith(".linear")]
    assert all(n.endswith(quantize.FLOAT32_LINEARS) or n.startswith("pooler") for n in kept)
    assert len([n for n in kept if not n.startswith("pooler")]) == len(quantize.FLOAT32_LINEARS)


def test_int8_keeps_what_float32_keeps_on_a_fixed_text() -> None:
    """What ``auto`` runs on an x86 CPU without bfloat16 when int8 is chosen: on a fixed text
    the keep probabilities follow float32's and the kept words are nearly the same, with and
    without a question (the answer kept in both)."""
    full = LeanCompressor(dtype="float32", record_ledger=False)
    int8 = LeanCompressor(dtype="int8", record_ledger=False)
    p32, p8 = full.word_keep_probabilities(TEXT), int8.word_keep_probabilities(TEXT)
    assert np.corrcoef(p32, p8)[0, 1] > 0.97
    for query in (None, "Who was the leader of the Norse raiders?"):
        a = full.compress(TEXT, rate=0.5, query=query).text.split()
        b = int8.compress(TEXT, rate=0.5, query=query).text.split()
        assert len(set(a) & set(b)) >= 0.85 * len(set(a))
        if query:
            assert "Rollo," in a and "Rollo," in b
