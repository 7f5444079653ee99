"""Cache keys: prompt normalisation and namespace ids.

A namespace id is a hash: model identities (LangChain's ``llm_string``, a LlamaIndex LLM's
metadata) and tenant ids are never used raw as file, table or key names.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

# Punctuation that is not between two word characters ("2.5", "don't", "e-mail" keep theirs).
_LOOSE_PUNCT = re.compile(r"(?<!\w)[^\w\s]+|[^\w\s]+(?!\w)")
_SPACES = re.compile(r"\s+")


def normalize_prompt(prompt: str) -> str:
    """Case-, whitespace- and edge-punctuation-insensitive form of ``prompt``.

    ``"What is  2.5 + 1?"`` and ``"what is 2.5 + 1"`` share a form; digits, inner
    punctuation and words are kept, so different questions keep different forms.
    """
    text = unicodedata.normalize("NFKC", prompt).casefold()
    text = _LOOSE_PUNCT.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def key_hash(prompt: str) -> str:
    """The exact-match key of ``prompt``: sha256 of its normalised form."""
    return hashlib.sha256(normalize_prompt(prompt).encode("utf-8")).hexdigest()


def namespace_for(model: str | None = None, tenant: str | None = None) -> str:
    """Namespace of a model identity and an optional tenant: ``"ns-"`` + a sha256 prefix.

    Different (model, tenant) pairs give different namespaces; the raw strings do not appear.
    """
    raw = f"model={model or ''}\x00tenant={tenant or ''}"
    return "ns-" + hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def storage_id(namespace: str) -> str:
    """A short, safe storage name for any namespace string (file, table and key prefix)."""
    return hashlib.sha256(namespace.encode("utf-8")).hexdigest()[:24]
