"""Prose compression for lean templates: layer 1's token classifier on instruction prose only.

:func:`compress_prose` runs on a *masked* template (variables, code, quoted text and
``{{JSON}}`` blocks are already one placeholder character each, see
:func:`lean_plugins.prompts.template.mask`) and shortens only its instruction prose:

* a line is prose when it has at least ``min_words`` words, is not data under a label used
  more than once ("Text: ..." in examples), is not inside a few-shot example unit
  (``## Example 2``, repeated XML blocks) and matches no ``keep_line`` rule of the guard
  (output-format lines such as "Answer with yes or no.", "formatted as ...", "separated by
  commas" stay whole);
* each word of the prose gets the classifier's keep probability (the shipped LLMLingua-2 style
  ``LeanCompressor``, trained on generic sentence compression, never on templates); the
  words the guard protects (``lean_plugins/data/prompt_prose_guard.json``: negations,
  restrictions such as "only"/"must", numbers, words with symbols or tags, capitalised
  terms, list markers, labels, and every placeholder) are always kept;
* the other words are kept by descending probability until the prose's cl100k tokens reach
  ``rate`` of what they were (one budget over all prose lines of the template, so dense
  lines keep more; content words get :data:`CONTENT_BONUS`), each sentence keeping at least
  :data:`SENTENCE_FLOOR` of its words (two at least), in their order, with a sentence's
  closing punctuation carried over a dropped last word.

The result is deterministic for a given scorer (ties broken by position).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lean_plugins.errors import ConfigurationError
from lean_plugins.paths import package_data
from lean_plugins.prompts.lean import check_unique_names
from lean_plugins.tokens import count_tokens

logger = logging.getLogger("lean_plugins.prompts")

PROSE_GUARD_PATH = package_data("prompt_prose_guard.json")
GUARD_KINDS = ("words", "word_pattern", "span", "keep_line")

#: A scorer maps a text to one keep probability per whitespace-separated word.
Scorer = Callable[[str], Sequence[float]]

_PLACEHOLDER = re.compile("[\U000f0000-\U000ffffd]")
_WORD = re.compile(r"\S+")
_LABEL_LINE = re.compile(r"^(?P<label>[A-Z][\w#-]*(?: [\w#-]+){0,2}):(?P<rest>.*)$")
_STRIP = ".,;:!?\"'()[]“”‘’"
_CLOSING = ".!?;:"
# Each sentence keeps at least this many of its words, and this share (its best-scored ones).
MIN_WORDS_PER_SENTENCE = 2
SENTENCE_FLOOR = 0.3
# Added to the classifier's keep probability of a content word (not an English stop word).
CONTENT_BONUS = 0.3


@dataclass(frozen=True)
class GuardRule:
    """One entry of the prose guard: what compression never drops."""

    name: str
    kind: str
    words: frozenset[str] = frozenset()
    pattern: re.Pattern[str] | None = None
    examples: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def protects(self, word: str) -> bool:
        if self.kind == "words":
            bare = word.strip(_STRIP).lower().replace("’", "'")
            return bare in self.words
        if self.kind == "word_pattern":
            return bool(self.pattern and self.pattern.fullmatch(word))
        return False

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of ``text`` whose words a ``span`` rule keeps."""
        if self.kind != "span" or self.pattern is None:
            return []
        return [m.span() for m in self.pattern.finditer(text)]

    def keeps_line(self, line: str) -> bool:
        return self.kind == "keep_line" and bool(self.pattern and self.pattern.search(line))


def load_prose_guard(path: str | Path = PROSE_GUARD_PATH) -> tuple[GuardRule, ...]:
    """The rules of a prose-guard file, checked: unique names, known kinds, valid patterns,
    at least one example each."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    rules = []
    for entry in raw["rules"]:
        try:
            kind = entry["kind"]
            if kind not in GUARD_KINDS:
                raise ValueError(f"kind {kind!r} is not one of {GUARD_KINDS}")
            rule = GuardRule(
                name=entry["name"],
                kind=kind,
                words=frozenset(w.lower() for w in entry.get("words", ())),
                pattern=re.compile(entry["pattern"]) if kind != "words" else None,
                examples=tuple((line, tuple(kept)) for line, kept in entry["examples"]),
            )
        except (KeyError, TypeError, ValueError, re.error) as exc:
            raise ConfigurationError(
                f"Prose guard {path}: entry {entry.get('name', entry)!r} is invalid ({exc}); each entry needs "
                f"name, kind (one of {GUARD_KINDS}), words or pattern, and examples."
            ) from exc
        if not rule.examples:
            raise ConfigurationError(f"Prose guard {path}: {rule.name!r} needs at least one example.")
        rules.append(rule)
    check_unique_names([r.name for r in rules], f"Prose guard {path}")
    return tuple(rules)


PROSE_GUARD: tuple[GuardRule, ...] = load_prose_guard()


def check_prose_rate(rate: object) -> float:
    """``rate`` as a float in (0, 1], else a ConfigurationError saying what to pass."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1 or math.isnan(rate):
        raise ConfigurationError(
            f"prose_rate must be a number in (0, 1], the share of instruction-prose tokens to keep "
            f"(e.g. 0.7), or None to leave prose to the rules; got {rate!r}."
        )
    return float(rate)


def is_protected(word: str, guard: Sequence[GuardRule] = PROSE_GUARD) -> bool:
    """Whether compression must keep ``word`` (a placeholder or any guard rule's word)."""
    return bool(_PLACEHOLDER.search(word)) or any(rule.protects(word) for rule in guard)


def prose_lines(
    lines: Sequence[str], *, min_words: int, guard: Sequence[GuardRule] = PROSE_GUARD
) -> list[bool]:
    """For each line, whether it is instruction prose that may be compressed."""
    from lean_plugins.prompts.lean import _example_units

    labels = [m.group("label").lower() if (m := _LABEL_LINE.match(line)) else None for line in lines]
    repeated = {label for label in labels if label and labels.count(label) > 1}
    # Example units are data shown to the model, even when the rules have left only one.
    in_example = {k for start, end in _example_units(list(lines)) for k in range(start, end)}
    out = []
    for k, line in enumerate(lines):
        words = line.split()
        ok = (
            len(words) >= min_words
            and k not in in_example
            and labels[k] not in repeated
            and not any(rule.keeps_line(line) for rule in guard)
            # a line that is mostly placeholders is a slot with a few words around it
            and sum(1 for w in words if _PLACEHOLDER.search(w)) * 2 < len(words)
        )
        out.append(ok)
    return out


def compress_prose(
    text: str,
    rate: float,
    scorer: Scorer,
    *,
    min_words: int = 6,
    tokenizer: str = "cl100k_base",
    guard: Sequence[GuardRule] = PROSE_GUARD,
) -> str:
    """Shorten the instruction prose of masked ``text`` to about ``rate`` of its tokens (see
    the module doc). ``scorer`` gives one keep probability per word of the text it is given."""
    rate = check_prose_rate(rate)
    lines = text.split("\n")
    chosen = [k for k, ok in enumerate(prose_lines(lines, min_words=min_words, guard=guard)) if ok]
    if rate >= 1 or not chosen:
        return text
    joined = "\n".join(lines[k] for k in chosen)
    matches = list(_WORD.finditer(joined))
    scores = [float(s) for s in scorer(joined)]
    if len(scores) != len(matches):
        logger.warning("prose scorer gave %d scores for %d words; prose kept as written", len(scores), len(matches))
        return text
    words = [m.group(0) for m in matches]
    if CONTENT_BONUS:
        from lean_plugins.compress.language import ENGLISH_STOPWORDS

        function_words = ENGLISH_STOPWORDS | {"please"}
        scores = [
            s + (0.0 if w.strip(_STRIP).lower() in function_words else CONTENT_BONUS)
            for s, w in zip(scores, words, strict=True)
        ]
    line_of = []
    for n, k in enumerate(chosen):
        line_of += [n] * len(lines[k].split())
    costs = [count_tokens(" " + w, tokenizer) for w in words]
    keep = [is_protected(w, guard) for w in words]
    for rule in guard:
        for a, b in rule.spans(joined):
            for i, m in enumerate(matches):
                if m.start() < b and a < m.end():
                    keep[i] = True
    by_line: dict[int, list[int]] = {}
    for i, n in enumerate(line_of):
        by_line.setdefault(n, []).append(i)
    # Each sentence keeps its best words up to SENTENCE_FLOOR of them (at least two), so no
    # instruction shrinks to a bare verb ("Please make it more specific." -> "Make.").
    for members in by_line.values():
        sentence: list[int] = []
        for pos, i in enumerate(members):
            sentence.append(i)
            if words[i][-1] in ".!?" or pos == len(members) - 1:
                floor = max(MIN_WORDS_PER_SENTENCE, math.ceil(SENTENCE_FLOOR * len(sentence)))
                for j in sorted(sentence, key=lambda j: (-scores[j], j))[:floor]:
                    keep[j] = True
                sentence = []
    budget = rate * sum(costs)
    used = sum(c for c, k in zip(costs, keep, strict=True) if k)
    for i in sorted(range(len(words)), key=lambda i: (-scores[i], i)):
        if used >= budget:
            break
        if keep[i]:
            continue
        if used + costs[i] > budget and used + costs[i] - budget >= budget - used:
            break
        keep[i] = True
        used += costs[i]
    for n, k in enumerate(chosen):
        members = by_line[n]
        indent = lines[k][: len(lines[k]) - len(lines[k].lstrip())]
        out: list[str] = []
        for i in members:
            if keep[i]:
                out.append(words[i])
            elif out and words[i][-1] in _CLOSING and out[-1][-1] not in _CLOSING:
                out[-1] += words[i][-1]
        lines[k] = indent + " ".join(out)
    return "\n".join(lines)


class CachedScorer:
    """A scorer with its answers kept per text (a template's prose is scored once however
    many rates are tried)."""

    def __init__(self, scorer: Scorer, max_items: int = 4096) -> None:
        self.scorer = scorer
        self.max_items = max_items
        self._cache: dict[str, tuple[float, ...]] = {}

    def __call__(self, text: str) -> tuple[float, ...]:
        if text not in self._cache:
            if len(self._cache) >= self.max_items:
                self._cache.clear()
            self._cache[text] = tuple(float(s) for s in self.scorer(text))
        return self._cache[text]


def as_scorer(compressor: Any) -> Scorer | None:
    """A scorer from a model folder or name (:func:`load_scorer`, None when it cannot load), a
    ``LeanCompressor`` (its ``word_keep_probabilities``) or a callable."""
    if compressor is None or isinstance(compressor, (str, Path)):
        return load_scorer(None if compressor is None else str(compressor))
    method = getattr(compressor, "word_keep_probabilities", None)
    if callable(method):
        return CachedScorer(method)
    if callable(compressor):
        return compressor  # type: ignore[no-any-return]
    raise ConfigurationError(
        f"prose_scorer must be a LeanCompressor, a compressor model folder or name, or a callable "
        f"text -> keep probability per word, "
        f"got {type(compressor).__name__}."
    )


@functools.lru_cache(maxsize=8)
def load_scorer(model: str | None = None) -> Scorer | None:
    """Layer 1's classifier (``model``: None for the shipped one, or a folder or hub name
    ``LeanCompressor`` takes) as a cached scorer, or None, logged once, when torch, llmlingua
    or the model is missing: lean_text then leaves prose to the rules."""
    try:
        from lean_plugins.compress import LeanCompressor

        # float32 on every machine: a template's lean form must not depend on the CPU
        # (dtype="auto" would score in bfloat16 where the hardware has it).
        compressor = LeanCompressor(model, record_ledger=False, dtype="float32")
        compressor.word_keep_probabilities("Load the model now.")
    except Exception as exc:  # a missing extra or model: the rules still run
        logger.warning(
            "prose compression unavailable (%s: %s); lean_text keeps prose to the rules. Install "
            "'lean-plugins[compress]' to use prose_rate.",
            type(exc).__name__,
            exc,
        )
        return None
    return CachedScorer(compressor.word_keep_probabilities)


# -- the meaning guard: MiniLM cosine of a template before and after ------------------------

#: Rates tried, in this order after the one asked for, when the result drifts too far.
RATE_STEP = 0.1


_VECTORS: dict[tuple[int, str], Any] = {}
_BRACES = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def template_vector(text: str, encoder: Any) -> Any:
    """A template's MiniLM vector: each variable read as its name, whitespace normalised,
    embedded in windows of at most 200 cl100k tokens averaged by their tokens (MiniLM reads
    256 word pieces), normalised."""
    import numpy as np

    from lean_plugins.prompts.minifier import whitespace

    key = (id(encoder), text)
    if key in _VECTORS:
        return _VECTORS[key]
    # "{name}" -> "name", "{{" -> "{", "}}" -> "}"; a stray brace stays as it is.
    filled = _BRACES.sub(lambda m: m.group(1) or m.group(0)[0], text)
    windows, current = [], ""
    for line in whitespace(filled).split("\n"):
        if current and count_tokens(current + "\n" + line) > 200:
            windows.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    windows.append(current)
    vectors = np.asarray(encoder.encode(windows))
    weights = np.array([max(1, count_tokens(w)) for w in windows], dtype=float)
    mean = (vectors * weights[:, None]).sum(0)
    if len(_VECTORS) >= 4096:
        _VECTORS.clear()
    _VECTORS[key] = mean / np.linalg.norm(mean)
    return _VECTORS[key]


@functools.lru_cache(maxsize=1)
def shared_encoder() -> Any | None:
    """The shared MiniLM encoder, or None (logged once) when it cannot load."""
    try:
        from lean_plugins.embeddings import get_encoder

        encoder = get_encoder()
        encoder.encode(["Load the encoder now."])
    except Exception as exc:  # no torch or no model: prose compression runs unguarded
        logger.warning(
            "lean_text's meaning guard unavailable (%s: %s); min_cosine not checked", type(exc).__name__, exc
        )
        return None
    return encoder


def template_cosine(before: str, after: str, encoder: Any) -> float:
    """MiniLM cosine of two templates (see :func:`template_vector`)."""
    return float(template_vector(before, encoder) @ template_vector(after, encoder))


def check_min_cosine(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1 or math.isnan(value):
        raise ConfigurationError(
            f"min_cosine must be a number in [0, 1] (the least MiniLM cosine between the template "
            f"and its lean form) or None for no check; got {value!r}."
        )
    return float(value)


def shipped_scorer() -> Scorer | None:
    """The shipped classifier as a scorer (see :func:`load_scorer`)."""
    return load_scorer(None)


def guarded_settings(rate: float | None, max_example_tokens: int | None) -> list[tuple[float | None, int | None]]:
    """The (prose rate, example cap) settings ``lean_text`` tries in turn under ``min_cosine``:
    the prose rate raised by :data:`RATE_STEP` up to no prose compression, with the example cap;
    then the same without the cap (when there is one)."""
    rates: list[float | None] = []
    if rate is not None:
        step = rate
        while step < 1:
            rates.append(step)
            step = round(step + RATE_STEP, 6)
    rates.append(None)
    caps = [max_example_tokens, None] if max_example_tokens is not None else [None]
    return [(r, cap) for cap in caps for r in rates]
