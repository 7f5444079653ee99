"""Pruning and healing a chat model (layer 3): conversations as healing data, the chat template and
tied embeddings kept through prune / heal / save / reload, and evaluation prompts kept out of
healing (the library check and the CLI's refusal).

Everything runs on a tiny seeded Llama built here, shaped like SmolLM2-135M-Instruct: grouped-query
attention (6 query / 2 key-value heads), tied input and output embeddings, and a word-level
tokenizer with ChatML control tokens and a chat template. No download.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from lean_plugins.errors import ConfigurationError  # noqa: E402
from lean_plugins.pruning import LeanLocalLLM, prune, save_pruned  # noqa: E402
from lean_plugins.pruning.evaluate import check_held_out, read_documents  # noqa: E402
from lean_plugins.pruning.heal import heal, token_stream  # noqa: E402

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<unk>", "<|im_start|>", "<|im_end|>"]
WORDS = [f"w{i}" for i in range(40)] + ["system", "user", "assistant", "\n", "answer", "question"]


def chat_tokenizer():
    """A word-level tokenizer over :data:`WORDS` with ChatML control tokens and a chat template."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # Split on spaces and keep newlines as tokens, as the template writes them.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"), pre_tokenizers.WhitespaceSplit()]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        bos_token="<|im_start|>", additional_special_tokens=SPECIAL[1:],
    )  # fmt: skip
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tied_gqa_llama(vocab_size: int, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).eval()


def conversation(seed: int) -> list[dict[str, str]]:
    """A user asks with a few words; the assistant answers with the words that follow each one
    (a rule the teacher learns and a pruned student can relearn)."""
    g = torch.Generator().manual_seed(seed)
    asked = [int(x) for x in torch.randint(0, 39, (6,), generator=g)]
    return [
        {"role": "system", "content": "w39 w38"},
        {"role": "user", "content": "question " + " ".join(f"w{i}" for i in asked)},
        {"role": "assistant", "content": "answer " + " ".join(f"w{i + 1}" for i in asked)},
    ]


def kl_to_teacher(student, teacher, tokenizer, conversations) -> float:
    total = 0.0
    for conv in conversations:
        ids = torch.tensor([tokenizer.apply_chat_template(conv, tokenize=True)["input_ids"]])
        with torch.no_grad():
            s = torch.log_softmax(student(input_ids=ids).logits, -1)
            t = torch.log_softmax(teacher(input_ids=ids).logits, -1)
        total += float(torch.nn.functional.kl_div(s[0], t[0], log_target=True, reduction="batchmean"))
    return total / len(conversations)


@pytest.fixture(scope="module")
def chat_model():
    torch.set_num_threads(1)
    tokenizer = chat_tokenizer()
    dense = tied_gqa_llama(len(tokenizer))
    # Teach the dense model the rule first, so the student has something to recover.
    heal(dense, tokenizer, [conversation(i) for i in range(64)], steps=80, batch_size=8, seq_len=40,
         learning_rate=1e-2, seed=1)  # fmt: skip
    return dense, tokenizer


def test_conversations_are_rendered_with_the_chat_template(chat_model) -> None:
    _dense, tokenizer = chat_model
    conv = conversation(0)
    stream = token_stream(tokenizer, [conv, "w1 w2"])
    rendered = tokenizer.apply_chat_template(conv, tokenize=True)["input_ids"]
    assert stream[: len(rendered)] == rendered
    assert stream.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3
    # A plain text after it ends with EOS; the conversation's turns end with the template's own marks.
    assert stream[len(rendered) :] == [*tokenizer("w1 w2")["input_ids"], tokenizer.eos_token_id]


def test_chat_healing_recovers_the_dense_answers_and_keeps_template_and_tied_head(
    chat_model, tmp_path: Path
) -> None:
    dense, tokenizer = chat_model
    pruned = copy.deepcopy(dense)
    report = prune(pruned, tokenizer, ratio=0.3, calibration=[conversation(100 + i) for i in range(8)])
    shape = report.layer_shapes[0]
    # Whole GQA groups: the query heads per key-value head stay an integer.
    assert shape["num_attention_heads"] % shape["num_key_value_heads"] == 0
    assert pruned.lm_head.weight is pruned.model.embed_tokens.weight
    assert pruned.model.embed_tokens.weight.shape == dense.model.embed_tokens.weight.shape
    held_out = [conversation(1000 + i) for i in range(12)]
    before = kl_to_teacher(pruned, dense, tokenizer, held_out)
    healing = [conversation(200 + i) for i in range(64)]
    check_held_out(held_out, heal=healing)
    heal(pruned, tokenizer, healing, teacher=dense, steps=60, batch_size=8, seq_len=40, kd_weight=1.0, seed=0)
    after = kl_to_teacher(pruned, dense, tokenizer, held_out)
    assert after < 0.7 * before
    assert pruned.lm_head.weight is pruned.model.embed_tokens.weight  # healing kept the head tied

    out = save_pruned(pruned, tokenizer, tmp_path / "healed")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert reloaded.config.tie_word_embeddings
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([tokenizer.apply_chat_template(held_out[0], tokenize=True)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, pruned(input_ids=ids).logits, atol=1e-5)
    info = json.loads((out / "config.json").read_text())["lean_pruning"]
    assert info["heal"]["steps"] == 60 and info["params_after"] < info["params_before"]

    llm = LeanLocalLLM(out, record_usage=False)
    assert llm.has_chat_template
    messages = held_out[0][:2]
    ids, prefix = llm.chat_prompt_ids(messages)
    assert (
        ids == tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)["input_ids"]
    )
    assert prefix is not None and prefix.startswith("<|im_start|>system")
    result = llm.generate(ids, max_new_tokens=8)
    assert result.completion_tokens >= 1


def test_held_out_check_covers_chat_prompts() -> None:
    paragraph = "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy."
    evaluation = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": paragraph + "\nWho?"}]
    ]
    # A shared system prompt and a different question are fine.
    check_held_out(
        evaluation, heal=[[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}]]
    )
    # The same prompt, whitespace aside, is refused.
    same = [[{"role": "user", "content": "  " + paragraph.replace(" ", "  ") + "\nWho?"}]]
    with pytest.raises(ConfigurationError, match="1 of the heal documents"):
        check_held_out(evaluation, heal=same)
    # An evaluation paragraph quoted inside a healing prompt, or healed on as plain text, is refused.
    with pytest.raises(ConfigurationError, match="heal"):
        check_held_out(
            [paragraph], heal=[[{"role": "user", "content": f"Context: {paragraph}\nQuestion: When?"}]]
        )
    with pytest.raises(ConfigurationError, match="calib"):
        check_held_out(evaluation, calib=[paragraph])
    # The assistant's answers are not prompts: a healing answer that repeats the paragraph is no leak.
    check_held_out(
        evaluation,
        heal=[[{"role": "user", "content": "Tell me."}, {"role": "assistant", "content": paragraph}]],
    )


def test_jsonl_documents_and_their_errors(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": conversation(1)}) + "\n\n" + json.dumps({"text": "w1 w2"}) + "\n")
    docs = read_documents(path)
    assert docs == [conversation(1), "w1 w2"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user"}]}\n')
    with pytest.raises(ConfigurationError, match=r"line 1.*'role' and 'content'"):
        read_documents(bad)
    bad.write_text("not json\n")
    with pytest.raises(ConfigurationError, match="line 1 is not JSON"):
        read_documents(bad)
    with pytest.raises(ConfigurationError, match="no chat template"):
        token_stream(transformers.PreTrainedTokenizerFast(tokenizer_object=chat_tokenizer()._tokenizer), docs)


def test_cli_heals_on_the_dense_answers_and_refuses_evaluation_prompts(
    chat_model, tmp_path: Path, capsys
) -> None:
    from lean_plugins.cli import main

    dense, tokenizer = chat_model
    folder = save_pruned(copy.deepcopy(dense), tokenizer, tmp_path / "dense")
    prompts, eval_file = tmp_path / "prompts.jsonl", tmp_path / "eval.jsonl"
    prompts.write_text("".join(json.dumps({"messages": conversation(300 + i)[:2]}) + "\n" for i in range(20)))
    eval_file.write_text("".join(json.dumps({"messages": conversation(310 + i)}) + "\n" for i in range(10)))
    argv = ["prune", str(folder), "--ratio", "0.2", "--attention-ratio", "0", "--mlp-ratio", "0.5",
            "--calib", str(prompts), "--calib-docs", "5", "--heal", "2",
            "--heal-prompts", str(prompts), "--heal-answer-tokens", "6", "--eval", str(eval_file),
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2  # a user error: one line, nothing written
    assert "10 of the heal documents" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    eval_file.write_text("".join(json.dumps({"messages": conversation(400 + i)}) + "\n" for i in range(10)))
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "dense answers to 20 healing prompts" in out and "healed  params" in out
    saved = tmp_path / "out"
    assert transformers.AutoTokenizer.from_pretrained(saved).chat_template == tokenizer.chat_template
    config = json.loads((saved / "config.json").read_text())
    assert config["tie_word_embeddings"] and config["lean_pruning"]["heal"]["steps"] == 2
    # Every head kept, half the MLP channels gone (--attention-ratio 0 --mlp-ratio 0.5).
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["intermediate_size"]) == (
        6,
        2,
        48,
    )


def test_teacher_conversations_are_the_dense_greedy_answers(chat_model) -> None:
    from lean_plugins.pruning.heal import teacher_conversations

    dense, tokenizer = chat_model
    prompts = ["question w1 w2 w3", conversation(7)[:2]]
    convs = teacher_conversations(dense, tokenizer, prompts, max_new_tokens=5, batch_size=2)
    llm = LeanLocalLLM(dense, tokenizer, record_usage=False)
    for prompt, conv in zip(prompts, convs, strict=True):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        assert conv[:-1] == messages and conv[-1]["role"] == "assistant"
        # Batched answers equal one-at-a-time greedy answers.
        assert (
            conv[-1]["content"]
            == llm.generate(llm.chat_prompt_ids(messages)[0], max_new_tokens=5).text.strip()
        )


def test_prune_command_lets_idle_openmp_threads_sleep() -> None:
    """OMP_WAIT_POLICY=PASSIVE before torch loads, a user's own setting kept, nothing once torch is
    loaded (OpenMP has read its policy by then)."""
    import os
    import subprocess
    import sys

    def policy(env_policy: str | None, import_torch_first: bool) -> str:
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if env_policy:
            env["OMP_WAIT_POLICY"] = env_policy
        code = ("import torch\n" if import_torch_first else "") + (
            "import os\nfrom lean_plugins.pruning.cli import passive_openmp_threads\n"
            "passive_openmp_threads()\nprint(os.environ.get('OMP_WAIT_POLICY'))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    assert policy(None, False) == "PASSIVE"
    assert policy("ACTIVE", False) == "ACTIVE"
    assert policy(None, True) == "None"
