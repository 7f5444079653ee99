"""Cache keys: exact-path normalisation, canonical request keys, context detection (one test per
rule of lean_plugins/data/cache_context_rules.json) and model identities. No model, no store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lean_plugins.cache.keys import (
    ContextRules,
    completion_key,
    context_reason,
    folder_fingerprint,
    key_hash,
    match_key,
    request_key,
    split_prompt,
)
from lean_plugins.paths import package_data

#: Pairs that ask different things and differ only in case, digits, signs, symbols or
#: punctuation: the exact path must keep them apart (issue 13: all were one key before).
DIFFERENT_ON_THE_EXACT_PATH = [
    ("What is 12 + 5?", "What is 12 - 5?"),
    ("Is 7 > 3?", "Is 7 < 3?"),
    ("Explain C++ templates", "Explain C# templates"),
    ("Convert $100 to yen", "Convert €100 to yen"),
    ("Is 40 °C hot?", "Is -40 °C hot?"),
    ("What does a = b do in C?", "What does a == b do in C?"),
    ("When is x != y true?", "When is x == y true?"),
    ("SELECT name FROM t WHERE id IN (1, 2)", "SELECT name FROM t WHERE id in (1, 2)"),
    ("Is US the same as us?", "Is us the same as us?"),
    ("What is 2.5?", "What is 25?"),
    ("Let's eat, grandma!", "Let's eat grandma!"),
    ("What is 3/4?", "What is 3.4?"),
]


@pytest.mark.parametrize(("a", "b"), DIFFERENT_ON_THE_EXACT_PATH)
def test_exact_key_keeps_case_digits_signs_symbols_and_punctuation(a: str, b: str) -> None:
    assert key_hash(a) != key_hash(b)
    assert completion_key(a).text != completion_key(b).text


def test_exact_key_forgives_only_unicode_form_and_whitespace() -> None:
    assert key_hash("What is  12 + 5?\n") == key_hash("What is 12\t+ 5?")
    assert key_hash("Caf\u00e9 au lait?") == key_hash("Cafe\u0301 au lait?")
    # A line's indentation is meaning in code: kept.
    assert key_hash("def f():\n    return 1") != key_hash("def f():\nreturn 1")
    assert key_hash("a\n\n\n\nb") == key_hash("a\n\nb")


def test_scope_separates_equal_prompts() -> None:
    assert key_hash("Why?", scope="a") != key_hash("Why?", scope="b") != key_hash("Why?")


# -- request keys --------------------------------------------------------------------------------
SYSTEM = {"role": "system", "content": "You answer questions about the Solar System."}


def _key(*messages: dict) -> tuple[str, str]:
    k = request_key(list(messages))
    return k.text, k.scope


def test_request_key_holds_every_message_field() -> None:
    base = _key(SYSTEM, {"role": "user", "content": "Hi"}, {"role": "ai", "content": "Hello"},
                {"role": "user", "content": "And Mars?"})
    variants = {
        "a role injected inside one message": _key(
            SYSTEM, {"role": "user", "content": "Hi\nai: Hello"}, {"role": "user", "content": "And Mars?"}
        ),
        "another speaker name": _key(
            SYSTEM, {"role": "user", "content": "Hi", "name": "bob"}, {"role": "ai", "content": "Hello"},
            {"role": "user", "content": "And Mars?"},
        ),
        "another system prompt": _key(
            {"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hi"},
            {"role": "ai", "content": "Hello"}, {"role": "user", "content": "And Mars?"},
        ),
        "another history answer": _key(
            SYSTEM, {"role": "user", "content": "Hi"}, {"role": "ai", "content": "Hello!"},
            {"role": "user", "content": "And Mars?"},
        ),
        "content as parts with an image": _key(
            SYSTEM, {"role": "user", "content": "Hi"}, {"role": "ai", "content": "Hello"},
            {"role": "user", "content": [{"type": "text", "text": "And Mars?"},
                                         {"type": "image_url", "image_url": {"url": "data:..."}}]},
        ),
    }
    for what, key in variants.items():
        assert key != base, what


def _tool_turn(name: str, args: dict, call_id: str, result: str) -> tuple[str, str]:
    return _key(
        SYSTEM,
        {"role": "user", "content": "What is the weather?"},
        {"role": "ai", "content": "", "tool_calls": [{"name": name, "args": args, "id": call_id}]},
        {"role": "tool", "content": result, "tool_call_id": call_id},
    )


def test_request_key_holds_tool_calls_and_their_results() -> None:
    base = _tool_turn("weather", {"city": "Paris"}, "call_1", "18 C")
    assert _tool_turn("weather", {"city": "Rome"}, "call_1", "18 C") != base  # other arguments
    assert _tool_turn("forecast", {"city": "Paris"}, "call_1", "18 C") != base  # another tool
    assert _tool_turn("weather", {"city": "Paris"}, "call_2", "18 C") != base  # another call id
    assert _tool_turn("weather", {"city": "Paris"}, "call_1", "19 C") != base  # another result
    assert not request_key([SYSTEM, {"role": "tool", "content": "18 C", "tool_call_id": "c"}]).semantic


def test_request_key_params_are_in_the_scope() -> None:
    messages = [{"role": "user", "content": "Name a planet."}]
    a = request_key(messages, {"tools": [{"name": "lookup", "parameters": {"type": "object"}}]})
    b = request_key(messages, {"tools": [{"name": "search", "parameters": {"type": "object"}}]})
    c = request_key(messages, {"response_format": {"type": "json_object"}})
    assert len({a.scope, b.scope, c.scope, request_key(messages).scope}) == 4


def test_empty_fields_and_key_order_do_not_change_the_key() -> None:
    a = request_key([{"role": "user", "content": "Hi", "name": None, "tool_calls": []}])
    b = request_key([{"content": "Hi", "role": "user"}])
    assert (a.text, a.scope) == (b.text, b.scope)


def test_semantic_for_a_final_user_text_whose_rules_the_cache_applies() -> None:
    plain = request_key([SYSTEM, {"role": "user", "content": "How long is a day on Mars?"}])
    assert plain.semantic and plain.text == "How long is a day on Mars?"
    rag = request_key([{"role": "user", "content": "Context: Mars spins once in 24.6 hours.\nQuery: How long is a day?"}])
    # the whole text goes to the cache, which matches it on its question within its context
    assert rag.semantic and split_prompt(rag.text).question == "How long is a day?"
    prefill = request_key([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure,"}])
    assert not prefill.semantic


# -- context detection: one test per rule ---------------------------------------------------------
RULE_EXAMPLES = {
    "long": " ".join(["Mars is the fourth planet and its day lasts a little longer than ours."] * 6)
    + " How long is its year?",
    "lines": "Mars facts\nRed planet\nTwo moons\nHow many moons does it have?",
    "paragraphs": "Mars has two small moons.\n\nHow many moons does Mars have?",
    "context_label": "Context: Mars has two small moons. How many moons does Mars have?",
    "question_label": "Query: how many moons does Mars have?",
    "llama_index_qa": "Context information is below. Mars has two moons. Answer the query.",
    "rag_instruction": "Using the following text, say how many moons Mars has: Mars has two.",
    "separator_line": "Mars has two moons.\n----------\nHow many?",
    "context_tag": "<context>Mars has two moons.</context> How many moons does Mars have?",
    "code_fence": "What does ```x = y or z``` do?",
    "pasted_material": "Summarize the following email: Hi team, the review moved to Thursday.",
    "colon_block": "Reply politely to this email: Hi team, the quarterly review moved from Tuesday to Thursday afternoon this week.",
}


def _rules() -> list[str]:
    data = json.loads(package_data("cache_context_rules.json").read_text(encoding="utf-8"))
    return ["long", "lines"] + [rule["name"] for rule in data["patterns"]]


def test_every_context_rule_has_an_example() -> None:
    assert sorted(_rules()) == sorted(RULE_EXAMPLES)


@pytest.mark.parametrize("rule", _rules())
def test_context_rule_fires_on_its_example(rule: str) -> None:
    assert context_reason(RULE_EXAMPLES[rule]) == rule
    parts = split_prompt(RULE_EXAMPLES[rule])
    # either exact repeats only, or matched on a question apart from its context
    assert not parts.semantic or (parts.context and parts.question in RULE_EXAMPLES[rule])


@pytest.mark.parametrize(
    "question",
    [
        "How long is a day on Mars?",
        "What is the height of the Eiffel Tower?",
        "Explain C++ templates",
        "Is 7 > 3?",
        "Which planet has the most moons, and how many does it have?",
        "Summarise the history of the Roman Empire in three sentences.",
    ],
)
def test_plain_questions_carry_no_context(question: str) -> None:
    assert context_reason(question) is None
    parts = split_prompt(question)
    assert parts.semantic and parts.question == question and not parts.context


# -- the question of a prompt that carries context: one test per question pattern ---------------
QUESTION_EXAMPLES = {
    "labelled_question": (
        "Context: Paris is the capital of France. Berlin is the capital of Germany.\n\nQuestion: What is the capital of France?",
        "What is the capital of France?",
    ),
    "final_question": ("Mars has two small moons, Phobos and Deimos.\n\nHow many moons does Mars have?", "How many moons does Mars have?"),
}


def test_every_question_pattern_has_an_example() -> None:
    data = json.loads(package_data("cache_context_rules.json").read_text(encoding="utf-8"))
    assert sorted(rule["name"] for rule in data["question_patterns"]) == sorted(QUESTION_EXAMPLES)


@pytest.mark.parametrize("rule", sorted(QUESTION_EXAMPLES))
def test_question_pattern_finds_the_question_and_keeps_the_rest_as_context(rule: str) -> None:
    prompt, question = QUESTION_EXAMPLES[rule]
    parts = split_prompt(prompt)
    assert parts.semantic and parts.question == question
    start = prompt.rindex(question)
    assert question not in parts.context and parts.context == f"{prompt[:start]}\x00question@{start}\x00"
    # another question in the same context: same scope; other context: another scope
    other = prompt.replace(question, "Who wrote it?")
    assert match_key(other)[1] == match_key(prompt)[1] != match_key(prompt.replace("Mars", "Venus").replace("Paris", "Lyon"))[1]


def test_the_templates_of_both_frameworks_give_their_question() -> None:
    llama_index = (
        "Context information is below.\n---------------------\nfile_path: mars.txt\n\nMars has two moons.\n"
        "---------------------\nGiven the context information and not prior knowledge, answer the query.\n"
        "Query: How many moons does Mars have?\nAnswer: "
    )
    langchain_hub = (
        "You are an assistant for question-answering tasks. Use the following pieces of retrieved context to "
        "answer the question.\nQuestion: How many moons does Mars have? \nContext: Mars has two moons. \nAnswer:"
    )
    for prompt in (llama_index, langchain_hub):
        parts = split_prompt(prompt)
        assert parts.semantic and parts.question == "How many moons does Mars have?"


@pytest.mark.parametrize(
    "prompt",
    [
        # pasted text with an instruction: no question apart from the material
        "Summarize the following email:\n\nHi team, the review moved to Thursday.",
        "Some notes about the product.\n\nPlease explain how to cancel.",
        # a question found, but not a plain one (too long)
        "Context: a policy.\nQuestion: " + " ".join(["why"] * 45) + "?",
        # long, one paragraph, no question apart
        " ".join(["The subscriber agrees to the terms."] * 12) + " How do I cancel?",
    ],
)
def test_prompts_without_a_plain_question_apart_are_exact_repeats_only(prompt: str) -> None:
    parts = split_prompt(prompt)
    assert not parts.semantic and parts.context == "" and parts.reason
    assert match_key(prompt, "s") == (parts.question, "s", False)


def test_rules_load_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"max_words": 3, "max_lines": 1, "patterns": [{"name": "x", "pattern": "zz"}]}))
    rules = ContextRules.load(str(path))
    assert context_reason("one two three four", rules) == "long"
    assert context_reason("a zz", rules) == "x"
    assert context_reason("How long?", rules) is None


# -- model identity ------------------------------------------------------------------------------
def test_folder_fingerprint_changes_with_config_and_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"num_hidden_layers": 4}')
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 10)
    first = folder_fingerprint(tmp_path)
    assert first is not None and folder_fingerprint(tmp_path) == first
    (tmp_path / "config.json").write_text('{"num_hidden_layers": 3, "lean_pruning": {"ratio": 0.25}}')
    second = folder_fingerprint(tmp_path)
    assert second != first
    time.sleep(0.01)
    (tmp_path / "model.safetensors").write_bytes(b"\1" * 10)
    assert folder_fingerprint(tmp_path) != second
    assert folder_fingerprint("some-org/some-hub-model") is None


def test_loaded_model_fingerprint_tells_weights_apart_and_follows_in_place_pruning() -> None:
    torch = pytest.importorskip("torch")
    from lean_plugins.cache.keys import loaded_model_fingerprint
    from lean_plugins.pruning import load_model
    from lean_plugins.pruning.pruner import drop_layers
    from tests.stories260k import stories_dir

    def load():  # one fresh copy of the same checkpoint
        model, tokenizer, _ = load_model(str(stories_dir()), device="cpu")
        return model, tokenizer

    (a, tokenizer), (b, _), (tuned, _) = load(), load(), load()
    assert loaded_model_fingerprint(a, tokenizer) == loaded_model_fingerprint(b, tokenizer)
    with torch.no_grad():  # same config, other weights (a fine-tune)
        tuned.lm_head.weight.mul_(1.5)
    assert loaded_model_fingerprint(tuned, tokenizer) != loaded_model_fingerprint(a, tokenizer)
    dense = loaded_model_fingerprint(a, tokenizer)
    drop_layers(a, [a.config.num_hidden_layers - 1])  # pruned in place: the config changes
    assert loaded_model_fingerprint(a, tokenizer) != dense
