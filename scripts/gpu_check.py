"""GPU check of layer 3 (issue 9): attention backends, pruning speed-up and prefix cache.

A randomly initialised ~1.1B Llama (TinyLlama shape, GQA 32/4 heads) in bfloat16, dense and
30% pruned (uniform), with each attention backend available (flash_attention_2 when flash-attn
is installed, SDPA with its flash kernel forced, eager), at 2k and 8k tokens of context:
prefill tokens/s, decode tokens/s at batch 1 and 16, peak GPU memory; and time to first token
with and without a cached 2k-token prefix; then the pruned model healed for ``--heal-steps``
steps (LoRA merged back, distilled from the dense copy on random-token windows: this times
healing and checks the speed is kept; a random model has no quality to recover). Last, the
layer-1 compressor's tokens/s on the GPU (bfloat16 and float32, with and without a question, at
2k and 20k tokens) beside ``llmlingua.PromptCompressor.compress_prompt`` with a randomly
initialised model of the official LLMLingua-2 base size (mBERT), on texts prepared here with
``--prepare-compress-texts`` (the evaluation data does not travel). Writes ``gpu_report.md`` and
``gpu_report.json``, the JSON after every step, so a run cut short keeps what it measured.

    python scripts/gpu_check.py --out DIR            # on the GPU machine (bash scripts/gpu_check.sh)
    python scripts/gpu_check.py --out DIR --tiny     # dry run of every step, tiny model, CPU ok
    python scripts/gpu_check.py --import-report DIR/gpu_report.md   # splice into docs/benchmarks.md
    python scripts/gpu_check.py --prepare-compress-texts .gpu_carry/compress_texts.json  # here, first
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECTION = "pruning_gpu"
COMPRESS_TEXTS = ROOT / ".gpu_carry" / "compress_texts.json"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def backends(torch: Any, on_cuda: bool) -> list[tuple[str, str, Any]]:
    """(label, transformers attn_implementation, context manager factory) to measure."""
    from transformers.utils import is_flash_attn_2_available

    out = []
    if on_cuda and is_flash_attn_2_available():
        out.append(("flash_attention_2", "flash_attention_2", contextlib.nullcontext))
    if on_cuda:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        out.append(("sdpa (flash kernel forced)", "sdpa", lambda: sdpa_kernel([SDPBackend.FLASH_ATTENTION])))
        out.append(("sdpa (kernel chosen by torch)", "sdpa", contextlib.nullcontext))
    else:
        out.append(("sdpa", "sdpa", contextlib.nullcontext))
    out.append(("eager", "eager", contextlib.nullcontext))
    return out


def set_attention(model: Any, impl: str) -> None:
    try:
        model.set_attn_implementation(impl)
    except AttributeError:  # older transformers
        model.config._attn_implementation = impl


def measure_model(
    torch: Any,
    model: Any,
    label: str,
    args: argparse.Namespace,
    on_cuda: bool,
    contexts: list[int] | None = None,
) -> list[dict]:
    from lean_plugins.pruning.speed import measure_speed

    rows = []
    for name, impl, ctx in backends(torch, on_cuda):
        set_attention(model, impl)
        for context in contexts or args.contexts:
            row: dict[str, Any] = {"model": label, "backend": name, "context": context}
            try:
                if on_cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                with ctx():
                    one = measure_speed(
                        model,
                        context=context,
                        decode_tokens=args.decode_tokens,
                        batch=1,
                        repeats=args.repeats,
                    )
                    many = measure_speed(
                        model,
                        context=context,
                        decode_tokens=args.decode_tokens,
                        batch=args.batch,
                        repeats=args.repeats,
                    )
                row.update(
                    prefill=one.prefill_tokens_per_s,
                    decode_1=one.decode_tokens_per_s,
                    decode_b=many.decode_tokens_per_s,
                )
                if on_cuda:
                    row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            except Exception as exc:  # a backend/kernel that cannot run this shape: record, go on
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            log(json.dumps(row))
            rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "gpu_check_out")
    parser.add_argument("--tiny", action="store_true", help="dry run: tiny model and contexts (CPU ok)")
    parser.add_argument("--heal-steps", type=int, default=None, help="healing steps (default 200; tiny: 3)")
    parser.add_argument(
        "--import-report", type=Path, help="splice a gpu_report.md into docs/benchmarks.md and exit"
    )
    parser.add_argument(
        "--compress-texts", type=Path, default=COMPRESS_TEXTS, help="texts for the compressor step"
    )
    parser.add_argument(
        "--prepare-compress-texts",
        type=Path,
        help="write the compressor step's texts (needs the evaluation data) and exit",
    )
    parser.add_argument(
        "--graphs-only",
        action="store_true",
        help="only batch-1 decode of the dense and 30%%-pruned model with a static KV cache and the decode "
        "step captured (torch.compile mode reduce-overhead: CUDA graphs), beside the plain loop",
    )
    parser.add_argument(
        "--compressor-only",
        action="store_true",
        help="run only the layer-1 step and merge it into an existing gpu_report.json in --out",
    )
    args = parser.parse_args()
    if args.import_report:
        return import_report(args.import_report)
    if args.prepare_compress_texts:
        return prepare_compress_texts(args.prepare_compress_texts)

    import torch
    import transformers

    from lean_plugins.pruning import LeanLocalLLM, prune
    from lean_plugins.pruning.pruner import count_parameters
    from lean_plugins.pruning.speed import LLAMA_1B, LLAMA_TINY, IdTokenizer, measure_ttft, random_llama

    on_cuda = torch.cuda.is_available()
    if not on_cuda and not args.tiny:
        print("No CUDA device: run with --tiny for a dry run, or on the GPU machine.", file=sys.stderr)
        return 2
    args.contexts = [64, 128] if args.tiny else [2048, 8192]
    args.decode_tokens, args.batch, args.repeats = (4, 4, 1) if args.tiny else (32, 16, 2)
    prefix_tokens = 100 if args.tiny else 2048
    device = "cuda" if on_cuda else "cpu"
    dtype = torch.bfloat16 if on_cuda else torch.float32
    args.out.mkdir(parents=True, exist_ok=True)
    from transformers.utils import is_flash_attn_2_available

    info = {
        "device": torch.cuda.get_device_name(0)
        if on_cuda
        else f"CPU ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "flash_attn_2": bool(is_flash_attn_2_available()),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "dtype": str(dtype).removeprefix("torch."),
        "tiny": args.tiny,
    }
    log(f"device {info}; TIKTOKEN_CACHE_DIR={os.environ.get('TIKTOKEN_CACHE_DIR')!r}")
    if args.compressor_only:
        return compressor_only(args, device, info)
    if args.graphs_only:
        return graphs_only(args, device, dtype, info)
    start = time.perf_counter()

    def save_partial(**parts: Any) -> None:  # after each step: a run cut short keeps its figures
        (args.out / "gpu_report.json").write_text(json.dumps({"info": info, **parts}, indent=2))

    model = random_llama(LLAMA_TINY if args.tiny else LLAMA_1B, dtype=dtype, device=device)
    params = {"dense": count_parameters(model)}
    log(f"dense model: {params['dense'] / 1e6:.1f}M parameters ({time.perf_counter() - start:.0f}s)")

    # Time to first token, dense model, through the runtime (auto attention), before pruning.
    llm = LeanLocalLLM(model, IdTokenizer(), record_usage=False)
    cold, warm = measure_ttft(llm, prefix_tokens=prefix_tokens, repeats=3)
    ttft = {
        "prefix_tokens": prefix_tokens,
        "cold_s": cold,
        "cached_s": warm,
        "backend": llm.attention_backend,
    }
    log(f"ttft {ttft}")
    del llm

    rows = measure_model(torch, model, "dense", args, on_cuda)
    save_partial(ttft=ttft, rows=rows)
    import copy

    teacher = copy.deepcopy(model)
    report = prune(model, None, ratio=0.3, method="magnitude")  # speed does not depend on the method
    params["pruned"] = count_parameters(model)
    shape = report.layer_shapes[0]
    log(f"pruned to {params['pruned'] / 1e6:.1f}M parameters, per layer {shape}")
    rows += measure_model(torch, model, "pruned 30%", args, on_cuda)
    save_partial(ttft=ttft, rows=rows)
    healing = heal_check(torch, model, teacher, args, on_cuda)
    del teacher
    rows += measure_model(torch, model, "pruned 30% + healed", args, on_cuda, contexts=args.contexts[-1:])
    save_partial(ttft=ttft, rows=rows, heal=healing)
    del model
    if on_cuda:
        torch.cuda.empty_cache()
    compressor = compressor_check(args, device)  # last: layer 3 is what this check is for
    result = {"info": info, "params": params, "pruned_shape": shape, "rows": rows, "ttft": ttft,
              "heal": healing, "compressor": compressor, "seconds": time.perf_counter() - start}  # fmt: skip
    (args.out / "gpu_report.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    md = markdown(result)
    (args.out / "gpu_report.md").write_text(md, encoding="utf-8")
    print(md)
    log(f"wrote {args.out}/gpu_report.md in {time.perf_counter() - start:.0f}s")
    return 0


def graph_decode_tokens_per_s(torch: Any, model: Any, context: int, steps: int, compiled: bool) -> float:
    """Batch-1 greedy decode after a ``context``-token prompt with a StaticCache; the decode
    step compiled with CUDA graphs when ``compiled`` (median step time after warm-up)."""
    import statistics

    from transformers import StaticCache

    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, model.config.vocab_size, (1, context), generator=gen).to(device)
    step = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True) if compiled else model.forward

    def run() -> list[float]:
        cache = StaticCache(config=model.config, max_cache_len=context + steps + 1)
        times = []
        with torch.inference_mode():
            logits = model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1,
                           cache_position=torch.arange(context, device=device)).logits  # fmt: skip
            token = logits[:, -1:].argmax(-1)
            for k in range(steps):
                position = torch.tensor([context + k], device=device)
                start = time.perf_counter()
                out = step(input_ids=token, past_key_values=cache, use_cache=True, cache_position=position,
                           position_ids=position.unsqueeze(0)).logits  # fmt: skip
                token = out[:, -1:].argmax(-1).clone()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
        return times

    run()  # warm-up (and compilation)
    return 1.0 / statistics.median(run()[2:])


def graphs_only(args: argparse.Namespace, device: str, dtype: Any, info: dict) -> int:
    """Dense vs 30%-pruned batch-1 decode, plain loop vs the step captured in CUDA graphs."""
    import torch

    from lean_plugins.pruning import prune
    from lean_plugins.pruning.speed import LLAMA_1B, LLAMA_TINY, random_llama

    context, steps = (64, 8) if args.tiny else (2048, 64)
    compiled_modes = [False] if args.tiny and device == "cpu" else [False, True]
    model = random_llama(LLAMA_TINY if args.tiny else LLAMA_1B, dtype=dtype, device=device)
    set_attention(model, "sdpa")
    rows = []
    for label in ("dense", "pruned 30%"):
        if label != "dense":
            prune(model, None, ratio=0.3, method="magnitude")
        for compiled in compiled_modes:
            row: dict[str, Any] = {"model": label, "context": context, "captured": compiled}
            started = time.perf_counter()
            try:
                row["decode_1"] = graph_decode_tokens_per_s(torch, model, context, steps, compiled)
            except Exception as exc:  # record and go on
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            row["seconds"] = time.perf_counter() - started
            log(json.dumps(row))
            rows.append(row)
            (args.out / "graphs_report.json").write_text(json.dumps({"info": info, "rows": rows}, indent=2))
            torch._dynamo.reset()
    return 0


def compressor_only(args: argparse.Namespace, device: str, info: dict) -> int:
    """Rerun just the layer-1 step; merged into ``--out``'s gpu_report.json when one is there."""
    path = args.out / "gpu_report.json"
    result = json.loads(path.read_text()) if path.is_file() else {"info": info}
    result["compressor"] = compressor_check(args, device)
    result["compressor_info"] = info
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    if "rows" in result:
        (args.out / "gpu_report.md").write_text(markdown(result), encoding="utf-8")
    print(json.dumps(result["compressor"], indent=2))
    return 0 if "tokens_per_s" in result["compressor"] else 1


def prepare_compress_texts(path: Path) -> int:
    """Texts of about 2k and 20k tokens, as the CPU benchmark builds them, for the GPU machine."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_compress

    from lean_plugins.compress.data import load_pairs, split_pairs
    from lean_plugins.paths import shared_data_dir

    data = shared_data_dir()
    if data is None:
        print("evaluation data not found (../shared/data or LEAN_PLUGINS_DATA)", file=sys.stderr)
        return 2
    _, _, test = split_pairs(load_pairs(data / bench_compress.PAIRS_FILE))
    texts = {str(n): bench_compress.make_long_text(test, n) for n in (2000, 20000)}
    source = f"bench_compress.make_long_text over the held-out split of {bench_compress.PAIRS_FILE}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"source": source, "question": bench_compress.QUESTION, "texts": texts}))
    print(f"wrote {path}")
    return 0


def compressor_check(args: argparse.Namespace, device: str) -> dict:
    """Layer 1 on the GPU: LeanCompressor (auto = bfloat16 there, and float32) vs mBERT-size llmlingua."""
    if not args.compress_texts.is_file():
        log(f"compressor step skipped: no {args.compress_texts} (run --prepare-compress-texts here first)")
        return {"skipped": f"no {args.compress_texts.name}"}
    try:
        sys.path.insert(0, str(ROOT / "scripts"))
        from bench_compress import random_mbert_folder, tokens_per_second
        from llmlingua import PromptCompressor

        from lean_plugins.compress import LeanCompressor
        from lean_plugins.tokens import count_tokens, use_offline_tiktoken

        spec = json.loads(args.compress_texts.read_text())
        question = spec["question"]
        texts = {int(n): t for n, t in spec["texts"].items()}
        if args.tiny:
            texts = {n: t[:3000] for n, t in list(texts.items())[:1]}
        repeats = 1 if args.tiny else 3
        out: dict[str, Any] = {
            "tokens": {n: count_tokens(t) for n, t in texts.items()},
            "repeats": repeats,
            "tokens_per_s": {},
        }
        for dtype in ("auto", "float32"):
            ours = LeanCompressor(device=device, dtype=dtype, record_ledger=False)
            label = f"LeanCompressor ({ours.resolved_dtype})"
            for n, text in texts.items():
                out["tokens_per_s"].setdefault(f"{label}, no question", {})[n] = tokens_per_second(
                    lambda t, c=ours: c.compress(t, rate=0.5), text, repeats
                )
                out["tokens_per_s"].setdefault(f"{label}, question given", {})[n] = tokens_per_second(
                    lambda t, c=ours: c.compress(t, rate=0.5, query=question), text, repeats
                )
                log(
                    f"compressor {label} {n}: {out['tokens_per_s'][f'{label}, question given'][n]:,.0f} tok/s with q"
                )
        use_offline_tiktoken()
        folder = random_mbert_folder(
            str(ours.prompt_compressor.model.config._name_or_path or ours.model_name)
        )
        baseline = PromptCompressor(
            model_name=folder, device_map=device, model_config={}, use_llmlingua2=True
        )
        for n, text in texts.items():
            out["tokens_per_s"].setdefault(
                "PromptCompressor.compress_prompt, mBERT-size (random), float32", {}
            )[n] = tokens_per_second(lambda t: baseline.compress_prompt([t], rate=0.5), text, repeats)
        log(f"compressor {out}")
        return out
    except Exception as exc:  # record and go on to layer 3
        log(f"compressor step failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}


def heal_check(torch: Any, model: Any, teacher: Any, args: argparse.Namespace, on_cuda: bool) -> dict:
    """Heal the pruned model (LoRA merged back) from the dense teacher on random-token windows."""
    from lean_plugins.pruning import heal
    from lean_plugins.pruning.speed import IdTokenizer

    steps = args.heal_steps if args.heal_steps is not None else (3 if args.tiny else 200)
    batch, seq_len = (2, 32) if args.tiny else (8, 1024)
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    texts = [
        " ".join(map(str, torch.randint(3, vocab, (seq_len * 4,), generator=gen).tolist())) for _ in range(64)
    ]
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    rep = heal(model, IdTokenizer(), texts, teacher=teacher, steps=steps, batch_size=batch, seq_len=seq_len,
               mode="lora", seed=0)  # fmt: skip
    out = {"steps": steps, "batch": batch, "seq_len": seq_len, "mode": rep.mode, "seconds": rep.seconds,
           "tokens_per_s": rep.tokens_seen / rep.seconds, "trainable": rep.trainable_parameters,
           "loss": [rep.loss_start, rep.loss_end]}  # fmt: skip
    if on_cuda:
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    log(f"heal {out}")
    return out


def markdown(r: dict) -> str:
    info, p = r["info"], r["params"]
    out = [
        "## Layer 3 on a GPU: attention backends, pruning speed-up, prefix cache",
        "",
        f"Device: **{info['device']}**, torch {info['torch']}, transformers {info['transformers']}, "
        f"flash-attn 2 {'installed' if info['flash_attn_2'] else 'not installed (its row is absent)'}; run {info['date']}"
        + (" (**dry run, tiny model**)" if info["tiny"] else "")
        + ".",
        f"Randomly initialised Llama, {info['dtype']}: dense {p['dense'] / 1e6:.0f}M vs 30% pruned (uniform) "
        f"{p['pruned'] / 1e6:.0f}M parameters (per layer {r['pruned_shape']}). Prefill: one prompt of the context "
        "length; decode: greedy tokens after it, with the KV cache; peak: GPU memory allocated during that row.",
        "",
        "| model | attention | context | prefill tok/s | decode tok/s (batch 1) | decode tok/s (batch 16) | peak GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        if "error" in row:
            out.append(
                f"| {row['model']} | {row['backend']} | {row['context']} | failed: {row['error']} | | | |"
            )
            continue
        out.append(
            f"| {row['model']} | {row['backend']} | {row['context']} | {row['prefill']:,.0f} | {row['decode_1']:,.1f} | "
            f"{row['decode_b']:,.1f} | {row.get('peak_gib', float('nan')):.2f} |"
        )
    ok = {(x["model"], x["backend"], x["context"]): x for x in r["rows"] if "error" not in x}
    lines = []
    ctx_hi = max(x["context"] for x in r["rows"])
    for backend in sorted({x["backend"] for x in r["rows"]}):
        d, q = ok.get(("dense", backend, ctx_hi)), ok.get(("pruned 30%", backend, ctx_hi))
        if d and q:
            lines.append(
                f"{backend} at {ctx_hi}: pruned/dense decode {q['decode_1'] / d['decode_1']:.2f}x (batch 1), "
                f"{q['decode_b'] / d['decode_b']:.2f}x (batch 16), prefill {q['prefill'] / d['prefill']:.2f}x"
            )
    eager = ok.get(("dense", "eager", ctx_hi))
    for backend in ("flash_attention_2", "sdpa (flash kernel forced)"):
        fast = ok.get(("dense", backend, ctx_hi))
        if fast and eager:
            lines.append(
                f"{backend} vs eager prefill at {ctx_hi}: {fast['prefill'] / eager['prefill']:.2f}x (target >= 2x)"
            )
    t = r["ttft"]
    lines.append(
        f"time to first token with a {t['prefix_tokens']}-token prefix ({t['backend']}): {1000 * t['cold_s']:.1f} ms recomputed vs "
        f"{1000 * t['cached_s']:.1f} ms cached, {t['cold_s'] / t['cached_s']:.1f}x (target >= 5x)"
    )
    h = r.get("heal")
    if h:
        lines.append(
            f"healing ({h['mode']}, {h['trainable'] / 1e6:.1f}M trainable): {h['steps']} steps of {h['batch']} x "
            f"{h['seq_len']} tokens in {h['seconds']:.0f}s ({h['tokens_per_s']:,.0f} tokens/s"
            + (f", peak {h['peak_gib']:.1f} GiB" if "peak_gib" in h else "")
            + f"); loss {h['loss'][0]:.3f} -> {h['loss'][1]:.3f}; the healed rows above show the speed kept"
        )
    c = r.get("compressor") or {}
    if c.get("tokens_per_s"):
        sizes = sorted({int(n) for by in c["tokens_per_s"].values() for n in by})
        out += ["", f"Layer-1 compressor on this device, rate 0.5, best of {c.get('repeats', 3)} (tokens of context per second):", "",
                "| compressor | " + " | ".join(f"{n:,} tokens" for n in sizes) + " |",
                "|---|" + "---:|" * len(sizes)]  # fmt: skip
        for name, by in c["tokens_per_s"].items():
            by = {int(n): v for n, v in by.items()}  # JSON keys are strings
            out.append(f"| {name} | " + " | ".join(f"{by[n]:,.0f}" if n in by else "" for n in sizes) + " |")
    elif c:
        out += ["", f"Layer-1 compressor step: {c.get('error') or c.get('skipped')}"]
    out += [
        "",
        "Targets: pruned decode >= 1.3x dense; flash/SDPA-flash prefill >= 2x eager at 8k; prefix-cache TTFT >= 5x.",
        "",
    ]
    out += [f"- {line}" for line in lines]
    return "\n".join(out) + "\n"


def import_report(path: Path) -> int:
    """Put a report from the GPU machine into docs/benchmarks.md (its own device stamp kept)."""
    from lean_plugins.bench import DOC_HEADER, splice_section

    doc_path = ROOT / "docs" / "benchmarks.md"
    doc = doc_path.read_text(encoding="utf-8") if doc_path.is_file() else DOC_HEADER
    body = "_Command: `bash scripts/gpu_check.sh` on the lent GPU machine (device and date below)._\n\n"
    doc_path.write_text(
        splice_section(doc, SECTION, body + path.read_text(encoding="utf-8")), encoding="utf-8"
    )
    print(f"wrote section '{SECTION}' of {doc_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
