"""The freshness check (``lean-plugins bench freshness`` prints the full table): no stale or
wrong answer served after document edits, deletions, additions, history renames and follow-ups,
in both frameworks, while unchanged repeats are still served."""

from __future__ import annotations

import pytest

from lean_plugins.demo.freshness_check import edited, run_check, stale_total, tables
from tests.test_rag_cache_check import one_torch_thread  # noqa: F401 - a fixture


def test_an_edit_changes_every_number() -> None:
    assert edited("687 Earth days, 2 moons") == "688 Earth days, 3 moons"


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_no_stale_answer_is_served_and_repeats_still_are(tmp_path) -> None:
    results, costs = run_check(limit=5, workdir=tmp_path)
    print("\n".join(tables(results, costs)))
    assert stale_total(results) == 0, [(r.framework, r.phase, r.stale_ids) for r in results if r.stale]
    by = {(r.framework, r.phase): r for r in results}
    for framework in ("langchain", "llama_index"):
        assert by[framework, "repeat"].served == by[framework, "repeat"].requests  # a cache that serves
        # Every document changed: no entry made before the edit is served; what is served is a
        # paraphrase of a question asked again after the edit, as in the first pass.
        assert by[framework, "edit"].served == by[framework, "fill"].served
    # Conversations at the same point share answers; renamed ones do not get the old name.
    assert by["langchain", "history"].served > 0 and by["langchain", "follow-up"].served > 0
    assert all(len(c.plain_ms) == 5 for c in costs)
