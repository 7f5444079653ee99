"""Sentence relevance: question types (one test per rule), features, the logistic fit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lean_plugins.compress.relevance import (
    FEATURE_NAMES,
    RelevanceModel,
    fit_logistic,
    question_type,
    relevance_path,
    sentence_features,
    shipped_relevance_model,
)

SPEC = json.loads(relevance_path().read_text())
RULES = [(name, pattern) for name, patterns in SPEC["question_types"].items() for pattern in patterns]


@pytest.mark.parametrize(("name", "pattern"), RULES, ids=[f"{n}:{p}" for n, p in RULES])
def test_each_question_type_rule_has_an_example_it_types(name: str, pattern: str) -> None:
    import re

    model = shipped_relevance_model()
    examples = SPEC["question_type_examples"][name]
    matched = [q for q in examples if re.search(pattern, q, re.IGNORECASE)]
    assert matched, f"no example of {name!r} exercises {pattern!r}"
    for question in matched:
        assert question_type(question, model.question_types) == name


def test_a_question_of_no_type() -> None:
    assert question_type("Why did the empire fall?", shipped_relevance_model().question_types) is None


def test_a_term_every_sentence_repeats_counts_less() -> None:
    sentences = ["The Amazon river floods the forest.", "The Amazon basin has many species.", "Rain falls daily."]
    features = sentence_features("Amazon species", sentences, np.zeros(3), None)
    share, idf_share = FEATURE_NAMES.index("term_share"), FEATURE_NAMES.index("idf_term_share")
    assert features[0, share] == features[2, share] + 0.5  # "Amazon" only
    assert features[1, share] == 1.0
    assert features[0, idf_share] < 0.5 < features[1, idf_share]


def test_words_are_compared_by_stem() -> None:
    from lean_plugins.compress.relevance import stem, term_shares

    assert stem("called") == stem("call") and stem("established") == stem("establish")
    assert stem("species") == "speci" and stem("was") == "was"  # a stem keeps 4 letters at least
    share, _, pairs = term_shares(
        "What did Davies call the system?", ["He called the system packet switching.", "Davies met Roberts."]
    )
    assert np.allclose(share, [2 / 3, 1 / 3]) and pairs[0] == 0.5  # ("call", "system") of two pairs


def test_question_type_features_need_the_matching_sentence() -> None:
    sentences = ["It was founded in 1891 by Rockefeller.", "It is a large school."]
    year = FEATURE_NAMES.index("year_for_when")
    name = FEATURE_NAMES.index("name_for_who_or_where")
    when = sentence_features("When was it founded?", sentences, np.zeros(2), "when")
    who = sentence_features("Who founded it?", sentences, np.zeros(2), "who")
    assert when[:, year].tolist() == [1.0, 0.0] and when[:, name].tolist() == [0.0, 0.0]
    assert who[:, name].tolist() == [1.0, 0.0] and who[:, year].tolist() == [0.0, 0.0]


def test_logistic_fit_finds_the_informative_feature() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    y = (x[:, 0] + 0.1 * rng.normal(size=400) > 0).astype(float)
    coef, _ = fit_logistic(x, y, l2=1.0)
    assert coef[0] > 3 * abs(coef[1])


def test_weights_for_other_features_are_refused() -> None:
    with pytest.raises(ValueError, match=r"refit with scripts/train_relevance\.py"):
        RelevanceModel.from_dict({**SPEC, "features": ["cosine"]})


def test_shipped_weights_were_fitted_and_left_out_figures_recorded() -> None:
    model = shipped_relevance_model()
    assert model.coef.shape == (len(FEATURE_NAMES),)
    assert len(SPEC["fitted_on"]) == 13 and len(SPEC["top1_left_out"]) == 13
    # cosine and the IDF share of the question's words both raise relevance
    assert model.coef[FEATURE_NAMES.index("cosine_minus_best")] > 0
    assert model.coef[FEATURE_NAMES.index("idf_term_share")] > 0
