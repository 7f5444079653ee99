"""Pair sets for checking a semantic cache: pairs of questions that must not share an answer
(one category each: tense, pronouns, slices, ...) and paraphrase controls that should.

The sets are JSON Lines (one pair a line: ``category``, ``cached``, ``query``,
``same_meaning``, ``held_out``); ``tests/data/cache_adversarial_blind.jsonl`` is the one the
verifier's training and ``lean-plugins bench cache`` use: its ``held_out`` categories are never
trained on and are what the benchmark reports.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from lean_plugins.errors import ConfigurationError

_FIELDS = {"category": str, "cached": str, "query": str, "same_meaning": bool, "held_out": bool}


@dataclass(frozen=True)
class LabelledPair:
    """A question cached first, the question asked next, and whether one answer serves both."""

    category: str
    cached: str
    query: str
    same_meaning: bool
    held_out: bool = False


def load_adversarial(path: str | Path) -> list[LabelledPair]:
    """Read a pair set, checking every line; a category is either held out or not, never both."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigurationError(f"cannot read pair set {path}: {exc}") from exc
    pairs: list[LabelledPair] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{path}:{n}: not JSON ({exc}); one pair object per line.") from exc
        for name, kind in _FIELDS.items():
            if name == "held_out" and name not in row:
                continue
            if not isinstance(row.get(name), kind) or (kind is str and not row[name].strip()):
                raise ConfigurationError(
                    f"{path}:{n}: field {name!r} must be a non-empty {kind.__name__}, got {row.get(name)!r}."
                )
        extra = set(row) - set(_FIELDS)
        if extra:
            raise ConfigurationError(
                f"{path}:{n}: unknown fields {sorted(extra)}; allowed: {sorted(_FIELDS)}."
            )
        pairs.append(LabelledPair(**row))
    held: dict[str, set[bool]] = defaultdict(set)
    for p in pairs:
        held[p.category].add(p.held_out)
    mixed = sorted(c for c, flags in held.items() if len(flags) > 1)
    if mixed:
        raise ConfigurationError(
            f"{path}: categories {mixed} are partly held out; hold out whole categories."
        )
    return pairs
