"""Core parts of the agent layers (lean_plugins.agents): tool-result compression, budgets per
step and run, request token counts, the breakpoint prefix-cache simulation."""

from __future__ import annotations

import json

import pytest

from lean_plugins.agents import (
    AgentBudget,
    BreakpointCacheRule,
    Segment,
    ToolResultCompressor,
    message_tokens,
    replayed_budget_event,
    request_segments,
    request_tokens,
    simulate_breakpoint_cache,
    step_output_budget,
)
from lean_plugins.errors import ConfigurationError
from lean_plugins.ledger import Ledger
from lean_plugins.tokens import count_tokens

FILLER = [
    "The valley was settled by farmers who grew barley and kept goats on the upper slopes.",
    "Travellers often remarked on the narrow roads and the cold wind that came down from the pass.",
    "A small market was held in the square every week, where wool and cheese were traded.",
    "The old chapel on the hill had been rebuilt several times after storms damaged its roof.",
    "Local songs told of shepherds, floods and the long winters of the region.",
    "Children walked to a school in the next village until a new one opened nearby.",
]
ANSWER = "The bridge over the Tarn river was completed by the engineer Alma Verhoeven."


def long_text(n: int = 4, answer_at: int = 2) -> str:
    paragraphs = []
    for i in range(n):
        body = " ".join(FILLER[(i + j) % len(FILLER)] for j in range(len(FILLER)))
        if i == answer_at:
            body = body + " " + ANSWER
        paragraphs.append(body)
    return "\n\n".join(paragraphs)


@pytest.fixture(scope="module")
def compressor() -> ToolResultCompressor:
    from lean_plugins.compress import LeanCompressor

    return ToolResultCompressor(LeanCompressor(record_ledger=False), rate=0.33, min_tokens=60, min_string_tokens=30)


def test_long_text_compressed_for_the_goal_and_answer_kept(compressor: ToolResultCompressor) -> None:
    text = long_text()
    done = compressor.compress(text, "Who completed the bridge over the Tarn river?")
    assert done.kind == "text" and done.changed
    assert done.tokens < 0.5 * done.original_tokens
    assert "Alma Verhoeven" in done.text
    assert done.original_tokens == count_tokens(text) and done.tokens == count_tokens(done.text)


def test_memoised_same_output_and_no_second_model_call(compressor: ToolResultCompressor) -> None:
    text = long_text(answer_at=1)
    first = compressor.compress(text, "Who built the bridge?")
    spent = compressor.compress_seconds
    again = compressor.compress(text, "Who built the bridge?")
    assert again == first and compressor.compress_seconds == spent
    assert compressor.cached(text, "Who built the bridge?") == first
    assert compressor.cached(text, "another goal") is None


def test_short_results_untouched(compressor: ToolResultCompressor) -> None:
    done = compressor.compress("42 results; see id abc-123.", "how many?")
    assert done.kind == "short" and done.text == "42 results; see id abc-123." and not done.changed


def test_json_structure_numbers_and_short_strings_kept(compressor: ToolResultCompressor) -> None:
    payload = {
        "query": "tarn bridge",
        "total": 3,
        "ratio": 0.125,
        "ok": True,
        "missing": None,
        "hits": [
            {"id": f"doc-{i}", "path": f"library/Tarn.txt#p{i}", "score": 10.5 - i, "text": long_text(2, answer_at=i % 2)}
            for i in range(3)
        ],
    }
    text = json.dumps(payload, indent=2)
    done = compressor.compress(text, "Who completed the bridge over the Tarn river?")
    assert done.kind == "json" and done.changed
    out = json.loads(done.text)
    assert set(out) == set(payload)
    assert [set(h) for h in out["hits"]] == [set(h) for h in payload["hits"]]
    for key in ("query", "total", "ratio", "ok", "missing"):
        assert out[key] == payload[key]
    for got, was in zip(out["hits"], payload["hits"], strict=True):
        assert (got["id"], got["path"], got["score"]) == (was["id"], was["path"], was["score"])
        assert count_tokens(got["text"]) <= count_tokens(was["text"])
    assert "Alma Verhoeven" in done.text


def test_fenced_code_kept_verbatim(compressor: ToolResultCompressor) -> None:
    code = "```python\ndef area(r):\n    return 3.14159 * r * r  # the the the\n```"
    text = long_text(2) + "\n\n" + code + "\n\n" + long_text(2, answer_at=1)
    done = compressor.compress(text, "Who completed the bridge?")
    assert done.changed and code in done.text


def test_max_tokens_caps_a_very_long_result() -> None:
    from lean_plugins.compress import LeanCompressor

    text = long_text(6, answer_at=4)
    goal = "Who completed the bridge over the Tarn river?"
    plain = ToolResultCompressor(LeanCompressor(record_ledger=False), rate=0.5, min_tokens=60, max_tokens=80, keep_best=0)
    done = plain.compress(text, goal)
    assert done.tokens <= 100  # the cap, give or take whole words
    # keep_best: the paragraph sharing most of the goal's words is kept whole, even past the cap
    best = ToolResultCompressor(LeanCompressor(record_ledger=False), rate=0.5, min_tokens=60, max_tokens=80)
    kept = best.compress(text, goal)
    answer_paragraph = text.split("\n\n")[4]
    assert answer_paragraph in kept.text
    assert kept.tokens <= count_tokens(answer_paragraph) + 20


def test_compressor_copy_does_not_book_its_own_ledger_events() -> None:
    from lean_plugins.compress import LeanCompressor

    booking = LeanCompressor(record_ledger=True)
    tool_compressor = ToolResultCompressor(booking, min_tokens=60)
    assert booking.record_ledger is True and tool_compressor.compressor.record_ledger is False
    with Ledger() as ledger:
        tool_compressor.compress(long_text(), "bridge?")
    assert ledger.events == []


@pytest.mark.parametrize(
    "kwargs", [{"rate": 0}, {"rate": 1.5}, {"min_tokens": 0}, {"max_tokens": 0}, {"memo_size": 0}]
)
def test_bad_settings_raise(kwargs: dict) -> None:
    with pytest.raises(ConfigurationError):
        ToolResultCompressor(object(), **kwargs)


def test_agent_budget_per_step_and_run() -> None:
    budget = AgentBudget(step_tokens=100, run_tokens=250)
    assert budget.for_step(0) == 100
    assert budget.for_step(180) == 70
    assert budget.for_step(250) == 0 and budget.exhausted(250) and budget.exhausted(400)
    assert AgentBudget(step_tokens=50).for_step(10_000) == 50
    assert AgentBudget(run_tokens=50).for_step(20) == 30
    with pytest.raises(ConfigurationError):
        AgentBudget()
    with pytest.raises(ConfigurationError):
        AgentBudget(step_tokens=0)
    with pytest.raises(ConfigurationError):
        AgentBudget(step_tokens=True)


def test_step_output_budget_gives_the_step_against_the_baseline() -> None:
    budget = step_output_budget(40, 200)
    assert budget.budget_for("q") == 40 and budget.max_tokens == 200
    assert budget.settings()["step_tokens"] == 40
    assert step_output_budget(40).max_tokens == 40  # no baseline: no saving beyond what was generated
    # the baseline is the ledger's only: a step budget above it is still the call's budget
    assert step_output_budget(300, 200).budget_for() == 300 and step_output_budget(300, 200).max_tokens == 300


def test_replayed_budget_event_books_only_a_cut_answer() -> None:
    with Ledger() as ledger:
        assert replayed_budget_event({"stop_reason": "natural", "tokens_generated": 30}, 200, "gpt-4o-mini") is None
        assert replayed_budget_event(None, 200, "gpt-4o-mini") is None
        event = replayed_budget_event({"stop_reason": "budget", "tokens_generated": 40, "budget": 40}, 200, "gpt-4o-mini")
    assert event is not None and (event.output_before, event.output_after) == (200, 40)
    assert ledger.totals("budget")["output_before"] == 200


def test_request_tokens_additive_and_segments_agree() -> None:
    tools = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "human", "content": "Find the bridge."},
        {"role": "ai", "content": "", "tool_calls": [{"name": "search", "args": {"q": "bridge"}, "id": "c1"}]},
        {"role": "tool", "content": long_text(1)},
    ]
    total = request_tokens(messages, tools)
    shorter = [*messages[:-1], {"role": "tool", "content": "short"}]
    assert total - request_tokens(shorter, tools) == count_tokens(long_text(1)) - count_tokens("short")
    assert sum(s.tokens for s in request_segments(messages, tools)) == total
    assert message_tokens(messages[2]) > message_tokens({"role": "ai", "content": ""})


def test_breakpoint_cache_reads_what_an_earlier_request_wrote() -> None:
    rule = BreakpointCacheRule(min_prefix_tokens=100)
    stable = Segment("system " * 150, 150, breakpoint=True)
    first = [stable, Segment("question one", 10)]
    second = [stable, Segment("question two", 10)]
    sim = simulate_breakpoint_cache([first, second], rule)
    assert (sim.read_tokens, sim.write_tokens, sim.input_tokens) == (150, 150, 320)
    assert sim.billed_input_tokens == pytest.approx(20 + 150 * 0.1 + 150 * 1.25)
    unmarked = [Segment(s.text, s.tokens) for s in first]
    none = simulate_breakpoint_cache([unmarked, unmarked], rule)
    assert none.read_tokens == none.write_tokens == 0  # no breakpoint, no cache
    short = simulate_breakpoint_cache([[Segment("x", 50, True)], [Segment("x", 50, True)]], rule)
    assert short.read_tokens == 0  # under the minimum prefix


def test_compact_history_keeps_keys_equal_and_different() -> None:
    from lean_plugins.agents import compact_history
    from lean_plugins.cache.keys import request_key

    long = long_text(2)
    history = [
        {"role": "system", "content": "You are terse."},
        {"role": "human", "content": "Find the bridge."},
        {"role": "tool", "content": long, "tool_call_id": "c1"},
    ]
    spaced = [*history[:2], {**history[2], "content": long.replace(" ", "  ")}]  # the same exact-match form
    other = [*history[:2], {**history[2], "content": long + " More."}]
    key = request_key(compact_history(history))
    assert key == request_key(compact_history(spaced))
    assert key != request_key(compact_history(other))
    assert key != request_key(compact_history([*history[:2], {**history[2], "tool_call_id": "c2"}]))
    question = [{"role": "human", "content": "x " * 600}]
    assert compact_history(question) == question  # a final user message is matched on its text


def test_a_json_value_compressed_to_nothing_says_it_was_omitted(compressor: ToolResultCompressor) -> None:
    # Found by a user-style attack: a long opaque payload came back as "", which reads as a
    # field that was empty at the source.
    payload = "x" * 3000
    result = compressor.compress(json.dumps({"payload": payload, "n": 7, "tags": ["a", "b"]}), goal="Please echo this")
    data = json.loads(result.text)
    assert data["n"] == 7 and data["tags"] == ["a", "b"]
    assert data["payload"] != ""
    assert data["payload"] in payload or "omitted" in data["payload"]


def test_provider_side_tools_are_the_tool_dicts_that_are_not_function_schemas() -> None:
    from lean_plugins.agents import provider_side_tools

    client = [
        object(),  # a tool object: the application runs it
        {"type": "function", "function": {"name": "search", "parameters": {}}},
        {"type": "function", "name": "search", "parameters": {}},  # OpenAI Responses, flat
        {"type": "custom", "name": "grammar_tool"},
        {"name": "search", "description": "d", "input_schema": {}},  # Anthropic client tool
    ]
    assert provider_side_tools(client) == []
    provider = [
        {"type": "web_search"},
        {"type": "web_search_20250305", "name": "web_search"},
        {"google_search": {}},
        {"type": "mcp", "server_url": "https://example.invalid"},
    ]
    assert provider_side_tools([*client, *provider]) == ["web_search", "web_search_20250305", "google_search", "mcp"]
