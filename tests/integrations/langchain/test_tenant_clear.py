"""A tenant's ``clear()`` through the LangChain cache removes that tenant's entries only."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("gptcache")
pytest.importorskip("langchain_core")

from langchain_core.outputs import Generation
from lean_plugins.langchain import LeanCache

from lean_plugins.cache import LeanCache as CoreLeanCache

LLM = "[('_type', 'fake-list'), ('responses', ['x'])]"


def _text(cache: LeanCache) -> str | None:
    found = cache.lookup("What is our refund policy?", LLM)
    return None if found is None else found[0].text


def test_a_tenants_clear_keeps_the_other_tenants_entries(tmp_path: Path) -> None:
    shared = CoreLeanCache(path=tmp_path, mode="exact")
    acme, beta = LeanCache(shared, tenant="acme"), LeanCache(shared, tenant="beta")
    built = LeanCache(path=tmp_path, mode="exact", tenant="acme")  # settings as keywords
    plain = LeanCache(shared)
    for cache in (acme, beta, plain):
        cache.update("What is our refund policy?", LLM, [Generation(text=f"policy of {cache.tenant}")])
    assert _text(built) == "policy of acme"
    acme.clear()
    assert acme.lookup("What is our refund policy?", LLM) is None
    assert built.lookup("What is our refund policy?", LLM) is None
    assert _text(beta) == "policy of beta"
    assert _text(plain) == "policy of None"
    plain.clear()  # the entries stored without a tenant; the tenants keep theirs
    assert plain.lookup("What is our refund policy?", LLM) is None
    assert _text(beta) == "policy of beta"
