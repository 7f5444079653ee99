"""``lean-plugins prune``, ``ppl`` and ``convert-llama2c``. Nothing heavy is imported until a
command runs, so ``lean-plugins --help`` stays fast."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _memory_mb(model) -> float:
    return sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values()) / 2**20


def _describe(label: str, model, ppl: float | None) -> str:
    from lean_plugins.pruning.pruner import count_parameters

    text = f"{label:<7} params {count_parameters(model):>13,}  weights {_memory_mb(model):9.1f} MiB"
    return text + (f"  perplexity {ppl:.3f}" if ppl is not None else "")


def passive_openmp_threads() -> None:
    """Let idle OpenMP threads sleep instead of spin-waiting (``OMP_WAIT_POLICY=PASSIVE``) unless
    the user chose otherwise. On a machine busy with other jobs, spinning threads fight them for
    the cores: a stories260K healing step took ~20 s instead of ~1 s (docs/pruning.md). OpenMP reads
    the setting once, when torch loads, so it only takes effect before the first torch import."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _cmd_prune(args: argparse.Namespace) -> int:
    import copy

    passive_openmp_threads()

    from lean_plugins.pruning.evaluate import check_held_out, perplexity, read_documents
    from lean_plugins.pruning.modeling import load_model
    from lean_plugins.pruning.pruner import prune, save_pruned

    model, tokenizer, backend = load_model(args.model, device=args.device, dtype="float32", progress=True)
    calibration = read_documents(args.calib)[: args.calib_docs]
    evaluation = read_documents(args.eval)[-args.eval_docs :] if args.eval else None
    healing: list = []
    prompts: list = []
    if args.heal:
        if args.heal_prompts:
            prompts = read_documents(args.heal_prompts)
        if args.heal_text or not args.heal_prompts:
            healing = read_documents(args.heal_text or args.calib)
        healing = healing[: args.heal_docs] if args.heal_docs else healing
        prompts = prompts[: args.heal_docs] if args.heal_docs else prompts
    if evaluation:
        check_held_out(evaluation, calib=calibration, heal=[*healing, *prompts])
    teacher = copy.deepcopy(model) if args.heal else None
    if prompts:
        from lean_plugins.pruning.heal import teacher_conversations

        # The dense model's own answers: chat healing data that teaches the pruned model its answers.
        healing += teacher_conversations(model, tokenizer, prompts, max_new_tokens=args.heal_answer_tokens)
        print(f"dense answers to {len(prompts)} healing prompts generated")
    before = perplexity(model, tokenizer, evaluation, progress=True) if evaluation else None
    print(_describe("before", model, before))
    report = prune(
        model,
        tokenizer,
        ratio=args.ratio,
        method=args.method,
        calibration=calibration,
        uniform=not args.non_uniform,
        drop_layers_count=args.drop_layers,
        attention_ratio=args.attention_ratio,
        mlp_ratio=args.mlp_ratio,
        seed=args.seed,
        progress=True,
    )
    after = perplexity(model, tokenizer, evaluation, progress=True) if evaluation else None
    print(_describe("after", model, after))
    print(
        f"removed {100 * report.removed_fraction:.1f}% of the parameters with {report.method} "
        f"in {report.seconds:.1f}s; layer shapes {report.layer_shapes[0] if report.uniform else report.layer_shapes}"
        + (f"; dropped layers {report.dropped_layers}" if report.dropped_layers else "")
    )
    if args.heal:
        from lean_plugins.pruning.heal import heal

        def checkpoint(snapshot: object, done: int, _losses: list[float]) -> None:
            # A run stopped early (Ctrl-C, a killed job) leaves the last checkpoint in --out.
            save_pruned(snapshot, tokenizer, args.out)

        healed = heal(
            model, tokenizer, healing, teacher=teacher, steps=args.heal, batch_size=args.heal_batch,
            seq_len=args.heal_seq_len, learning_rate=args.heal_lr, kd_weight=args.kd_weight,
            mode=args.heal_mode, seed=args.seed, progress=True, compute_dtype=args.heal_dtype,
            train_embeddings=not args.heal_freeze_embeddings,
            max_cpu_seconds=60 * args.heal_cpu_minutes if args.heal_cpu_minutes else None,
            checkpoint_every=args.heal_checkpoint_every,
            on_checkpoint=checkpoint if args.heal_checkpoint_every else None,
        )  # fmt: skip
        del teacher
        after_heal = perplexity(model, tokenizer, evaluation, progress=True) if evaluation else None
        print(_describe("healed", model, after_heal))
        print(
            f"healed ({healed.mode}, {healed.trainable_parameters:,} trainable) for {healed.steps} steps "
            f"on {len(healing)} documents ({healed.tokens_seen:,} tokens) in {healed.seconds:.1f}s "
            f"({healed.cpu_seconds:.0f} CPU s{', stopped by --heal-cpu-minutes' if healed.steps < args.heal else ''}); "
            f"loss {healed.loss_start:.3f} -> {healed.loss_end:.3f}"
        )
    out = save_pruned(model, tokenizer, args.out)
    arch = json.loads((out / "config.json").read_text())["architectures"][0]
    loader = "AutoModelForCausalLM.from_pretrained" if report.uniform else "lean_plugins.pruning.load_model"
    print(f"saved {arch} to {out} (load with {loader}; attention used: {backend})")
    return 0


def _cmd_ppl(args: argparse.Namespace) -> int:
    passive_openmp_threads()
    from lean_plugins.pruning.evaluate import perplexity, read_documents
    from lean_plugins.pruning.modeling import load_model

    docs = read_documents(args.text)
    docs = docs[-args.docs :] if args.docs else docs
    reference: float | None = None
    for path in args.model:
        model, tokenizer, _backend = load_model(path, device=args.device, dtype="float32", progress=True)
        ppl = perplexity(model, tokenizer, docs, max_length=args.max_length, progress=True)
        relative = f"  {ppl / reference:5.2f}x the first" if reference else ""
        reference = reference or ppl
        print(_describe("model", model, ppl) + relative + f"  {path}")
        del model
    print(f"({len(docs)} documents of {args.text})")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from lean_plugins.pruning.convert import convert_llama2c
    from lean_plugins.pruning.modeling import load_model
    from lean_plugins.pruning.pruner import count_parameters

    out = convert_llama2c(args.checkpoint, args.tokenizer, args.out)
    model = load_model(out, device="cpu", dtype="float32")[0]  # reloads: the folder is valid
    print(f"wrote {out} ({count_parameters(model):,} parameters)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from lean_plugins.pruning.importance import METHODS

    default_method = "taylor"  # kept in step with pruner.DEFAULT_METHOD (no torch import here)
    p = sub.add_parser("prune", help="structurally prune a causal LM (heads, MLP channels, layers)")
    p.add_argument("model", help="model folder or hub name")
    p.add_argument(
        "--ratio", type=float, required=True, help="fraction of all parameters to remove, e.g. 0.2"
    )
    p.add_argument(
        "--method", choices=METHODS, default=default_method, help=f"importance (default {default_method})"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random method")
    p.add_argument(
        "--attention-ratio",
        type=float,
        default=None,
        help="fraction of the attention parameters to remove (with --mlp-ratio, instead of the even split of --ratio)",
    )
    p.add_argument(
        "--mlp-ratio", type=float, default=None,
        help="fraction of the MLP parameters to remove; e.g. --attention-ratio 0 --mlp-ratio 0.34 takes 20%% of "
        "SmolLM2-135M from its MLP channels alone",
    )  # fmt: skip
    p.add_argument(
        "--calib",
        required=True,
        help="calibration text file (documents split on <|endoftext|> or blank lines) or .jsonl of conversations",
    )
    p.add_argument("--calib-docs", type=int, default=100, help="calibration documents to use (the first N)")
    p.add_argument("--eval", help="text file to measure perplexity on before and after (its last documents)")
    p.add_argument("--eval-docs", type=int, default=200)
    p.add_argument(
        "--drop-layers", type=int, default=0, help="also drop the N layers of lowest block influence"
    )
    p.add_argument(
        "--non-uniform", action="store_true", help="let layers keep different counts (our loader only)"
    )
    p.add_argument(
        "--heal",
        type=int,
        default=0,
        metavar="STEPS",
        help="after pruning, heal for STEPS steps: distil from the dense model (KL + LM loss)",
    )
    p.add_argument(
        "--heal-text",
        help='healing text: a text file, a .jsonl of conversations ({"messages": [...]}) or texts, or a folder '
        "of them (default: the --calib file); never the --eval text or prompts",
    )
    p.add_argument("--heal-docs", type=int, default=0, help="healing documents to use (the first N; 0: all)")
    p.add_argument(
        "--heal-prompts",
        help="prompts (text file, or .jsonl of texts or conversations ending with a user turn): the dense "
        "model answers each greedily and the pruned model is healed on these conversations (instruction "
        "healing; needs a chat template); with --heal-text, on both",
    )
    p.add_argument(
        "--heal-answer-tokens", type=int, default=64, help="longest dense answer to a --heal-prompts prompt"
    )
    p.add_argument(
        "--heal-mode", choices=("auto", "full", "lora"), default="auto",
        help="full fine-tuning, or LoRA merged back (auto: full below 300M parameters)",
    )  # fmt: skip
    p.add_argument("--heal-batch", type=int, default=8, help="windows per healing step")
    p.add_argument("--heal-seq-len", type=int, default=256, help="tokens per healing window")
    p.add_argument("--heal-lr", type=float, default=None, help="peak learning rate (default by mode)")
    p.add_argument(
        "--heal-dtype", choices=("float32", "bfloat16"), default="float32",
        help="compute dtype of the forward passes (bfloat16: autocast, ~2x faster on CPUs with AMX / "
        "AVX512-BF16; weights stay float32)",
    )  # fmt: skip
    p.add_argument(
        "--heal-freeze-embeddings", action="store_true",
        help="do not train the token embedding (and the output head tied to it), which pruning never cuts",
    )  # fmt: skip
    p.add_argument(
        "--heal-cpu-minutes", type=float, default=0,
        help="stop healing after this much process CPU time (0: no limit); the schedule stays the one for --heal",
    )  # fmt: skip
    p.add_argument(
        "--heal-checkpoint-every", type=int, default=0, metavar="STEPS",
        help="save the model being healed to --out every STEPS steps, so a stopped run leaves a usable model",
    )  # fmt: skip
    p.add_argument(
        "--kd-weight", type=float, default=0.5, help="weight of the distillation loss vs the LM loss (0-1)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_cmd_prune)

    q = sub.add_parser(
        "ppl",
        help="perplexity of one or more causal LMs on a text file, side by side (e.g. dense, pruned, healed)",
    )
    q.add_argument("model", nargs="+", help="model folders or hub names; ratios are to the first")
    q.add_argument(
        "--text", required=True, help="text file (documents split on <|endoftext|> or blank lines)"
    )
    q.add_argument("--docs", type=int, default=0, help="only the last N documents (0: all)")
    q.add_argument(
        "--max-length", type=int, default=None, help="tokens per document (default: context window)"
    )
    q.add_argument("--device", default="auto")
    q.set_defaults(func=_cmd_ppl)

    c = sub.add_parser("convert-llama2c", help="convert a llama2.c checkpoint to a Hugging Face Llama folder")
    c.add_argument("checkpoint", help="llama2.c model .bin")
    c.add_argument("--tokenizer", required=True, help="sentencepiece .model file (e.g. tok512.model)")
    c.add_argument("--out", required=True, help="output folder")
    c.set_defaults(func=_cmd_convert)
