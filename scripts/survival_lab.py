"""Fast answer-survival experiments: the benchmark's survival figures in seconds per variant.

The classifier's word scores do not depend on the question, and a sentence's embedding does
not depend on the call, so both are computed once (for the 435 SQuAD paragraphs, their
sentences and questions, and the 425 validation pairs) and cached on disk. Every call after
that runs the library's own ``compress`` (relevance, bonuses, selection) with the cached
scores and vectors, so a variant of the scoring or selection constants is measured on all
2,172 questions, with the relevance weights refitted with each article left out, and on the
validation keep-F1, in about a minute.

    python scripts/survival_lab.py [--per-article] [--dtype auto|float32|bfloat16|int8[,...]] [--cache PATH]
    python scripts/survival_lab.py --set NEAR_TOP=0.5 --set NAME_BONUS=0.25

``--set NAME=VALUE`` changes a constant of ``lean_plugins.compress.compressor`` for the run.
``--dtype`` is the compressor's (``auto``: bfloat16 on CPUs that have it in hardware, as the
benchmark runs); several, comma-separated (``--dtype float32,int8``), print one table each in
the same run, the first as the baseline. The relevance weights are fitted on float32 vectors,
as in the benchmark.
The figures are the benchmark's (``scripts/bench_compress.py``: ``answer_survival`` and the
validation keep-F1 of ``reference_rate_f1``) for the shipped choices; the benchmark itself runs
the grid of query-free bonuses, which this script does not.
"""

from __future__ import annotations

import argparse
import ast
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np
from bench_compress import MemoCompressor, figure_context, reference_rate_f1  # scripts/, beside this file

from lean_plugins.compress import LeanCompressor
from lean_plugins.compress import compressor as core
from lean_plugins.compress.data import (
    PAIRS_FILE,
    SQUAD_FILES,
    QuestionItem,
    load_pairs,
    load_squad_articles,
    split_pairs,
)
from lean_plugins.compress.relevance import (
    caching_encoder,
    fit_relevance,
    shipped_relevance_model,
    training_rows,
)
from lean_plugins.compress.spans import sentence_spans
from lean_plugins.embeddings import get_encoder
from lean_plugins.paths import cache_dir, shared_data_dir

SETTINGS = [(0.5, True), (0.33, True), (0.5, False), (0.33, False)]


class CachedEncoder:
    """Stands in for the shared MiniLM encoder in ``dtype``: vectors from the cache, new texts encoded."""

    def __init__(self, vectors: dict[str, np.ndarray], dtype: str = "float32") -> None:
        self.vectors = vectors
        self.dtype = dtype
        # built before main() swaps embeddings.get_encoder for these stand-ins
        self.encode = caching_encoder(vectors, dtype=dtype)


class LabCompressor(MemoCompressor):
    """The benchmark's compressor with cached word scores, and the answer-word bonus as
    ``--set`` left it (the constructor's default is bound at import)."""

    dtype = "auto"

    def __init__(self, memo: dict[str, np.ndarray], **options) -> None:
        options.setdefault("answer_word_bonus", core.ANSWER_WORD_BONUS)
        options.setdefault("dtype", LabCompressor.dtype)
        super().__init__(memo, **options)


def read_cache(path: Path) -> tuple[dict, dict[str, dict]]:
    """(word scores per text, sentence vectors per encoder dtype) from an ``.npz`` written by
    :func:`write_cache`: plain arrays and a JSON index, nothing that runs code when read (the
    cache sits in a shared folder; a pickle there would run whatever was put in its place)."""
    if not path.exists():
        return {}, {}
    with np.load(path, allow_pickle=False) as stored:
        index = json.loads(bytes(stored["index"]).decode("utf-8"))
        flat = stored["scores"]
        ends = np.cumsum(index["score_lengths"])
        scores = dict(zip(index["texts"], np.split(flat, ends[:-1]), strict=True)) if index["texts"] else {}
        vectors = {
            name: dict(zip(keys, stored[f"vectors_{name}"], strict=True)) for name, keys in index["vectors"].items()
        }
    return scores, vectors


def write_cache(path: Path, scores: dict, vectors: dict[str, dict]) -> None:
    texts = list(scores)
    index = {
        "texts": texts,
        "score_lengths": [len(scores[t]) for t in texts],
        "vectors": {name: list(v) for name, v in vectors.items()},
    }
    arrays = {f"vectors_{name}": np.stack(list(v.values())) for name, v in vectors.items() if v}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        index=np.frombuffer(json.dumps(index).encode("utf-8"), dtype=np.uint8),
        scores=np.concatenate([scores[t] for t in texts]) if texts else np.zeros(0),
        **arrays,
    )
    tmp.replace(path)  # a run stopped mid-write leaves the old cache whole


def load_cache(path: Path, articles, val, dtype: str = "float32") -> tuple[dict, dict[str, dict]]:
    """Word scores per text (the compressor in ``dtype``) and sentence vectors per encoder dtype
    (float32 for the relevance fit, ``dtype`` for the calls)."""
    scores, vectors = read_cache(path)
    texts = sorted({it.context for _, items in articles for it in items} | {p.original for p in val})
    missing = [t for t in texts if t not in scores]
    sentences = sorted(
        {it.context[a:b] for _, items in articles for it in items for a, b in sentence_spans(it.context)}
        | {it.question for _, items in articles for it in items}
    )
    missing_vectors = {
        name: [s for s in sentences if s not in vectors.get(name, {})] for name in {"float32", dtype}
    }
    if missing or any(missing_vectors.values()):
        started = time.time()
        scorer = LeanCompressor(record_ledger=False, dtype=dtype)
        for k in range(0, len(missing), 64):
            scores.update(zip(missing[k : k + 64], scorer._score(missing[k : k + 64]), strict=False))
        for name, todo in missing_vectors.items():
            if todo:
                CachedEncoder(vectors.setdefault(name, {}), name).encode(todo)
        write_cache(path, scores, vectors)
        print(f"cached {len(missing)} texts, {sum(map(len, missing_vectors.values()))} vectors "
              f"in {time.time() - started:.0f}s", file=sys.stderr)
    return scores, vectors


def survival(compressor: LeanCompressor, items: list[QuestionItem], rate: float, with_question: bool,
             outputs: dict | None = None, figures: list | None = None) -> list[bool]:
    """Per question: is an answer verbatim in the compressed paragraph; ``figures`` collects the
    benchmark's (kept numbers, of them with a content word in their sentence) per call."""
    done: dict = {}
    hits = []
    for item in items:
        query = item.question if with_question else None
        key = (item.context, query)
        if key not in done:
            done[key] = compressor.compress(item.context, rate=rate, query=query).text
            if figures is not None:
                figures.append(figure_context(item.context, done[key]))
        hits.append(any(a in done[key] for a in item.answers))
        if outputs is not None:
            outputs[(item.context, item.question, rate, with_question)] = done[key]
    return hits


def run(articles, val, memo, settings=SETTINGS, outputs: dict | None = None,
        relevance_models: list | None = None) -> dict:
    """Per article and setting, the list of hits (question given: relevance refitted without
    the article); and the validation keep-F1."""
    table: dict[str, dict[tuple[float, bool], list[bool]]] = collections.defaultdict(dict)
    figures: dict[tuple[float, bool], list] = collections.defaultdict(list)
    free = LabCompressor(memo)
    for k, (title, items) in enumerate(articles):
        for rate, with_q in settings:
            compressor = LabCompressor(memo, relevance_model=relevance_models[k]) if with_q else free
            table[title][(rate, with_q)] = survival(compressor, items, rate, with_q, outputs, figures[(rate, with_q)])
    val_f1 = reference_rate_f1(free, val) if val and any(not q for _, q in settings) else None
    return {"table": table, "val_f1": val_f1, "figures": figures}


def left_out_models(articles, encoder: CachedEncoder) -> list:
    shipped = shipped_relevance_model()
    rows = [training_rows(items, encoder.encode, shipped) for _, items in articles]
    return [
        fit_relevance([r for j, rs in enumerate(rows) if j != k for r in rs], shipped.question_types)
        for k in range(len(articles))
    ]


def report(result: dict, articles, per_article: bool) -> str:
    lines = []
    header = "  ".join(f"{r} {'q' if q else 'noq'}".rjust(8) for r, q in SETTINGS)
    if per_article:
        lines.append(f"{'article':40s} {'n':>4s}  {header}")
        for title, items in articles:
            row = result["table"][title]
            cells = "  ".join(
                f"{np.mean(row[s]):8.1%}" if s in row else " " * 8 for s in SETTINGS
            )
            lines.append(f"{title[:40]:40s} {len(items):4d}  {cells}")
    n = sum(len(items) for _, items in articles)
    cells = []
    for s in SETTINGS:
        hits = [h for title, _ in articles for h in result["table"][title].get(s, [])]
        cells.append(f"{np.mean(hits):8.2%}" if hits else " " * 8)  # 95.0% could be 94.98%
    lines.append(f"{'all':40s} {n:4d}  " + "  ".join(cells))
    answered = [sum(h for title, _ in articles for h in result["table"][title].get(s, [])) for s in SETTINGS]
    lines.append(f"{'answers kept':45s}  " + "  ".join(f"{a:8d}" for a in answered))
    coherent = []
    for s in SETTINGS:
        kept = sum(k for k, _ in result["figures"].get(s, []))
        coherent.append(f"{sum(c for _, c in result['figures'][s]) / kept:8.1%}" if kept else " " * 8)
    lines.append(f"{'figures kept with a content word':45s}  " + "  ".join(coherent))
    if result["val_f1"] is not None:
        lines.append(f"validation keep-F1 {result['val_f1']:.4f}")
    return "\n".join(lines)


_REAL_GET_ENCODER = get_encoder


def run_dtype(dtype: str, cache: Path, articles, val, per_article: bool, embeddings) -> None:
    """Print the survival table and validation keep-F1 with the compressor in ``dtype``."""
    LabCompressor.dtype = dtype
    embeddings.get_encoder = _REAL_GET_ENCODER  # new vectors come from the real encoders
    memo, vectors = load_cache(cache, articles, val, dtype)
    encoders = {name: CachedEncoder(v, name) for name, v in vectors.items()}
    embeddings.get_encoder = lambda *a, dtype="float32", **k: encoders[dtype]  # imported at call time
    started = time.time()
    known = sum(map(len, vectors.values()))
    result = run(articles, val, memo, relevance_models=left_out_models(articles, encoders["float32"]))
    print(report(result, articles, per_article), flush=True)
    if sum(map(len, vectors.values())) > known:  # sentences new to the cache (another sentence split)
        write_cache(cache, memo, vectors)
    print(f"({time.time() - started:.0f}s)", file=sys.stderr)


def load_development_data() -> tuple[list, list] | None:
    """The 13 development articles and the validation compression pairs, with torch on one
    thread (the labs' measurements are per CPU-second); ``None`` (after saying why) when the
    shared data is not found."""
    data = shared_data_dir()
    if data is None:
        print("evaluation data not found (../shared/data or LEAN_PLUGINS_DATA)", file=sys.stderr)
        return None
    import torch

    torch.set_num_threads(1)
    articles = load_squad_articles([data / f for f in SQUAD_FILES])
    _, val, _ = split_pairs(load_pairs(data / PAIRS_FILE))
    return articles, val


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=None, help="default survival_lab_<dtype>.npz in the lean-plugins cache dir (one dtype only)")
    parser.add_argument("--dtype", default="auto", help="the compressor's dtype, or several comma-separated (default auto, as shipped)")
    parser.add_argument("--per-article", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="NAME=VALUE: a compressor constant")
    args = parser.parse_args()
    loaded = load_development_data()
    if loaded is None:
        return 2
    articles, val = loaded
    for assignment in args.set:
        name, value = assignment.split("=", 1)
        if not hasattr(core, name):
            parser.error(f"compressor has no constant {name}")
        setattr(core, name, ast.literal_eval(value))
    dtypes = [LeanCompressor(record_ledger=False, dtype=d.strip()).resolved_dtype for d in args.dtype.split(",")]
    if args.cache and len(dtypes) > 1:
        parser.error("--cache takes one --dtype")
    import lean_plugins.embeddings as embeddings

    for dtype in dtypes:
        print(f"compressor dtype {dtype}" + (f" (baseline {dtypes[0]} above)" if dtype != dtypes[0] else ""))
        run_dtype(dtype, args.cache or cache_dir("survival_lab") / f"survival_lab_{dtype}.npz", articles, val,
                  args.per_article, embeddings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
