"""Benchmark of layer 3 (pruned local LLM): quality vs parameters removed, and CPU speed.

Quality: stories260K (converted from llama2.c), perplexity on the last TinyStories of
../shared/data/text/tinystories_sample.txt, calibrating on the first ones (never both), dense
and with 10-40% of all parameters removed by each importance method (random: mean of 10
seeds), and with 1 and 2 layers dropped. Speed: a randomly initialised ~150M-parameter Llama
on CPU, dense vs 30% pruned: prefill and decode tokens/s, peak memory, and time to first token
with a 1,000-token cached prefix vs none.

    python scripts/bench_pruning.py [--quick] [--markdown-out PATH] [--plot docs/pruning_curves.png]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lean_plugins.paths import cache_dir, shared_data_dir
from lean_plugins.pruning import LeanLocalLLM, convert_llama2c, perplexity, prune, save_pruned
from lean_plugins.pruning.evaluate import read_documents
from lean_plugins.pruning.pruner import DEFAULT_METHOD, count_parameters
from lean_plugins.pruning.speed import LLAMA_150M, IdTokenizer, measure_speed, measure_ttft, random_llama

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("activation", "taylor", "magnitude")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def stories_model(data: Path) -> Path:
    out = cache_dir("bench", "stories260K_hf")
    if not (out / "model.safetensors").is_file():
        src = data / "models" / "stories260K"
        convert_llama2c(src / "stories260K.bin", src / "tok512.model", out)
    return out


def quality(args: argparse.Namespace, data: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = stories_model(data)
    tok = AutoTokenizer.from_pretrained(path)
    dense = AutoModelForCausalLM.from_pretrained(path).eval()
    docs = read_documents(data / "text" / "tinystories_sample.txt")
    calib, evaluation = docs[: args.calib_docs], docs[-args.eval_docs :]
    assert len(docs) >= args.calib_docs + args.eval_docs, "calibration and evaluation must not overlap"
    base = perplexity(dense, tok, evaluation)
    total = count_parameters(dense)
    log(f"dense perplexity {base:.3f} ({total:,} parameters)")
    rows = []

    def run(label: str, method: str, ratio: float, **kw) -> dict:
        model = copy.deepcopy(dense)
        start = time.perf_counter()
        # Layer dropping scores layers by block influence; the importance method is unused there.
        report = prune(
            model,
            tok,
            ratio=ratio,
            method="magnitude" if method == "layers" else method,
            calibration=calib,
            **kw,
        )
        ppl = perplexity(model, tok, evaluation)
        row = {
            "label": label, "method": method, "ratio": ratio, "removed": report.removed_fraction,
            "ppl": ppl, "seconds": time.perf_counter() - start, **{k: v for k, v in kw.items() if k != "seed"},
        }  # fmt: skip
        log(f"{label:<28} removed {100 * report.removed_fraction:5.1f}%  ppl {ppl:8.3f}")
        return row

    for ratio in args.ratios:
        for method in METHODS:
            rows.append(run(method, method, ratio))
        rows.append(run("activation (non-uniform)", "activation", ratio, uniform=False))
        if ratio >= 0.2:  # ShortGPT and width pruning together: one layer, the rest from heads/channels
            rows.append(run("drop 1 layer + activation", "activation", ratio, drop_layers_count=1))
        seeds = args.random_seeds if abs(ratio - 0.2) < 1e-9 or not args.quick else 3
        rand = [run(f"random seed {s}", "random", ratio, seed=s) for s in range(seeds)]
        ppls = [r["ppl"] for r in rand]
        rows.append(
            {"label": f"random (mean of {seeds} seeds)", "method": "random", "ratio": ratio,
             "removed": rand[0]["removed"], "ppl": statistics.mean(ppls), "std": statistics.pstdev(ppls),
             "seeds": seeds}
        )  # fmt: skip
    drops = [
        run(f"drop {n} layer{'s' if n > 1 else ''} (block influence)", "layers", 0.0, drop_layers_count=n)
        for n in (1, 2)
    ]
    return {"dense_ppl": base, "params": total, "rows": rows, "drops": drops,
            "calib_docs": len(calib), "eval_docs": len(evaluation)}  # fmt: skip


def _peak_rss_child(checkpoint: Path, context: int, batch: int = 1) -> tuple[float, float]:
    """(peak resident MiB, resident MiB after imports) of a fresh process that loads
    ``checkpoint`` and runs a ``context``-token prefill plus 8 decode steps of ``batch`` rows."""
    code = f"""
import torch, json
from transformers import AutoModelForCausalLM
from lean_plugins.pruning.speed import measure_speed
torch.set_num_threads(1)
def status(key):
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1]) / 1024
base = status("VmRSS")
model = AutoModelForCausalLM.from_pretrained({str(checkpoint)!r}, dtype=torch.float32).eval()
measure_speed(model, context={context}, decode_tokens=8, batch={batch}, repeats=1)
# VmHWM: this process's peak resident set (ru_maxrss would include the parent's, from fork).
print(json.dumps([status("VmHWM"), base]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak, base = json.loads(out.stdout.strip().splitlines()[-1])
    return peak, base


def speed(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    dense = random_llama(LLAMA_150M)
    pruned = copy.deepcopy(dense)
    report = prune(pruned, None, ratio=0.3, method="magnitude")  # speed does not depend on the method
    results: dict = {"params": {"dense": count_parameters(dense), "pruned": count_parameters(pruned)},
                     "shape": report.layer_shapes[0], "threads": args.threads}  # fmt: skip
    best: dict = {}
    for _round in range(args.speed_rounds):  # interleaved rounds: a busy machine slows both alike
        for name, model in (("dense", dense), ("pruned", pruned)):
            r = measure_speed(model, context=args.prefill_tokens, decode_tokens=args.decode_tokens, repeats=1)
            b = best.setdefault(name, {"prefill": 0.0, "decode": 0.0})
            b["prefill"], b["decode"] = (
                max(b["prefill"], r.prefill_tokens_per_s),
                max(b["decode"], r.decode_tokens_per_s),
            )
            log(
                f"speed {name}: prefill {r.prefill_tokens_per_s:.1f} tok/s, decode {r.decode_tokens_per_s:.2f} tok/s"
            )
    results["speed"] = best
    with tempfile.TemporaryDirectory() as tmp:
        mem = {}
        for name, model in (("dense", dense), ("pruned", pruned)):
            save_pruned(model, None, Path(tmp) / name)
            peak, base = _peak_rss_child(Path(tmp) / name, args.prefill_tokens)
            mem[name] = peak
            mem[name + "_model"] = peak - base
            log(f"peak memory {name}: {peak:.0f} MiB ({peak - base:.0f} MiB above the process after imports)")
    results["peak_mib"] = mem
    results["weights_mib"] = {
        n: count_parameters(m) * 4 / 2**20 for n, m in (("dense", dense), ("pruned", pruned))
    }
    llm = LeanLocalLLM(dense, IdTokenizer(), record_usage=False)
    cold, warm = measure_ttft(llm, prefix_tokens=1000, repeats=args.ttft_repeats)
    results["ttft"] = {"cold_s": cold, "cached_s": warm}
    log(f"time to first token: {cold:.3f}s cold, {warm:.3f}s with the cached 1,000-token prefix")
    return results


def plot(q: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label in (
        "activation",
        "taylor",
        "magnitude",
        "activation (non-uniform)",
        "drop 1 layer + activation",
    ):
        pts = sorted((r["removed"], r["ppl"]) for r in q["rows"] if r["label"] == label)
        ax.plot([100 * x for x, _ in pts], [y for _, y in pts], marker="o", label=label)
    rand = sorted(
        (r["removed"], r["ppl"], r["std"]) for r in q["rows"] if r["label"].startswith("random (mean")
    )
    ax.errorbar([100 * x for x, _, _ in rand], [y for _, y, _ in rand], yerr=[s for _, _, s in rand],
                marker="s", capsize=3, label="random (mean ± sd)")  # fmt: skip
    ax.plot(
        [100 * d["removed"] for d in q["drops"]],
        [d["ppl"] for d in q["drops"]],
        "k^",
        label="drop 1 / 2 layers",
    )
    ax.axhline(q["dense_ppl"], color="grey", linestyle=":", label="dense")
    ax.set_yscale("log")
    ax.set_xlabel("% of all parameters removed")
    ax.set_ylabel("perplexity (last TinyStories, log scale)")
    ax.set_title("stories260K: structured pruning (uniform unless marked)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(q: dict | None, s: dict | None, args: argparse.Namespace) -> str:
    out = ["## Layer 3: pruned local LLM", ""]
    if q:
        base = q["dense_ppl"]
        out += [
            f"Quality: stories260K ({q['params']:,} parameters), perplexity on the last {q['eval_docs']} stories of "
            f"`tinystories_sample.txt`, importance calibrated on the first {q['calib_docs']} (never both). "
            f"Dense perplexity **{base:.3f}**. Uniform layout (every layer keeps the same counts) unless marked. "
            "The damage ratio is the perplexity increase divided by that of random pruning at the same ratio.",
            "",
            "| pruning | target | params removed | perplexity | increase | damage vs random |",
            "|---|---|---|---|---|---|",
        ]
        rand = {r["ratio"]: r for r in q["rows"] if r["label"].startswith("random (mean")}
        for r in q["rows"]:
            if r["label"].startswith("random seed"):
                continue
            rm = rand[r["ratio"]]["ppl"] - base
            ppl = f"{r['ppl']:.3f}" + (f" ± {r['std']:.2f}" if "std" in r else "")
            out.append(f"| {r['label']} | {100 * r['ratio']:.0f}% | {100 * r['removed']:.1f}% | {ppl} | "
                       f"{r['ppl'] - base:+.3f} | {(r['ppl'] - base) / rm:.2f}x |")  # fmt: skip
        r20 = rand.get(0.2)
        for d in q["drops"]:
            ref = f"{(d['ppl'] - base) / (r20['ppl'] - base):.2f}x (vs random at 20%)" if r20 else "n/a"
            out.append(
                f"| {d['label']} | - | {100 * d['removed']:.1f}% | {d['ppl']:.3f} | {d['ppl'] - base:+.3f} | {ref} |"
            )
        if r20:
            damage = {
                m: next(r for r in q["rows"] if r["label"] == m and r["ratio"] == 0.2)["ppl"] - base
                for m in METHODS
            }
            ratio = damage[DEFAULT_METHOD] / (r20["ppl"] - base)
            verdict = "meets" if ratio <= 0.6 else "misses"
            mean_damage = {
                m: statistics.mean(
                    (r["ppl"] - base) / (rand[r["ratio"]]["ppl"] - base) for r in q["rows"] if r["label"] == m
                )
                for m in METHODS
            }
            best = min(mean_damage, key=mean_damage.get)
            summary = ", ".join(
                f"`{m}` {v:.2f}x" for m, v in sorted(mean_damage.items(), key=lambda kv: kv[1])
            )
            out += ["", f"Target at 20% removed: the default method's (`{DEFAULT_METHOD}`) perplexity increase <= 0.6x "
                    f"the random mean's ({r20['seeds']} seeds): **{ratio:.2f}x**, {verdict} the target. "
                    f"Mean damage vs random over the ratios measured: {summary} (best: `{best}`)."]  # fmt: skip
        out += ["", "![perplexity vs parameters removed](pruning_curves.png)", ""]
    if s:
        sp, mem, w = s["speed"], s["peak_mib"], s["weights_mib"]
        dec = sp["pruned"]["decode"] / sp["dense"]["decode"]
        pre = sp["pruned"]["prefill"] / sp["dense"]["prefill"]
        ttft = s["ttft"]["cold_s"] / s["ttft"]["cached_s"]
        out += [
            f"Speed: randomly initialised Llama on CPU, float32, {s['threads']} thread(s), sdpa attention, "
            f"dense {s['params']['dense'] / 1e6:.1f}M vs 30% pruned {s['params']['pruned'] / 1e6:.1f}M parameters "
            f"(per layer {s['shape']}). Prefill: one {args.prefill_tokens}-token prompt; decode: "
            f"{args.decode_tokens} greedy tokens after a {args.prefill_tokens}-token prompt, with the KV cache; "
            f"best of {args.speed_rounds} interleaved rounds. Peak memory: resident set of a fresh process that "
            "loads the checkpoint and runs both.",
            "",
            "| model | params | weights MiB | peak RSS MiB | peak above imports MiB | prefill tok/s | decode tok/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for n in ("dense", "pruned"):
            out.append(
                f"| {n} | {s['params'][n] / 1e6:.1f}M | {w[n]:.0f} | {mem[n]:.0f} | {mem[n + '_model']:.0f} | "
                f"{sp[n]['prefill']:.1f} | {sp[n]['decode']:.2f} |"
            )
        out += [
            f"| pruned / dense | {s['params']['pruned'] / s['params']['dense']:.2f} | {w['pruned'] / w['dense']:.2f} | "
            f"{mem['pruned'] / mem['dense']:.2f} | {mem['pruned_model'] / mem['dense_model']:.2f} | {pre:.2f}x | {dec:.2f}x |",
            "",
            f"Time to first token with a 1,000-token shared prefix (dense model, LeanLocalLLM): "
            f"{1000 * s['ttft']['cold_s']:.0f} ms recomputed vs {1000 * s['ttft']['cached_s']:.0f} ms with its KV cache "
            f"reused: **{ttft:.1f}x** faster (target >= 3x: {'met' if ttft >= 3 else 'missed'}).",
            f"Decode speed-up of the 30% pruned model: **{dec:.2f}x** (target >= 1.3x: {'met' if dec >= 1.3 else 'missed'}); "
            f"peak memory above the imported runtime {100 * (1 - mem['pruned_model'] / mem['dense_model']):.0f}% lower "
            f"for {100 * (1 - s['params']['pruned'] / s['params']['dense']):.0f}% fewer parameters "
            f"(whole process: {100 * (1 - mem['pruned'] / mem['dense']):.0f}% lower; Python and torch are in both).",
            "",
            "This machine's CPU is shared with other jobs, so absolute tokens/s are low and noisy; the "
            "ratios come from interleaved runs of the two models.",
        ]
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="20%% only, fewer documents, short speed runs (~3 min)"
    )
    parser.add_argument("--markdown-out", type=Path)
    parser.add_argument(
        "--plot", type=Path, help="write the curves PNG here (default: docs/pruning_curves.png on full runs)"
    )
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    q_ratios = [0.2] if args.quick else [0.1, 0.2, 0.3, 0.4]
    args.ratios = q_ratios
    args.calib_docs, args.eval_docs = (50, 80) if args.quick else (100, 120)
    args.random_seeds = 10
    args.prefill_tokens, args.decode_tokens = (128, 8) if args.quick else (512, 32)
    args.speed_rounds, args.ttft_repeats = (1, 2) if args.quick else (3, 3)
    torch.set_num_threads(args.threads)
    data = shared_data_dir()
    q = None
    if not args.skip_quality:
        if data is None:
            print(
                "../shared/data not found (set LEAN_PLUGINS_DATA); skipping the quality part", file=sys.stderr
            )
        else:
            q = quality(args, data)
    s = None if args.skip_speed else speed(args)
    md = markdown(q, s, args)
    print(md)
    plot_path = args.plot or (None if args.quick else ROOT / "docs" / "pruning_curves.png")
    if q and plot_path and len(args.ratios) > 1:
        plot(q, plot_path)
        log(f"wrote {plot_path}")
    if args.markdown_out:
        args.markdown_out.write_text(md, encoding="utf-8")
    if args.json_out:
        args.json_out.write_text(json.dumps({"quality": q, "speed": s}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
