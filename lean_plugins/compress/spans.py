"""Character spans the compressor must keep, and sentence spans for query-aware ranking."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# Why each default: a dropped digit changes a fact; a cut URL or address stops working;
# code loses its meaning when a token is removed.
DEFAULT_PROTECTED_PATTERNS: tuple[str, ...] = (
    r"```.*?```",  # fenced code block
    r"`[^`\n]+`",  # inline code span
    r"\b(?:https?|ftp)://\S+|\bwww\.\S+",  # URL
    r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b",  # e-mail address
    r"\S*\d\S*",  # any word holding a digit: numbers, dates, versions, ids
)

_SENTENCE_END = re.compile(r"([.!?][\"')\]]*)\s+|\n\s*")


def compile_patterns(
    patterns: Iterable[str | re.Pattern[str]], force_tokens: Iterable[str] = ()
) -> list[re.Pattern[str]]:
    """Regexes of the protected spans: ``patterns`` plus each force token, escaped."""
    compiled: list[re.Pattern[str]] = []
    for pattern in patterns:
        if isinstance(pattern, re.Pattern):
            compiled.append(pattern)
            continue
        try:
            compiled.append(re.compile(pattern, re.DOTALL))
        except re.error as exc:
            raise ValueError(
                f"protected pattern {pattern!r} is not a valid regular expression: {exc}"
            ) from exc
    for token in force_tokens:
        if token and not token.isspace():
            compiled.append(re.compile(re.escape(token)))
    return compiled


def protected_word_mask(
    text: str, words: Sequence[tuple[int, int]], patterns: Sequence[re.Pattern[str]]
) -> list[bool]:
    """True for each word span that overlaps a match of any pattern."""
    if not patterns or not words:
        return [False] * len(words)
    marked = bytearray(len(text) + 1)
    for pattern in patterns:
        for match in pattern.finditer(text):
            start, end = match.span()
            if end > start:
                marked[start:end] = b"\x01" * (end - start)
    return [any(marked[start:end]) for start, end in words]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence (split after . ! ? and at line breaks), blanks skipped."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end(1) if match.group(1) else match.start()
        if end > start and text[start:end].strip():
            spans.append((start, end))
        start = match.end()
    if start < len(text) and text[start:].strip():
        spans.append((start, len(text)))
    return spans
