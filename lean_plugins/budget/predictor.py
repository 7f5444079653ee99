"""Predict a call's output budget from what the same route produced before.

A *route* is a name for one kind of call: a name the user gives, or the identity of the
prompt template (:func:`route_for_template`). For each route, and within it for each *query
kind* (:func:`query_kind`: one word, yes/no, factoid, list, JSON, explanation, other), the
predictor keeps the most recent natural output lengths and predicts a high quantile of them
times a headroom factor, clamped to ``[floor, cap]``. A kind with too few observations uses
the route's lengths scaled by the kind's factor; a route with too few uses the caller's
default (cold start).

An answer the budget cut is a *censored* observation: its natural length is unknown but
longer than the budget. Dropping such observations would bias the quantile low and cut more
and more answers; recording them as ``budget * censored_growth`` makes the budget grow back
after a cut.

The state is a small JSON file written atomically (temp file + ``os.replace``), so a
restart keeps what was learned and a crash never leaves half a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
from collections import deque
from pathlib import Path

from lean_plugins.errors import ConfigurationError
from lean_plugins.paths import cache_dir

logger = logging.getLogger("lean_plugins.budget")

STATE_VERSION = 1
#: The query kinds, and how a kind's answers compare in length with its route's typical answer
#: (used only until the kind itself has enough observations).
KIND_FACTORS: dict[str, float] = {
    "one_word": 0.25,
    "yes_no": 0.5,
    "factoid": 0.6,
    "list": 1.5,
    "json": 1.3,
    "explain": 1.3,
    "other": 1.0,
}

_KIND_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("json", re.compile(r"\bjson\b", re.I)),
    (
        "one_word",
        re.compile(r"\b(?:in )?(?:one|a single|1)[- ]word\b|\bin a word\b|\bone-word\b", re.I),
    ),
    (
        "list",
        re.compile(
            r"\b(?:list|enumerate|bullet(?:s| points?)?|steps|name (?:\d+|two|three|four|five|some|all))\b",
            re.I,
        ),
    ),
    (
        "yes_no",
        re.compile(
            r"\byes or no\b|^\s*(?:is|are|was|were|do|does|did|can|could|should|will|would|has|have|had)\b",
            re.I,
        ),
    ),
    (
        "explain",
        re.compile(
            r"\b(?:explain|describe|compare|summari[sz]e|discuss|elaborate|essay)\b|^\s*why\b|^\s*how (?!many|much|old|long|far|tall|big)",
            re.I,
        ),
    ),
    (
        "factoid",
        re.compile(
            r"^\s*(?:who|whom|whose|when|where|which|what|how (?:many|much|old|long|far|tall|big))\b", re.I
        ),
    ),
]


_LABEL = re.compile(r"^\s*(?:question|q|query|user|human|input)\s*:\s*", re.I)


def query_kind(prompt: str | None) -> str:
    """A coarse kind of the request, from its wording: the kinds of :data:`KIND_FACTORS`.

    Only the last 500 characters are read (the question usually comes last in a prompt).
    """
    if not prompt:
        return "other"
    tail = prompt[-500:]
    last_line = tail.strip().splitlines()[-1] if tail.strip() else ""
    last_line = _LABEL.sub("", last_line)  # "Question: when ..." -> "when ..."
    for kind, pattern in _KIND_PATTERNS:
        if pattern.search(tail) or pattern.search(last_line):  # "^" patterns: the question's start
            return kind
    return "other"


def route_for_template(template: str) -> str:
    """A stable route name for a prompt template: ``template:<sha1 of its text, 12 hex>``."""
    return "template:" + hashlib.sha1(template.encode("utf-8")).hexdigest()[:12]


def default_state_path() -> Path:
    """Where a persisted predictor keeps its state by default (the user cache dir)."""
    return cache_dir("budget") / "predictor.json"


def _quantile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    # the "higher" quantile: never below an observed value at that rank (conservative)
    index = min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)
    return float(ordered[max(index, 0)])


class BudgetPredictor:
    """Learns output budgets per route from observed natural output lengths.

    ``path``: a JSON file to load from and save to (``None``: in memory only). The state is
    saved every ``autosave_every`` observations and by :meth:`save`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        quantile: float = 0.95,
        headroom: float = 1.15,
        floor: int = 16,
        cap: int = 4096,
        window: int = 200,
        min_samples: int = 20,
        censored_growth: float = 2.0,
        autosave_every: int = 25,
    ) -> None:
        if not 0.5 <= quantile <= 1.0:
            raise ConfigurationError(f"quantile must be in [0.5, 1], got {quantile!r} (0.95 is usual).")
        if floor < 1 or cap < floor:
            raise ConfigurationError(f"Need 1 <= floor <= cap, got floor={floor!r}, cap={cap!r}.")
        if headroom < 1.0 or window < 1 or min_samples < 1:
            raise ConfigurationError("headroom must be >= 1, window and min_samples >= 1.")
        self.path = Path(path) if path is not None else None
        self.quantile = quantile
        self.headroom = headroom
        self.floor = floor
        self.cap = cap
        self.window = window
        self.min_samples = min_samples
        self.censored_growth = censored_growth
        self.autosave_every = autosave_every
        self._lock = threading.Lock()
        self._lengths: dict[str, dict[str, deque[int]]] = {}
        self._unsaved = 0
        if self.path is not None and self.path.is_file():
            self.load()

    @classmethod
    def persistent(cls, **kwargs: object) -> BudgetPredictor:
        """A predictor saved under the user cache dir (:func:`default_state_path`)."""
        return cls(default_state_path(), **kwargs)  # type: ignore[arg-type]

    # -- learning -----------------------------------------------------------------------------
    def observe(
        self,
        route: str,
        length: int,
        *,
        prompt: str | None = None,
        kind: str | None = None,
        truncated: bool = False,
    ) -> None:
        """Record one output length of ``route``. ``truncated``: the budget cut the answer at
        ``length`` tokens, so its natural length was longer (a censored observation)."""
        if length < 0:
            raise ConfigurationError(f"An output length cannot be negative, got {length!r}.")
        kind = kind or query_kind(prompt)
        value = min(self.cap, math.ceil(length * self.censored_growth)) if truncated else length
        with self._lock:
            kinds = self._lengths.setdefault(route, {})
            for key in ("*", kind):
                kinds.setdefault(key, deque(maxlen=self.window)).append(int(value))
            self._unsaved += 1
            due = self.path is not None and self.autosave_every and self._unsaved >= self.autosave_every
        if due:
            self.save()

    # -- predicting ---------------------------------------------------------------------------
    def predict(self, route: str, prompt: str | None = None, *, default: int, kind: str | None = None) -> int:
        """The budget for the next call of ``route`` (``default`` until it has enough data)."""
        kind = kind or query_kind(prompt)
        with self._lock:
            kinds = self._lengths.get(route, {})
            own = list(kinds.get(kind, ()))
            overall = list(kinds.get("*", ()))
        if len(own) >= self.min_samples:
            estimate = _quantile(own, self.quantile) * self.headroom
        elif len(overall) >= self.min_samples:
            estimate = _quantile(overall, self.quantile) * self.headroom * KIND_FACTORS.get(kind, 1.0)
        else:
            return default
        return int(min(self.cap, max(self.floor, math.ceil(estimate))))

    def samples(self, route: str, kind: str = "*") -> int:
        """How many observations ``route`` (and ``kind``) has."""
        with self._lock:
            return len(self._lengths.get(route, {}).get(kind, ()))

    def routes(self) -> list[str]:
        with self._lock:
            return sorted(self._lengths)

    # -- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        with self._lock:
            return {
                "version": STATE_VERSION,
                "window": self.window,
                "routes": {
                    route: {kind: list(values) for kind, values in kinds.items()}
                    for route, kinds in self._lengths.items()
                },
            }

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the state as JSON, atomically. Returns the path written."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ConfigurationError(
                "This BudgetPredictor has no file: pass path=... to save(), or build it with "
                "BudgetPredictor(path) or BudgetPredictor.persistent()."
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self.to_dict(), separators=(",", ":"))
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, target)  # atomic: readers see the old or the new file, never half
        with self._lock:
            self._unsaved = 0
        return target

    def load(self, path: str | os.PathLike[str] | None = None) -> None:
        """Replace the state with the one saved in ``path`` (default: this predictor's file)."""
        source = Path(path) if path is not None else self.path
        if source is None:
            raise ConfigurationError("No file to load the predictor state from; pass path=...")
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {STATE_VERSION}")
            routes = {
                str(route): {
                    str(kind): deque((int(v) for v in values), maxlen=self.window)
                    for kind, values in kinds.items()
                }
                for route, kinds in data["routes"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigurationError(
                f"Cannot read the budget predictor state {source}: {exc}. Delete the file to "
                "start learning afresh."
            ) from exc
        with self._lock:
            self._lengths = routes
            self._unsaved = 0
