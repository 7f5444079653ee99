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
    """The documents of a UTF-8 text file, or of every ``*.txt`` file in a folder (sorted by
    name, recursively), each split with :func:`split_documents`."""
    source = Path(path)
    if source.is_dir():
        files = sorted(f for f in source.rglob("*.txt") if f.is_file())
        if not files:
            raise ConfigurationError(f"Folder {source} holds no .txt file; pass a text file or a folder of them.")
    elif source.is_file():
        files = [source]
    else:
        raise ConfigurationError(f"Text file or folder {source} not found; pass a UTF-8 text file or a folder.")
    docs = [doc for file in files for doc in split_documents(file.read_text(encoding="utf-8"), separator)]
    if not docs:
        raise ConfigurationError(f"{source} holds no text.")
    return docs


def check_held_out(evaluation: Sequence[str], **training: Sequence[str]) -> None:
    """Refuse evaluation documents that also appear in a training set (calibration, healing):
    a perplexity measured on text the model was tuned on flatters it."""
    held_out = {doc.strip() for doc in evaluation}
    for name, docs in training.items():
        shared = sum(1 for doc in docs if doc.strip() in held_out)
        if shared:
            raise ConfigurationError(
                f"{shared} of the {name} documents are also evaluation documents; evaluate on text "
                f"never used for {name} (another file, or fewer documents with --{name}-docs)."
            )


def tokenize_documents(tokenizer: Any, texts: Iterable[str], max_length: int) -> list[list[int]]:
    """Token ids of each text (truncated to ``max_length``), texts of under 2 tokens dropped."""
    out = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])[:max_length]
        if len(ids) >= 2:
            out.append(ids)
    return out


def negative_log_likelihood(
    model: Any, sequences: Sequence[Sequence[int]], *, batch_size: int = 16, progress: bool = False
) -> tuple[float, int]:
    """Summed next-token NLL (nats) and the number of predicted tokens over ``sequences``.

    Sequences of similar length are scored together, right-padded and masked, which gives
    the same sums as one at a time (up to float rounding) in a fraction of the time.
    """
    torch = require("torch", "local")
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    iterator: Iterable = batches
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, desc="perplexity", unit="batch")
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for batch in iterator:
            longest = max(len(sequences[i]) for i in batch)
            ids = torch.zeros(len(batch), longest, dtype=torch.long, device=device)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(batch):
                seq = torch.tensor(list(sequences[i]), device=device)
                ids[row, : len(seq)], mask[row, : len(seq)] = seq, 1
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            valid = mask[:, 1:].bool()
            total += float(nll[valid].sum())
            count += int(valid.sum())
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
