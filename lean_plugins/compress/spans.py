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

# Words that carry a number's magnitude or unit: "4.6 billion years" without "billion years"
# is a different fact, so these stay with the protected number they follow.
NUMBER_UNIT_WORDS: frozenset[str] = frozenset(
    """
    hundred hundreds thousand thousands million millions billion billions trillion trillions
    dozen dozens percent per cent percentage points point bn mn k
    year years yr yrs month months week weeks day days hour hours hr hrs minute minutes min mins
    second seconds sec secs decade decades century centuries millennium millennia
    bc bce ad ce am pm
    january february march april may june july august september october november december
    jan feb mar apr jun jul aug sep sept oct nov dec
    km kilometre kilometres kilometer kilometers mile miles metre metres meter meters m cm mm
    ft foot feet inch inches yard yards kg kilogram kilograms g gram grams lb lbs pound pounds
    ton tons tonne tonnes ounce ounces oz litre litres liter liters l ml gallon gallons
    acre acres hectare hectares sq square cubic mph kph kmh degree degrees celsius fahrenheit
    kb mb gb tb ghz mhz hz kw mw gw kwh volt volts watt watts
    dollar dollars usd euro euros eur gbp yen yuan rupees cents
    """.split()
)
_UNIT_WORD = re.compile(r"[^\w%$€£¥]*([\w%$€£¥.]+?)[^\w%]*$")

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


def unit_word_mask(text: str, words: Sequence[tuple[int, int]], protected: Sequence[bool]) -> list[bool]:
    """True for unit/magnitude words (``NUMBER_UNIT_WORDS``) right after a protected word with a digit.

    Follows the chain after a number ("4.6 billion years", "10th century", "5 km", "1 May").
    A word before a number ("April 1191", "USD 5") is left to the model: protecting it too
    cost 0.007 keep-F1 on the validation pairs and kept no extra SQuAD answer.
    """
    n = len(words)
    has_digit = [protected[i] and any(ch.isdigit() for ch in text[a:b]) for i, (a, b) in enumerate(words)]

    def is_unit(i: int) -> bool:
        match = _UNIT_WORD.match(text[words[i][0] : words[i][1]])
        return bool(match) and match.group(1).lower().rstrip(".") in NUMBER_UNIT_WORDS

    out = [False] * n
    for i in range(n):
        if not has_digit[i]:
            continue
        j = i + 1
        while j < n and j <= i + 2 and not has_digit[j] and is_unit(j):
            out[j] = True
            j += 1
    return out
