"""Which linear layers the int8 path keeps in float32, chosen on answer survival, each article left out.

Candidates (``CANDIDATES``, fastest first) are sets of linear layers left in float32
(``lean_plugins.quantize.FLOAT32_LINEARS``), the rest quantised to int8, in the compressor's
classifier and in the sentence encoder that ranks sentences for a question. For each of the 13
SQuAD development articles in turn, the fastest candidate whose answer survival on the other 12
is within ``SURVIVAL_SLACK`` of float32 in each of the four settings (rate 0.5 / 0.33, with and
without the question), and whose keep-F1 on the validation pairs is within ``F1_SLACK``, is
chosen; the figures printed are on the left-out article, summed over the 13. Scores and vectors
come from ``scripts/survival_lab.py``'s machinery (the library's own ``compress`` per call), cached
per candidate under the lean-plugins cache dir (the file name holds the candidate and the
calibration recipe, so a changed recipe is never read from an old cache).

    python scripts/quantize_lab.py [--candidates 0,1,2]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time

import numpy as np
import survival_lab as lab  # scripts/, beside this file

from lean_plugins import quantize
from lean_plugins.paths import cache_dir

#: Sets of linear layers kept in float32, fastest first (keep-probability correlation with
#: float32 on 52 development paragraphs and speed of a 2k-token pass in ``quantize.FLOAT32_LINEARS``).
CANDIDATES: tuple[tuple[str, ...], ...] = (
    (),
    ("layer.0.output.dense",),
    ("layer.0.output.dense", "layer.1.output.dense"),
    tuple(f"layer.{i}.output.dense" for i in range(6)),
)
SURVIVAL_SLACK = 0.005
F1_SLACK = 0.005


def recipe_tag(keep: tuple[str, ...]) -> str:
    """A short name of the int8 recipe: the float32 layers, the smoothing and the calibration text."""
    spec = repr((keep, quantize.SMOOTHING_ALPHA, quantize.calibration_texts()))
    return hashlib.sha256(spec.encode()).hexdigest()[:10]


def measure(dtype: str, keep: tuple[str, ...] | None, articles, val, embeddings) -> dict:
    """survival_lab's per-article hits and validation keep-F1 with the compressor in ``dtype``
    (int8: ``keep`` left in float32)."""
    if keep is not None:
        quantize.FLOAT32_LINEARS = keep
    name = "float32" if keep is None else f"int8_{recipe_tag(keep)}"
    lab.LabCompressor.dtype = dtype
    embeddings._encoders.clear()  # an int8 encoder made with another candidate's layers
    embeddings.get_encoder = lab._REAL_GET_ENCODER  # new vectors come from the real encoders
    memo, vectors = lab.load_cache(cache_dir("survival_lab") / f"survival_lab_{name}.npz", articles, val, dtype)
    encoders = {n: lab.CachedEncoder(v, n) for n, v in vectors.items()}
    embeddings.get_encoder = lambda *a, dtype="float32", **k: encoders[dtype]  # imported at call time
    return lab.run(articles, val, memo, relevance_models=lab.left_out_models(articles, encoders["float32"]))


def choose(results: list[dict], baseline: dict, articles) -> list[int]:
    """Per article: the index of the first candidate within the slacks on the other articles
    (None when none is)."""
    titles = [t for t, _ in articles]
    chosen = []
    for left_out in titles:
        others = [t for t in titles if t != left_out]
        pick = None
        for k, result in enumerate(results):
            ok = result["val_f1"] >= baseline["val_f1"] - F1_SLACK
            for setting in lab.SETTINGS:
                base = np.mean([h for t in others for h in baseline["table"][t][setting]])
                got = np.mean([h for t in others for h in result["table"][t][setting]])
                ok = ok and got >= base - SURVIVAL_SLACK
            if ok:
                pick = k
                break
        chosen.append(pick)
    return chosen


def paired_interval(base: list[bool], other: list[bool], seed: int = 0, draws: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of ``mean(other) - mean(base)`` over the same questions, resampled in pairs."""
    diff = np.asarray(other, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(draws, len(diff)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", default=None, help="indices into CANDIDATES (default all)")
    args = parser.parse_args()
    loaded = lab.load_development_data()
    if loaded is None:
        return 2
    articles, val = loaded
    import lean_plugins.embeddings as embeddings

    picked = [int(i) for i in args.candidates.split(",")] if args.candidates else range(len(CANDIDATES))
    candidates = [CANDIDATES[i] for i in picked]
    started = time.time()
    baseline = measure("float32", None, articles, val, embeddings)
    print("float32\n" + lab.report(baseline, articles, False), flush=True)
    results = []
    for keep in candidates:
        results.append(measure("int8", keep, articles, val, embeddings))
        print(f"int8, float32 kept: {list(keep) or 'none'}\n" + lab.report(results[-1], articles, False), flush=True)
    chosen = choose(results, baseline, articles)
    print("\nChosen on the other 12 articles, figures on the left-out one:")
    for (title, _), k in zip(articles, chosen, strict=True):
        print(f"  {title[:40]:40s} {'none' if k is None else list(candidates[k]) or 'all int8'}")
    for setting in lab.SETTINGS:
        base = [h for t, _ in articles for h in baseline["table"][t][setting]]
        got = [
            h
            for (t, _), k in zip(articles, chosen, strict=True)
            for h in (results[k] if k is not None else baseline)["table"][t][setting]
        ]
        low, high = paired_interval(base, got)
        print(f"  rate {setting[0]}, {'question' if setting[1] else 'no question':12s} "
              f"float32 {np.mean(base):.2%}  chosen int8 (left out) {np.mean(got):.2%}  "
              f"({(np.mean(got) - np.mean(base)) * 100:+.2f} pt, 95% paired interval {low * 100:+.2f} to {high * 100:+.2f})")
    print("\nEach candidate on all 13 articles against float32 (pt, 95% paired interval over questions):")
    for keep, result in zip(candidates, results, strict=True):
        cells = []
        for setting in lab.SETTINGS:
            base = [h for t, _ in articles for h in baseline["table"][t][setting]]
            got = [h for t, _ in articles for h in result["table"][t][setting]]
            low, high = paired_interval(base, got)
            cells.append(f"{(np.mean(got) - np.mean(base)) * 100:+.2f} [{low * 100:+.2f}, {high * 100:+.2f}]")
        print(f"  {str(list(keep) or 'all int8')[:60]:60s} " + "  ".join(cells))
    print(f"  validation keep-F1: float32 {baseline['val_f1']:.4f}; "
          + "; ".join(f"{list(c) or 'all int8'} {r['val_f1']:.4f}" for c, r in zip(candidates, results, strict=True)))
    print(f"({time.time() - started:.0f}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
