"""Character spans the compressor must keep, and sentence spans for query-aware ranking."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from lean_plugins.compress.language import ENGLISH_STOPWORDS

# Why each default: a dropped digit changes a fact; a cut URL or address stops working;
# code loses its meaning when a token is removed.
DEFAULT_PROTECTED_PATTERNS: tuple[str, ...] = (
    r"```.*?```",  # fenced code block
    r"`[^`\n]+`",  # inline code span
    r"\b(?:https?|ftp)://\S+|\bwww\.\S+",  # URL
    r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b",  # e-mail address
    r"\S*\d\S*",  # any word holding a digit: numbers, dates, versions, ids
)
#: The default pattern that protects numbers; without ``protect_numbers`` a number is kept
#: or dropped together with its unit words and the word saying what it measures.
NUMBER_PATTERN = DEFAULT_PROTECTED_PATTERNS[-1]

# Words that carry a number's magnitude or unit: "4.6 billion years" without "billion years"
# is a different fact, so these stay with the protected number they follow.
NUMBER_UNIT_WORDS: frozenset[str] = frozenset(
    """
    hundred hundreds thousand thousands million millions billion billions trillion trillions
    dozen dozens percent per cent percentage points point bn mn k
    year years yr yrs month months week weeks day days hour hours hr hrs minute minutes min mins
    second seconds sec secs decade decades century centuries millennium millennia ago
    bc bce ad ce am pm
    january february march april may june july august september october november december
    jan feb mar apr jun jul aug sep sept oct nov dec
    km kilometre kilometres kilometer kilometers mile miles metre metres meter meters m cm mm
    ft foot feet inch inches yard yards kg kilogram kilograms g gram grams lb lbs pound pounds
    ton tons tonne tonnes ounce ounces oz litre litres liter liters l ml gallon gallons
    acre acres hectare hectares sq square cubic mph kph kmh degree degrees celsius fahrenheit c f
    kb mb gb tb ghz mhz hz kw mw gw kwh volt volts watt watts
    dollar dollars usd euro euros eur gbp yen yuan rupees cents
    """.split()
)
_UNIT_WORD = re.compile(r"[^\w%$€£¥]*([\w%$€£¥.]+?)[^\w%]*$")

_SENTENCE_END = re.compile(r"([.!?][\"')\]]*)\s+|\n\s*")
# A period after an initial or a title before a name does not end a sentence: "G. H. Hardy",
# "James O. McKinsey", "E.I. du Pont", "U.S. Academy", "Rep. Joe Barton". Split there, the
# name was cut from its sentence and 17 of the 2,172 SQuAD answers crossed a "sentence".
NAME_TITLES: frozenset[str] = frozenset(
    "Mr Mrs Ms Dr St Rep Sen Gov Gen Col Lt Capt Sgt Adm Prof Rev Fr Mt Pres Hon".split()
)
_INITIALS = re.compile(r"[(\"'“‘]*(?:[A-Z]\.)+")


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
    """``(start, end)`` of each sentence (split after . ! ? and at line breaks), blanks skipped.

    A period right after an initial ("G. H. Hardy", "U.S.") or a title (``NAME_TITLES``:
    "Dr.", "Rep.") is not a sentence end.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if match.group(1) == ".":
            word = text[start : match.start() + 1].split()[-1]
            if _INITIALS.fullmatch(word) or word[:-1].lstrip("(\"'“‘") in NAME_TITLES:
                continue
        end = match.end(1) if match.group(1) else match.start()
        if end > start and text[start:end].strip():
            spans.append((start, end))
        start = match.end()
    if start < len(text) and text[start:].strip():
        spans.append((start, len(text)))
    return spans


# Words that may join two numbers into one figure: "75,000 to 100,000", "July 8, 1905",
# "2p + 1", "n = 2".
_NUMBER_LINKS = frozenset("to and or - – — x by + − × = / ± ·".split())
# Unit words that may come before their number ("July 8", "USD 5"); the rest only follow it.
_LEADING_UNITS = frozenset(
    """january february march april may june july august september october november december
    jan feb mar apr jun jul aug sep sept oct nov dec usd eur gbp""".split()
)
_LETTER = re.compile(r"[^\W\d_]")


def _bare(word: str) -> str:
    match = _UNIT_WORD.match(word)
    return match.group(1).lower().rstrip(".") if match else ""


def is_content_word(word: str) -> bool:
    """A word that says something by itself: it has a letter and no digit, and is neither a
    stop word nor a unit word ("the", "percent" and "1905" are not; "rainfall" is)."""
    if not _LETTER.search(word) or any(ch.isdigit() for ch in word):
        return False
    core = re.sub(r"^\W+|\W+$", "", word.lower())
    core = core[:-2] if core.endswith(("'s", "’s")) else core
    return len(core) > 1 and core not in ENGLISH_STOPWORDS and core not in NUMBER_UNIT_WORDS


def number_groups(
    text: str,
    words: Sequence[tuple[int, int]],
    sentences: Sequence[tuple[int, int]] | None = None,
    *,
    units: bool = True,
) -> list[list[int]]:
    """Word indices of each figure with what it measures: its digits, its unit words, and one
    content word of its sentence (the word right after the figure when it is one, else the
    nearest before, else the nearest after). Keeping or dropping a group whole means no
    sentence is reduced to a bare list of figures.

    Adjacent numbers joined by a link word ("75,000 to 100,000", "July 8, 1905") form one group.
    ``units=False`` leaves the unit words out (they may still be kept on their own score).
    """
    n = len(words)
    tokens = [text[a:b] for a, b in words]
    digit = [any(ch.isdigit() for ch in w) for w in tokens]
    unit = [not digit[i] and _bare(w) in NUMBER_UNIT_WORDS for i, w in enumerate(tokens)]
    sentences = sentence_spans(text) if sentences is None else sentences
    sentence_of = [0] * n
    k = 0
    for i, (a, _) in enumerate(words):
        while k + 1 < len(sentences) and sentences[k + 1][0] <= a:
            k += 1
        sentence_of[i] = k
    groups: list[list[int]] = []
    i = 0
    while i < n:
        if not digit[i]:
            i += 1
            continue
        start = i
        if i > 0 and unit[i - 1] and _bare(tokens[i - 1]) in _LEADING_UNITS and sentence_of[i - 1] == sentence_of[i]:
            start = i - 1
        end = i + 1  # exclusive
        while end < n and sentence_of[end] == sentence_of[i]:
            if digit[end]:
                end += 1
            elif unit[end] and end - 1 >= start and (digit[end - 1] or digit[end - 2 if end >= 2 else 0]):
                end += 1
            elif (
                _bare(tokens[end]) in _NUMBER_LINKS or tokens[end] in _NUMBER_LINKS
            ) and end + 1 < n and digit[end + 1] and sentence_of[end + 1] == sentence_of[i]:
                end += 1
            else:
                break
        members = [j for j in range(start, end) if units or not unit[j]]
        anchor = _anchor(tokens, sentence_of, start, end)
        if anchor is not None:
            members.append(anchor)
        groups.append(members)
        i = end
    return groups


def _anchor(tokens: Sequence[str], sentence_of: Sequence[int], start: int, end: int) -> int | None:
    """The content word that says what the figure ``tokens[start:end]`` measures."""
    sentence = sentence_of[start]
    after = end + 1 if end < len(tokens) and tokens[end].lower() == "of" else end
    # "3 million dairy cattle": a figure that runs straight into a noun measures it;
    # "115 °F (46.1 °C), set on": after a comma or bracket the subject is the one before.
    joined = tokens[end - 1][-1:].isalnum() or tokens[end - 1][-1:] == "%"
    if joined and after < len(tokens) and sentence_of[after] == sentence and is_content_word(tokens[after]):
        return after
    for j in range(start - 1, -1, -1):
        if sentence_of[j] != sentence:
            break
        if is_content_word(tokens[j]):
            return j
    for j in range(end, len(tokens)):
        if sentence_of[j] != sentence:
            break
        if is_content_word(tokens[j]):
            return j
    return None
