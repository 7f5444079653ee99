"""Profile of LeanCache's semantic lookup at 10,000 entries, step by step, several code paths
side by side in one run: each path runs in its own worker process and the queries alternate
between them, so every path sees the same machine load.

Paths: ``before`` (the package at ``--before DIR``, e.g. ``git archive HEAD lean_plugins``
unpacked there; optional), ``float32`` (this checkout, ``precision="float32"``) and ``auto``
(this checkout, ``precision="auto"``). The store is filled as ``scripts/bench_cache.py``'s
latency section fills it (``fill_set``: MiniLM vectors of real QQP questions); the queries are
QQP duplicates of stored questions, embedded at query time by the cache itself. Each step is
timed with ``time.perf_counter`` (wall) and ``time.process_time`` (CPU of the worker).

Usage: python scripts/profile_cache_lookup.py [--queries 50] [--threads 1 2] [--before DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent


def _worker(conn, package_root: str | None, precision: str, threads: int, n: int, n_queries: int) -> None:
    if package_root:
        sys.path.insert(0, package_root)
    sys.path.insert(0, str(SCRIPTS))
    import faiss
    import torch

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    conn.send(("ready", json.dumps(_run(conn, precision if not package_root else "before", n, n_queries))))


def _run(conn, precision: str, n: int, n_queries: int) -> dict:
    import inspect

    from bench_cache import EmbeddingStore, breakdown_store, count_redone, time_lookup_steps

    from lean_plugins.cache import LeanCache

    tmp, queries = breakdown_store(EmbeddingStore(), n, n_queries)
    try:
        new = "precision" in inspect.signature(LeanCache).parameters
        cache = LeanCache(path=tmp, record_hits=False, **({"precision": precision} if new else {}))
        step_precision = getattr(cache, "precision", "float32")
        redone = count_redone(cache) if step_precision == "bfloat16" else [0]
        for q in queries[:3]:  # load the models, warm the store
            cache.get(q)
        if new:  # the cross-encoder of each precision, loaded before the timed queries
            for dtype in {"float32", step_precision}:
                cache.verifier.scores([queries[0]], [queries[1]], [0.8], dtype=dtype)
        else:
            cache.verifier.score(queries[0], queries[1], 0.8)
        redone[0] = 0
        conn.send(("loaded", None))
        wall: dict[str, list] = {}
        cpu: dict[str, list] = {}
        served = []
        for q in queries:
            conn.recv()  # the driver's turn signal: paths alternate query by query
            hit = time_lookup_steps(cache, q, wall, cpu)
            served.append(None if hit is None else hit.cached_prompt)
            conn.send(("done", None))
        cache.close()
        return {"wall": wall, "cpu": cpu, "served": served, "redone": redone[0], "precision": step_precision}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def profile(paths: dict[str, tuple[str | None, str]], threads: int, n: int, n_queries: int) -> dict:
    """Run each path in a worker, alternate the queries between them, return their figures."""
    ctx = mp.get_context("spawn")
    workers = {}
    for name, (root, precision) in paths.items():
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child, root, precision, threads, n, n_queries))
        proc.start()
        workers[name] = (proc, parent)
    for _, conn in workers.values():
        assert conn.recv()[0] == "loaded"
    loads = [os.getloadavg()[0]]
    for i in range(n_queries):
        for _, conn in workers.values():
            conn.send("go")
            assert conn.recv()[0] == "done"
        if i % 10 == 9:
            loads.append(os.getloadavg()[0])
    out = {}
    for name, (proc, conn) in workers.items():
        out[name] = json.loads(conn.recv()[1])
        proc.join()
    out["_load"] = loads
    return out


def step_table(result: dict, n_queries: int, threads: int) -> list[str]:
    """Markdown: p50 wall (CPU) per step and path, served agreement, load."""
    from bench_cache import LOOKUP_STEPS as STEPS

    names = [k for k in result if not k.startswith("_")]
    p50 = statistics.median
    labels = {
        "exact": "exact-key probe",
        "embed": "MiniLM query embedding",
        "search": "FAISS search + fetch of the top 5",
        "guard": "guard (nearest candidate)",
        "verify": "cross-encoder (nearest candidate)",
        "lookup": "**whole lookup**",
    }
    head = " | ".join(f"{n} ({result[n]['precision']})" for n in names)
    lines = [f"| step, {threads} thread(s) | {head} |", "|---" * (len(names) + 1) + "|"]
    for step in STEPS:
        cells = []
        for n in names:
            w, c = result[n]["wall"].get(step, []), result[n]["cpu"].get(step, [])
            cells.append(f"{p50(w):.2f} ({p50(c):.2f} CPU), {len(w)} runs" if w else "-")
        lines.append(f"| {labels[step]} | " + " | ".join(cells) + " |")
    base = result[names[0]]["served"]
    agree = " | ".join(
        f"{sum(x is not None for x in result[n]['served'])} served, "
        f"{sum(a != b for a, b in zip(base, result[n]['served'], strict=True))} differ from {names[0]}, "
        f"{result[n]['redone']} redone in float32"
        for n in names
    )
    lines.append(f"| served ({n_queries} queries) | {agree} |")
    loads = result["_load"]
    lines.append(f"\nLoad average (1 min) during the run: {min(loads):.1f} to {max(loads):.1f}.")
    return lines


def margins(split: str) -> list[str]:
    """How far the bfloat16 path's query cosines and logits move from float32 on a QQP split
    (``tune``, ``report``) or the paraphrase pairs (``para``), each query embedded alone as a
    lookup does, and how many of the pairwise verdicts (cache a, ask b) would change under
    ``fast_path``'s settled rules (and how many it redoes in float32)."""
    import numpy as np
    from bench_cache import EmbeddingStore, load_data

    from lean_plugins.cache import SemanticGuard, normalize_prompt
    from lean_plugins.cache.fast_path import logits_settled, uncertain_ranks
    from lean_plugins.cache.verifier import CrossEncoderVerifier, prose_equal
    from lean_plugins.embeddings import get_encoder

    tune, report, para, _ = load_data(10_000, 10_000, 100_000)
    rows = {"tune": tune, "report": report, "para": para}[split]
    emb = EmbeddingStore()
    emb.ensure([t for r in rows for t in (r["a"], r["b"])])
    fast = get_encoder(dtype="bfloat16", prepack=True)
    stored, queries32 = emb([r["a"] for r in rows]), emb([r["b"] for r in rows])
    queries16 = np.stack([fast.encode(r["b"]) for r in rows])
    cos32, cos16 = (stored * queries32).sum(1), (stored * queries16).sum(1)
    verifier, guard = CrossEncoderVerifier.load(), SemanticGuard()
    floor, threshold = verifier.min_cosine, verifier.threshold
    moved_cos, moved_logit = np.abs(cos32 - cos16), []
    flips = redone = served = 0
    for i, r in enumerate(rows):
        if normalize_prompt(r["a"]) == normalize_prompt(r["b"]):
            continue  # an exact hit: no semantic verdict
        agrees = guard.agrees(r["b"], r["a"])
        c32, c16 = float(cos32[i]), float(cos16[i])
        l32 = l16 = None
        if agrees and max(c32, c16) >= floor - 0.01 and not prose_equal(r["b"], r["a"]):
            l32 = verifier.scores([r["b"]], [r["a"]], [c32])[0]
            l16 = verifier.scores([r["b"]], [r["a"]], [c16], dtype="bfloat16")[0]
            moved_logit.append(abs(l32 - l16))
        exact = c32 >= floor and agrees and (l32 is None or l32 >= threshold)
        if (agrees and uncertain_ranks([c16], floor, 5)) or (
            c16 >= floor and agrees and l16 is not None and not logits_settled([l16], threshold)
        ):
            redone += 1
            verdict = exact
        else:
            verdict = c16 >= floor and agrees and (l16 is None or l16 >= threshold)
        flips += verdict != exact
        served += exact
    q = np.quantile
    return [
        f"{split}: {len(rows)} pairs; query cosine moved max {moved_cos.max():.4f}, 99th percentile "
        f"{q(moved_cos, 0.99):.4f}, median {np.median(moved_cos):.4f}; logit moved (on {len(moved_logit)} pairs over "
        f"the floor that the guard passes) max {max(moved_logit):.3f}, 99th percentile {q(moved_logit, 0.99):.3f}, "
        f"median {np.median(moved_logit):.3f}; semantic verdicts: {served} served in float32, {flips} changed, "
        f"{redone} redone in float32."
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--before", type=Path, help="a folder holding an older lean_plugins package")
    parser.add_argument(
        "--margins",
        choices=("tune", "report", "para"),
        help="only the bfloat16-vs-float32 deviations on this split",
    )
    args = parser.parse_args()
    if args.margins:
        import torch

        torch.set_num_threads(1)
        print("\n".join(margins(args.margins)), flush=True)
        return
    from lean_plugins.devices import cpu_summary

    paths: dict[str, tuple[str | None, str]] = {}
    if args.before:
        paths["before"] = (str(args.before.resolve()), "float32")
    paths["float32"] = (None, "float32")
    paths["auto"] = (None, "auto")
    print(f"CPU: {cpu_summary()}", flush=True)
    for threads in args.threads:
        result = profile(paths, threads, args.entries, args.queries)
        print("\n".join(["", *step_table(result, args.queries, threads)]), flush=True)


if __name__ == "__main__":
    main()
