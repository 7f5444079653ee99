"""Exact token counting of a text that arrives in pieces (a stream of chunks).

Re-encoding the whole text after every chunk costs O(n) per chunk, O(n^2) per answer. A
tiktoken encoding first splits text into *pieces* with a regular expression and runs BPE
inside each piece, and the regular expression looks at most one character ahead; so every
piece except the last one of the text seen so far is final: more text can extend or change
only the last piece. :class:`StreamingTokenCounter` therefore commits the token ids of all
pieces but the last and re-encodes only that last piece when a chunk arrives. The committed
ids are exactly the first ids of the full answer's encoding, which is what makes "the first
N tokens" well defined while the answer is still streaming.

Tokenizers without such a pattern (Hugging Face ones) fall back to re-encoding the whole text
and treat all ids but the last as committed; that is exact for the count at the end, and
correct for the prefix in practice, but not guaranteed (documented in docs/budget.md).
"""

from __future__ import annotations

import functools
from typing import Any

from lean_plugins.tokens import DEFAULT_TOKENIZER, Tokenizer, get_tokenizer

#: Characters of uncommitted text a lazy :meth:`StreamingTokenCounter.feed` may hold.
LAZY_CHARS = 24


@functools.lru_cache(maxsize=8)
def _compiled(pattern: str) -> Any:
    """The piece pattern of a tiktoken encoding, compiled once per process (compiling it
    costs about a millisecond, more than a whole answer's counting)."""
    import regex  # a dependency of tiktoken; supports its possessive quantifiers

    return regex.compile(pattern)


def _decode_prefix(tokenizer: Any, ids: list[int]) -> str:
    """Text of ``ids``; a multi-byte character cut in half at the end is dropped, not garbled."""
    if hasattr(tokenizer, "decode_bytes"):
        return tokenizer.decode_bytes(ids).decode("utf-8", errors="ignore")
    return tokenizer.decode(ids)


class StreamingTokenCounter:
    """Counts the tokens of a growing text exactly, in O(chunk) time per chunk.

    ``committed_ids`` are final (they will not change whatever text comes next);
    :attr:`tail_tokens` is the current count of the last, still open piece (counted when
    asked, not per chunk: the hot path encodes only newly committed text).
    """

    __slots__ = (
        "_encode",
        "_parts",
        "_pattern",
        "_tail",
        "_tail_tokens",
        "committed_chars",
        "committed_ids",
        "tokenizer",
    )

    def __init__(self, tokenizer: str | Tokenizer = DEFAULT_TOKENIZER) -> None:
        self.tokenizer = get_tokenizer(tokenizer)
        self._encode = getattr(self.tokenizer, "encode_ordinary", None) or self.tokenizer.encode
        pattern = getattr(self.tokenizer, "_pat_str", None)
        self._pattern = _compiled(pattern) if pattern is not None else None
        self._parts: list[str] = []
        self._tail = ""
        self.committed_chars = 0
        self.committed_ids: list[int] = []
        self._tail_tokens: int | None = 0

    @property
    def tail_tokens(self) -> int:
        if self._tail_tokens is None:
            self._tail_tokens = len(self._encode(self._tail)) if self._tail else 0
        return self._tail_tokens

    @property
    def total_tokens(self) -> int:
        """Tokens of the whole text seen so far (the last piece may still change)."""
        return len(self.committed_ids) + self.tail_tokens

    @property
    def committed_tokens(self) -> int:
        return len(self.committed_ids)

    @property
    def text(self) -> str:
        return "".join(self._parts) + self._tail

    @property
    def tail(self) -> str:
        """The text after the committed part (the open piece)."""
        return self._tail

    def feed(self, chunk: str, *, exact_from: int | None = None) -> str:
        """Add ``chunk``; returns the text newly committed by it (may be empty).

        ``exact_from``: while the count is surely below this many tokens, short chunks are only
        appended (committed later, in one go): a token is at least one UTF-8 byte, so
        ``committed + 4 * len(tail)`` bounds the count. Saves the per-chunk work far from a
        budget; text is committed (released) up to :data:`LAZY_CHARS` characters later.
        """
        if not chunk:
            return ""
        if self._pattern is None:
            return self._feed_full(chunk)
        tail = self._tail + chunk
        if (
            exact_from is not None
            and len(tail) < LAZY_CHARS
            and len(self.committed_ids) + 4 * len(tail) < exact_from
        ):
            self._tail = tail
            self._tail_tokens = None
            return ""
        committed = ""
        last_start = 0
        for match in self._pattern.finditer(tail):
            last_start = match.start()
        if last_start > 0:
            committed = tail[:last_start]
            self.committed_ids.extend(self._encode(committed))
            self._parts.append(committed)
            self.committed_chars += last_start
            tail = tail[last_start:]
        self._tail = tail
        self._tail_tokens = None
        return committed

    def _feed_full(self, chunk: str) -> str:
        text = self.text + chunk
        ids = list(self._encode(text))
        stable = ids[:-1]
        stable_text = _decode_prefix(self.tokenizer, stable)
        if not text.startswith(stable_text):  # decoding is not a prefix: commit nothing
            stable, stable_text = [], ""
        committed = stable_text[self.committed_chars :]
        self._parts = [stable_text] if stable_text else []
        self.committed_ids = stable
        self.committed_chars = len(stable_text)
        self._tail = text[len(stable_text) :]
        self._tail_tokens = len(ids) - len(stable)
        return committed

    def finish(self) -> None:
        """The text is complete: commit the last piece."""
        if self._tail:
            self.committed_ids.extend(self._encode(self._tail))
            self._parts.append(self._tail)
            self.committed_chars += len(self._tail)
            self._tail = ""
            self._tail_tokens = 0

    def prefix_text(self, n_tokens: int) -> str:
        """The text of the first ``n_tokens`` committed tokens."""
        return _decode_prefix(self.tokenizer, self.committed_ids[:n_tokens])
