"""Words, keep labels and splits of the sentence-compression pairs (training and benchmark).

A *word* is a maximal run of non-space characters, so a compressed text made of kept words
joined by their original spacing is always made of the original's own words. Keep labels
are aligned the LLMLingua-2 way: the reference compression is matched back onto the
original's words (here with a longest-matching-blocks alignment of lower-cased alphanumeric
pieces, which tolerates the re-capitalisation and re-spacing of Google's compressions).
"""

from __future__ import annotations

import csv
import difflib
import random
import re
from dataclasses import dataclass
from pathlib import Path

_WORD = re.compile(r"\S+")
_PIECE = re.compile(r"\w+")

#: Relative path of the pairs inside the shared data folder.
PAIRS_FILE = "compression/google_sentence_compression_pairs.csv"


def word_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of the whitespace-separated words of ``text``."""
    return [m.span() for m in _WORD.finditer(text)]


def words(text: str) -> list[str]:
    """The whitespace-separated words of ``text``."""
    return _WORD.findall(text)


def align_keep_labels(original: str, compressed: str) -> list[bool]:
    """One keep label per word of ``original``: True where ``compressed`` kept that word.

    Each word is split into lower-cased alphanumeric pieces; the pieces of both texts are
    aligned by matching blocks; a word is kept when at least half of its pieces matched.
    A word with no alphanumeric piece (a dash, a quote) is kept when it appears among the
    compressed words and the word before it was kept.
    """
    orig_words = words(original)
    pieces: list[str] = []
    owner: list[int] = []
    for i, word in enumerate(orig_words):
        for piece in _PIECE.findall(word.lower()):
            pieces.append(piece)
            owner.append(i)
    comp_pieces = _PIECE.findall(compressed.lower())
    matched = [0] * len(orig_words)
    matcher = difflib.SequenceMatcher(None, pieces, comp_pieces, autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.a, block.a + block.size):
            matched[owner[k]] += 1
    total = [0] * len(orig_words)
    for i in owner:
        total[i] += 1
    comp_words = set(words(compressed))
    labels: list[bool] = []
    for i, word in enumerate(orig_words):
        if total[i]:
            labels.append(matched[i] * 2 >= total[i])
        else:
            labels.append(word in comp_words and bool(labels) and labels[-1])
    return labels


@dataclass(frozen=True)
class CompressionPair:
    """One original sentence and its reference (deletion-based) compression."""

    original: str
    compressed: str

    @property
    def labels(self) -> list[bool]:
        return align_keep_labels(self.original, self.compressed)


def load_pairs(path: str | Path) -> list[CompressionPair]:
    """Read a CSV with header ``original,compressed``; rows with an empty side are skipped."""
    pairs: list[CompressionPair] = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            original = (row.get("original") or "").strip()
            compressed = (row.get("compressed") or "").strip()
            if original and compressed:
                pairs.append(CompressionPair(original, compressed))
    return pairs


def split_pairs(
    pairs: list[CompressionPair], *, seed: int = 13, val_fraction: float = 0.05, test_fraction: float = 0.10
) -> tuple[list[CompressionPair], list[CompressionPair], list[CompressionPair]]:
    """A seeded ``(train, val, test)`` split. The test part is never trained on or tuned on."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_test = round(len(pairs) * test_fraction)
    n_val = round(len(pairs) * val_fraction)
    test = [pairs[i] for i in order[:n_test]]
    val = [pairs[i] for i in order[n_test : n_test + n_val]]
    train = [pairs[i] for i in order[n_test + n_val :]]
    return train, val, test


def keep_f1(predicted: list[bool], reference: list[bool]) -> float:
    """F1 of the kept words against the reference kept words (1.0 when both keep nothing)."""
    if len(predicted) != len(reference):
        raise ValueError(f"label lists differ in length: {len(predicted)} != {len(reference)}")
    tp = sum(p and r for p, r in zip(predicted, reference, strict=False))
    n_pred = sum(predicted)
    n_ref = sum(reference)
    if n_pred == 0 and n_ref == 0:
        return 1.0
    if tp == 0:
        return 0.0
    precision, recall = tp / n_pred, tp / n_ref
    return 2 * precision * recall / (precision + recall)


#: SQuAD development articles in the shared data folder (answer survival, relevance fit).
SQUAD_FILES = ("qa/squad_normans_dev.json", "qa/squad_dev_articles.json")


@dataclass(frozen=True)
class QuestionItem:
    """One answerable SQuAD question with its paragraph and the accepted answer strings."""

    context: str
    question: str
    answers: tuple[str, ...]


def load_squad_articles(paths: list[Path]) -> list[tuple[str, list[QuestionItem]]]:
    """``(title, answerable questions)`` for each article of the SQuAD-format files, in order."""
    import json

    articles: list[tuple[str, list[QuestionItem]]] = []
    for path in paths:
        for article in json.loads(Path(path).read_text(encoding="utf-8"))["data"]:
            items = []
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    answers = tuple(a["text"] for a in qa.get("answers", []) if a.get("text"))
                    if answers and not qa.get("is_impossible", False):
                        items.append(QuestionItem(paragraph["context"], qa["question"], answers))
            articles.append((article["title"], items))
    return articles
