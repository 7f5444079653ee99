"""Bounded healing runs (layer 3): bfloat16 autocast, frozen embeddings, a CPU budget and
checkpoints that a run stopped early leaves behind; and depth-pruned checkpoints reloading with
plain ``from_pretrained``.

Everything runs on tiny randomly initialised Llamas built here (the same learnable id-string
texts as test_pruning_heal.py), so a fresh clone runs these tests with nothing beside it.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lean_plugins.errors import ConfigurationError  # noqa: E402
from lean_plugins.pruning import prune, save_pruned  # noqa: E402
from lean_plugins.pruning.heal import heal  # noqa: E402
from lean_plugins.pruning.speed import IdTokenizer, random_llama  # noqa: E402
from tests.core import test_pruning_heal as heal_tests  # noqa: E402
from tests.core.test_pruning_heal import TINY, _kl_to_teacher, _texts  # noqa: E402

#: The same tiny dense teacher and its 30%-pruned copy as the healing tests.
dense_and_pruned = heal_tests.dense_and_pruned


def test_bfloat16_autocast_heals_with_frozen_embeddings(dense_and_pruned) -> None:
    dense, pruned = dense_and_pruned
    held_out = _texts(16, 99)
    before = _kl_to_teacher(pruned, dense, held_out)
    embedding = pruned.get_input_embeddings().weight.detach().clone()
    report = heal(pruned, IdTokenizer(), _texts(64, 2), teacher=dense, steps=40, batch_size=8, seq_len=32,
                  kd_weight=1.0, compute_dtype="bfloat16", train_embeddings=False)  # fmt: skip
    assert report.compute_dtype == "bfloat16" and not report.embeddings_trained
    assert all(torch.isfinite(torch.tensor(report.losses)))
    assert report.loss_end < report.loss_start
    assert _kl_to_teacher(pruned, dense, held_out) < 0.7 * before
    # The weights stay float32 (autocast only computes in bfloat16) and the embedding is untouched.
    assert all(p.dtype == torch.float32 for p in pruned.parameters())
    assert torch.equal(pruned.get_input_embeddings().weight, embedding)
    assert report.trainable_parameters == sum(p.numel() for p in pruned.parameters()) - embedding.numel()


def test_checkpoints_and_cpu_budget_leave_a_usable_model(dense_and_pruned, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    dense, pruned = dense_and_pruned
    seen: list[tuple[int, int]] = []

    def on_checkpoint(model, done: int, losses: list[float]) -> None:
        assert not model.training and len(losses) == done
        save_pruned(model, None, tmp_path / "ckpt")
        seen.append((done, len(losses)))

    report = heal(pruned, IdTokenizer(), _texts(64, 2), teacher=dense, steps=30, batch_size=8, seq_len=32,
                  checkpoint_every=10, on_checkpoint=on_checkpoint)  # fmt: skip
    # Every 10 steps, then once at the end (not twice at step 30).
    assert [d for d, _ in seen] == [10, 20, 30] and report.steps == report.planned_steps == 30
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    ids = torch.tensor([[int(t) for t in _texts(1, 5)[0].split()]])
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, pruned(input_ids=ids).logits, atol=1e-5)
    # A budget smaller than one step stops after that first step, with a checkpoint of it.
    stopped = copy.deepcopy(dense_and_pruned[1])
    seen.clear()
    short = heal(stopped, IdTokenizer(), _texts(64, 2), teacher=dense, steps=1000, batch_size=8, seq_len=32,
                 max_cpu_seconds=1e-9, checkpoint_every=5, on_checkpoint=on_checkpoint)  # fmt: skip
    assert short.steps == 1 and short.planned_steps == 1000 and short.tokens_seen == 8 * 32
    assert [d for d, _ in seen] == [1]
    assert stopped.config.lean_pruning["heal"]["steps"] == 1


def test_lora_checkpoints_are_merged_copies_and_training_goes_on(dense_and_pruned) -> None:
    dense, pruned = dense_and_pruned
    shapes = {n: p.shape for n, p in pruned.named_parameters()}
    snapshots = []

    def on_checkpoint(model, done: int, losses: list[float]) -> None:
        snapshots.append((done, {n: p.detach().clone() for n, p in model.named_parameters()}))

    heal(pruned, IdTokenizer(), _texts(64, 2), teacher=dense, steps=20, batch_size=8, seq_len=32, mode="lora",
         checkpoint_every=10, on_checkpoint=on_checkpoint)  # fmt: skip
    (mid_step, mid), (end_step, end) = snapshots
    assert (mid_step, end_step) == (10, 20)
    # The mid-run checkpoint has the pruned model's own names and shapes (adapters merged in) ...
    assert {n: p.shape for n, p in mid.items()} == shapes
    # ... and training went on after it: the final weights differ from it.
    assert any(not torch.equal(mid[n], end[n]) for n in shapes)
    assert {n: p.shape for n, p in pruned.named_parameters()} == shapes


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compute_dtype": "float16"}, "compute_dtype must be one of"),
        ({"max_cpu_seconds": 0}, "max_cpu_seconds must be > 0"),
        ({"checkpoint_every": 5}, "checkpoint_every needs on_checkpoint"),
    ],
)
def test_bad_bounded_settings_are_named(dense_and_pruned, kwargs, message) -> None:
    dense, pruned = dense_and_pruned
    with pytest.raises(ConfigurationError, match=message):
        heal(pruned, IdTokenizer(), _texts(8, 2), teacher=dense, steps=2, batch_size=2, seq_len=16, **kwargs)


def test_depth_pruned_checkpoint_reloads_with_plain_from_pretrained(tmp_path) -> None:
    """Whole layers dropped (lowest block influence): the saved config has the new layer count and
    plain ``from_pretrained`` gives the same logits as the pruned model in memory."""
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    model = random_llama({**TINY, "num_hidden_layers": 4}, seed=5)
    report = prune(model, IdTokenizer(), ratio=0, drop_layers_count=2, calibration=_texts(4, 3))
    assert len(report.dropped_layers) == 2 and report.removed_fraction > 0
    folder = save_pruned(model, None, tmp_path / "depth")
    reloaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert reloaded.config.num_hidden_layers == 2 and len(reloaded.model.layers) == 2
    assert reloaded.config.lean_pruning["dropped_layers"] == report.dropped_layers
    ids = torch.tensor([[int(t) for t in _texts(1, 6)[0].split()]])
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)


def test_prune_command_heals_in_bfloat16_within_a_cpu_budget(tmp_path, capsys) -> None:
    import json

    from lean_plugins.cli import main
    from tests.stories260k import STORIES, stories_dir

    out = tmp_path / "healed"
    argv = ["prune", str(stories_dir()), "--ratio", "0.3", "--calib", str(STORIES), "--calib-docs", "8"]
    argv += [
        "--heal",
        "50",
        "--heal-docs",
        "48",
        "--heal-seq-len",
        "64",
        "--heal-batch",
        "2",
        "--out",
        str(out),
    ]
    argv += ["--heal-dtype", "bfloat16", "--heal-freeze-embeddings", "--heal-checkpoint-every", "1"]
    assert main([*argv, "--heal-cpu-minutes", "0.0000001"]) == 0
    printed = capsys.readouterr().out
    assert "1 steps on 48 documents" in printed and "stopped by --heal-cpu-minutes" in printed
    record = json.loads((out / "config.json").read_text())["lean_pruning"]["heal"]
    assert record["steps"] == 1 and record["planned_steps"] == 50
    assert record["compute_dtype"] == "bfloat16" and record["embeddings_trained"] is False
