"""Bad input across the layers: a clear error at the call that caused it, naming what to fix."""

from __future__ import annotations

import pytest

from lean_plugins.checks import check_text, lone_surrogate_at
from lean_plugins.errors import ConfigurationError, InputTextError

# What decoding bytes with errors="surrogateescape" leaves for an invalid byte: a lone surrogate.
BROKEN = b"caf\xe9 au lait".decode("utf-8", errors="surrogateescape")


def test_check_text_names_the_type_and_the_position() -> None:
    assert check_text("fine", "prompt") == "fine"
    assert lone_surrogate_at(BROKEN) == 3 and lone_surrogate_at("emoji 😀") is None
    with pytest.raises(TypeError, match="prompt takes a str, got NoneType"):
        check_text(None, "prompt")
    with pytest.raises(InputTextError, match=r"surrogate '\\udce9' at character 3"):
        check_text(BROKEN, "prompt")


def test_compress_rejects_none_and_lone_surrogates_before_loading_anything() -> None:
    from lean_plugins.compress import LeanCompressor

    compressor = LeanCompressor()
    with pytest.raises(TypeError, match="takes a str"):
        compressor.compress(None)  # type: ignore[arg-type]
    with pytest.raises(InputTextError, match=r"text holds a lone UTF-16 surrogate .* at character 3"):
        compressor.compress(BROKEN)
    with pytest.raises(InputTextError, match=r"texts\[1\] holds"):
        compressor.compress(["ok", BROKEN])
    with pytest.raises(InputTextError, match="query holds"):
        compressor.compress("Some text to compress.", query=BROKEN)
    with pytest.raises(TypeError, match="takes a list of str"):
        compressor.compress_documents("one text")  # type: ignore[arg-type]
    assert compressor._prompt_compressor is None  # failed before the model was loaded


@pytest.mark.slow
def test_long_compress_shows_progress_when_asked(capfd) -> None:
    from lean_plugins.compress import LeanCompressor
    from lean_plugins.compress.compressor import LONG_INPUT_WINDOWS

    pytest.importorskip("llmlingua")
    text = " ".join(f"Sentence {i} says that the river runs past the old mill." for i in range(160))
    compressor = LeanCompressor(max_seq_len=16, record_ledger=False)  # tiny windows: many of them
    compressor.compress(text, rate=0.5)
    assert "compress:" not in capfd.readouterr().err  # library default: quiet
    compressor.progress = True
    result = compressor.compress(text, rate=0.5)
    assert "compress:" in capfd.readouterr().err
    assert len(text) // 16 > LONG_INPUT_WINDOWS and result.compressed_tokens < result.origin_tokens


def test_output_budget_rejects_a_bool() -> None:
    from lean_plugins.budget import OutputBudget

    with pytest.raises(ConfigurationError, match="max_tokens must be a positive int, got True"):
        OutputBudget(True)
    assert OutputBudget(1).max_tokens == 1


def test_single_brace_in_a_template_is_an_error_as_in_langchain() -> None:
    from lean_plugins.prompts import LeanPrompt, format_template

    with pytest.raises(ConfigurationError, match=r"Single '\}' at character 3"):
        format_template("{q}}", {"q": "x"})
    with pytest.raises(ConfigurationError, match=r"Single '\{'"):
        LeanPrompt(task="Answer {q} {").format(q="x")
    assert format_template("{{q}} {q} {{{q}}}", {"q": "x"}) == "{q} x {x}"


@pytest.fixture(scope="module")
def local_llm():
    pytest.importorskip("torch")
    from lean_plugins.pruning import LeanLocalLLM
    from tests.stories260k import stories_dir

    return LeanLocalLLM(stories_dir(), max_new_tokens=4, record_usage=False)


def test_generate_rejects_bad_text_and_sampling_settings(local_llm) -> None:
    from lean_plugins.pruning import LeanLocalLLM

    with pytest.raises(InputTextError, match=r"prompt holds a lone UTF-16 surrogate .* at character 3"):
        local_llm.generate(BROKEN)
    with pytest.raises(TypeError, match="prompt takes a str"):
        local_llm.generate(None)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"top_p must be in \(0, 1\]"):
        local_llm.generate("Once", temperature=0.7, top_p=0)
    with pytest.raises(ConfigurationError, match="temperature must be a number >= 0"):
        local_llm.generate("Once", temperature=-0.5)
    with pytest.raises(ConfigurationError, match="temperature"):
        LeanLocalLLM(local_llm.model, local_llm.tokenizer, temperature=float("nan"))
    assert local_llm.generate("Once", temperature=0.7, top_p=0.9).completion_tokens == 4
