"""Perplexity and calibration text helpers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lean_plugins._optional import require
from lean_plugins.errors import ConfigurationError

#: Document separator of the TinyStories text files.
STORY_SEPARATOR = "<|endoftext|>"


def split_documents(text: str, separator: str = STORY_SEPARATOR) -> list[str]:
    """Split a text file into documents: on ``separator`` when present, else on blank lines."""
    parts = text.split(separator) if separator in text else text.split("\n\n")
    return [p.strip() for p in parts if p.strip()]


def read_documents(path: str | Path, separator: str = STORY_SEPARATOR) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise ConfigurationError(f"Text file {file} not found; pass a UTF-8 text file.")
    docs = split_documents(file.read_text(encoding="utf-8"), separator)
    if not docs:
        raise ConfigurationError(f"{file} holds no text.")
    return docs


def tokenize_documents(tokenizer: Any, texts: Iterable[str], max_length: int) -> list[list[int]]:
    """Token ids of each text (truncated to ``max_length``), texts of under 2 tokens dropped."""
    out = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])[:max_length]
        if len(ids) >= 2:
            out.append(ids)
    return out


def negative_log_likelihood(
    model: Any, sequences: Sequence[Sequence[int]], *, progress: bool = False
) -> tuple[float, int]:
    """Summed next-token NLL (nats) and the number of predicted tokens over ``sequences``."""
    torch = require("torch", "local")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    iterator: Iterable = sequences
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(sequences, desc="perplexity", unit="doc")
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for ids in iterator:
            x = torch.tensor([list(ids)], device=device)
            logits = model(input_ids=x, use_cache=False).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum")
            total += float(nll)
            count += x.shape[1] - 1
    model.train(was_training)
    return total, count


def perplexity(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int | None = None,
    progress: bool = False,
) -> float:
    """Perplexity of ``model`` on ``texts`` (each scored on its own, up to ``max_length`` tokens)."""
    window = max_length or int(getattr(model.config, "max_position_embeddings", 1024) or 1024)
    sequences = tokenize_documents(tokenizer, texts, window)
    if not sequences:
        raise ConfigurationError("No text of at least 2 tokens to measure perplexity on.")
    total, count = negative_log_likelihood(model, sequences, progress=progress)
    return math.exp(total / count)
