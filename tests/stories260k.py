"""The converted stories260K model, built once per test session (layer 3 tests)."""

from __future__ import annotations

from pathlib import Path

_BUILT: dict[str, Path] = {}


def stories_dir(data: Path | None = None, tmp_factory: object | None = None) -> Path:
    """Convert ``models/stories260K`` into a Hugging Face folder (once per session)."""
    import torch

    from lean_plugins.pruning import convert_llama2c

    # Tiny model: one thread is fastest and keeps shared CI machines responsive.
    torch.set_num_threads(1)
    if "dir" not in _BUILT:
        import tempfile

        import pytest

        from lean_plugins.paths import shared_data_dir

        data = data or shared_data_dir()
        if data is None:
            pytest.skip("evaluation data not found (../shared/data or LEAN_PLUGINS_DATA)")
        src = data / "models" / "stories260K"
        if tmp_factory is not None:
            out = tmp_factory.mktemp("stories260K_hf")  # type: ignore[attr-defined]
        else:
            out = Path(tempfile.mkdtemp(prefix="stories260K_hf_"))
        _BUILT["dir"] = convert_llama2c(src / "stories260K.bin", src / "tok512.model", out)
    return _BUILT["dir"]


def stories(data: Path) -> list[str]:
    from lean_plugins.pruning.evaluate import read_documents

    return read_documents(data / "text" / "tinystories_sample.txt")
