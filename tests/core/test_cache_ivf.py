"""Large namespaces switch the vector index from flat to IVF: lookups, deletes and reopening
still give the right entries. Real SQLite + FAISS; vectors from a seeded stand-in embedding so
the test can fill thousands of entries quickly."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gptcache")
pytest.importorskip("faiss")

from lean_plugins.cache import LeanCache
from lean_plugins.cache.stores import _AtomicFaiss


def _base(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(64).astype(np.float32)
    return v / np.linalg.norm(v)


def embedding(texts: Sequence[str]) -> np.ndarray:
    # "near: X" lies close to "X" (cosine ~0.99): a paraphrase the index must find.
    out = []
    for t in texts:
        if t.startswith("near: "):
            v = _base(t[6:]) + 0.1 * _base(t)
            out.append(v / np.linalg.norm(v))
        else:
            out.append(_base(t))
    return np.stack(out)


def test_namespace_switches_to_ivf_and_stays_right(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_AtomicFaiss, "IVF_MIN_VECTORS", 2000)
    cache = LeanCache(path=tmp_path, embedding=embedding, guard=False, verifier=False, threshold=0.9)
    prompts = [f"entry {i}" for i in range(3000)]
    cache.put_many(prompts[:1500], [f"a{i}" for i in range(1500)])
    store = cache._store("default")
    assert not store._faiss.is_ivf
    cache.put_many(prompts[1500:], [f"a{i}" for i in range(1500, 3000)])
    assert store._faiss.is_ivf and store._faiss.count() == 3000
    probes = list(range(0, 3000, 97))
    assert [cache.get(f"near: entry {i}") for i in probes] == [f"a{i}" for i in probes]
    cache.put("entry 5", "replaced")  # replaces: deletes the old vector from the IVF index
    assert cache.get("near: entry 5") == "replaced" and store._faiss.count() == 3000
    cache.close()
    reopened = LeanCache(path=tmp_path, embedding=embedding, guard=False, verifier=False, threshold=0.9)
    assert reopened.get("near: entry 2999") == "a2999" and reopened._store("default")._faiss.is_ivf
    reopened.close()
