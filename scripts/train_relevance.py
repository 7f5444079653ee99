"""Fit the compressor's sentence-relevance weights on the SQuAD development articles.

Each answerable question gives one row per sentence of its paragraph (label: the sentence
holds an answer); the features are ``lean_plugins.compress.relevance.FEATURE_NAMES``. The
weights are fitted on all articles and written, with the question-type patterns and the
leave-one-article-out top-1 accuracy, to ``lean_plugins/data/compressor/relevance.json``.
The benchmark (``lean-plugins bench compress``) refits them with each article left out to
report answer survival on articles the weights never saw.

    python scripts/train_relevance.py [--l2 1.0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lean_plugins.compress.data import SQUAD_FILES, load_squad_articles
from lean_plugins.compress.relevance import (
    FEATURE_NAMES,
    RelevanceModel,
    caching_encoder,
    fit_relevance,
    relevance_path,
    training_rows,
)
from lean_plugins.paths import shared_data_dir


def article_rows(data: Path, template: RelevanceModel):
    encode = caching_encoder()
    articles = load_squad_articles([data / f for f in SQUAD_FILES])
    return [(title, training_rows(items, encode, template)) for title, items in articles]


def top1(model: RelevanceModel | None, rows) -> float:
    """Share of questions whose top-ranked sentence holds the answer; ``None``: the former
    rule, cosine + 0.5 x the share of the question's content words."""
    cosine, share = FEATURE_NAMES.index("cosine"), FEATURE_NAMES.index("term_share")
    hits = [
        labels[np.argmax(features @ model.coef if model else features[:, cosine] + 0.5 * features[:, share])]
        for features, labels in rows
    ]
    return float(np.mean(hits)) if hits else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--l2", type=float, default=1.0)
    args = parser.parse_args()
    data = shared_data_dir()
    if data is None:
        print("evaluation data not found (../shared/data or LEAN_PLUGINS_DATA)", file=sys.stderr)
        return 2
    path = relevance_path()
    spec = json.loads(path.read_text())
    template = RelevanceModel.from_dict({**spec, "features": list(FEATURE_NAMES)})
    per_article = article_rows(data, template)
    left_out = {}
    for k, (title, rows) in enumerate(per_article):
        others = [r for j, (_, rs) in enumerate(per_article) if j != k for r in rs]
        left_out[title] = round(top1(fit_relevance(others, template.question_types, args.l2), rows), 4)
    every = [r for _, rs in per_article for r in rs]
    model = fit_relevance(every, template.question_types, args.l2)
    spec.update(
        features=list(FEATURE_NAMES),
        coef=[round(float(c), 6) for c in model.coef],
        intercept=round(model.intercept, 6),
        l2=args.l2,
        fitted_on=[title for title, _ in per_article],
        questions=len(every),
        top1_left_out=left_out,
        top1_left_out_all=round(
            float(np.average(list(left_out.values()), weights=[len(rs) for _, rs in per_article])), 4
        ),
        top1_former_rule=round(top1(None, every), 4),
    )
    path.write_text(json.dumps(spec, indent=2) + "\n")
    print(json.dumps({k: spec[k] for k in ("coef", "intercept", "top1_left_out_all", "top1_former_rule")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
