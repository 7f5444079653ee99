"""Structured pruning: shapes, GQA validity, save/reload with equal logits, layer dropping."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from lean_plugins.errors import ConfigurationError
from tests.stories260k import stories, stories_dir

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def dense():
    path = stories_dir()
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    return model, transformers.AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def texts() -> tuple[list[str], list[str]]:
    docs = stories()
    return docs[:24], docs[-40:]


def logits(model, tokenizer, text: str = "Once upon a time, Tom and Lily went to the park.") -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tokenizer(text)["input_ids"]])).logits


def test_uniform_prune_saves_a_checkpoint_plain_from_pretrained_reloads(dense, texts, tmp_path: Path) -> None:
    from lean_plugins.pruning import prune, save_pruned

    model, tok = copy.deepcopy(dense[0]), dense[1]
    report = prune(model, tok, ratio=0.2, method="taylor", calibration=texts[0])
    assert 0.17 < report.removed_fraction < 0.23 and report.uniform
    shape = report.layer_shapes[0]
    assert shape["num_attention_heads"] % shape["num_key_value_heads"] == 0
    assert shape["num_attention_heads"] < 8 and shape["intermediate_size"] < 172
    save_pruned(model, tok, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    # 64 % 6 != 0: LlamaConfig would refuse it, so it is saved as the same architecture, Mistral.
    if 64 % shape["num_attention_heads"]:
        assert config["architectures"] == ["MistralForCausalLM"]
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(logits(reloaded, tok), logits(model, tok), rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in reloaded.parameters()) == report.params_after


def test_non_uniform_prune_reloads_with_our_loader(dense, texts, tmp_path: Path) -> None:
    from lean_plugins.pruning import load_model, prune, save_pruned

    model, tok = copy.deepcopy(dense[0]), dense[1]
    report = prune(model, tok, ratio=0.25, method="activation", calibration=texts[0], uniform=False)
    assert not report.uniform and len({tuple(s.values()) for s in report.layer_shapes}) > 1
    save_pruned(model, tok, tmp_path)
    reloaded, _tok, backend = load_model(tmp_path, device="cpu")
    assert backend in ("sdpa", "eager")
    torch.testing.assert_close(logits(reloaded, tok), logits(model, tok), rtol=1e-5, atol=1e-5)
    from lean_plugins.pruning import LeanLocalLLM

    served = LeanLocalLLM(tmp_path, record_usage=False).generate("Once upon a time", max_new_tokens=10)
    in_memory = LeanLocalLLM(model, tok, record_usage=False).generate("Once upon a time", max_new_tokens=10)
    assert served.token_ids == in_memory.token_ids


def test_within_group_pruning_keeps_a_valid_query_per_kv_ratio(dense, texts) -> None:
    from lean_plugins.pruning import prune

    model, tok = copy.deepcopy(dense[0]), dense[1]
    prune(model, tok, ratio=0, attention_ratio=0.33, method="magnitude")
    layer = model.model.layers[0].self_attn
    assert layer.k_proj.out_features // 8 == 4 and layer.q_proj.out_features // 8 == 4  # 1 q per kv
    assert layer.num_key_value_groups == 1
    assert torch.isfinite(logits(model, tok)).all()


def test_dropped_layers_are_renumbered_and_kv_cache_generation_is_exact(dense, texts) -> None:
    from lean_plugins.pruning import LeanLocalLLM, prune

    model, tok = copy.deepcopy(dense[0]), dense[1]
    report = prune(model, tok, ratio=0, drop_layers_count=2, calibration=texts[0])
    assert len(report.dropped_layers) == 2 and model.config.num_hidden_layers == 3
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]
    llm = LeanLocalLLM(model, tok, record_usage=False)
    ids = llm.encode("Once upon a time")
    cached = llm.generate(ids, max_new_tokens=12).token_ids
    out: list[int] = []
    with torch.no_grad():
        for _ in range(len(cached)):
            out.append(int(model(torch.tensor([ids + out]), use_cache=False).logits[0, -1].argmax()))
    assert cached == out


def test_importance_beats_random_at_20_percent(dense, texts) -> None:
    from lean_plugins.pruning import perplexity, prune

    model, tok = dense
    base = perplexity(model, tok, texts[1])
    damage = {}
    for method, seed in (("activation", 0), ("random", 0), ("random", 1), ("random", 2)):
        pruned = copy.deepcopy(model)
        prune(pruned, tok, ratio=0.2, method=method, calibration=texts[0], seed=seed)
        damage[(method, seed)] = perplexity(pruned, tok, texts[1]) - base
    random_mean = sum(v for (m, _), v in damage.items() if m == "random") / 3
    assert 0 < damage[("activation", 0)] < random_mean


def test_bad_arguments_are_clear(dense) -> None:
    from lean_plugins.pruning import prune

    model, tok = copy.deepcopy(dense[0]), dense[1]
    with pytest.raises(ConfigurationError, match="method"):
        prune(model, tok, ratio=0.2, method="obs")
    with pytest.raises(ConfigurationError, match="calibration"):
        prune(model, tok, ratio=0.2, method="taylor", calibration=[])
    with pytest.raises(ConfigurationError, match="ratio"):
        prune(model, tok, ratio=1.5)


@pytest.mark.parametrize("arch", ["qwen2", "mistral", "llama"])
def test_other_architectures_keep_biases_and_reload(arch: str, dense, texts, tmp_path: Path) -> None:
    """Qwen2 (q/k/v biases), Mistral and Llama random-init models: prune, save, reload, same logits."""
    from lean_plugins.pruning import prune, save_pruned

    tok = dense[1]
    config_cls = {
        "qwen2": transformers.Qwen2Config,
        "mistral": transformers.MistralConfig,
        "llama": transformers.LlamaConfig,
    }[arch]
    config = config_cls(
        vocab_size=512,
        hidden_size=96,
        intermediate_size=160,
        num_hidden_layers=3,
        num_attention_heads=12,
        num_key_value_heads=4,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    prune(model, tok, ratio=0.3, method="activation", calibration=texts[0][:6])
    if arch == "qwen2":
        assert (
            model.model.layers[0].self_attn.q_proj.bias.shape[0]
            == model.model.layers[0].self_attn.q_proj.out_features
        )
    save_pruned(model, tok, tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(logits(reloaded, tok), logits(model, tok), rtol=1e-5, atol=1e-5)
