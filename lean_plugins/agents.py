"""The five layers inside a tool-calling agent loop: the parts both framework adapters share.

An agent is the RAG path in a loop (DESIGN.md): every step resends the system prompt, the tool
schemas and the whole history, tool results included. What is specific to agents, and lives
here once, framework-free:

* :class:`ToolResultCompressor`: compresses one long tool result for the pending user goal
  with the core :class:`~lean_plugins.compress.LeanCompressor`. JSON stays JSON (keys,
  numbers, booleans and short strings such as ids are never touched; only long string values
  are compressed), fenced code is kept verbatim, and so is source code sent without fences
  (cut only by whole top-level blocks); a stack trace or tool error keeps its exception lines
  verbatim and loses only whole middle frames; numbers are protected, and results are
  memoised per (text, goal), so a result resent on every later step is compressed once and
  comes out the same each time (a provider's prefix cache keeps working).
* :class:`AgentBudget`: output budgets per step and per run (how many tokens the next step
  may generate given what the run has generated).
* :func:`request_tokens`, :func:`request_segments`: how many input tokens a chat request
  (messages plus tool schemas) holds, additively, so every layer books the same counts; and
  the request as ordered text segments with provider cache breakpoints, for the simulations.
* :func:`simulate_breakpoint_cache`: Anthropic-style prefix caching (explicit breakpoints,
  a minimum cacheable prefix, reads at 10% and writes at 125% of the input price), the
  counterpart of :func:`lean_plugins.prompts.prefix_cache.simulate_prefix_cache` (OpenAI's
  automatic rule).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import itertools
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lean_plugins.cache.keys import RequestKey, canonical_json
from lean_plugins.errors import ConfigurationError
from lean_plugins.paths import package_data
from lean_plugins.tokens import count_tokens

#: Tool results shorter than this (cl100k tokens) are sent as they are.
DEFAULT_MIN_TOKENS = 200
#: In a JSON tool result, string values shorter than this are never compressed (ids, names, dates).
DEFAULT_MIN_STRING_TOKENS = 40
#: Share of a long tool result's prose kept by default.
DEFAULT_TOOL_RATE = 0.33
#: Tokens a chat message costs besides its content (role and separators; OpenAI's published
#: accounting for its chat format).
MESSAGE_OVERHEAD_TOKENS = 4

_PARAGRAPH = re.compile(r"\n[ \t]*\n")
#: What a JSON string value that compressed to nothing becomes (the original stays in the
#: agent's state).
OMITTED = "[{tokens} tokens omitted]"
_FENCE = re.compile(r"^```[^\n]*\n.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
#: How stack traces and unfenced source code are recognised, and how much of a trace is kept
#: (rules with examples, one test each).
TOOL_RESULT_SHAPES_PATH = package_data("tool_result_shapes.json")
#: The line that stands for frames dropped from a stack trace (indented as the first of them).
FRAMES_OMITTED = "[{frames} frames omitted]"
#: The line that stands for top-level blocks dropped from source code (a comment in Python).
CODE_OMITTED = "[{lines} lines omitted]"


# -- tool results ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolResultCompression:
    """One tool result, compressed (or left alone, with the reason in ``kind``)."""

    text: str
    """What the model is sent."""
    original_tokens: int
    tokens: int
    kind: str
    """``json``, ``text`` (prose, fenced code kept), ``code`` (source code cut by whole
    top-level blocks), ``traceback`` (middle stack frames dropped whole), or why it was left
    alone: ``short``, ``no gain`` (compression would not make it shorter), ``error`` (a tool
    error with no stack frames to drop: sent as it is)."""

    @property
    def changed(self) -> bool:
        return self.tokens < self.original_tokens


class ToolResultCompressor:
    """Compresses long tool results for a goal; see the module docstring.

    Args:
        compressor: the core :class:`~lean_plugins.compress.LeanCompressor` (any object with
            its ``compress_documents(texts, rate=, query=)``); default: one with numbers
            protected (``protect_numbers=True``: an answer is often a figure). Its own ledger
            booking is turned off on a private copy: an agent's compression is booked per
            model call, at the agent model's price, by the adapter.
        rate: share of each long result's prose to keep.
        min_tokens: results shorter than this are sent unchanged.
        min_string_tokens: JSON string values shorter than this are never compressed.
        max_tokens: at most this many tokens kept of one result's compressible text (``None``:
            ``rate`` alone), so a very long result (a whole file) keeps its relevant part only;
            the units kept whole (``keep_best``) count toward it and stay whole past it.
        keep_best: with a goal, this many units of a result (paragraphs, JSON string values)
            that share most of the goal's rarer words are kept whole (0: none).
        keep_sentences: with a goal, this many sentences of the other units that share most
            of the goal's rarer words are kept verbatim, each with the sentence after it (an
            answer often restates its subject with a pronoun, sharing no word with the goal:
            "NSFNET was ... . Initially created ..., it developed into ..."); 0: none.
        memo_size: results remembered (per text and goal), least recently used dropped first.
    """

    def __init__(
        self,
        compressor: Any = None,
        *,
        rate: float = DEFAULT_TOOL_RATE,
        min_tokens: int = DEFAULT_MIN_TOKENS,
        min_string_tokens: int = DEFAULT_MIN_STRING_TOKENS,
        max_tokens: int | None = None,
        keep_best: int = 1,
        keep_sentences: int = 0,
        memo_size: int = 1024,
    ) -> None:
        if not 0.0 < rate <= 1.0:
            raise ConfigurationError(f"rate is the share of a tool result to keep, in (0, 1]; got {rate!r}.")
        if max_tokens is not None and max_tokens < 1:
            raise ConfigurationError(f"max_tokens must be >= 1 or None, got {max_tokens!r}.")
        if keep_best < 0 or keep_sentences < 0:
            raise ConfigurationError(f"keep_best and keep_sentences must be >= 0, got {keep_best!r}, {keep_sentences!r}.")
        if min_tokens < 1 or min_string_tokens < 1 or memo_size < 1:
            raise ConfigurationError(
                "min_tokens, min_string_tokens and memo_size must be >= 1; got "
                f"{min_tokens!r}, {min_string_tokens!r}, {memo_size!r}."
            )
        if compressor is None:
            from lean_plugins.compress import LeanCompressor

            compressor = LeanCompressor(rate=rate, protect_numbers=True, record_ledger=False)
        elif getattr(compressor, "record_ledger", False):
            # A copy (sharing the loaded model) that does not book: the adapter books each call.
            compressor = copy.copy(compressor)
            compressor.record_ledger = False
        self.compressor = compressor
        self.rate = rate
        self.min_tokens = min_tokens
        self.min_string_tokens = min_string_tokens
        self.max_tokens = max_tokens
        self.keep_best = keep_best
        self.keep_sentences = keep_sentences
        self.memo_size = memo_size
        self._memo: OrderedDict[tuple[str, str], ToolResultCompression] = OrderedDict()
        self._lock = threading.Lock()
        self.compress_seconds = 0.0
        """Wall time spent compressing new results (the model and its text handling; memo
        hits cost nothing here), for overhead reports."""
        self.compress_cpu_seconds = 0.0
        """The same in CPU time of the compressing thread (steadier on a busy machine)."""

    def _remember(self, key: tuple[str, str]) -> ToolResultCompression | None:
        with self._lock:
            found = self._memo.get(key)
            if found is not None:
                self._memo.move_to_end(key)
            return found

    def cached(self, text: str, goal: str | None = None, *, error: bool = False) -> ToolResultCompression | None:
        """The memoised result for ``text`` and ``goal`` (``None``: not compressed yet)."""
        return self._remember(_memo_key(text, goal, error))

    def compress(self, text: str, goal: str | None = None, *, error: bool = False) -> ToolResultCompression:
        """``text`` compressed for ``goal`` (memoised: the same inputs give the same output).
        ``error``: the tool reported a failure (LangChain's ``status="error"``): only whole
        middle stack frames may go, every other line is kept verbatim."""
        if not isinstance(text, str):
            raise TypeError(f"ToolResultCompressor.compress takes a str, got {type(text).__name__}.")
        key = _memo_key(text, goal, error)
        found = self._remember(key)
        if found is not None:
            return found
        start, cpu = time.perf_counter(), time.thread_time()
        result = self._compress(text, goal or None, error)
        with self._lock:
            self.compress_seconds += time.perf_counter() - start
            self.compress_cpu_seconds += time.thread_time() - cpu
            self._memo[key] = result
            while len(self._memo) > self.memo_size:
                self._memo.popitem(last=False)
        return result

    def _compress(self, text: str, goal: str | None, error: bool = False) -> ToolResultCompression:
        original = count_tokens(text)
        if original < self.min_tokens:
            return ToolResultCompression(text, original, original, "short")
        lines = text.split("\n")
        frames = _frames(lines)
        data = None if error or frames else _json_or_none(text)
        if error or len(frames) >= _shapes().min_frames:
            # A failure's exception and details are what the model needs: never reworded.
            out, kind = _drop_middle_frames(lines, frames), "traceback"
            if out == text:
                return ToolResultCompression(text, original, original, "error" if error else "no gain")
        elif data is None and _looks_like_code(text):
            out, kind = self._compress_code(text, goal), "code"
        elif data is not None:
            out, kind = self._compress_json(data, goal), "json"
        else:
            out, kind = self._compress_text(text, goal), "text"
        tokens = count_tokens(out)
        if tokens >= original:
            return ToolResultCompression(text, original, original, "no gain")
        return ToolResultCompression(out, original, tokens, kind)

    def _run(self, texts: list[str], goal: str | None) -> list[str]:
        """``texts`` (the units of one result: paragraphs or JSON string values) compressed
        together to ``rate`` (at most ``max_tokens``). With a goal, the ``keep_best`` units
        that share most of its rarer words are kept whole and the rest share what is left of
        the budget: the compressor ranks sentences, and an answer sentence that restates the
        question in other words (the question's words in the sentence before it) is often
        ranked low, while its paragraph is not."""
        sizes = [count_tokens(t) for t in texts]
        target = self.rate * sum(sizes)
        if self.max_tokens is not None:
            target = min(target, self.max_tokens)
        keep: set[int] = set()
        if goal and self.keep_best and len(texts) > 1:
            keep = set(_best_units(goal, texts, self.keep_best))
        rest = [i for i in range(len(texts)) if i not in keep]
        out = list(texts)
        if not rest:
            return out
        # Each unit as pieces (protected or not); the unprotected ones share what is left.
        pieces = _protected_pieces(goal, [texts[i] for i in rest], self.keep_sentences) if goal else None
        if pieces is None:
            pieces = [[(False, texts[i])] for i in rest]
        fixed = sum(sizes[i] for i in keep) + sum(count_tokens(t) for unit in pieces for kept, t in unit if kept)
        left = max(1, int(target - fixed))
        todo = [t for unit in pieces for kept, t in unit if not kept and t.strip()]
        results = iter(self.compressor.compress_documents(todo, target_tokens=left, query=goal) if todo else [])
        for i, unit in zip(rest, pieces, strict=True):
            if len(unit) == 1 and not unit[0][0]:  # nothing protected in it: the compressor's text as it is
                out[i] = next(results).text if unit[0][1].strip() else unit[0][1]
                continue
            kept_text = (t.strip() if kept or not t.strip() else next(results).text.strip() for kept, t in unit)
            out[i] = " ".join(t for t in kept_text if t)
        return out

    def _compress_text(self, text: str, goal: str | None) -> str:
        """Prose compressed paragraph by paragraph under one budget; fenced code blocks and
        paragraphs that look like source code kept verbatim, in place."""
        pieces: list[tuple[bool, str]] = []  # (is_code, text)
        last = 0
        for match in _FENCE.finditer(text):
            if match.start() > last:
                pieces.extend(_code_paragraphs(_PARAGRAPH.split(text[last : match.start()])))
            pieces.append((True, match.group(0)))
            last = match.end()
        if last < len(text):
            pieces.extend(_code_paragraphs(_PARAGRAPH.split(text[last:])))
        prose = [i for i, (code, piece) in enumerate(pieces) if not code and piece.strip()]
        if not prose:
            return text
        kept = self._run([pieces[i][1] for i in prose], goal)
        for i, new in zip(prose, kept, strict=True):
            pieces[i] = (False, new)
        return "\n\n".join(piece.strip("\n") for code, piece in pieces if piece.strip())

    def _compress_json(self, data: Any, goal: str | None) -> str:
        """Long string values compressed (shared budget, ranked by the goal); every key,
        number, boolean, null and short string kept as it was; compact JSON out."""
        leaves: list[tuple[Any, Any]] = []  # (container, key or index)

        def walk(node: Any) -> None:
            items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
            for k, v in items:
                if isinstance(v, str):
                    # Source code in a value (a file's content) is kept verbatim.
                    if count_tokens(v) >= self.min_string_tokens and not _looks_like_code(v):
                        leaves.append((node, k))
                else:
                    walk(v)

        walk(data)
        if leaves:
            kept = self._run([c[k] for c, k in leaves], goal)
            for (container, k), new in zip(leaves, kept, strict=True):
                # A value compressed to nothing says so: "" would read as a field that was empty
                # at the source.
                container[k] = new if new.strip() else OMITTED.format(tokens=count_tokens(container[k]))
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    def _compress_code(self, text: str, goal: str | None) -> str:
        """Source code cut by whole top-level blocks (a definition with its decorators and
        comments): the blocks sharing most of the goal's rarer words first (then in order),
        within ``rate`` (and ``max_tokens``), at least one; every kept line verbatim, each run of
        dropped blocks one :data:`CODE_OMITTED` line (a comment in Python, so it still parses)."""
        blocks, python = _code_blocks(text)
        if len(blocks) < 2:
            return text
        sizes = [count_tokens(b) for b in blocks]
        target = self.rate * sum(sizes)
        if self.max_tokens is not None:
            target = min(target, self.max_tokens)
        order = list(range(len(blocks)))
        if goal:
            from lean_plugins.compress.relevance import term_shares

            _, idf_share, pair_share = term_shares(goal, blocks)
            order.sort(key=lambda i: (-idf_share[i], -pair_share[i], i))
        keep: set[int] = set()
        used = 0
        for i in order:
            if not keep or used + sizes[i] <= target:
                keep.add(i)
                used += sizes[i]
        marker = ("# " if python else "") + CODE_OMITTED
        out: list[str] = []
        dropped: list[str] = []
        for i, block in enumerate(blocks):
            if i in keep:
                if dropped:
                    out.append(marker.format(lines=sum(len(b.splitlines()) for b in dropped)) + "\n")
                    dropped = []
                out.append(block)
            else:
                dropped.append(block)
        if dropped:
            out.append(marker.format(lines=sum(len(b.splitlines()) for b in dropped)))
        return "".join(out)

    def __repr__(self) -> str:
        return (
            f"ToolResultCompressor(rate={self.rate}, min_tokens={self.min_tokens}, "
            f"min_string_tokens={self.min_string_tokens}, max_tokens={self.max_tokens}, memo={len(self._memo)})"
        )


def _best_units(goal: str, texts: Sequence[str], n: int) -> list[int]:
    """The ``n`` texts holding the largest IDF-weighted share of the goal's content words
    (ties: word pairs of the goal, then order)."""
    from lean_plugins.compress.relevance import term_shares

    _, idf_share, pair_share = term_shares(goal, list(texts))
    ranked = sorted(range(len(texts)), key=lambda i: (-idf_share[i], -pair_share[i], i))
    return [i for i in ranked[:n] if idf_share[i] > 0]


def _protected_pieces(goal: str, texts: Sequence[str], n: int) -> list[list[tuple[bool, str]]] | None:
    """Each of ``texts`` as ``(protected, piece)`` slices that join back to it: the ``n``
    sentences across all texts holding the largest IDF-weighted share of the goal's content
    words (ties: word pairs, then order) are protected, each with the sentence after it.
    ``None`` when nothing is protected."""
    if n < 1:
        return None
    from lean_plugins.compress.relevance import term_shares
    from lean_plugins.compress.spans import sentence_spans

    spans = [sentence_spans(t) for t in texts]
    flat = [(u, k) for u, unit in enumerate(spans) for k in range(len(unit))]
    if not flat:
        return None
    _, idf_share, pair_share = term_shares(goal, [texts[u][slice(*spans[u][k])] for u, k in flat])
    ranked = sorted(range(len(flat)), key=lambda j: (-idf_share[j], -pair_share[j], j))
    chosen = {flat[j] for j in ranked[:n] if idf_share[j] > 0}
    if not chosen:
        return None
    protected = chosen | {(u, k + 1) for u, k in chosen if k + 1 < len(spans[u])}
    out = []
    for u, text in enumerate(texts):
        pieces: list[tuple[bool, str]] = []
        last = 0
        for k, (start, end) in enumerate(spans[u]):
            if (u, k) in protected:
                if start > last:
                    pieces.append((False, text[last:start]))
                pieces.append((True, text[start:end]))
                last = end
        if last < len(text):
            pieces.append((False, text[last:]))
        out.append(pieces)
    return out


def _memo_key(text: str, goal: str | None, error: bool = False) -> tuple[str, str, bool]:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(), goal or "", error


@dataclass(frozen=True)
class _Shapes:
    """``tool_result_shapes.json``, compiled."""

    min_frames: int
    keep_first: int
    keep_last: int
    frame_rules: tuple[re.Pattern[str], ...]
    min_lines: int
    min_code_share: float
    code_line_rules: tuple[re.Pattern[str], ...]


@functools.lru_cache(maxsize=1)
def _shapes() -> _Shapes:
    raw = json.loads(TOOL_RESULT_SHAPES_PATH.read_text(encoding="utf-8"))
    trace, code = raw["traceback"], raw["code"]
    return _Shapes(
        min_frames=trace["min_frames"],
        keep_first=trace["keep_first"],
        keep_last=trace["keep_last"],
        frame_rules=tuple(re.compile(r["pattern"]) for r in trace["frame_rules"]),
        min_lines=code["min_lines"],
        min_code_share=code["min_code_share"],
        code_line_rules=tuple(re.compile(r["pattern"]) for r in code["code_line_rules"]),
    )


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _frames(lines: Sequence[str]) -> list[tuple[int, int]]:
    """The stack frames among ``lines`` as ``(first, end)`` line ranges: a line matching a
    frame rule and the lines after it indented deeper that match none (Python's source line)."""
    rules = _shapes().frame_rules
    frames: list[tuple[int, int]] = []
    i = 0
    while i < len(lines):
        if any(r.match(lines[i]) for r in rules):
            end = i + 1
            while (
                end < len(lines)
                and lines[end].strip()
                and _indent(lines[end]) > _indent(lines[i])
                and not any(r.match(lines[end]) for r in rules)
            ):
                end += 1
            frames.append((i, end))
            i = end
        else:
            i += 1
    return frames


def _drop_middle_frames(lines: Sequence[str], frames: Sequence[tuple[int, int]]) -> str:
    """``lines`` joined back with, of each run of adjacent frames, all but the first
    ``keep_first`` and last ``keep_last`` dropped whole for one :data:`FRAMES_OMITTED` line."""
    shapes = _shapes()
    runs: list[list[tuple[int, int]]] = []
    for frame in frames:
        if runs and runs[-1][-1][1] == frame[0]:
            runs[-1].append(frame)
        else:
            runs.append([frame])
    out = list(lines)
    for run in reversed(runs):  # from the end, so earlier line numbers stay valid
        middle = run[shapes.keep_first : len(run) - shapes.keep_last]
        if len(middle) < 2:  # a marker for one frame saves nothing
            continue
        first, end = middle[0][0], middle[-1][1]
        indent = lines[first][: _indent(lines[first])]
        out[first:end] = [indent + FRAMES_OMITTED.format(frames=len(middle))]
    return "\n".join(out)


def _python_code(text: str) -> bool:
    """``text`` parses as Python with some statement other than a bare expression (a column
    of numbers or a CSV row parses as expressions)."""
    import ast
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in the source
            tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return any(not isinstance(node, ast.Expr) for node in tree.body)


def _code_like(text: str) -> tuple[int, bool]:
    """How many non-blank lines ``text`` has, and whether it reads as code at any length:
    mostly lines matching a code rule, or Python that parses."""
    shapes = _shapes()
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        return 0, False
    code = sum(any(r.search(line) for r in shapes.code_line_rules) for line in lines)
    return len(lines), code >= shapes.min_code_share * len(lines) or _python_code(text)


def _looks_like_code(text: str) -> bool:
    """``text`` is source code (see ``tool_result_shapes.json``): enough lines, and Python
    that parses or mostly lines matching a code rule."""
    lines, code = _code_like(text)
    return code and lines >= _shapes().min_lines


def _code_paragraphs(paragraphs: Sequence[str]) -> list[tuple[bool, str]]:
    """Each paragraph with whether it is source code: a run of adjacent code-like paragraphs
    (functions with blank lines between them) is code when it has ``min_lines`` lines in all."""
    like = [_code_like(p) for p in paragraphs]
    out = [False] * len(paragraphs)
    i = 0
    while i < len(paragraphs):
        if not like[i][1]:
            i += 1
            continue
        end = i
        while end < len(paragraphs) and like[end][1]:
            end += 1
        if sum(n for n, _ in like[i:end]) >= _shapes().min_lines:
            out[i:end] = [True] * (end - i)
        i = end
    return list(zip(out, paragraphs, strict=True))


def _code_blocks(text: str) -> tuple[list[str], bool]:
    """``text`` as top-level blocks that join back to it, and whether it is Python. Python:
    one block per top-level statement (from its first decorator), the lines before it
    (comments, blank lines) included. Otherwise a block starts at an unindented line after a
    blank line, unless it closes a bracket."""
    import ast
    import warnings

    lines = text.splitlines(keepends=True)
    starts: list[int] = []
    python = _python_code(text)
    if python:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            body = ast.parse(text).body
        for node in body:
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
            starts.append(first)
        if starts:
            starts[0] = 0
        # The comments and blank lines before a statement go with it.
        for k in range(1, len(starts)):
            while starts[k] - 1 > starts[k - 1] and (not lines[starts[k] - 1].strip() or lines[starts[k] - 1].lstrip().startswith("#")):
                starts[k] -= 1
            while starts[k] < len(lines) and not lines[starts[k]].strip():
                starts[k] += 1
    else:
        starts = [0]
        for i in range(1, len(lines)):
            line = lines[i]
            if line.strip() and not lines[i - 1].strip() and _indent(line) == 0 and line.lstrip()[0] not in "}])":
                starts.append(i)
    starts = sorted(set(starts))
    return ["".join(lines[a:b]) for a, b in itertools.pairwise([*starts, len(lines)]) if b > a], python


def _json_or_none(text: str) -> Any:
    stripped = text.lstrip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, (dict, list)) else None


# -- cache keys of long histories ------------------------------------------------------------------
#: Earlier messages' contents longer than this (characters) enter a cache key as a digest.
DIGEST_OVER_CHARS = 512
_DIGESTS: OrderedDict[str, str] = OrderedDict()
_DIGESTS_LOCK = threading.Lock()


def _digest(text: str) -> str:
    raw = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()
    with _DIGESTS_LOCK:
        found = _DIGESTS.get(raw)
        if found is not None:
            _DIGESTS.move_to_end(raw)
            return found
    from lean_plugins.cache.keys import normalize_prompt

    value = "sha256:" + hashlib.sha256(normalize_prompt(text).encode("utf-8", "surrogatepass")).hexdigest()
    with _DIGESTS_LOCK:
        _DIGESTS[raw] = value
        while len(_DIGESTS) > 4096:
            _DIGESTS.popitem(last=False)
    return value


def compact_history(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` for :func:`lean_plugins.cache.keys.request_key` with long text contents
    replaced by the sha256 of their exact-match form (remembered per text), so an agent's
    growing history is normalised once, not on every step. Equal keys stay equal and different
    ones different. A final user message (what a paraphrase is matched on) is left whole."""
    from lean_plugins.cache.keys import USER_ROLES

    out = [dict(m) for m in messages]
    for i, m in enumerate(out):
        if i == len(out) - 1 and str(m.get("role", "")).lower() in USER_ROLES:
            continue
        content = m.get("content")
        if isinstance(content, str) and len(content) > DIGEST_OVER_CHARS:
            m["content"] = _digest(content)
        elif isinstance(content, list):
            m["content"] = [
                {**p, "text": _digest(p["text"])}
                if isinstance(p, Mapping) and isinstance(p.get("text"), str) and len(p["text"]) > DIGEST_OVER_CHARS
                else p
                for p in content
            ]
    return out


# -- cache keys of requests that may be answered with a tool call ------------------------------
#: What an exact tool-calling key's text starts with (the rest is a sha256 of the request).
EXACT_KEY_PREFIX = "exact-request:"


def _raw(value: Any) -> Any:
    """JSON's fallback for :func:`exact_request_key`: pydantic models and dataclasses as their
    class and fields, bytes as a digest, anything else as its ``repr``."""
    if hasattr(value, "model_dump"):
        return {"__class__": type(value).__name__, **value.model_dump(mode="json")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__class__": type(value).__name__, **dataclasses.asdict(value)}
    if isinstance(value, (bytes, bytearray)):
        return {"sha256": hashlib.sha256(bytes(value)).hexdigest()}
    if isinstance(value, (set, frozenset)):
        return sorted(repr(v) for v in value)
    return repr(value)


def exact_request_key(messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any] | None = None) -> RequestKey:
    """The cache key of a request whose answer is, or may be, a tool call (tools bound).

    The rule: such a request is served only to a request equal to it in every character of
    every message (content, tool calls with their arguments and ids, names, extras) and every
    parameter. Nothing is normalised, not even case, punctuation or whitespace, since a tool
    call's arguments may copy any of them from the request ("look up key x!" and "look up key
    x?" may call one tool with two different keys), and there is no paraphrase matching
    (``semantic`` is False). A missed hit only costs a model call; a served tool call with a
    wrong argument is a wrong action. The model, its settings and the bound tools belong in
    the namespace (or in ``params``)."""
    raw = json.dumps(
        {"messages": list(messages), "params": dict(params or {})},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_raw,
    )  # fmt: skip
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
    return RequestKey(EXACT_KEY_PREFIX + digest, "", False, "tools are bound: exact repeats of the whole request only")


#: Tool ``type`` s the application runs itself: the model only writes the call (OpenAI's and
#: LangChain's function tools, OpenAI's free-form custom tools).
CLIENT_TOOL_TYPES = frozenset({"function", "custom"})


def provider_side_tools(tools: Iterable[Any]) -> list[str]:
    """The tools among ``tools`` that the provider runs during the call, by their type: a tool
    given as a dict that is not a function schema (OpenAI's ``{"type": "web_search"}``,
    ``file_search``, ``code_interpreter``, ``mcp``; Anthropic's ``web_search_20250305``;
    Gemini's ``{"google_search": {}}``). Their results are fetched at call time and are not in
    the request, so a cache must neither serve nor store such a request: an exact repeat would
    replay yesterday's search. Tool objects and function schemas (``type`` in
    :data:`CLIENT_TOOL_TYPES`, or a ``name`` with ``parameters`` / ``input_schema``, Anthropic's
    client tools) run in the application: their results come back as messages, in the key.
    Anthropic's typed client tools (``bash_...``, ``text_editor_...``) count as provider-side
    here: not caching them costs a call, never a stale answer."""
    found = []
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue  # a tool object (LangChain BaseTool, LlamaIndex FunctionTool): run by the app
        kind = tool.get("type")
        if kind in CLIENT_TOOL_TYPES:
            continue
        if kind is None and "name" in tool and ("parameters" in tool or "input_schema" in tool):
            continue
        found.append(str(kind) if kind is not None else ",".join(map(str, tool)) or "{}")
    return found


def context_fingerprint(context: Any) -> str | None:
    """A digest of an agent run's context (LangChain's ``runtime.context``), for a model-call
    cache key: middleware inside the cache may build the request from it (a per-user system
    prompt), so two contexts must never share an entry. ``""`` for no context; ``None`` when
    the context holds something with no plain value (a client, a connection): a cache must
    then neither serve nor store, since an object's ``repr`` may stay the same while what it
    holds changes. Mappings, lists, scalars, dataclasses and pydantic models are plain."""
    if context is None:
        return ""

    def strict(value: Any) -> Any:
        plain = hasattr(value, "model_dump") or isinstance(value, (bytes, bytearray, set, frozenset))
        if not plain and not (dataclasses.is_dataclass(value) and not isinstance(value, type)):
            raise TypeError(f"no plain value: {type(value).__name__}")
        return _raw(value)

    try:
        raw = json.dumps(context, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=strict)
    except (TypeError, ValueError, copy.Error):
        return None
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def _as_sent(message: Mapping[str, Any]) -> dict[str, Any]:
    """What of a message a request edit after a cache may not change: everything but a tool
    result's content (compressors and context editors shorten those, deterministically, from
    the request itself) and content-block marks (a prefix cache's ``cache_control``)."""
    item = {k: v for k, v in message.items() if k != "content" and v not in (None, "", [], {})}
    if message.get("role") != "tool":
        item["content"] = content_text(message.get("content"))
    return item


def received_as_keyed(keyed: Sequence[Mapping[str, Any]], received: Sequence[Mapping[str, Any]]) -> bool:
    """True when the messages a model received are the ones a cache keyed on, up to the edits
    a request may get from layers inside the cache that depend on the request alone (tool
    results shortened, cache breakpoints marked). A different system prompt, an added,
    dropped or rewritten message means a layer inside the cache built the request from
    something the key does not hold (run context, state, its own settings): the answer is
    then not the keyed request's answer and must not be stored under its key."""
    return len(keyed) == len(received) and all(_as_sent(a) == _as_sent(b) for a, b in zip(keyed, received, strict=True))


# -- output budget per step and per run ----------------------------------------------------------
@dataclass(frozen=True)
class AgentBudget:
    """Output budgets of an agent: ``step_tokens`` per model call, ``run_tokens`` per run
    (one user turn, every step of it together). ``None`` leaves that limit off."""

    step_tokens: int | None = None
    run_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("step_tokens", "run_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigurationError(f"AgentBudget.{name} must be a positive int of tokens or None, got {value!r}.")
        if self.step_tokens is None and self.run_tokens is None:
            raise ConfigurationError("AgentBudget needs step_tokens, run_tokens or both, e.g. AgentBudget(256, 2048).")

    def remaining(self, used: int) -> int | None:
        """Tokens the run may still generate (``None``: no run limit)."""
        return None if self.run_tokens is None else max(0, self.run_tokens - used)

    def for_step(self, used: int) -> int | None:
        """The next step's budget after ``used`` tokens in this run: ``None`` (no limit) or a
        positive int; 0 means the run's budget is spent (end the run)."""
        remaining = self.remaining(used)
        if remaining is None:
            return self.step_tokens
        return remaining if self.step_tokens is None else min(self.step_tokens, remaining)

    def exhausted(self, used: int) -> bool:
        return self.for_step(used) == 0

    def stop_message(self, used: int) -> str:
        """What the agent says when the run's budget is spent."""
        return f"Output budget of this run spent ({used} of {self.run_tokens} tokens); stopping here."


def own_max_tokens(model: Any) -> int | None:
    """The output limit a model object sets itself: its max-tokens field
    (:data:`lean_plugins.budget.call.MAX_TOKENS_FIELDS`, LangChain's and LlamaIndex's models
    alike), or ``None`` when it has none or leaves it unset."""
    from lean_plugins.budget.call import MAX_TOKENS_FIELDS

    fields = getattr(type(model), "model_fields", None) or {}
    for name in MAX_TOKENS_FIELDS:
        if name in fields:
            value = getattr(model, name, None)
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            return value if ok else None
    return None


def check_baseline_tokens(baseline_tokens: Any, where: str) -> None:
    """Raise :class:`ConfigurationError` unless ``baseline_tokens`` is a positive int or ``None``."""
    if baseline_tokens is not None and (
        isinstance(baseline_tokens, bool) or not isinstance(baseline_tokens, int) or baseline_tokens < 1
    ):
        raise ConfigurationError(
            f"{where}: baseline_tokens must be a positive int of tokens or None (ledger only: what a cut "
            f"answer would have cost without the budget), got {baseline_tokens!r}."
        )


def agent_step_budget(step_tokens: int, llm: Any = None, baseline_tokens: int | None = None, **kwargs: Any) -> Any:
    """The output budget of one agent step, the one rule of both adapters (LangChain's
    ``LeanBudgetMiddleware``, LlamaIndex's ``with_output_budget(llm, n)``): the call gets
    ``step_tokens``, whatever ``baseline_tokens`` is.

    The ledger rule of a cut (one for both adapters): the tokens a model had not generated when
    it was cut are unknown, so a cut claims no saving (``output_before`` = the tokens generated;
    the event's ``stop_reason`` still says it was cut) unless the caller states
    ``baseline_tokens``, what a cut answer would have cost without the budget (ledger only; it
    never changes what is generated). The model's own max-tokens field (``llm``'s) is a cap,
    not a cost: it is not claimed. ``kwargs`` go to ``OutputBudget`` (``model`` there is the
    model's name, for prices)."""
    check_baseline_tokens(baseline_tokens, "agent_step_budget")
    return step_output_budget(step_tokens, baseline_tokens, **kwargs)


def step_output_budget(step_tokens: int, baseline_tokens: int | None = None, **kwargs: Any) -> Any:
    """The :class:`~lean_plugins.budget.OutputBudget` of one agent step: every call gets
    ``step_tokens``, judged against ``baseline_tokens`` (the caller's own max-tokens setting:
    what a stopped answer would have cost without the budget; default ``step_tokens``, which
    claims no saving beyond what was generated). ``kwargs`` go to ``OutputBudget``."""
    check_baseline_tokens(baseline_tokens, "step_output_budget")
    # max_tokens is the ledger's baseline only (OutputBudget books a cut against it); the call's
    # budget is step_tokens (budget_for), never less because the baseline is.
    budget = _step_budget_class()(max(baseline_tokens or step_tokens, step_tokens, 1), **kwargs)
    budget.step_tokens = step_tokens
    return budget


@functools.cache
def _step_budget_class() -> type:
    """The step budget's class, made once (on first use: ``lean_plugins.budget`` is imported
    only by those who budget)."""
    from lean_plugins.budget import OutputBudget

    class StepOutputBudget(OutputBudget):
        step_tokens: int

        def budget_for(self, prompt: str | None = None, *, route: str | None = None) -> int:
            return self.step_tokens

        def settings(self) -> dict[str, Any]:
            return {**super().settings(), "step_tokens": self.step_tokens}

    return StepOutputBudget


def replayed_budget_event(
    output_budget: Mapping[str, Any] | None, baseline_tokens: int | None, model: str | None, tenant: str | None = None
) -> Any:
    """Book the budget's part of a cache hit that replays a budget-cut answer.

    The hit avoided the cut answer (the cache books that); the part the budget cut off is the
    budget's saving, as on the original call. ``output_budget``: the replayed response's
    ``output_budget`` metadata. Returns the event, or ``None`` when the answer was not cut."""
    from lean_plugins.ledger import record

    info = output_budget or {}
    if info.get("stop_reason") in (None, "natural"):
        return None
    generated = int(info.get("tokens_generated", 0))
    before = max(generated, baseline_tokens or int(info.get("budget", 0)))
    if before <= generated:
        return None
    return record(
        layer="budget",
        kind="stop",
        output_before=before,
        output_after=generated,
        model=model,
        tenant=tenant,
        meta={"replayed": True, "stop_reason": info.get("stop_reason")},
    )


# -- requests: token counts and segments ----------------------------------------------------------
def content_text(content: Any) -> str:
    """The text a message's content holds: a string, or the text of its text parts (other
    parts serialised, so an image or a document still counts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            else:
                parts.append(canonical_json(part))
        return "".join(parts)
    return "" if content is None else canonical_json(content)


def has_breakpoint(content: Any) -> bool:
    """True when a message's content carries a provider cache breakpoint (``cache_control``)."""
    return isinstance(content, Sequence) and not isinstance(content, str) and any(
        isinstance(p, Mapping) and p.get("cache_control") for p in content
    )


def tool_calls_text(message: Mapping[str, Any]) -> str:
    """A message's tool calls (name, arguments, id) as the canonical text that is counted."""
    calls = message.get("tool_calls") or []
    return canonical_json([{"name": c.get("name"), "args": c.get("args"), "id": c.get("id")} for c in calls]) if calls else ""


def plain_tool_call(call: Any) -> dict[str, Any]:
    """One tool call as ``{"name", "args", "id"}`` (the form :func:`tool_calls_text` counts),
    from that form itself (LangChain's ``AIMessage.tool_calls``) or OpenAI's
    ``{"id", "function": {"name", "arguments"}}`` (a dict or the SDK's object). Arguments sent
    as a JSON string are parsed, so one call counts the same whichever form carries it."""
    get = call.get if isinstance(call, Mapping) else lambda name: getattr(call, name, None)
    function = get("function")
    if function is not None:
        fget = function.get if isinstance(function, Mapping) else lambda name: getattr(function, name, None)
        name, args = fget("name"), fget("arguments")
    else:
        name, args = get("name"), get("args")
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            pass  # not JSON (a provider's partial arguments): counted as the text it is
    return {"name": name, "args": args, "id": get("id")}


def reply_tool_call_tokens(calls: Iterable[Any]) -> int:
    """Output tokens of a reply's tool calls when the provider reports no usage: the canonical
    text of :func:`tool_calls_text` (name, arguments, id of each call, :func:`plain_tool_call`)
    counted, the count the same calls have as input on the agent's next step.

    The one rule every layer books a tool-calling reply by (the output budget of both
    adapters, the agent middleware, LlamaIndex's ``CachedLLM``): its text plus this. A budget
    never cuts a tool call, so these tokens are always kept whole."""
    plain = [plain_tool_call(c) for c in calls]
    return count_tokens(tool_calls_text({"tool_calls": plain})) if plain else 0


def reply_output_tokens(text: str, tool_calls: Iterable[Any] = ()) -> int:
    """Output tokens of a reply the provider reported no usage for: its text plus its tool
    calls (:func:`reply_tool_call_tokens`)."""
    return count_tokens(text) + reply_tool_call_tokens(tool_calls)


def message_tokens(message: Mapping[str, Any]) -> int:
    """Input tokens of one message dict (``role``, ``content``, optional ``tool_calls``)."""
    calls = tool_calls_text(message)
    return MESSAGE_OVERHEAD_TOKENS + count_tokens(content_text(message.get("content"))) + (count_tokens(calls) if calls else 0)


def tools_tokens(tools: Iterable[Mapping[str, Any]]) -> int:
    """Input tokens of the tool schemas (OpenAI function format dicts), as sent."""
    tools = list(tools)
    return count_tokens(canonical_json(tools)) if tools else 0


def request_tokens(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] = ()) -> int:
    """Input tokens of a chat request: the tool schemas plus every message. Additive: a
    message changed by a layer changes the total by exactly its own difference."""
    return tools_tokens(tools) + sum(message_tokens(m) for m in messages)


@dataclass(frozen=True)
class Segment:
    """A piece of a request in the order providers read it, with its token count."""

    text: str
    tokens: int
    breakpoint: bool = False


def request_segments(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] = ()) -> list[Segment]:
    """The request as providers read it: tool schemas, then each message in order (the
    system message first where there is one); a segment is a breakpoint when its message
    carries ``cache_control``. Token counts agree with :func:`request_tokens`."""
    segments = []
    if tools:
        segments.append(Segment(canonical_json(list(tools)), tools_tokens(tools)))
    for m in messages:
        text = f"<{m.get('role')}>" + content_text(m.get("content")) + tool_calls_text(m)
        segments.append(Segment(text, message_tokens(m), has_breakpoint(m.get("content"))))
    return segments


# -- provider prefix caches with explicit breakpoints (Anthropic) ---------------------------------
@dataclass(frozen=True)
class BreakpointCacheRule:
    """How a provider with explicit cache breakpoints bills (Anthropic's published rule, read
    2026-11-30: a prefix up to a ``cache_control`` breakpoint is written at 1.25x the input
    price and read at 0.1x; prefixes under 1,024 tokens (2,048 for Haiku) are not cached)."""

    min_prefix_tokens: int = 1024
    read_price: float = 0.1
    write_price: float = 1.25
    name: str = "Anthropic prompt caching (Sonnet/Opus): breakpoints, >= 1,024 tokens, reads 0.1x, writes 1.25x"


ANTHROPIC_RULE = BreakpointCacheRule()


@dataclass(frozen=True)
class BreakpointCacheSimulation:
    rule: BreakpointCacheRule
    requests: int
    input_tokens: int
    read_tokens: int
    write_tokens: int

    @property
    def billed_input_tokens(self) -> float:
        """Input tokens at full-price equivalents."""
        plain = self.input_tokens - self.read_tokens - self.write_tokens
        return plain + self.read_tokens * self.rule.read_price + self.write_tokens * self.rule.write_price


def simulate_breakpoint_cache(
    requests: Iterable[Sequence[Segment]], rule: BreakpointCacheRule = ANTHROPIC_RULE
) -> BreakpointCacheSimulation:
    """Bill requests (in order, each a list of :class:`Segment`) under a breakpoint cache that
    keeps every prefix written before: a request reads the longest prefix ending at one of its
    breakpoints that an earlier request wrote, and writes the prefix up to its last breakpoint
    beyond that. No breakpoints, no caching. A simulation: real caches also expire."""
    written: set[str] = set()
    total = read = write = 0
    count = 0
    for segments in requests:
        count += 1
        digest = hashlib.sha256()
        prefix_tokens = 0
        marks: list[tuple[int, str]] = []
        for seg in segments:
            digest.update(seg.text.encode("utf-8", "surrogatepass") + b"\x00")
            prefix_tokens += seg.tokens
            if seg.breakpoint and prefix_tokens >= rule.min_prefix_tokens:
                marks.append((prefix_tokens, digest.copy().hexdigest()))
        total += prefix_tokens
        hit = max((n for n, h in marks if h in written), default=0)
        last = marks[-1][0] if marks else 0
        read += hit
        if last > hit:
            write += last - hit
        written.update(h for _, h in marks)
    return BreakpointCacheSimulation(rule, count, total, read, write)
