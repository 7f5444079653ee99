"""Core output budget: exact streaming counts, the stopping policy, accounting."""

from __future__ import annotations

import asyncio
import contextvars
import random
import re
import threading
from pathlib import Path

import pytest

from lean_plugins.budget import BudgetPredictor, OutputBudget, StreamingTokenCounter, UsageAccountant
from lean_plugins.errors import BudgetExceededError, ConfigurationError
from lean_plugins.generation import GenerationStep
from lean_plugins.ledger import Ledger
from lean_plugins.pricing import cost
from lean_plugins.tokens import encode, get_tokenizer

STORY = (
    'Spot. Spot saw the shiny car and said, "Wow, Kitty, your car is so bright and clean!" '
    'Kitty smiled and replied, "Thank you, Spot. I polish it every day."\n\n'
    "After playing with the car, Kitty and Spot felt thirsty. They found a small pond with clear "
    "water. They drank the water and felt very happy. They played together all day and became "
    "best friends.\n\nOnce upon a time, in a big forest, there lived a rhinoceros named Roxy. "
    "Roxy loved to climb. She climbed trees, rocks, and hills. One day, Roxy found an icy hill."
)
# Odd cases for the piece splitter: numbers, contractions, runs of spaces and newlines,
# punctuation runs, non-ASCII (multi-byte) characters, a long letter run.
ODD = (
    "It's 3.14159 and 1234567 -- isn't it?!  Yes...   \n\n\n  Ünïcödé café — 東京 日本語 😀😀. "
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa  x\t\ty\r\nz ''' \"\"\" ))) !!! ok.\n- a\n- b\n"
)


def random_chunks(text: str, rng: random.Random, max_len: int = 6) -> list[str]:
    chunks, i = [], 0
    while i < len(text):
        n = rng.randint(1, max_len)
        chunks.append(text[i : i + n])
        i += n
    return chunks


def word_chunks(text: str) -> list[str]:
    """How LangChain's GenericFakeChatModel streams: words and single whitespace chars."""
    return [c for c in re.split(r"(\s)", text) if c]


def texts(shared_data_dir=None) -> list[str]:
    return [STORY, ODD, STORY + "\n" + ODD]


@pytest.mark.parametrize("seed", range(8))
def test_streaming_counter_commits_exact_prefix_ids(seed: int) -> None:
    rng = random.Random(seed)
    for text in texts():
        full = encode(text)
        counter = StreamingTokenCounter()
        seen = ""
        for chunk in random_chunks(text, rng, max_len=rng.choice([1, 3, 9])):
            counter.feed(chunk)
            seen += chunk
            # committed ids never change later: they are the first ids of the full encoding
            assert counter.committed_ids == full[: counter.committed_tokens]
            assert counter.total_tokens == len(encode(seen))
            assert counter.text == seen
        counter.finish()
        assert counter.committed_ids == full


def test_lazy_counter_is_exact_once_near_the_threshold() -> None:
    import regex

    pieces = regex.compile(get_tokenizer()._pat_str)
    rng = random.Random(3)
    for text in texts():
        full = encode(text)
        counter = StreamingTokenCounter()
        seen = ""
        for chunk in random_chunks(text, rng, max_len=4):
            counter.feed(chunk, exact_from=40)
            seen += chunk
            assert counter.committed_ids == full[: counter.committed_tokens]
            assert counter.total_tokens == len(encode(seen))
            if counter.committed_tokens >= 40:  # past the threshold: all but the last piece
                assert counter.tail == list(pieces.finditer(seen))[-1].group()
        counter.finish()
        assert counter.committed_ids == full


def test_streaming_counter_on_real_corpora() -> None:
    from tests.stories260k import STORIES

    rng = random.Random(0)
    readme = Path(__file__).resolve().parents[2] / "README.md"  # prose, Markdown, code, tables
    for path in (readme, STORIES):
        text = path.read_text(encoding="utf-8")[:20_000]
        counter = StreamingTokenCounter()
        for chunk in random_chunks(text, rng, max_len=8):
            counter.feed(chunk)
        counter.finish()
        assert counter.committed_ids == encode(text)


def run_stream(budget: OutputBudget, chunks: list[str], **kwargs):
    run = budget.start("Tell me a story.", **kwargs)
    shown, consumed = "", ""
    for chunk in chunks:
        consumed += chunk
        shown += run.feed(chunk)
        if run.stopped:
            break
    result = budget.finish(run)
    shown += run.remaining_text()
    return result, shown, consumed


@pytest.mark.parametrize("chunking", ["words", "chars", "random"])
def test_hard_budget_keeps_exactly_the_first_n_tokens(chunking: str) -> None:
    rng = random.Random(1)
    tok = get_tokenizer()
    for text in texts():
        full_ids = encode(text)
        chunks = {
            "words": word_chunks(text),
            "chars": list(text),
            "random": random_chunks(text, rng),
        }[chunking]
        for n in [1, 2, 5, 17, 40, 63, len(full_ids) - 1, len(full_ids), len(full_ids) + 5]:
            budget = OutputBudget(n, soft_window=0.0, record_usage=False)
            result, shown, consumed = run_stream(budget, chunks)
            assert result.tokens_used <= n
            assert len(encode(result.text)) <= n, "never one token over budget"
            assert shown == result.text, "what was streamed is exactly the kept text"
            if len(full_ids) <= n:
                assert result.stop_reason == "natural" and result.text == text
            else:
                assert result.stop_reason == "budget"
                expected = tok.decode_bytes(full_ids[:n]).decode("utf-8", errors="ignore")
                assert result.text == expected
                assert result.tokens_used == n
                assert text.startswith(consumed)
                # at most the open piece after the budget was read before stopping
                assert result.tokens_generated == len(encode(consumed))


def test_soft_budget_cuts_back_to_the_last_sentence_end_in_the_window() -> None:
    full_ids = encode(STORY)
    for n in range(20, len(full_ids), 7):
        budget = OutputBudget(n, record_usage=False)
        result, shown, _ = run_stream(budget, word_chunks(STORY))
        assert shown == result.text and STORY.startswith(result.text)
        assert result.tokens_used <= n
        window_start = n - int(0.15 * n)
        if result.stop_reason == "soft_budget":
            assert re.search(r"(?:[.!?][\"']?|\n)$", result.text), result.text[-20:]
            assert window_start <= len(encode(result.text)) < n
        else:
            assert result.stop_reason == "budget"
            # no sentence end lies in the window of the first n tokens
            prefix = get_tokenizer().decode(full_ids[:n])
            for m in re.finditer(r"[.!?][\"']?(?=\s)|\n+", prefix):
                assert len(encode(prefix[: m.end()])) < window_start or m.end() == len(prefix)


def test_non_streamed_answer_is_truncated_the_same_way() -> None:
    budget = OutputBudget(30, soft_window=0.0, record_usage=False)
    result = budget.apply(STORY)
    assert result.text == get_tokenizer().decode(encode(STORY)[:30])
    assert result.tokens_generated == len(encode(STORY))
    assert budget.apply("Short answer.").stop_reason == "natural"


def test_raise_on_stop_keeps_the_partial_text() -> None:
    budget = OutputBudget(10, soft_window=0.0, raise_on_stop=True, record_usage=False)
    with pytest.raises(BudgetExceededError) as info:
        budget.apply(STORY)
    assert info.value.partial_text == get_tokenizer().decode(encode(STORY)[:10])
    assert info.value.tokens_used == 10


def test_stream_helper_closes_the_producer_at_the_budget() -> None:
    produced: list[str] = []

    def producer():
        for chunk in word_chunks(STORY):
            produced.append(chunk)
            yield chunk

    budget = OutputBudget(12, soft_window=0.0, record_usage=False)
    gen = budget.stream(producer(), "q")
    out = "".join(gen)
    assert out == get_tokenizer().decode(encode(STORY)[:12])
    assert len(produced) < len(word_chunks(STORY)) // 2


# -- token mode: the stopping criterion of a local model ----------------------------------------
def steps(text: str, eos: dict[int, float] | None = None):
    """GenerationSteps as a local model would emit them, with cl100k ids."""
    ids = encode(text)
    tok = get_tokenizer()
    for i in range(1, len(ids) + 1):
        yield GenerationStep(tuple(ids[:i]), tok.decode(ids[:i]), (eos or {}).get(i, 0.0))


def drive(run, text, eos=None):
    last = None
    for step in steps(text, eos):
        last = step
        if run(step):
            break
    return last


def test_criterion_stops_exactly_at_the_budget() -> None:
    budget = OutputBudget(25, soft_window=0.0, record_usage=False)
    run = budget.stopping_criterion("q")
    last = drive(run, STORY)
    assert last.n_tokens == 25 and run.stopped
    result = run.finish()
    assert result.stop_reason == "budget" and result.tokens_used == 25
    assert result.text == get_tokenizer().decode(encode(STORY)[:25])


def test_criterion_soft_stop_and_natural_end() -> None:
    ids = encode(STORY)
    first_sentence_end = len(
        encode('Spot. Spot saw the shiny car and said, "Wow, Kitty, your car is so bright and clean!"')
    )
    n = first_sentence_end + 2  # the sentence end lies in the final 15% of this budget
    run = OutputBudget(n, record_usage=False).stopping_criterion()
    drive(run, STORY)
    result = run.finish()
    assert result.stop_reason == "soft_budget"
    assert result.text.endswith('clean!"') and result.tokens_used == first_sentence_end
    assert result.tokens_generated == n

    run = OutputBudget(len(ids) + 10, record_usage=False).stopping_criterion()
    drive(run, STORY)
    result = run.finish()
    assert result.stop_reason == "natural" and result.text == STORY


def test_confidence_stop_cuts_where_the_model_wanted_to_end() -> None:
    text = "The cat sat. It was happy. Then it ran away and never came back to the house."
    ids = encode(text)
    after_first = len(encode("The cat sat."))
    # eos probability high right after "The cat sat." (the step producing the next token)
    run = OutputBudget(100, confidence_threshold=0.3, record_usage=False).stopping_criterion()
    last = drive(run, text, eos={after_first + 1: 0.6})
    result = run.finish()
    assert result.stop_reason == "confidence"
    assert result.text == "The cat sat." and result.tokens_used == after_first
    assert last.n_tokens == after_first + 1 == result.tokens_generated

    # a spike mid-sentence: finish that sentence, then stop
    run = OutputBudget(100, confidence_threshold=0.3, record_usage=False).stopping_criterion()
    drive(run, text, eos={after_first + 2: 0.5})
    result = run.finish()
    assert result.stop_reason == "confidence" and result.text == "The cat sat. It was happy."

    # below the threshold: generation runs to its natural end
    run = OutputBudget(100, confidence_threshold=0.3, record_usage=False).stopping_criterion()
    drive(run, text, eos={after_first + 1: 0.2})
    assert run.finish().stop_reason == "natural"
    assert len(ids) < 100


# -- accounting ---------------------------------------------------------------------------------
def test_ledger_and_usage_accounting_match_tokens_produced() -> None:
    accountant = UsageAccountant()
    budget = OutputBudget(20, soft_window=0.0, model="gpt-4o-mini", tenant="acme", accountant=accountant)
    with Ledger() as ledger:
        stopped, _, consumed = run_stream(budget, word_chunks(STORY))
        natural = budget.apply("A short answer.", "Say something short.")
    produced = len(encode(consumed)) + len(encode("A short answer."))
    assert ledger.totals("llm")["output_after"] == produced
    b = ledger.totals("budget")
    assert b["events"] == 2 and b["output_after"] == produced
    # the stopped call would have run up to the caller's limit (20); the natural one saves nothing
    assert b["output_before"] == max(20, stopped.tokens_generated) + natural.tokens_generated
    totals = accountant.totals(model="gpt-4o-mini", tenant="acme")
    assert totals.calls == 2 and totals.output_tokens == produced
    assert totals.input_tokens == len(encode("Tell me a story.")) + len(encode("Say something short."))
    assert totals.dollars == pytest.approx(cost("gpt-4o-mini", totals.input_tokens, produced))
    assert accountant.totals(tenant="other").calls == 0


def test_cached_call_counts_avoided_tokens_not_spent() -> None:
    accountant = UsageAccountant()
    budget = OutputBudget(50, model="gpt-4o", accountant=accountant)
    with Ledger() as ledger:
        budget.apply("Paris is the capital.", "What is the capital of France?", cached=True)
    t = accountant.totals()
    assert t.cached_calls == 1 and t.output_tokens == 0 and t.avoided_output_tokens == 5
    assert t.avoided_dollars > 0 and t.dollars == 0
    assert ledger.totals("llm")["output_after"] == 0 and ledger.totals("budget")["events"] == 0
    # the cache books its hit itself (the cache-hit contract): the budget adds nothing
    assert ledger.events == []


def test_accounting_is_thread_safe() -> None:
    accountant = UsageAccountant()
    budget = OutputBudget(15, soft_window=0.0, model="gpt-4o-mini", accountant=accountant)
    chunks = word_chunks(STORY)
    produced: list[int] = []
    lock = threading.Lock()

    def worker(tenant: str) -> None:
        for _ in range(25):
            _, _, consumed = run_stream(budget, chunks, tenant=tenant)
            with lock:
                produced.append(len(encode(consumed)))

    with Ledger() as ledger:
        # a thread starts with an empty context: hand each one a copy so it sees the ledger
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(worker, f"t{i % 2}"))
            for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert accountant.totals().calls == 200 == ledger.totals("llm")["events"]
    assert accountant.totals().output_tokens == sum(produced) == ledger.totals("llm")["output_after"]
    assert accountant.totals(tenant="t0").calls == 100


async def test_accounting_is_async_safe_per_task_ledgers() -> None:
    budget = OutputBudget(10, soft_window=0.0, record_usage=True, accountant=UsageAccountant())

    async def call(i: int) -> tuple[int, int]:
        with Ledger() as ledger:
            run = budget.start("q")
            consumed = ""
            for chunk in word_chunks(STORY)[: 5 + i]:
                await asyncio.sleep(0)
                consumed += chunk
                run.feed(chunk)
                if run.stopped:
                    break
            run.finish()
            return ledger.totals("llm")["output_after"], len(encode(consumed))

    results = await asyncio.gather(*(call(i) for i in range(20)))
    assert all(seen == produced for seen, produced in results)


def test_predicted_budget_is_used_and_learned(tmp_path) -> None:
    predictor = BudgetPredictor(tmp_path / "p.json", min_samples=5, floor=4)
    budget = OutputBudget(200, predictor=predictor, route="qa", record_usage=False)
    assert budget.budget_for("Who wrote Hamlet?") == 200  # cold start: the caller's default
    for _ in range(6):
        budget.apply("William Shakespeare wrote it.", "Who wrote Hamlet?")
    predicted = budget.budget_for("Who wrote Hamlet?")
    assert 6 <= predicted < 20
    result = budget.apply(STORY, "Who wrote Hamlet?")
    assert result.budget == predicted and result.stopped


def test_bad_configuration_is_explained() -> None:
    with pytest.raises(ConfigurationError, match="max_tokens"):
        OutputBudget()
    with pytest.raises(ConfigurationError, match="positive"):
        OutputBudget(0)
    with pytest.raises(ConfigurationError, match="cold-start"):
        OutputBudget(predictor=BudgetPredictor())
    with pytest.raises(ConfigurationError, match="soft_window"):
        OutputBudget(10, soft_window=1.5)
    with pytest.raises(ConfigurationError, match="confidence_threshold"):
        OutputBudget(10, confidence_threshold=2.0)
