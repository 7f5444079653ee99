"""Shared pieces of the output-budget tests: a reference answer, and stories260K served by
LeanLocalLLM for the local-model stop."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from lean_plugins.tokens import encode, get_tokenizer

ANSWER = (
    "The Normans were the people who in the 10th and 11th centuries gave their name to "
    "Normandy, a region in France. They were descended from Norse raiders and pirates from "
    "Denmark, Iceland and Norway who, under their leader Rollo, agreed to swear fealty to King "
    "Charles III of West Francia. Through generations of assimilation and mixing with the native "
    "Frankish and Roman-Gaulish populations, their descendants would gradually merge with the "
    "Carolingian-based cultures of West Francia. The distinct cultural and ethnic identity of "
    "the Normans emerged initially in the first half of the 10th century, and it continued to "
    "evolve over the succeeding centuries."
)


def first_tokens(text: str, n: int) -> str:
    """The text of the first ``n`` cl100k tokens of ``text``."""
    return get_tokenizer().decode_bytes(encode(text)[:n]).decode("utf-8", errors="ignore")


# The start of a story the model finishes by itself within ~80 tokens (greedy decoding).
STORY_START = (
    "The cat was sad because it lost its toy. Then the dog found the toy and gave it back. "
    "The cat was happy again."
)


def stories_local_llm() -> Any:
    """The converted stories260K served by ``lean_plugins.pruning.LeanLocalLLM`` (skips the
    test when layer 3 is not installed)."""
    runtime = pytest.importorskip("lean_plugins.pruning.runtime")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.stories260k import stories_dir

    folder = stories_dir()
    model = AutoModelForCausalLM.from_pretrained(folder)
    # The converter counts BOS (id 1) as end of sequence, as llama2.c's run.c does, so
    # eos_probability is the model's real wish to end.
    assert 1 in model.generation_config.eos_token_id
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return runtime.LeanLocalLLM(model, tokenizer, record_usage=False, model_name="stories260K")


def stories_llm_fixture() -> Iterator[Any]:
    """Module fixture body: the stories260K LeanLocalLLM, torch on one thread while it runs."""
    import torch

    llm = stories_local_llm()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 260K-parameter model runs fastest on one thread
    yield llm
    torch.set_num_threads(threads)
