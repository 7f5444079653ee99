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


def _fresh_get_encoding() -> tiktoken.Encoding:
    """tiktoken.get_encoding without its in-process memo, so the cache folder is read again."""
    import tiktoken.registry

    with tiktoken.registry._lock:
        tiktoken.registry.ENCODINGS.pop("cl100k_base", None)
    return tiktoken.get_encoding("cl100k_base")


def test_offline_tiktoken_fills_a_cache_dir_the_user_set(tmp_path, monkeypatch, no_network) -> None:
    # A machine image may set TIKTOKEN_CACHE_DIR to a folder without cl100k_base; offline,
    # llmlingua's get_encoding then failed (found on the lent GPU machine).
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "image-cache"))
    tokens.use_offline_tiktoken()
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path / "image-cache")
    assert _fresh_get_encoding().encode("hello world") == [15339, 1917]


def test_offline_tiktoken_unwritable_user_dir_falls_back_to_ours(tmp_path, monkeypatch, caplog) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(blocker / "cache"))  # cannot be created
    tokens.use_offline_tiktoken()
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tokens.tiktoken_cache_dir())
    assert "cannot take a copy" in caplog.text
    disable_socket()
    try:
        assert _fresh_get_encoding().encode("hello world") == [15339, 1917]
    finally:
        enable_socket()


def test_offline_tiktoken_leaves_a_disabled_cache_alone(monkeypatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    tokens.use_offline_tiktoken()
    assert os.environ["TIKTOKEN_CACHE_DIR"] == ""
