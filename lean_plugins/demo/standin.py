"""The offline stand-in LLM of the demo, and the call log every demo model writes to.

When no real model is reachable the demo still has to send real prompts and receive real
answers, so that every token count is a real count of what would be sent and received. The
stand-in answers deterministically from the prompt it is given: it finds the question (the last
sentence ending with ``?``) and answers with the sentence of the rest of the prompt that the
shared MiniLM encoder finds most similar to the question. It has no length setting: plain and
lean runs get the same behaviour, and only what they send differs. It is not a language model,
and the demo says so wherever it reports figures made with it.

This module is framework-free; :mod:`lean_plugins.demo.langchain_parts` and
:mod:`lean_plugins.demo.llama_index_parts` wrap it as a LangChain chat model and a LlamaIndex
``CustomLLM``, so both frameworks run their normal machinery around it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import numpy as np

from lean_plugins.tokens import count_tokens

STANDIN_NAME = "offline stand-in (answers with the context sentence most similar to the question)"
STANDIN_MODEL_ID = "lean-plugins-demo-stand-in"

_QUESTION = re.compile(r"[^\n?.!:]*\?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class CallRecord:
    """One real call of a model: what was sent and what came back, in cl100k tokens."""

    prompt: str
    response: str
    input_tokens: int
    output_tokens: int
    finish_reason: str | None = None
    """Why the model stopped, when it says (``budget``: the output budget cut the answer)."""


class CallLog:
    """Calls that reached a model, in order (the harness slices them per request).

    Only real model calls are logged; a cache hit never reaches the model and so adds nothing.
    """

    def __init__(self) -> None:
        self.calls: list[CallRecord] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CallLog(calls={len(self.calls)})"

    def add(
        self,
        prompt: str,
        response: str,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        finish_reason: str | None = None,
    ) -> CallRecord:
        record = CallRecord(
            prompt=prompt,
            response=response,
            input_tokens=count_tokens(prompt) if input_tokens is None else input_tokens,
            output_tokens=count_tokens(response) if output_tokens is None else output_tokens,
            finish_reason=finish_reason,
        )
        with self._lock:
            self.calls.append(record)
        return record

    def mark(self) -> int:
        """Position to pass to :meth:`since` after a request."""
        with self._lock:
            return len(self.calls)

    def since(self, mark: int) -> list[CallRecord]:
        with self._lock:
            return list(self.calls[mark:])


def find_question(prompt: str) -> str:
    """The last ``?``-terminated sentence of ``prompt``, else its last non-empty line."""
    matches = [m.group(0).strip() for m in _QUESTION.finditer(prompt)]
    matches = [m for m in matches if len(m) > 1]
    if matches:
        return matches[-1]
    lines = [line.strip() for line in prompt.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def candidate_sentences(prompt: str, question: str) -> list[str]:
    """Sentences of ``prompt`` other than the question, with at least three words."""
    out: list[str] = []
    seen: set[str] = set()
    for piece in _SENTENCE_END.split(prompt):
        sentence = piece.strip()
        if len(sentence.split()) < 3 or (question and question in sentence) or sentence in seen:
            continue
        seen.add(sentence)
        out.append(sentence)
    return out


class StandInAnswerer:
    """Answers with the prompt sentence most similar (MiniLM cosine) to the prompt's question.

    Deterministic: the same prompt always gives the same answer. ``max_tokens`` truncates the
    answer the way a provider's ``max_tokens`` does (the plain run's fixed setting, or the
    output budget's); it never lengthens it.
    """

    name = STANDIN_NAME

    def __init__(self, encoder: object | None = None, *, memo_size: int = 20_000) -> None:
        self._encoder = encoder
        # Sentence vectors are memoised: the same knowledge-base sentences come back in many
        # prompts, and re-encoding them would only cost time (the answers are unchanged).
        self._memo: dict[str, np.ndarray] = {}
        self._memo_size = memo_size
        self._lock = threading.Lock()

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            from lean_plugins.embeddings import get_encoder

            self._encoder = get_encoder()
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
            if missing:
                if len(self._memo) + len(missing) > self._memo_size:
                    self._memo.clear()
                vectors = self._encoder.encode(missing)  # type: ignore[attr-defined]
                self._memo.update(zip(missing, vectors, strict=True))
            return np.stack([self._memo[t] for t in texts])

    def answer(self, prompt: str) -> str:
        question = find_question(prompt)
        candidates = candidate_sentences(prompt, question)
        if not question or not candidates:
            return "I don't know."
        vectors = self._encode([question, *candidates])
        scores = vectors[1:] @ vectors[0]
        return candidates[int(scores.argmax())]


def truncate_answer(text: str, max_tokens: int | None) -> str:
    """``text`` cut to ``max_tokens`` cl100k tokens (``None``: unchanged)."""
    if max_tokens is None:
        return text
    from lean_plugins.tokens import truncate_to_tokens

    return truncate_to_tokens(text, max_tokens)
