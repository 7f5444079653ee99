"""Train the embedded compressor: a keep/drop token classifier on all-MiniLM-L6-v2.

LLMLingua-2 recipe: word-level keep labels aligned from original/compressed pairs
(``lean_plugins.compress.data.align_keep_labels``), every sub-token of a word gets the
word's label, cross-entropy token classification. To stay within the 10 MB shipping cap,
the top ``--train-layers`` encoder layers and the classification head are trained in full,
and with ``--lora-rank`` every linear layer below them gets a low-rank adapter (LoRA) while
their biases and LayerNorms are trained in full. Only what differs from the base encoder is
saved, fp16 safetensors in ``lean_plugins/data/compressor/``: the adapters as their two
factors, which ``lean_plugins.compress.model`` merges into the base weights when it
assembles the model (a merged weight would cost as much as a full layer).

Seeded and deterministic on one machine. The held-out test split (10%, seed 13) is never
trained on or looked at here; the script prints metrics on the validation split (5%), and
``scripts/bench_compress.py`` measures the test split through the public API.

    # the shipped model (about 13 minutes on one thread of this machine)
    nice -n 10 python scripts/train_compressor.py --train-layers 2 --lora-rank 32 --epochs 3 \
        --lr 2e-4 --lora-lr 1e-3
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from lean_plugins.compress.data import PAIRS_FILE, CompressionPair, keep_f1, load_pairs, split_pairs, words
from lean_plugins.embeddings import default_model_path
from lean_plugins.paths import shared_data_dir

OUT_DIR = Path(__file__).resolve().parent.parent / "lean_plugins" / "data" / "compressor"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=None, help="pairs CSV (default: shared data)")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--train-layers", type=int, default=2, help="top encoder layers trained in full")
    parser.add_argument(
        "--lora-rank",
        type=int,
        default=0,
        help="LoRA rank on every linear layer of the layers below the fully trained ones (0: none); "
        "their biases and LayerNorms are trained too",
    )
    parser.add_argument(
        "--lora-alpha", type=float, default=0.0, help="LoRA scale numerator (default: the rank)"
    )
    parser.add_argument(
        "--lora-lr", type=float, default=0.0, help="learning rate of the adapters (default: --lr)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 is ~3x faster per step than 2 when another job holds a core "
        "(OpenMP threads wait on the slowest one)",
    )
    parser.add_argument("--limit", type=int, default=0, help="train on at most this many pairs (smoke runs)")
    return parser.parse_args()


class LoRALinear(torch.nn.Module):
    """A frozen linear layer plus a trainable low-rank update ``scale * B @ A`` (LoRA)."""

    def __init__(self, base: torch.nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        # peft's initialisation: A uniform in +-1/sqrt(in), B zero, so training starts at the base.
        bound = 1.0 / base.in_features**0.5
        self.lora_a = torch.nn.Parameter(torch.empty(rank, base.in_features).uniform_(-bound, bound))
        self.lora_b = torch.nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, scale * B)``: the shipped factors; assembly adds their product to the weight."""
        return self.lora_a.detach(), (self.lora_b * self.scale).detach()


def encode_pairs(tokenizer, pairs: list[CompressionPair]) -> list[dict]:
    """Token ids and token labels (-100 on special tokens) of each pair's original."""
    items = []
    for pair in pairs:
        ws = words(pair.original)
        labels = pair.labels
        enc = tokenizer(ws, is_split_into_words=True, truncation=True, max_length=256)
        token_labels = [-100 if w is None else int(labels[w]) for w in enc.word_ids()]
        items.append({"input_ids": enc["input_ids"], "labels": token_labels, "word_ids": enc.word_ids()})
    return items


def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[i, :n] = torch.tensor(b["input_ids"])
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(b["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.inference_mode()
def compute_bottom_states(model, items: list[dict], first_trained: int) -> list[torch.Tensor]:
    """Output of the frozen layers below ``first_trained`` for each item (unpadded)."""
    model.eval()
    states: list[torch.Tensor] = []
    for start in range(0, len(items), 64):
        chunk = items[start : start + 64]
        batch = collate(chunk)
        hidden = model.bert(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        ).hidden_states[first_trained]
        states.extend(hidden[i, : len(item["input_ids"])].clone() for i, item in enumerate(chunk))
    return states


def pad_states(states: list[torch.Tensor]) -> torch.Tensor:
    width = max(s.shape[0] for s in states)
    out = torch.zeros(len(states), width, states[0].shape[1])
    for i, s in enumerate(states):
        out[i, : s.shape[0]] = s
    return out


def top_loss(
    model, hidden: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, first_trained: int
) -> torch.Tensor:
    """Cross-entropy of the trained top layers + head applied to cached bottom states."""
    additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    for layer in model.bert.encoder.layer[first_trained:]:
        hidden = layer(hidden, attention_mask=additive)
        if isinstance(hidden, tuple):
            hidden = hidden[0]
    logits = model.classifier(model.dropout(hidden))
    return torch.nn.functional.cross_entropy(logits.view(-1, 2), labels.view(-1), ignore_index=-100)


@torch.inference_mode()
def evaluate(model, items: list[dict], pairs: list[CompressionPair]) -> dict[str, float]:
    """Word keep-F1: top-k words at the reference keep ratio, and at threshold 0.5."""
    model.eval()
    f1_topk, f1_thr = [], []
    for start in range(0, len(items), 64):
        chunk = items[start : start + 64]
        batch = collate(chunk)
        probs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.softmax(
            -1
        )[..., 1]
        for row, item in enumerate(chunk):
            pair = pairs[start + row]
            reference = pair.labels
            sums = np.zeros(len(reference))
            counts = np.zeros(len(reference))
            for t, w in enumerate(item["word_ids"]):
                if w is not None:
                    sums[w] += float(probs[row, t])
                    counts[w] += 1
            word_probs = sums / np.maximum(counts, 1)
            k = sum(reference)
            top = set(np.argsort(-word_probs, kind="stable")[:k].tolist())
            f1_topk.append(keep_f1([i in top for i in range(len(reference))], reference))
            f1_thr.append(keep_f1([p > 0.5 for p in word_probs], reference))
    model.train()
    return {"keep_f1_topk": float(np.mean(f1_topk)), "keep_f1_threshold": float(np.mean(f1_thr))}


def main() -> int:
    args = parse_args()
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    from transformers import AutoTokenizer, BertForTokenClassification

    data_path = args.data
    if data_path is None:
        root = shared_data_dir()
        if root is None:
            print(
                "no data: pass --data or put the shared data at ../shared/data", file=sys.stderr, flush=True
            )
            return 2
        data_path = root / PAIRS_FILE
    train_pairs, val_pairs, test_pairs = split_pairs(load_pairs(data_path))
    if args.limit:
        train_pairs = train_pairs[: args.limit]
    print(
        f"pairs: train {len(train_pairs)}, val {len(val_pairs)}, test {len(test_pairs)} (held out)",
        flush=True,
    )

    base = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = BertForTokenClassification.from_pretrained(
        base, num_labels=2, id2label={0: "drop", 1: "keep"}, label2id={"drop": 0, "keep": 1}
    )
    n_layers = model.config.num_hidden_layers
    first_trained = n_layers - args.train_layers
    for param in model.parameters():
        param.requires_grad = False
    for layer in model.bert.encoder.layer[first_trained:]:
        for param in layer.parameters():
            param.requires_grad = True
    for param in model.classifier.parameters():
        param.requires_grad = True
    alpha = args.lora_alpha or float(args.lora_rank)
    if args.lora_rank:
        for index in range(first_trained):
            layer = model.bert.encoder.layer[index]
            for holder, attr in [
                (layer.attention.self, "query"),
                (layer.attention.self, "key"),
                (layer.attention.self, "value"),
                (layer.attention.output, "dense"),
                (layer.intermediate, "dense"),
                (layer.output, "dense"),
            ]:
                setattr(holder, attr, LoRALinear(getattr(holder, attr), args.lora_rank, alpha))
            # Biases and LayerNorms are a few thousand numbers a layer: train them in full.
            for name, param in layer.named_parameters():
                if name.endswith(".bias") or "LayerNorm" in name:
                    param.requires_grad = True
    adapter_params = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    other_params = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    trainable = adapter_params + other_params
    print(
        f"trainable parameters: {sum(p.numel() for p in trainable):,} "
        f"(adapters {sum(p.numel() for p in adapter_params):,})",
        flush=True,
    )

    train_items = encode_pairs(tokenizer, train_pairs)
    val_items = encode_pairs(tokenizer, val_pairs)
    groups = [{"params": other_params, "lr": args.lr}]
    if adapter_params:
        groups.append({"params": adapter_params, "lr": args.lora_lr or args.lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    steps_per_epoch = (len(train_items) + args.batch_size - 1) // args.batch_size
    total_steps = steps_per_epoch * args.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / (0.06 * total_steps)) * max(0.0, 1 - step / total_steps)
    )
    rng = random.Random(args.seed)
    started = time.time()
    # Without adapters the bottom layers are frozen: run them once and train on their output.
    cache_bottom = args.lora_rank == 0 and first_trained > 0
    if cache_bottom:
        bottom_states = compute_bottom_states(model, train_items, first_trained)
        print(f"cached frozen layers 0..{first_trained - 1} ({time.time() - started:.0f}s)", flush=True)
    model.train()
    step = 0
    for epoch in range(args.epochs):
        order = list(range(len(train_items)))
        rng.shuffle(order)
        # Sort within windows of 20 batches by length: far less padding, still shuffled.
        span = 20 * args.batch_size
        order = [
            i
            for w in range(0, len(order), span)
            for i in sorted(order[w : w + span], key=lambda i: len(train_items[i]["input_ids"]))
        ]
        running = 0.0
        for start in range(0, len(order), args.batch_size):
            chosen = order[start : start + args.batch_size]
            batch = collate([train_items[i] for i in chosen])
            if cache_bottom:
                hidden = pad_states([bottom_states[i] for i in chosen])
                loss = top_loss(model, hidden, batch["attention_mask"], batch["labels"], first_trained)
            else:
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            running += float(loss.detach())
            step += 1
            if step % 50 == 0:
                print(
                    f"epoch {epoch} step {step}/{total_steps} loss {running / 50:.4f} ({time.time() - started:.0f}s)",
                    flush=True,
                )
                running = 0.0
        if epoch < args.epochs - 1:  # the last epoch is measured below
            metrics = evaluate(model, val_items, val_pairs)
            print(f"epoch {epoch} val {json.dumps(metrics)} ({time.time() - started:.0f}s)", flush=True)

    # Collect what differs from the base encoder: trained layers and head in full; for adapted
    # layers the LoRA factors (merged into the weights at assembly), biases and LayerNorms.
    tensors: dict[str, torch.Tensor] = {}
    for index in range(n_layers):
        layer = model.bert.encoder.layer[index]
        prefix = f"bert.encoder.layer.{index}"
        if index >= first_trained:
            for name, value in layer.state_dict().items():
                tensors[f"{prefix}.{name}"] = value
        elif args.lora_rank:
            for name, module in layer.named_modules():
                if isinstance(module, LoRALinear):
                    lora_a, lora_b = module.factors()
                    tensors[f"{prefix}.{name}.lora_a"] = lora_a
                    tensors[f"{prefix}.{name}.lora_b"] = lora_b
            for name, param in layer.named_parameters():
                if param.requires_grad and "lora_" not in name:
                    tensors[f"{prefix}.{name.replace('.base.', '.')}"] = param.detach()
    for name, value in model.classifier.state_dict().items():
        tensors[f"classifier.{name}"] = value
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in tensors.items()}

    val_metrics = evaluate(model, val_items, val_pairs)
    elapsed = time.time() - started
    print(f"final val {json.dumps(val_metrics)}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out / "delta.safetensors"), metadata={"format": "pt"})
    info = {
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "architecture": "BertForTokenClassification",
        "id2label": {"0": "drop", "1": "keep"},
        "trained_layers": list(range(first_trained, n_layers)),
        "lora_rank": args.lora_rank,
        "lora_layers": list(range(first_trained)) if args.lora_rank else [],
        "lora_alpha": alpha if args.lora_rank else None,
        "lora_lr": (args.lora_lr or args.lr) if args.lora_rank else None,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "train_pairs": len(train_pairs),
        "val_metrics": val_metrics,
        "train_seconds": round(elapsed, 1),
        "command": "python scripts/train_compressor.py " + " ".join(sys.argv[1:]),
    }
    (args.out / "compressor.json").write_text(json.dumps(info, indent=2) + "\n")
    size = (args.out / "delta.safetensors").stat().st_size
    print(f"saved {len(tensors)} tensors, {size / 1e6:.2f} MB, to {args.out} in {elapsed:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
