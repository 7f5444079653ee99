"""``lean-plugins compress``: compress a text file (or stdin) from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lean_plugins.devices import ENCODER_PRECISIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``compress`` subcommand (imports nothing heavy)."""
    parser = subparsers.add_parser(
        "compress",
        help="drop low-information words from a text (LLMLingua-2, offline)",
        description="Compress TEXT_FILE (or stdin) and print the result. Numbers, URLs, e-mails "
        "and code are kept; with --query the sentences relevant to it are kept first.",
    )
    parser.add_argument("text_file", nargs="?", type=Path, help="file to compress (default or -: stdin)")
    parser.add_argument(
        "--rate", type=float, default=None, help="share of tokens to keep, in (0, 1] (default 0.5)"
    )
    parser.add_argument("--target-tokens", type=int, default=None, help="token budget (wins over --rate)")
    parser.add_argument("--query", default=None, help="question the text should still answer")
    parser.add_argument("--model", default=None, help="LLMLingua-2 model name or folder (default: embedded)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=ENCODER_PRECISIONS,
        help="weights' dtype (auto: bfloat16 on a GPU or a CPU with bfloat16 in hardware, else float32; "
        "int8: CPU only, opt-in)",
    )
    parser.add_argument(
        "--force-token", action="append", default=[], help="never drop words holding this (repeat)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object with the token counts")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from lean_plugins.compress import LeanCompressor
    from lean_plugins.errors import LeanPluginsError

    if args.text_file is None or str(args.text_file) == "-":
        text = sys.stdin.read()
    else:
        try:
            text = args.text_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(
                f"error: cannot read {args.text_file} as UTF-8 text ({exc}); pass a text file or - for stdin",
                file=sys.stderr,
            )
            return 2
    try:
        compressor = LeanCompressor(args.model, args.device, force_tokens=args.force_token, dtype=args.dtype)
        compressor.progress = True  # a long text takes minutes on CPU: show how far it is
        result = compressor.compress(text, rate=args.rate, target_tokens=args.target_tokens, query=args.query)
    except LeanPluginsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"text": result.text, **result.stats()}, ensure_ascii=False))
    else:
        print(result.text)
        print(
            f"[{result.origin_tokens} -> {result.compressed_tokens} tokens, rate {result.rate:.2f}"
            + (f", passed through: {result.skipped}" if result.skipped else "")
            + "]",
            file=sys.stderr,
        )
    return 0
