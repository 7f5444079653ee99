"""LeanLocalLLM on the converted stories260K model: stops, hooks, batch, prefix cache, usage."""

from __future__ import annotations

import asyncio

import pytest

from lean_plugins.errors import ConfigurationError
from lean_plugins.generation import GenerationStep
from lean_plugins.ledger import Ledger
from tests.stories260k import stories_dir

torch = pytest.importorskip("torch")

SYSTEM = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun."


@pytest.fixture(scope="module")
def llm():
    from lean_plugins.pruning import LeanLocalLLM

    return LeanLocalLLM(stories_dir(), max_new_tokens=24)


def reference_greedy(llm, prompt: str, n: int) -> list[int]:
    """Greedy decoding by full recomputation (no KV cache), the plain way."""
    ids = llm.encode(prompt)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            logits = llm.model(torch.tensor([ids + out]), use_cache=False).logits[0, -1]
            token = int(logits.argmax())
            if token in llm.eos_token_ids:
                break
            out.append(token)
    return out


def test_backend_reported_and_greedy_matches_recomputation(llm) -> None:
    assert llm.attention_backend in ("sdpa", "eager")  # no CUDA here, so never flash
    result = llm.generate("Once upon a time", max_new_tokens=20)
    assert result.token_ids == reference_greedy(llm, "Once upon a time", 20)
    assert result.completion_tokens == 20 and result.finish_reason == "max_tokens"
    assert result.prompt_tokens == len(llm.encode("Once upon a time"))
    assert "Lily" in result.text or len(result.text) > 20


def test_stop_sequence_cuts_text_and_never_streams(llm) -> None:
    full = llm.generate("Once upon a time", max_new_tokens=30).text
    stop = "little"
    assert stop in full
    chunks = list(llm.stream("Once upon a time", max_new_tokens=30, stop=[stop]))
    streamed = "".join(c.text for c in chunks)
    result = chunks[-1].result
    assert result is not None and result.finish_reason == "stop_sequence" and result.stop_sequence == stop
    assert streamed == result.text == full[: full.index(stop)]
    assert all(stop not in c.text for c in chunks)


def test_stopping_criterion_sees_every_token_and_stops_cleanly(llm) -> None:
    seen: list[GenerationStep] = []

    def after_five(step: GenerationStep) -> bool:
        seen.append(step)
        return step.n_tokens >= 5

    result = llm.generate("Once upon a time", max_new_tokens=30, stopping_criteria=[after_five])
    assert [s.n_tokens for s in seen] == [1, 2, 3, 4, 5]
    assert result.finish_reason == "budget" and len(result.token_ids) == 5
    assert result.text == seen[-1].text and result.text
    assert all(0.0 <= s.eos_probability <= 1.0 for s in seen)


def test_criterion_stop_reason_is_reported(llm) -> None:
    class Confident:
        stop_reason = "confidence"

        def __call__(self, step: GenerationStep) -> bool:
            return step.n_tokens == 3

    result = llm.generate("Once upon a time", stopping_criteria=[Confident()])
    assert result.finish_reason == "confidence" and len(result.token_ids) == 3


def test_batch_generation_equals_one_by_one(llm) -> None:
    prompts = ["Once upon a time", "Tom had a big red ball. One day", "Hi"]
    batch = llm.generate_batch(prompts, max_new_tokens=12)
    single = [llm.generate(p, max_new_tokens=12) for p in prompts]
    assert [r.token_ids for r in batch] == [r.token_ids for r in single]


def test_prefix_cache_reused_only_for_the_same_prefix_tokens(llm) -> None:
    llm.clear_prefix_cache()
    prompt = SYSTEM + " One day she found a ball."
    cold = llm.generate(prompt, max_new_tokens=16)
    first = llm.generate(prompt, prefix=SYSTEM, max_new_tokens=16)
    again = llm.generate(SYSTEM + " One day she saw a cat.", max_new_tokens=16)
    assert first.cached_prefix_tokens > 10 and again.cached_prefix_tokens == first.cached_prefix_tokens
    assert first.token_ids == cold.token_ids
    assert again.token_ids == reference_greedy(llm, SYSTEM + " One day she saw a cat.", 16)
    # One changed word in the prefix: its cached tokens no longer match, nothing is reused.
    changed = SYSTEM.replace("Lily", "Sue") + " One day she found a ball."
    other = llm.generate(changed, max_new_tokens=16)
    assert other.cached_prefix_tokens < len(llm.encode("Once upon a time, there was a little girl named"))
    assert other.token_ids == reference_greedy(llm, changed, 16)


def test_usage_is_recorded_in_the_ledger(llm) -> None:
    with Ledger() as ledger:
        result = llm.generate("Once upon a time", max_new_tokens=8)
    (event,) = ledger.events
    assert (event.layer, event.kind, event.model) == ("local", "serve", llm.model_name)
    assert event.input_before == result.prompt_tokens and event.output_before == result.completion_tokens == 8
    assert event.input_after == event.output_after == 0


def test_async_stream_and_generate(llm) -> None:
    async def run() -> tuple[str, str]:
        parts = [c.text async for c in llm.astream("Once upon a time", max_new_tokens=10)]
        result = await llm.agenerate("Once upon a time", max_new_tokens=10)
        return "".join(parts), result.text

    streamed, text = asyncio.run(run())
    assert streamed == text and text


def test_bad_arguments_are_clear(llm) -> None:
    with pytest.raises(ConfigurationError, match="max_new_tokens"):
        llm.generate("Hi", max_new_tokens=0)
    with pytest.raises(ConfigurationError, match="context window"):
        llm.generate(list(range(3, 600)))
    with pytest.raises(ConfigurationError, match="attention backend"):
        type(llm)(llm.model, llm.tokenizer, attention="flash")
