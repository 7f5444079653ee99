"""Entries a tenant's ``CachedLLM`` stores are that tenant's: its ``clear()`` keeps the others'."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("gptcache")
pytest.importorskip("llama_index.core")

from lean_plugins.llama_index import CachedLLM

from lean_plugins.cache import LeanCache
from tests.integrations.llama_index.test_cached_llm import CountingMockLLM


def test_a_tenants_clear_keeps_the_other_tenants_entries(tmp_path: Path) -> None:
    shared = LeanCache(path=tmp_path, mode="exact")
    inner = {t: CountingMockLLM(max_tokens=3) for t in ("acme", "beta")}
    llms = {t: CachedLLM(llm=inner[t], cache=shared, tenant=t) for t in inner}
    for llm in llms.values():
        llm.complete("What is our refund policy?")
        llm.complete("What is our refund policy?")
    assert [inner[t].calls for t in inner] == [1, 1]  # each tenant's second call was a hit
    LeanCache(path=tmp_path, mode="exact", tenant="acme").clear()
    for llm in llms.values():
        llm.complete("What is our refund policy?")
    assert [inner[t].calls for t in inner] == [2, 1]  # acme's entry is gone, beta's is served
