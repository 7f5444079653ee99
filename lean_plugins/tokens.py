"""Offline token counting, shared by every layer.

``cl100k_base`` (the GPT-4 / GPT-3.5 encoding) is built from a copy of the encoding file
shipped inside this package and verified by sha256, so counting never touches the network.
Any other name is tried as a tiktoken encoding, then as a Hugging Face tokenizer name or
folder (``AutoTokenizer.from_pretrained``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Protocol

from lean_plugins.errors import TokenizerError
from lean_plugins.paths import cache_dir, package_data

logger = logging.getLogger(__name__)

DEFAULT_TOKENIZER = "cl100k_base"

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# Copied from tiktoken_ext.openai_public.cl100k_base (MIT), so the encoding is built without
# calling that function, which would fetch the file from the network.
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}

_lock = threading.Lock()


class Tokenizer(Protocol):
    """What the layers need of a tokenizer."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def cl100k_file() -> Path:
    """Path of the shipped ``cl100k_base.tiktoken``, checked against its sha256."""
    path = package_data("cl100k_base.tiktoken")
    if not path.is_file():
        raise TokenizerError(
            f"The shipped encoding file {path} is missing; reinstall lean-plugins "
            "(pip install --force-reinstall lean-plugins)."
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != CL100K_SHA256:
        raise TokenizerError(
            f"{path} has sha256 {digest}, expected {CL100K_SHA256}: the file is corrupt. "
            "Reinstall lean-plugins."
        )
    return path


def tiktoken_cache_dir(target_dir: Path | None = None) -> Path:
    """A ``TIKTOKEN_CACHE_DIR`` holding cl100k_base under the name tiktoken looks for.

    tiktoken caches a downloaded file under ``sha1(url)``; putting our verified copy there lets
    third-party code that calls ``tiktoken.get_encoding("cl100k_base")`` (llmlingua does, at
    construction) run offline. Set ``os.environ["TIKTOKEN_CACHE_DIR"]`` to the result.
    ``target_dir`` defaults to lean-plugins' own cache folder.
    """
    target_dir = target_dir or cache_dir("tiktoken")
    target = target_dir / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    if not target.is_file():
        target_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        shutil.copyfile(cl100k_file(), tmp)
        os.replace(tmp, target)  # atomic: a concurrent reader never sees half a file
    return target_dir


def use_offline_tiktoken() -> None:
    """Make cl100k_base load offline through tiktoken's own cache.

    Unset ``TIKTOKEN_CACHE_DIR``: point it at our verified copy. Set by the user (or by a
    machine image) to a folder without cl100k_base: put our copy there, as tiktoken itself
    would after a download; if that folder is not writable, point the variable at ours and say
    so. Set to "" (the user turned tiktoken's cache off): left alone.
    """
    user_dir = os.environ.get("TIKTOKEN_CACHE_DIR")
    if user_dir is None:
        os.environ["TIKTOKEN_CACHE_DIR"] = str(tiktoken_cache_dir())
        return
    if not user_dir:
        return
    try:
        tiktoken_cache_dir(Path(user_dir))
    except OSError as exc:
        ours = tiktoken_cache_dir()
        logger.warning(
            "TIKTOKEN_CACHE_DIR=%s lacks cl100k_base and cannot take a copy (%s); using %s instead",
            user_dir,
            exc,
            ours,
        )
        os.environ["TIKTOKEN_CACHE_DIR"] = str(ours)


class _HFTokenizer:
    """Adapter giving a Hugging Face tokenizer the ``encode``/``decode`` of :class:`Tokenizer`."""

    def __init__(self, hf_tokenizer: Any) -> None:
        self.hf = hf_tokenizer

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids)


@functools.lru_cache(maxsize=16)
def _load(name: str) -> Tokenizer:
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    if name == DEFAULT_TOKENIZER:
        ranks = load_tiktoken_bpe(str(cl100k_file()), expected_hash=CL100K_SHA256)
        return tiktoken.Encoding(
            name=name, pat_str=_CL100K_PATTERN, mergeable_ranks=ranks, special_tokens=_CL100K_SPECIAL
        )
    if name in tiktoken.list_encoding_names():
        try:
            return tiktoken.get_encoding(name)
        except Exception as exc:  # the file is fetched on first use; offline that fails
            raise TokenizerError(
                f"tiktoken encoding {name!r} is not cached on this machine and cannot be "
                "downloaded. Use 'cl100k_base' (shipped) or set TIKTOKEN_CACHE_DIR to a folder "
                f"that holds it. ({exc})"
            ) from exc
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise TokenizerError(
            f"Unknown tokenizer {name!r}: not a tiktoken encoding, and transformers is not "
            'installed to load it as a Hugging Face tokenizer (pip install "lean-plugins[local]").'
        ) from exc
    try:
        return _HFTokenizer(AutoTokenizer.from_pretrained(name))
    except Exception as exc:
        raise TokenizerError(
            f"Unknown tokenizer {name!r}: not a tiktoken encoding and not a Hugging Face "
            f"tokenizer name or folder that loads offline ({type(exc).__name__}: {exc}). "
            "Pass 'cl100k_base', a local tokenizer folder, or a tokenizer object."
        ) from exc


def get_tokenizer(tokenizer: str | Tokenizer = DEFAULT_TOKENIZER) -> Tokenizer:
    """A tokenizer by name (``cl100k_base``, any tiktoken encoding, a HF name or folder).

    An object with ``encode``/``decode`` is returned as is; a Hugging Face tokenizer object is
    wrapped so that ``encode`` adds no special tokens.
    """
    if not isinstance(tokenizer, str):
        if hasattr(tokenizer, "convert_ids_to_tokens"):  # a transformers tokenizer
            return _HFTokenizer(tokenizer)
        return tokenizer
    with _lock:  # building an encoding is not thread-safe the first time
        return _load(tokenizer)


def encode(text: str, tokenizer: str | Tokenizer = DEFAULT_TOKENIZER) -> list[int]:
    """Token ids of ``text``; special-token strings in ``text`` are counted as plain text."""
    tok = get_tokenizer(tokenizer)
    if hasattr(tok, "encode_ordinary"):
        return tok.encode_ordinary(text)
    return tok.encode(text)


def count_tokens(text: str, tokenizer: str | Tokenizer = DEFAULT_TOKENIZER) -> int:
    """Number of tokens in ``text`` under ``tokenizer`` (cl100k_base by default, offline)."""
    if not isinstance(text, str):
        raise TypeError(f"count_tokens expects a str, got {type(text).__name__}")
    if not text:
        return 0
    return len(encode(text, tokenizer))


def truncate_to_tokens(text: str, max_tokens: int, tokenizer: str | Tokenizer = DEFAULT_TOKENIZER) -> str:
    """The longest prefix of ``text`` that fits in ``max_tokens`` tokens."""
    ids = encode(text, tokenizer)
    if len(ids) <= max_tokens:
        return text
    return get_tokenizer(tokenizer).decode(ids[:max_tokens])
