"""A pruned and healed chat model (tied embeddings, GQA, a chat template) served by LeanChatModel
from its saved folder: the folder's chat template formats the conversation. Tiny model built in
tests/core/test_pruning_chat.py; no download."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("langchain_core")

from lean_plugins.langchain import LeanChatModel

from lean_plugins.pruning import prune, save_pruned
from lean_plugins.pruning.heal import heal, teacher_conversations
from tests.core.test_pruning_chat import chat_tokenizer, conversation, tied_gqa_llama


def test_healed_folder_answers_through_lean_chat_model(tmp_path: Path) -> None:
    tokenizer = chat_tokenizer()
    dense = tied_gqa_llama(len(tokenizer), seed=1)
    pruned = copy.deepcopy(dense)
    prune(
        pruned, tokenizer, attention_ratio=0.0, mlp_ratio=0.5, calibration=[conversation(i) for i in range(4)]
    )
    data = teacher_conversations(
        dense, tokenizer, [conversation(10 + i)[:2] for i in range(8)], max_new_tokens=4
    )
    heal(pruned, tokenizer, data, teacher=dense, steps=2, batch_size=2, seq_len=24)
    folder = save_pruned(pruned, tokenizer, tmp_path / "healed")

    chat = LeanChatModel(model=str(folder), max_tokens=4)
    reply = chat.invoke([("system", "w39 w38"), ("human", "question w1 w2")])
    assert isinstance(reply.content, str)
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": "w39 w38"}, {"role": "user", "content": "question w1 w2"}],
        tokenize=True, add_generation_prompt=True,
    )["input_ids"]  # fmt: skip
    # The chat template of the saved folder formatted the conversation: same prompt tokens.
    assert reply.usage_metadata["input_tokens"] == len(prompt)
    assert 1 <= reply.usage_metadata["output_tokens"] <= 4
