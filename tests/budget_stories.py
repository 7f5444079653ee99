"""stories260K as a LeanLocalLLM, for the output-budget tests of the local-model stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# The start of a story the model finishes by itself within ~80 tokens (greedy decoding).
STORY_START = (
    "The cat was sad because it lost its toy. Then the dog found the toy and gave it back. "
    "The cat was happy again."
)


def stories_local_llm(shared_data: Path, folder: Path) -> Any:
    """The converted stories260K served by ``lean_plugins.pruning.LeanLocalLLM`` (skips the
    test when layer 3 is not installed)."""
    runtime = pytest.importorskip("lean_plugins.pruning.runtime")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lean_plugins.pruning.convert import convert_llama2c

    src = shared_data / "models" / "stories260K"
    convert_llama2c(src / "stories260K.bin", src / "tok512.model", folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    # llama2.c models end a story with BOS (id 1), as llama2.c's run.c stops on it: count it
    # as end of sequence, so eos_probability is the model's real wish to end.
    model.generation_config.eos_token_id = [2, 1]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return runtime.LeanLocalLLM(model, tokenizer, record_usage=False, model_name="stories260K")
