"""The stories260K model shipped in ``tests/fixtures``, converted once per test session.

Layer 3 tests run on this real trained model (1 MB, MIT), so they run on a fresh clone with
nothing beside it; see ``tests/fixtures/stories260K/README.md`` for provenance and licences.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "stories260K"
CHECKPOINT = FIXTURE / "stories260K.bin"
TOKENIZER = FIXTURE / "tok512.model"
#: The first 64 stories of the TinyStories validation split.
STORIES = FIXTURE / "tinystories_valid_64.txt"

_BUILT: dict[str, Path] = {}


def stories_dir() -> Path:
    """stories260K converted into a Hugging Face folder (once per session; torch on one thread)."""
    import torch

    from lean_plugins.pruning import convert_llama2c

    # Tiny model: one thread is fastest and keeps shared CI machines responsive.
    torch.set_num_threads(1)
    if "dir" not in _BUILT:
        out = Path(tempfile.mkdtemp(prefix="stories260K_hf_"))
        atexit.register(shutil.rmtree, out, ignore_errors=True)
        _BUILT["dir"] = convert_llama2c(CHECKPOINT, TOKENIZER, out)
    return _BUILT["dir"]


def stories() -> list[str]:
    """The 64 TinyStories validation stories of the fixture, one string each."""
    from lean_plugins.pruning.evaluate import read_documents

    return read_documents(STORIES)
