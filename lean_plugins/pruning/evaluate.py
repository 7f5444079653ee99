"""Perplexity and calibration / healing text helpers.

A *document* is either a plain text or a chat conversation: a list of ``{"role", "content"}``
messages, rendered with the tokenizer's chat template (so healing and calibration on chat data
see exactly the tokens the chat wrappers send).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from lean_plugins._optional import require
from lean_plugins.errors import ConfigurationError

#: Document separator of the TinyStories text files.
STORY_SEPARATOR = "<|endoftext|>"

#: A plain text, or a conversation ``[{"role": ..., "content": ...}, ...]``.
Document = Union[str, Sequence[Mapping[str, str]]]

#: Shorter pieces are only compared whole in :func:`check_held_out` (a short instruction such as
#: "Summarise." may appear inside any text without being a leak).
MIN_CONTAINED_CHARS = 40


def split_documents(text: str, separator: str = STORY_SEPARATOR) -> list[str]:
    """Split a text file into documents: on ``separator`` when present, else on blank lines."""
    parts = text.split(separator) if separator in text else text.split("\n\n")
    return [p.strip() for p in parts if p.strip()]


def _jsonl_documents(path: Path) -> list[Document]:
    """Documents of a JSON Lines file: ``{"messages": [{"role", "content"}, ...]}`` (a
    conversation) or ``{"text": "..."}`` per line."""
    docs: list[Document] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(
                f"{path} line {number} is not JSON ({exc.msg}); write one JSON object a line."
            ) from None
        if isinstance(record, dict) and isinstance(record.get("messages"), list):
            messages = record["messages"]
            if not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages
            ):
                raise ConfigurationError(
                    f"{path} line {number}: every message needs a string 'role' and 'content'."
                )
            docs.append([{"role": m["role"], "content": m["content"]} for m in messages])
        elif isinstance(record, dict) and isinstance(record.get("text"), str):
            if record["text"].strip():
                docs.append(record["text"].strip())
        else:
            raise ConfigurationError(
                f"{path} line {number} has neither 'messages' (a list of role/content messages) nor 'text'."
            )
    return docs


def read_documents(path: str | Path, separator: str = STORY_SEPARATOR) -> list[Document]:
    """The documents of a UTF-8 text file (split with :func:`split_documents`), of a ``.jsonl``
    file of conversations or texts (see :func:`_jsonl_documents`), or of every ``*.txt`` and
    ``*.jsonl`` file in a folder (sorted by name, recursively)."""
    source = Path(path)
    if source.is_dir():
        files = sorted(f for f in source.rglob("*") if f.is_file() and f.suffix in (".txt", ".jsonl"))
        if not files:
            raise ConfigurationError(
                f"Folder {source} holds no .txt or .jsonl file; pass a text file or a folder of them."
            )
    elif source.is_file():
        files = [source]
    else:
        raise ConfigurationError(
            f"Text file or folder {source} not found; pass a UTF-8 text file or a folder."
        )
    docs: list[Document] = []
    for file in files:
        if file.suffix == ".jsonl":
            docs.extend(_jsonl_documents(file))
        else:
            docs.extend(split_documents(file.read_text(encoding="utf-8"), separator))
    if not docs:
        raise ConfigurationError(f"{source} holds no text.")
    return docs


def is_conversation(doc: Document) -> bool:
    return not isinstance(doc, str)


def _prompt_pieces(doc: Document) -> list[str]:
    """What a document asks or says, whitespace-normalised: a text whole; of a conversation, its
    user messages (system prompts are shared by design, assistant turns are answers)."""
    if isinstance(doc, str):
        pieces = [doc]
    else:
        pieces = [m["content"] for m in doc if m.get("role") == "user"]
    return [" ".join(p.split()) for p in pieces if p.strip()]


def check_held_out(evaluation: Sequence[Document], **training: Sequence[Document]) -> None:
    """Refuse evaluation documents that also appear in a training set (calibration, healing):
    a perplexity or an answer measured on text the model was tuned on flatters it.

    Texts and the user messages of conversations are compared: equal pieces are refused, and so
    is a piece of at least :data:`MIN_CONTAINED_CHARS` characters found inside a piece of the
    other side (an evaluation paragraph quoted in a healing prompt, or the reverse).
    """
    held_out = [piece for doc in evaluation for piece in _prompt_pieces(doc)]
    held_set = set(held_out)
    long_held = [p for p in held_set if len(p) >= MIN_CONTAINED_CHARS]
    for name, docs in training.items():
        shared = 0
        for doc in docs:
            pieces = _prompt_pieces(doc)
            if any(
                p in held_set
                or any(h in p for h in long_held)
                or (len(p) >= MIN_CONTAINED_CHARS and any(p in h for h in long_held))
                for p in pieces
            ):
                shared += 1
        if shared:
            raise ConfigurationError(
                f"{shared} of the {name} documents are also evaluation documents or prompts, or quote them; "
                f"evaluate on text never used for {name} (another file, or fewer documents with --{name}-docs)."
            )


def document_ids(tokenizer: Any, doc: Document) -> list[int]:
    """Token ids of a document: a text with the tokenizer's special tokens, a conversation through
    its chat template (which writes its own special tokens)."""
    if isinstance(doc, str):
        return list(tokenizer(doc, add_special_tokens=True)["input_ids"])
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigurationError(
            "A conversation was given but the tokenizer has no chat template; give plain texts, or a "
            "tokenizer with a chat template (tokenizer.chat_template)."
        )
    ids = tokenizer.apply_chat_template([dict(m) for m in doc], tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, Mapping) or hasattr(ids, "keys") else ids
    return [int(i) for i in ids]


def tokenize_documents(tokenizer: Any, texts: Iterable[Document], max_length: int) -> list[list[int]]:
    """Token ids of each document (truncated to ``max_length``), those of under 2 tokens dropped."""
    out = []
    for text in texts:
        ids = document_ids(tokenizer, text)[:max_length]
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
    texts: Sequence[Document],
    *,
    max_length: int | None = None,
    progress: bool = False,
) -> float:
    """Perplexity of ``model`` on ``texts`` (texts or conversations, each scored on its own, up to
    ``max_length`` tokens)."""
    window = max_length or int(getattr(model.config, "max_position_embeddings", 1024) or 1024)
    sequences = tokenize_documents(tokenizer, texts, window)
    if not sequences:
        raise ConfigurationError("No text of at least 2 tokens to measure perplexity on.")
    total, count = negative_log_likelihood(model, sequences, progress=progress)
    return math.exp(total / count)
