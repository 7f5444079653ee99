"""Benchmark of the question-level cache's freshness: stale serves, and what the check costs.

Runs :mod:`lean_plugins.demo.freshness_check` over the RAG check's questions (both frameworks:
fill, repeat, then a document edit in place, a deletion and an addition, each followed by every
question again; plus LangChain message-history renames and ``key=callable`` follow-ups). A
served answer is stale when it differs from what the uncached pipeline answers now for the
question its entry was made for. The second table times hit lookups on the same warm entries,
the cache alone beside the cache plus the freshness check (the entry's retrievals run again).
Everything is built in the run (the demo knowledge base and stand-in model ship with the
package); no ../shared/data is read.

Usage: python scripts/bench_freshness.py [--quick] [--markdown-out PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the first 12 questions only")
    parser.add_argument("--markdown-out", type=Path, help="write the Markdown section here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)  # MiniLM on one thread: the machine is shared, timings comparable
    from lean_plugins.demo.freshness_check import run_check, stale_total, tables

    start = time.perf_counter()
    results, costs = run_check(limit=12 if args.quick else None)
    lines = tables(results, costs)
    markdown = "\n".join(
        [
            "### Question-level cache freshness" + (" (quick)" if args.quick else ""),
            "",
            f"Stale or wrong answers served in all: **{stale_total(results)}**. "
            "Times are per hit lookup on the same warm entries (MiniLM on one thread); the "
            "check re-runs the entry's retrievals (LangChain: the retriever, embedding the query "
            "again; LlamaIndex: the retriever with the query embedding the entry kept).",
            "",
            *lines,
            "",
            f"({time.perf_counter() - start:.0f} s)",
        ]
    )
    print(markdown)
    if args.markdown_out:
        args.markdown_out.write_text(markdown + "\n", encoding="utf-8")
    return 0 if stale_total(results) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
