"""``lean-plugins bench``: run the layer benchmarks and regenerate ``docs/benchmarks.md``.

Each benchmark is a script ``scripts/bench_<name>.py`` in the source checkout that accepts
``--quick`` and ``--markdown-out PATH``: it prints its table and writes a Markdown section to
``PATH``. This module runs the scripts one after another (so their timings do not share the
CPU) and replaces each one's section of ``docs/benchmarks.md`` (between
``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->``), stamped with the command,
the date and the machine. Sections of benchmarks not run are left as they were.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from lean_plugins.errors import ConfigurationError
from lean_plugins.paths import SOURCE_ROOT

DOC_HEADER = """# Benchmarks

Every figure here was printed by the command shown above its table, on the machine named
there. `lean-plugins bench [NAME ...] [--quick]` re-runs the scripts in `scripts/bench_*.py`
and rewrites their sections of this file; nothing else writes figures here.
"""


def scripts_dir(root: Path | None = None) -> Path:
    base = root or SOURCE_ROOT
    if base is None or not (base / "scripts").is_dir():
        raise ConfigurationError(
            "lean-plugins bench needs a source checkout (the scripts/ folder); run it from a "
            "git clone of lean-plugins installed with `pip install -e .`."
        )
    return base / "scripts"


def available_benchmarks(root: Path | None = None) -> list[str]:
    """Names of ``scripts/bench_<name>.py`` in the checkout."""
    return sorted(p.stem.removeprefix("bench_") for p in scripts_dir(root).glob("bench_*.py"))


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(
            next(
                line.split()[1]
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")
            )
        )
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}, {gpu}, Python {platform.python_version()}, {platform.system()}"
    )


def splice_section(doc: str, name: str, body: str) -> str:
    """Replace (or append) the section ``name`` of the benchmarks document."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(doc):
        return pattern.sub(lambda _m: block, doc)
    return doc.rstrip() + "\n\n" + block + "\n"


def write_section(name: str, body: str, *, command: str, doc_path: Path | None = None) -> Path:
    """Write one benchmark's Markdown into ``docs/benchmarks.md`` with its provenance."""
    path = doc_path or (scripts_dir().parent / "docs" / "benchmarks.md")
    doc = path.read_text(encoding="utf-8") if path.is_file() else DOC_HEADER
    stamp = (
        f"_Command: `{command}` · run {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC · "
        f"machine: {machine_description()}_\n\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(splice_section(doc, name, stamp + body), encoding="utf-8")
    os.replace(tmp, path)
    return path


def run_benchmarks(names: list[str], *, quick: bool = False, write_docs: bool = True) -> int:
    """Run the named benchmarks (all when empty); return the number that failed."""
    known = available_benchmarks()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigurationError(f"Unknown benchmark(s) {unknown}; available: {', '.join(known)}.")
    failed = 0
    for name in names or known:
        script = scripts_dir() / f"bench_{name}.py"
        with tempfile.TemporaryDirectory() as tmp:
            md = Path(tmp) / "section.md"
            cmd = [sys.executable, str(script), "--markdown-out", str(md)] + (["--quick"] if quick else [])
            print(f"\n=== bench {name}: {' '.join(cmd[1:])}", flush=True)
            rc = subprocess.call(cmd, cwd=scripts_dir().parent)
            if rc != 0 or not md.is_file():
                print(
                    f"bench {name} failed (exit {rc}); its docs section is left as it was.", file=sys.stderr
                )
                failed += 1
                continue
            if write_docs:
                shown = f"python scripts/bench_{name}.py" + (" --quick" if quick else "")
                where = write_section(name, md.read_text(encoding="utf-8"), command=shown)
                print(f"wrote section '{name}' of {where}")
    return failed


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.list:
        print("\n".join(available_benchmarks()))
        return 0
    return 1 if run_benchmarks(args.names, quick=args.quick, write_docs=not args.no_docs) else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run the layer benchmarks and regenerate docs/benchmarks.md")
    p.add_argument("names", nargs="*", help="benchmarks to run (default: all); see --list")
    p.add_argument("--quick", action="store_true", help="small sizes, under 5 minutes in all")
    p.add_argument("--no-docs", action="store_true", help="print only; leave docs/benchmarks.md alone")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.set_defaults(func=_cmd_bench)
