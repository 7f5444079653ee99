"""Benchmark of layer 3's healing: a pruned model distilled from its dense original.

stories260K (converted from llama2.c) pruned with the default method at 20%, 30% and 40% of
parameters removed, then healed (lean_plugins.pruning.heal: KL to the dense model plus LM loss)
for 200 and 1,000 steps on the first 900 stories of ../shared/data/text/tinystories_sample.txt
(once on tinyshakespeare.txt, to show what the healing text's domain does). Perplexity on the last
100 stories, which neither calibration nor healing sees; CPU time of healing; prefill and decode
speed of dense, pruned and healed side by side.

    python scripts/bench_heal.py [--quick] [--threads N] [--markdown-out PATH] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

from lean_plugins.paths import shared_data_dir
from lean_plugins.pruning import perplexity, prune
from lean_plugins.pruning.evaluate import check_held_out, read_documents
from lean_plugins.pruning.heal import heal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pruning import log, stories_model


def healing(args: argparse.Namespace, data: Path) -> dict:
    """Prune (default method, uniform) at each ratio, then heal for each step budget; perplexity on
    the last stories, which neither calibration nor healing sees; CPU time of healing; speed of
    dense, pruned and healed stories260K side by side (interleaved rounds)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lean_plugins.pruning.speed import measure_speed

    path = stories_model(data)
    tok = AutoTokenizer.from_pretrained(path)
    dense = AutoModelForCausalLM.from_pretrained(path).eval()
    docs = read_documents(data / "text" / "tinystories_sample.txt")
    evaluation = docs[-args.heal_eval_docs :]
    calib, heal_docs = docs[: args.calib_docs], docs[: -args.heal_eval_docs]
    shakespeare = read_documents(data / "text" / "tinyshakespeare.txt")
    check_held_out(evaluation, calib=calib, heal=heal_docs)
    base = perplexity(dense, tok, evaluation)
    log(f"healing: dense perplexity {base:.3f} on the last {len(evaluation)} stories")
    rows, models, speed_ratio = [], {"dense": dense}, None
    # Speed is compared at 30% removed (or the first ratio measured), after the shortest healing.
    speed_at = 0.3 if 0.3 in args.heal_ratios else args.heal_ratios[0]
    for ratio in args.heal_ratios:
        pruned = copy.deepcopy(dense)
        report = prune(pruned, tok, ratio=ratio, calibration=calib)
        ppl = perplexity(pruned, tok, evaluation)
        row = {"ratio": ratio, "removed": report.removed_fraction, "pruned_ppl": ppl, "healed": []}
        log(f"healing: {100 * ratio:.0f}% pruned perplexity {ppl:.3f}")
        budgets = [(steps, "TinyStories", heal_docs) for steps in args.heal_steps]
        if ratio == args.heal_ratios[0]:  # the domain of the healing text, once: Shakespeare for a story model
            budgets.append((args.heal_steps[0], "Shakespeare", shakespeare))
        for steps, source, texts in budgets:
            model = copy.deepcopy(pruned)
            cpu, wall = time.process_time(), time.perf_counter()
            rep = heal(model, tok, texts, teacher=dense, steps=steps, batch_size=args.heal_batch,
                       seq_len=args.heal_seq_len, seed=0)  # fmt: skip
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            healed_ppl = perplexity(model, tok, evaluation)
            row["healed"].append({"steps": steps, "text": source, "ppl": healed_ppl, "cpu_s": cpu, "wall_s": wall,
                                  "tokens": rep.tokens_seen, "mode": rep.mode,
                                  "loss": [rep.loss_start, rep.loss_end]})  # fmt: skip
            log(f"healing: {100 * ratio:.0f}% + {steps} steps on {source}: perplexity {healed_ppl:.3f} "
                f"({healed_ppl / base:.3f}x dense), {cpu:.0f} s CPU, {wall:.0f} s wall")  # fmt: skip
            if ratio == speed_at and source == "TinyStories" and steps == args.heal_steps[0]:
                models["pruned"], models["healed"], speed_ratio = pruned, model, ratio
        rows.append(row)
    speed_best: dict = {}
    for _round in range(args.speed_rounds):
        for name, model in models.items():
            r = measure_speed(model, context=args.heal_speed_context, decode_tokens=args.decode_tokens, repeats=1)
            b = speed_best.setdefault(name, {"prefill": 0.0, "decode": 0.0})
            b["prefill"] = max(b["prefill"], r.prefill_tokens_per_s)
            b["decode"] = max(b["decode"], r.decode_tokens_per_s)
    log(f"healing: speed {speed_best}")
    return {"dense_ppl": base, "eval_docs": len(evaluation), "heal_docs": len(heal_docs),
            "calib_docs": len(calib), "rows": rows, "speed": speed_best, "threads": args.threads,
            "batch": args.heal_batch, "seq_len": args.heal_seq_len, "speed_ratio": speed_ratio,
            "speed_context": args.heal_speed_context}  # fmt: skip


def heal_markdown(h: dict) -> list[str]:
    base = h["dense_ppl"]
    out = [
        f"Healing (`lean_plugins.pruning.heal`, `lean-plugins prune --heal STEPS`): stories260K pruned with the "
        f"default method (uniform), then distilled from the dense model (KL at T=1 and LM loss, weight 0.5 each; "
        f"full fine-tuning; {h['batch']} windows of {h['seq_len']} tokens a step, seed 0) on the first "
        f"{h['heal_docs']} stories of `tinystories_sample.txt`, or on `tinyshakespeare.txt` where marked. "
        f"Perplexity on the last {h['eval_docs']} stories, which neither calibration nor healing sees "
        f"(the script checks). Dense perplexity **{base:.3f}**. CPU time is the process's CPU seconds "
        f"({h['threads']} torch thread(s)); wall time is on a machine shared with other jobs.",
        "",
        "| removed | pruned ppl (x dense) | healing | healed ppl (x dense) | within target | CPU s | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in h["rows"]:
        target = {0.2: 1.15, 0.3: 1.30}.get(r["ratio"])
        for x in r["healed"]:
            rel = x["ppl"] / base
            verdict = "-" if target is None else (f"yes (<= {target:.2f}x)" if rel <= target else f"no (> {target:.2f}x)")
            out.append(
                f"| {100 * r['removed']:.1f}% | {r['pruned_ppl']:.3f} ({r['pruned_ppl'] / base:.2f}x) | "
                f"{x['steps']} steps, {x['text']} | {x['ppl']:.3f} ({rel:.3f}x) | {verdict} | {x['cpu_s']:.0f} | "
                f"{x['wall_s']:.0f} |"
            )
    sp = h["speed"]
    out += [
        "",
        f"Speed after healing (stories260K at {100 * h['speed_ratio']:.0f}% removed, {h['speed_context']}-token prompt, "
        "best of interleaved rounds): healing changes weights, not shapes, so the pruned model's speed "
        "is kept.",
        "",
        "| model | prefill tok/s | decode tok/s |",
        "|---|---|---|",
    ]
    for name in ("dense", "pruned", "healed"):
        out.append(f"| {name} | {sp[name]['prefill']:.0f} | {sp[name]['decode']:.1f} |")
    out.append(
        f"| healed / dense | {sp['healed']['prefill'] / sp['dense']['prefill']:.2f}x | "
        f"{sp['healed']['decode'] / sp['dense']['decode']:.2f}x |"
    )
    return [*out, ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20%% only, 60 steps (~2 min on an idle machine)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--markdown-out", type=Path)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    args.heal_ratios = [0.2] if args.quick else [0.2, 0.3, 0.4]
    args.heal_steps = [60] if args.quick else [200, 1000]
    args.calib_docs, args.heal_eval_docs, args.heal_batch, args.heal_seq_len = 100, 100, 8, 256
    args.heal_speed_context, args.decode_tokens, args.speed_rounds = 256, 32, 3
    torch.set_num_threads(args.threads)
    data = shared_data_dir()
    if data is None:
        print("../shared/data not found (set LEAN_PLUGINS_DATA): the healing benchmark needs it", file=sys.stderr)
        return 1
    h = healing(args, data)
    md = "\n".join(["## Layer 3: healing after pruning", "", *heal_markdown(h)]) + "\n"
    print(md)
    if args.markdown_out:
        args.markdown_out.write_text(md, encoding="utf-8")
    if args.json_out:
        args.json_out.write_text(json.dumps(h, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
