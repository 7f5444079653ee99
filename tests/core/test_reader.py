"""The quality benchmark's reader: SQuAD answer metrics, batched greedy answers equal to
one-at-a-time ones, and the gold log-likelihood equal to a hand computation (tiny GGUF model)."""

from __future__ import annotations

import math

import pytest

from lean_plugins.reader import contains_gold, make_reader, normalize_answer, token_f1


def test_squad_normalisation_and_metrics() -> None:
    assert normalize_answer("The  Normans, in FRANCE!") == "normans in france"
    assert contains_gold("They settled in Normandy, France.", ["France"])
    assert not contains_gold("They settled in Frankfurt.", ["France"])  # whole words only
    assert not contains_gold("anything", ["the"])  # an answer that normalises to nothing never matches
    assert token_f1("the 10th century", ["10th century"]) == 1.0
    # predicted {in, 10th, century}, gold {10th, and, 11th, centuries}: one token in common
    assert token_f1("in the 10th century", ["10th and 11th centuries"]) == pytest.approx(2 * (1 / 3) * (1 / 4) / (1 / 3 + 1 / 4))
    assert token_f1("nothing shared", ["France", "Normandy"]) == 0.0


@pytest.fixture
def reader(tmp_path, monkeypatch):
    pytest.importorskip("gguf")
    torch = pytest.importorskip("torch")
    from tests.tiny_gguf import install_tiny_package

    monkeypatch.setenv("LEAN_PLUGINS_CACHE_DIR", str(tmp_path / "cache"))
    install_tiny_package(tmp_path, monkeypatch)
    torch.manual_seed(0)
    return make_reader("tiny-test-instruct", batch_size=3)


MESSAGES = [
    [{"role": "system", "content": "Use the context."}, {"role": "user", "content": "hello the world"}],
    [{"role": "user", "content": "or"}],
    [{"role": "user", "content": "the hell or the world, hello"}],
    [{"role": "user", "content": "tell"}],
]


def test_batched_answers_equal_one_at_a_time(reader) -> None:
    batched = reader.answer(MESSAGES, max_new_tokens=6)
    single = [reader.answer_one(m, max_new_tokens=6) for m in MESSAGES]
    assert [a.text for a in batched] == [a.text for a in single]
    assert all(a.finish_reason in ("natural", "max_tokens") for a in batched)


def test_gold_loglik_is_the_mean_log_probability_of_the_gold_tokens(reader) -> None:
    import torch

    messages = MESSAGES[0]
    prompt = reader.prompt_ids(messages)
    gold = reader.llm.encode("the world", add_special_tokens=False)
    with torch.no_grad():
        logits = reader.llm.model(torch.tensor([prompt + gold])).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    expected = sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(gold)) / len(gold)
    assert reader.gold_loglik(messages, "the world") == pytest.approx(expected, abs=1e-5)
    assert reader.gold_loglik(messages, "the world") < 0
    assert math.isnan(reader.gold_loglik(messages, ""))


def test_batch_results_come_back_in_the_prompts_order(reader) -> None:
    """Sequences of a batch that stop at different steps still return in the order of their
    prompts, each equal to its own one-at-a-time generation."""
    llm = reader.llm
    prompts = [reader.prompt_ids(m) for m in MESSAGES]

    def stop_on_even_token(step) -> bool:  # the seeded model's sequences meet this at different steps
        return len(step.token_ids) >= 3 and step.token_ids[-1] % 2 == 0

    single = [llm.generate(p, max_new_tokens=12, stopping_criteria=[stop_on_even_token]) for p in prompts]
    assert len({r.completion_tokens for r in single}) > 1, "the case needs sequences ending at different steps"
    batched = llm.generate_batch(prompts, max_new_tokens=12, stopping_criteria=[stop_on_even_token])
    assert [r.text for r in batched] == [r.text for r in single]
    assert [r.prompt_tokens for r in batched] == [len(p) for p in prompts]


def test_answers_scored_in_one_pass_equal_separate_answers_and_logliks(reader) -> None:
    golds = ["the world", "or", "hello the hell", "tell me"]
    scored = reader.answer_scored(MESSAGES, golds, max_new_tokens=6)
    answers = reader.answer(MESSAGES, max_new_tokens=6)
    assert [a.text for a, _ in scored] == [a.text for a in answers]
    assert [a.finish_reason for a, _ in scored] == [a.finish_reason for a in answers]
    for (_, score), messages, gold in zip(scored, MESSAGES, golds, strict=True):
        assert score == pytest.approx(reader.gold_loglik(messages, gold), abs=1e-4)
    assert math.isnan(reader.answer_scored(MESSAGES[:1], [""], max_new_tokens=3)[0][1])
