"""Token counting: exact cl100k_base, offline, and the error paths."""

from __future__ import annotations

import os
import socket

import pytest
import tiktoken
from pytest_socket import SocketBlockedError, disable_socket, enable_socket

from lean_plugins import tokens
from lean_plugins.errors import TokenizerError

CORPUS = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading and trailing spaces  \n\n\tand tabs",
    "Numbers 1234567890, 3.14159 and 1e-9; dates 2026-11-27.",
    "Unicode: café, naïve, 東京, Привет, emoji 🚀🔥, and math ∑∫√.",
    "code: def f(x):\n    return x ** 2  # square\n",
    "URL https://example.com/a?b=c&d=e and e-mail someone@example.org",
    "Special-token text is counted as plain text: <|endoftext|> <|fim_prefix|>",
    "",
]


@pytest.fixture
def no_network():
    disable_socket()
    try:
        yield
    finally:
        enable_socket()


@pytest.fixture(scope="module")
def reference() -> tiktoken.Encoding:
    """tiktoken's own cl100k_base definition (tiktoken_ext), fed our verified file offline."""
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(tokens.tiktoken_cache_dir())
    try:
        return tiktoken.get_encoding("cl100k_base")
    finally:
        if old is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old


def test_known_ids() -> None:
    assert tokens.encode("hello world") == [15339, 1917]
    assert tokens.count_tokens("hello world") == 2
    assert tokens.count_tokens("") == 0


def test_counts_match_tiktoken_on_corpus(reference: tiktoken.Encoding, shared_data_or_none) -> None:
    texts = list(CORPUS)
    if shared_data_or_none is not None:
        shakespeare = (shared_data_or_none / "text" / "tinyshakespeare.txt").read_text(encoding="utf-8")
        texts += [shakespeare[i : i + 2000] for i in range(0, 200_000, 2000)]
        stories = (shared_data_or_none / "text" / "tinystories_sample.txt").read_text(encoding="utf-8")
        texts += stories.split("<|endoftext|>")[:200]
    for text in texts:
        assert tokens.encode(text) == reference.encode_ordinary(text), text[:80]
        assert tokens.count_tokens(text) == len(reference.encode_ordinary(text))


def test_counting_opens_no_socket(no_network) -> None:
    tokens._load.cache_clear()
    with pytest.raises(SocketBlockedError):  # the guard really is on
        socket.create_connection(("127.0.0.1", 9))
    assert tokens.encode("hello world") == [15339, 1917]  # built from scratch with sockets blocked


def test_corrupt_file_is_reported(tmp_path, monkeypatch) -> None:
    bad = tmp_path / "cl100k_base.tiktoken"
    bad.write_bytes(b"not the encoding")
    monkeypatch.setattr(tokens, "package_data", lambda name: bad)
    with pytest.raises(TokenizerError, match="corrupt"):
        tokens.cl100k_file()


def test_unknown_tokenizer_error_names_the_fix() -> None:
    with pytest.raises(TokenizerError, match="cl100k_base"):
        tokens.get_tokenizer("/no/such/tokenizer-folder")


def test_hf_tokenizer_by_folder() -> None:
    pytest.importorskip("transformers")
    from lean_plugins.embeddings import default_model_path

    ids = tokens.encode("Hello world", str(default_model_path()))
    assert ids == [7592, 2088]  # bert-base-uncased vocabulary: no [CLS]/[SEP] added
    assert tokens.count_tokens("Hello world", str(default_model_path())) == 2


def test_truncate_to_tokens() -> None:
    text = "one two three four five six"
    cut = tokens.truncate_to_tokens(text, 3)
    assert cut == "one two three"
    assert tokens.truncate_to_tokens(text, 100) == text


def test_count_tokens_rejects_non_str() -> None:
    with pytest.raises(TypeError, match="str"):
        tokens.count_tokens(None)  # type: ignore[arg-type]
