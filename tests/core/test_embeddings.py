"""The shared MiniLM encoder: offline, normalised, batched, one instance per process."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("torch")

from lean_plugins import embeddings
from lean_plugins.errors import ModelLoadError


def test_shared_instance_and_shape() -> None:
    enc = embeddings.get_encoder()
    assert embeddings.get_encoder() is enc
    assert embeddings.get_encoder("sentence-transformers/all-MiniLM-L6-v2") is enc  # hub name -> bundled copy
    vecs = enc.encode(
        ["What is the capital of France?", "Which city is France's capital?", "I like green tea."]
    )
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sims = embeddings.cosine(vecs, vecs)
    assert sims[0, 1] > 0.8 > 0.3 > sims[0, 2]


def test_batching_and_order_do_not_change_vectors() -> None:
    enc = embeddings.get_encoder()
    texts = [f"sentence number {i} " + "word " * (i % 7) for i in range(20)]
    a = enc.encode(texts, batch_size=3)
    b = np.stack([enc.encode(t) for t in texts])
    assert np.allclose(a, b, atol=1e-5)
    assert enc.encode([]).shape == (0, 384)


def test_length_batches_bound_the_padding() -> None:
    lengths = [5, 78, 9, 12, 6, 40, 41, 44, 7, 13, 60, 8, 39] * 3
    batches = embeddings.length_batches(lengths, batch_size=8)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # each text once
    for batch in batches:
        assert len(batch) <= 8
        width = max(lengths[i] for i in batch)
        padding = width * len(batch) - sum(lengths[i] for i in batch)
        assert len(batch) == 1 or padding <= embeddings.MAX_PADDING_SHARE * width * len(batch)
    # one batch of 39 padded to 78 would be 56% padding; the batches here pad at most 20%
    assert len(batches) > 1


def test_int8_encoder_is_opt_in_and_close_to_float32() -> None:
    """The shared encoder stays float32 (the cache's thresholds were set on its vectors);
    ``dtype="int8"`` is a separate instance with quantised linear layers whose vectors stay
    close to float32's and find the same paraphrase of each question."""
    import torch

    default = embeddings.get_encoder()
    int8 = embeddings.get_encoder(dtype="int8")
    assert int8 is not default and default.dtype == "float32"
    default.encode("load")
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in default._model.modules())
    texts = ["What is the capital of France?", "Which city is France's capital?", "I like green tea.",
             "How do I reset my password?", "The password reset link is in the settings page."]
    a, b = default.encode(texts), int8.encode(texts)
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in int8._model.modules())
    assert (a * b).sum(1).min() > 0.97
    sims_a, sims_b = a @ a.T - 2 * np.eye(5), b @ b.T - 2 * np.eye(5)
    paraphrases = [0, 1, 3, 4]  # "I like green tea." has no neighbour worth ranking
    assert (sims_a.argmax(1)[paraphrases] == [1, 0, 4, 3]).all()
    assert (sims_b.argmax(1)[paraphrases] == [1, 0, 4, 3]).all()


def test_matches_sentence_transformers_reference() -> None:
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(embeddings.default_model_path()), device="cpu")
    texts = ["A short one.", "A somewhat longer sentence about token budgets and caches."]
    assert np.allclose(embeddings.embed(texts), ref.encode(texts), atol=1e-5)


def test_concurrent_use_is_safe() -> None:
    enc = embeddings.get_encoder()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                enc.encode(["concurrent use of one tokenizer", "another sentence"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_bad_model_path_names_the_fix(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="bundled all-MiniLM-L6-v2"):
        embeddings.SentenceEncoder(tmp_path / "nothing-here").encode("x")
