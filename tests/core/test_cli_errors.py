"""The CLI speaks to people: a user error is one ``error:`` line and exit code 2; model names
are checked before transformers sees them; loads are quiet in library use."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from lean_plugins.cli import main
from lean_plugins.errors import ModelLoadError
from tests.stories260k import CHECKPOINT, STORIES, TOKENIZER, stories_dir

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def one_error_line(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run the CLI; assert exit 2 and a single ``error:`` line on stderr; return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "it/s]" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def pickled_model_folder(tmp_path: Path) -> Path:
    """stories260K with its weights as a pickle that holds more than tensors."""
    folder = tmp_path / "pickled"
    shutil.copytree(stories_dir(), folder)
    (folder / "model.safetensors").unlink()

    class NotATensor:  # loading it would call print(): torch's weights_only refuses it
        def __reduce__(self):
            return (print, ("unpickled",))

    torch.save({"model.embed_tokens.weight": NotATensor()}, folder / "pytorch_model.bin")
    return folder


def test_every_subcommand_reports_a_user_error_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = str(tmp_path / "out")
    line = one_error_line(
        capsys, ["convert-llama2c", str(CHECKPOINT), "--tokenizer", str(tmp_path / "no.model"), "--out", out]
    )
    assert "tokenizer model" in line
    torch.save({"w": torch.zeros(2)}, tmp_path / "pytorch_model.bin")
    line = one_error_line(
        capsys,
        ["convert-llama2c", str(tmp_path / "pytorch_model.bin"), "--tokenizer", str(TOKENIZER), "--out", out],
    )
    assert "pickled PyTorch file" in line
    missing = str(tmp_path / "no-such-model")
    line = one_error_line(capsys, ["ppl", missing, "--text", str(STORIES)])
    assert f"Model folder {missing} does not exist" in line and "Repo id" not in line
    line = one_error_line(
        capsys, ["prune", str(stories_dir()), "--ratio", "1.5", "--calib", str(STORIES), "--out", out]
    )
    assert "ratio must be in [0, 1)" in line
    line = one_error_line(
        capsys, ["prune", missing, "--ratio", "0.2", "--calib", str(STORIES), "--out", out]
    )
    assert "does not exist" in line
    line = one_error_line(capsys, ["ppl", str(stories_dir()), "--text", str(tmp_path / "none.txt")])
    assert "none.txt not found" in line
    assert "Unknown benchmark" in one_error_line(capsys, ["bench", "no-such-benchmark"])


def test_pickled_bin_weights_are_a_model_load_error(tmp_path: Path, capsys) -> None:
    from lean_plugins.pruning import LeanLocalLLM

    with pytest.raises(ModelLoadError, match="pickled PyTorch weights"):
        LeanLocalLLM(pickled_model_folder(tmp_path))
    assert "unpickled" not in capsys.readouterr().out  # nothing in the pickle ran


def test_a_file_or_missing_path_is_named_as_such(tmp_path: Path) -> None:
    from lean_plugins.pruning import LeanLocalLLM

    with pytest.raises(ModelLoadError, match="does not exist"):
        LeanLocalLLM(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="does not exist"):
        LeanLocalLLM("./models/nope")
    with pytest.raises(ModelLoadError, match="is a file"):
        LeanLocalLLM(STORIES)
    with pytest.raises(ModelLoadError, match=r"has no config\.json"):
        LeanLocalLLM(tmp_path)


@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path: Path) -> tuple[int, list[tuple]]:
    """The hub is a closed local port and the hub cache is empty; returns the port and the list
    of connection attempts made."""
    import huggingface_hub.constants

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    attempts: list[tuple] = []
    real = socket.create_connection

    def counting(address, *args, **kwargs):
        attempts.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", counting)
    return port, attempts


def test_unreachable_hub_fails_at_once_with_one_connection_attempt(unreachable_hub) -> None:
    """One refused connection, then a clear error (transformers alone retries for ~23 s per
    attempt)."""
    from lean_plugins.pruning import LeanLocalLLM

    port, attempts = unreachable_hub
    with pytest.raises(ModelLoadError, match="cannot be reached") as err:
        LeanLocalLLM("someorg/some-model")
    assert f"127.0.0.1:{port}" in str(err.value)
    assert attempts == [("127.0.0.1", port)]


def test_compressor_model_names_are_checked_the_same_way(unreachable_hub, tmp_path: Path) -> None:
    from lean_plugins.compress import LeanCompressor

    port, attempts = unreachable_hub
    with pytest.raises(ModelLoadError, match="cannot be reached"):
        LeanCompressor("someorg/some-model").compress("Some text to compress here.")
    assert attempts == [("127.0.0.1", port)]
    with pytest.raises(ModelLoadError, match="does not exist"):
        LeanCompressor(str(tmp_path / "no-such-model")).compress("Some text to compress here.")


def test_offline_mode_names_the_model_and_the_setting(monkeypatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    from lean_plugins.pruning import LeanLocalLLM

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        LeanLocalLLM("someorg/some-model")


def test_loading_bars_are_quiet_in_library_use_and_shown_by_the_cli(capfd) -> None:
    from transformers.utils import logging as hf_logging

    from lean_plugins.compress import LeanCompressor
    from lean_plugins.embeddings import SentenceEncoder
    from lean_plugins.pruning import LeanLocalLLM

    path = stories_dir()
    assert hf_logging.is_progress_bar_enabled()
    LeanLocalLLM(path)
    SentenceEncoder().encode(["a sentence"])
    assert LeanCompressor().prompt_compressor is not None
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled(), "the caller's setting is restored"
    assert main(["ppl", str(path), "--text", str(STORIES), "--docs", "2"]) == 0
    assert "Loading weights" in capfd.readouterr().err


def test_demo_reports_a_user_error_on_one_line(capsys) -> None:
    line = one_error_line(capsys, ["demo", "--price-model", "no-such-model-price"])
    assert "no-such-model-price" in line


@pytest.mark.slow
def test_demo_shows_a_progress_bar_over_its_requests(tmp_path: Path, capfd) -> None:
    argv = ["demo", "--questions", "2", "--framework", "langchain", "--no-ablation", "--out", str(tmp_path)]
    assert main(argv) in (0, 1)
    err = capfd.readouterr().err
    assert "langchain plain: 100%" in err and "2/2" in err and "request" in err
