"""Few-shot examples chosen by relevance to the input, under a token budget.

Each example is embedded once with the shared MiniLM encoder (:mod:`lean_plugins.embeddings`);
for each render the input is embedded and the examples are taken in order of cosine
similarity while they fit the budget, counted in real tokens (:mod:`lean_plugins.tokens`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lean_plugins.errors import ConfigurationError
from lean_plugins.tokens import Tokenizer, count_tokens


@dataclass(frozen=True)
class Example:
    """One few-shot example: an input and the output the model should give for it."""

    input: str
    output: str

    @classmethod
    def coerce(cls, value: Example | Mapping[str, Any] | Sequence[str]) -> Example:
        """Accept an Example, a ``{"input": ..., "output": ...}`` dict or an (input, output) pair."""
        if isinstance(value, Example):
            return value
        if isinstance(value, Mapping):
            if "input" not in value or "output" not in value:
                raise ConfigurationError(
                    f"A few-shot example dict needs the keys 'input' and 'output'; got {sorted(value)}."
                )
            return cls(str(value["input"]), str(value["output"]))
        if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
            return cls(str(value[0]), str(value[1]))
        raise ConfigurationError(
            f"Cannot use {value!r} as a few-shot example: pass Example(input, output), a dict with "
            "'input' and 'output', or an (input, output) pair."
        )

    def to_dict(self) -> dict[str, str]:
        return {"input": self.input, "output": self.output}


def render_example(example: Example, prefixes: tuple[str, str]) -> str:
    """The compact form of one example: ``<in prefix><input>\\n<out prefix><output>``."""
    return f"{prefixes[0]}{example.input}\n{prefixes[1]}{example.output}"


def rank_by_relevance(
    query: str, examples: Sequence[Example], vectors: np.ndarray | None = None
) -> list[int]:
    """Indices of ``examples`` from most to least similar to ``query`` (MiniLM cosine).

    Ties keep the original order, so the choice is deterministic.
    """
    from lean_plugins.embeddings import get_encoder

    encoder = get_encoder()
    if vectors is None:
        vectors = encoder.encode([e.input for e in examples])
    scores = vectors @ encoder.encode(query)
    return sorted(range(len(examples)), key=lambda i: (-float(scores[i]), i))


def select_examples(
    query: str,
    examples: Sequence[Example],
    budget_tokens: int,
    *,
    prefixes: tuple[str, str] = ("Input: ", "Output: "),
    tokenizer: str | Tokenizer = "cl100k_base",
    vectors: np.ndarray | None = None,
) -> list[Example]:
    """The most relevant examples whose rendered tokens add up to at most ``budget_tokens``.

    Examples are considered from the most relevant down; one that does not fit the remaining
    budget is skipped and smaller, less relevant ones may still fit. The result is ordered
    least to most relevant, so the most relevant example sits next to the input.
    """
    if budget_tokens < 0:
        raise ConfigurationError(f"example_budget must be >= 0 tokens, got {budget_tokens}.")
    if not examples or budget_tokens == 0:
        return []
    chosen: list[int] = []
    left = budget_tokens
    for i in rank_by_relevance(query, examples, vectors):
        # +1 for the line break that joins this example to the next.
        cost = count_tokens(render_example(examples[i], prefixes), tokenizer) + 1
        if cost <= left:
            chosen.append(i)
            left -= cost
    return [examples[i] for i in reversed(chosen)]
