"""Healing after pruning (layer 3): distillation lowers the loss, checkpoints reload, runs repeat.

Everything runs on tiny randomly initialised Llamas built here; the texts are token-id strings
with a learnable pattern, so a fresh clone runs these tests with nothing beside it.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lean_plugins.errors import ConfigurationError  # noqa: E402
from lean_plugins.pruning import load_model, prune, save_pruned  # noqa: E402
from lean_plugins.pruning.heal import heal  # noqa: E402
from lean_plugins.pruning.speed import IdTokenizer, random_llama  # noqa: E402

TINY = {
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}


def _texts(n: int, seed: int) -> list[str]:
    """Id strings that follow a rule (count up by a per-text step, mod 60, from 3): learnable."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        start, step = (int(x) for x in torch.randint(0, 60, (2,), generator=g))
        out.append(" ".join(str(3 + (start + i * (step % 7 + 1)) % 60) for i in range(40)))
    return out


def _kl_to_teacher(student, teacher, texts: list[str]) -> float:
    ids = torch.tensor([[int(t) for t in text.split()] for text in texts])
    with torch.no_grad():
        s = torch.log_softmax(student(input_ids=ids).logits, -1)
        t = torch.log_softmax(teacher(input_ids=ids).logits, -1)
    return float(torch.nn.functional.kl_div(s, t, log_target=True, reduction="batchmean"))


@pytest.fixture()
def dense_and_pruned():
    torch.set_num_threads(1)
    dense = random_llama(TINY, seed=3)
    # Give the teacher something to teach: a few LM steps on the pattern first.
    heal(dense, IdTokenizer(), _texts(64, 1), steps=60, batch_size=8, seq_len=32, learning_rate=1e-2, seed=1)
    pruned = copy.deepcopy(dense)
    prune(pruned, None, ratio=0.3, method="magnitude")
    return dense, pruned


def test_heal_moves_the_pruned_model_towards_the_dense_one(dense_and_pruned) -> None:
    dense, pruned = dense_and_pruned
    held_out = _texts(16, 99)
    before = _kl_to_teacher(pruned, dense, held_out)
    shapes = [p.shape for p in pruned.parameters()]
    report = heal(pruned, IdTokenizer(), _texts(64, 2), teacher=dense, steps=40, batch_size=8, seq_len=32,
                  kd_weight=1.0)  # fmt: skip
    assert report.mode == "full" and report.steps == 40 and len(report.losses) == 40
    assert report.loss_end < report.loss_start
    assert _kl_to_teacher(pruned, dense, held_out) < 0.7 * before
    assert [p.shape for p in pruned.parameters()] == shapes  # healing never changes the architecture
    assert not pruned.training and not any(p.requires_grad for p in pruned.parameters())


def test_lora_heal_merges_back_into_the_pruned_shapes(dense_and_pruned, tmp_path) -> None:
    dense, pruned = dense_and_pruned
    held_out = _texts(16, 99)
    before = _kl_to_teacher(pruned, dense, held_out)
    names = sorted(n for n, _ in pruned.named_parameters())
    report = heal(pruned, IdTokenizer(), _texts(64, 2), teacher=dense, steps=40, batch_size=8, seq_len=32,
                  kd_weight=1.0, mode="lora", lora_rank=4)  # fmt: skip
    assert report.mode == "lora"
    assert report.trainable_parameters < sum(p.numel() for p in pruned.parameters())
    assert sorted(n for n, _ in pruned.named_parameters()) == names  # no adapter left behind
    assert _kl_to_teacher(pruned, dense, held_out) < before
    save_pruned(pruned, None, tmp_path / "healed")
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "healed").eval()
    ids = torch.tensor([[int(t) for t in held_out[0].split()]])
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, pruned(input_ids=ids).logits, atol=1e-5)
    assert reloaded.config.lean_pruning["heal"]["mode"] == "lora"


def test_non_uniform_healed_stories_model_reloads_with_our_loader(tmp_path) -> None:
    """The real stories260K (shipped fixture): prune non-uniformly, heal, save, reload."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.stories260k import stories, stories_dir

    path = stories_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    dense = AutoModelForCausalLM.from_pretrained(path).eval()
    pruned = copy.deepcopy(dense)
    docs = stories()
    prune(pruned, tokenizer, ratio=0.3, calibration=docs[:8], uniform=False)
    report = heal(pruned, tokenizer, docs[:48], teacher=dense, steps=12, batch_size=4, seq_len=64)
    assert report.loss_end < report.loss_start
    save_pruned(pruned, tokenizer, tmp_path / "healed")
    reloaded, _tok, _backend = load_model(tmp_path / "healed", dtype="float32", attention="eager")
    ids = torch.tensor([tokenizer(docs[60])["input_ids"][:64]])
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, pruned(input_ids=ids).logits, atol=1e-4)
    assert reloaded.config.lean_pruning["heal"]["steps"] == 12


def test_seeded_runs_give_identical_weights(dense_and_pruned) -> None:
    dense, pruned = dense_and_pruned
    a, b = copy.deepcopy(pruned), copy.deepcopy(pruned)
    texts = _texts(32, 2)
    for model in (a, b):
        heal(model, IdTokenizer(), texts, teacher=dense, steps=8, batch_size=4, seq_len=32, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    c = copy.deepcopy(pruned)
    heal(c, IdTokenizer(), texts, teacher=dense, steps=8, batch_size=4, seq_len=32, seed=8)
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values(), strict=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps must be a positive int"),
        ({"mode": "qlora"}, "mode must be one of"),
        ({"kd_weight": 1.5}, "kd_weight must be between 0 and 1"),
        ({"texts": "one long string"}, "not one string"),
        ({"texts": ["1 2 3"]}, "fewer than one window"),
    ],
)
def test_bad_settings_are_named(dense_and_pruned, kwargs, message) -> None:
    dense, pruned = dense_and_pruned
    args = {"texts": _texts(8, 2), "teacher": dense, "steps": 2, "batch_size": 2, "seq_len": 16, **kwargs}
    texts = args.pop("texts")
    with pytest.raises(ConfigurationError, match=message):
        heal(pruned, IdTokenizer(), texts, **args)


def test_prune_heal_and_ppl_commands_side_by_side(tmp_path, capsys) -> None:
    from lean_plugins.cli import main
    from tests.stories260k import STORIES, stories_dir

    dense, healed = stories_dir(), tmp_path / "healed"
    argv = ["prune", str(dense), "--ratio", "0.3", "--calib", str(STORIES), "--calib-docs", "8"]
    argv += ["--eval", str(STORIES), "--eval-docs", "8", "--out", str(healed)]
    # Healing on the whole file would train on the 8 evaluation stories: refused, nothing written.
    assert main([*argv, "--heal", "4"]) == 2
    assert "also evaluation documents" in capsys.readouterr().err
    assert not (healed / "config.json").exists()
    heal_args = ["--heal", "30", "--heal-docs", "48", "--heal-seq-len", "128", "--heal-batch", "4"]
    assert main([*argv, *heal_args]) == 0
    out = capsys.readouterr().out
    ppl = {line.split()[0]: float(line.rsplit("perplexity", 1)[1]) for line in out.splitlines() if "perplexity" in line}
    assert ppl["healed"] < ppl["after"]
    assert "healed (full" in out and "30 steps on 48 documents" in out
    assert main(["ppl", str(dense), str(healed), "--text", str(STORIES), "--docs", "8"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "perplexity" in line]
    assert len(rows) == 2 and rows[0].endswith(str(dense)) and "x the first" in rows[1]
    assert f"perplexity {ppl['healed']:.3f}" in rows[1]
