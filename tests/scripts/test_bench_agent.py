"""scripts/bench_agent.py: the real reader's view of an agent's final step (the rendering of
tool calls and results as chat turns, the same for the plain and the lean run) and the parser
of a reader's attempted tool call."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest

pytest.importorskip("langchain")

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location("bench_agent", SCRIPTS / "bench_agent.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_library(bench):
    """Two articles of seeded filler sentences; paragraph 2 of the first holds the answer."""
    rng = random.Random(3)
    vocab = "river valley harbour council market bridge castle railway festival museum".split()

    def filler(n: int) -> str:
        return " ".join(
            f"The {rng.choice(vocab)} near the {rng.choice(vocab)} was rebuilt in {rng.randrange(1800, 1990)}."
            for _ in range(n)
        )

    articles = []
    for title in ("Alder_Town", "Birch_Port"):
        paragraphs = [{"context": filler(9), "qas": []} for _ in range(4)]
        articles.append({"title": title, "paragraphs": paragraphs})
    articles[0]["paragraphs"][2]["context"] += " The lighthouse of Alder Town was designed by Mirela Vostok."
    return bench.Library(articles)


def test_tool_calls_and_results_become_chat_turns_in_order(bench) -> None:
    request = [
        {"role": "system", "content": [{"type": "text", "text": "You answer from tools.", "cache_control": {"type": "ephemeral"}}]},
        {"role": "human", "content": "Who designed the lighthouse?"},
        {"role": "ai", "content": "", "tool_calls": [
            {"name": "search_articles", "args": {"query": "lighthouse designer"}, "id": "c1"},
            {"name": "get_article_stats", "args": {"title": "Alder_Town"}, "id": "c2"},
        ]},
        {"role": "tool", "content": "page: designed by Mirela Vostok"},
        {"role": "tool", "content": [{"type": "text", "text": '{"paragraphs": 4}'}]},
    ]  # fmt: skip
    turns = bench.reader_messages(request, "Who designed the lighthouse?")
    assert [t["role"] for t in turns] == ["system", "user", "assistant", "user", "user", "user"]
    assert turns[0]["content"] == "You answer from tools."
    assert turns[1]["content"] == "Who designed the lighthouse?"
    # both calls, with their arguments and ids, as text the reader reads
    for piece in ("search_articles", "lighthouse designer", "get_article_stats", "Alder_Town", "c1", "c2"):
        assert piece in turns[2]["content"]
    # each result names the call it answers, in the order the calls were made
    assert turns[3]["content"] == "Result of search_articles:\npage: designed by Mirela Vostok"
    assert turns[4]["content"] == 'Result of get_article_stats:\n{"paragraphs": 4}'
    assert turns[5]["content"].endswith("Who designed the lighthouse?")
    assert all(isinstance(t["content"], str) for t in turns)


def test_plain_and_lean_final_requests_render_the_same_way(bench, tmp_path) -> None:
    library = tiny_library(bench)
    goal = "Who designed the lighthouse of Alder Town?"
    task = {"kind": "search", "goal": goal, "golds": ["Mirela Vostok"], "split": "dev"}
    tasks = [task, dict(task, kind="search (repeat)")]
    plain = bench.run(tasks, library, lean=False, cache_dir=str(tmp_path))["rows"]
    lean = bench.run(tasks, library, lean=True, cache_dir=str(tmp_path))["rows"]

    # the repeat's final step: served again by plain, replayed by lean's cache (no request)
    assert plain[1]["final_request"] is not None and lean[1]["final_request"] is None
    plain_turns = bench.reader_messages(plain[0]["final_request"], goal)
    lean_turns = bench.reader_messages(lean[0]["final_request"], goal)
    assert [t["role"] for t in plain_turns] == [t["role"] for t in lean_turns]
    differ = [i for i, (a, b) in enumerate(zip(plain_turns, lean_turns, strict=True)) if a != b]
    assert differ == [3]  # only the tool result: what each run sent
    query = plain[0]["tool_calls"][0][1]
    page = library.search_page(bench.json.loads(query)["query"])
    assert plain_turns[3]["content"] == "Result of search_articles:\n" + page
    sent = bench.tool_text(lean[0]["final_request"][-1])
    assert lean_turns[3]["content"] == "Result of search_articles:\n" + sent
    assert len(sent) < len(page)  # the lean run's reader reads the compressed result


def test_a_reply_counts_as_a_tool_call_only_when_it_names_a_tool_and_its_required_arguments(bench) -> None:
    schemas = [{"name": "search_articles", "parameters": {"required": ["query"]}}]
    tagged = '<tool_call>{"name": "search_articles", "arguments": {"query": "lighthouse"}}</tool_call>'
    assert bench.parse_tool_call(tagged, schemas) == {
        "name": "search_articles",
        "args": {"query": "lighthouse"},
    }
    assert bench.parse_tool_call(
        'Sure: {"name": "search_articles", "arguments": {"query": "x"}} done', schemas
    )
    assert bench.parse_tool_call('{"name": "search_articles", "arguments": {}}', schemas) is None
    assert bench.parse_tool_call('{"name": "read_file", "arguments": {"query": "x"}}', schemas) is None
    assert bench.parse_tool_call("The lighthouse was designed in 1890.", schemas) is None
    assert bench.parse_tool_call('<tool_call>{"name": "search_articles", "arguments": ', schemas) is None
