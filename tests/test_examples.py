"""The examples in examples/ run offline, as a user would run them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("name", ["langchain_rag", "llamaindex_query_engine"])
def test_rag_example_answers_from_the_knowledge_base_and_caches_the_repeat(name, capsys) -> None:
    from lean_plugins.ledger import Ledger

    with Ledger() as ledger:
        answers = load_example(name).main()
    assert "687 Earth days" in answers[0]
    assert "465 degrees Celsius" in answers[1]
    assert answers[2] == answers[0]
    assert ledger.totals("cache")["events"] == 1  # the repeat was served from the cache
    assert ledger.totals("compress")["events"] >= 2
    compress = ledger.totals("compress")
    assert compress["input_after"] < compress["input_before"]
    printed = capsys.readouterr().out
    assert "compress" in printed and "cache" in printed


@pytest.mark.slow
def test_local_pruned_model_example_prunes_and_serves_under_a_budget(capsys) -> None:
    from lean_plugins.ledger import Ledger
    from lean_plugins.tokens import count_tokens
    from tests.stories260k import STORIES, stories_dir

    with Ledger() as ledger:  # the model folder and calibration text a user passes
        stories = load_example("local_pruned_model").main([str(stories_dir()), str(STORIES)])
    printed = capsys.readouterr().out
    before, after = (
        int(x.replace(",", "")) for x in printed.split("pruned ")[1].split(" parameters")[0].split(" -> ")
    )
    assert 0.75 * before <= after <= 0.85 * before  # 20% of the parameters removed
    assert len(stories) == 2 and all(s.strip() for s in stories)
    budget = ledger.totals("budget")
    assert budget["events"] == 2 and budget["output_after"] <= 2 * 48
    assert ledger.totals("local")["events"] == 2  # served locally, no API call
    # The budget is counted in the model's own tokens; cl100k may differ, but not by much.
    assert all(count_tokens(s) < 200 for s in stories)


def readme_quickstart(marker: str) -> str:
    """The first ```python block after ``<!-- quickstart:MARKER -->`` in README.md."""
    text = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    after = text.split(f"<!-- quickstart:{marker} -->", 1)[1]
    return after.split("```python\n", 1)[1].split("\n```", 1)[0]


@pytest.mark.slow
@pytest.mark.parametrize("marker", ["langchain", "llamaindex"])
def test_readme_quickstart_runs_as_pasted(marker, capsys) -> None:
    code = readme_quickstart(marker)
    exec(compile(code, f"README quickstart:{marker}", "exec"), {"__name__": "__main__"})
    printed = capsys.readouterr().out
    answers = [line for line in printed.splitlines() if "687 Earth days" in line]
    assert len(answers) == 2 and answers[0] == answers[1]
    assert "cache" in printed and "compress" in printed  # the ledger table
