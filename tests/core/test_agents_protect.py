"""Query-aware sentence protection of :class:`lean_plugins.agents.ToolResultCompressor`
(``keep_sentences``): the sentences naming the goal's rarer words are kept verbatim, each with
the sentence after it, where an answer that restates its subject with a pronoun sits. Real
compressor (the embedded model, offline)."""

from __future__ import annotations

import json

import pytest

from lean_plugins.agents import ToolResultCompressor, _protected_pieces
from lean_plugins.errors import ConfigurationError
from tests.core.test_agents import FILLER

GOAL = "What did the Harwick line eventually provide?"
NAMING = "The Harwick line was a narrow-gauge railway laid along the river in the 1890s."
PRONOUN_ANSWER = "Funded by the mill owners, it became the main freight route for the wool trade."


def paragraph(i: int, with_answer: bool = False) -> str:
    body = [FILLER[(i + j) % len(FILLER)] for j in range(len(FILLER))]
    if with_answer:
        body[2:2] = [NAMING, PRONOUN_ANSWER]
    return " ".join(body)


@pytest.fixture(scope="module")
def compressor_factory():  # type: ignore[no-untyped-def]
    from lean_plugins.compress import LeanCompressor

    core = LeanCompressor(record_ledger=False)
    return lambda **kw: ToolResultCompressor(core, rate=0.2, min_tokens=60, keep_best=0, **kw)


def test_pieces_join_back_and_protect_the_naming_sentence_and_the_next() -> None:
    texts = [paragraph(0), paragraph(1, with_answer=True), paragraph(2)]
    pieces = _protected_pieces(GOAL, texts, 1)
    assert pieces is not None
    assert ["".join(t for _, t in unit) for unit in pieces] == texts  # nothing lost or moved
    protected = [t for unit in pieces for kept, t in unit if kept]
    assert protected == [NAMING, PRONOUN_ANSWER]
    assert _protected_pieces(GOAL, texts, 0) is None
    assert _protected_pieces("Who sang?", [paragraph(0)], 1) is None  # no goal word anywhere


def test_the_pronoun_answer_survives_strict_compression(compressor_factory) -> None:  # type: ignore[no-untyped-def]
    text = "\n\n".join(paragraph(i, with_answer=i == 2) for i in range(4))
    protected = compressor_factory(keep_sentences=1).compress(text, GOAL)
    assert protected.changed and NAMING in protected.text and PRONOUN_ANSWER in protected.text
    plain = compressor_factory().compress(text, GOAL)
    assert PRONOUN_ANSWER not in plain.text  # what the protection is for
    assert protected.tokens < 0.5 * protected.original_tokens


def test_json_values_protected_and_json_kept(compressor_factory) -> None:  # type: ignore[no-untyped-def]
    payload = {"hits": [{"id": f"doc-{i}", "text": paragraph(i, with_answer=i == 1)} for i in range(3)]}
    done = compressor_factory(keep_sentences=1).compress(json.dumps(payload), GOAL)
    data = json.loads(done.text)
    assert [h["id"] for h in data["hits"]] == ["doc-0", "doc-1", "doc-2"]
    assert NAMING in data["hits"][1]["text"] and PRONOUN_ANSWER in data["hits"][1]["text"]


def test_negative_keep_sentences_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="keep_sentences"):
        ToolResultCompressor(object(), keep_sentences=-1)
