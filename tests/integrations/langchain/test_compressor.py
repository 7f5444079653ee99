"""LeanCompressor as a LangChain document compressor (in a real retriever) and transformer."""

from __future__ import annotations

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import BaseDocumentCompressor, BaseDocumentTransformer, Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore
from lean_plugins.langchain import LeanCompressor

from lean_plugins.compress.data import words
from lean_plugins.embeddings import get_encoder

DOCS = [
    Document(
        page_content=(
            "Rollo was the Viking leader who swore fealty to King Charles III of West Francia in 911, "
            "receiving the lands that later became the Duchy of Normandy for his many followers."
        ),
        metadata={"source": "normans.txt", "page": 1},
        id="a",
    ),
    Document(
        page_content=(
            "The Norman conquest of England began in 1066 when William the Conqueror defeated "
            "King Harold at the Battle of Hastings and was crowned king on Christmas Day."
        ),
        metadata={"source": "normans.txt", "page": 2},
        id="b",
    ),
    Document(
        page_content=(
            "Farmers in the valley complained about the mud on the roads every spring, and the rain "
            "ruined many of the harvests in the region during the long wet seasons of that decade."
        ),
        metadata={"source": "weather.txt"},
        id="c",
    ),
]


class MiniLMEmbeddings(Embeddings):
    """LangChain embeddings over the package's shared MiniLM encoder."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return get_encoder().encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return get_encoder().encode(text).tolist()


@pytest.fixture(scope="module")
def compressor() -> LeanCompressor:
    return LeanCompressor(rate=0.5)


def test_is_both_framework_interfaces(compressor: LeanCompressor) -> None:
    assert isinstance(compressor, BaseDocumentCompressor)
    assert isinstance(compressor, BaseDocumentTransformer)


def test_transform_keeps_one_doc_each_with_metadata(compressor: LeanCompressor) -> None:
    out = compressor.transform_documents(DOCS)
    assert len(out) == len(DOCS)
    for before, after in zip(DOCS, out, strict=False):
        assert after.id == before.id
        stats = after.metadata.pop("lean_compression")
        assert after.metadata == before.metadata
        assert 0 < stats["compressed_tokens"] < stats["origin_tokens"]
        assert abs(stats["rate"] - 0.5) <= 0.1
        assert set(words(after.page_content)) <= set(words(before.page_content))


async def test_async_transform_and_compress(compressor: LeanCompressor) -> None:
    out = await compressor.atransform_documents(DOCS[:1], rate=0.3)
    assert out[0].metadata["lean_compression"]["rate"] < 0.4
    out = await compressor.acompress_documents(DOCS, "Who defeated King Harold?")
    assert len(out) == 3


def test_compress_documents_prefers_the_relevant_document(compressor: LeanCompressor) -> None:
    out = compressor.compress_documents(DOCS, "Who swore fealty to King Charles III?")
    assert [d.id for d in out] == ["a", "b", "c"]
    kept = [d.metadata["lean_compression"]["compressed_tokens"] for d in out]
    assert kept[0] == max(kept)
    assert "Rollo" in out[0].page_content


def test_inside_contextual_compression_retriever(compressor: LeanCompressor) -> None:
    store = InMemoryVectorStore(embedding=MiniLMEmbeddings())
    store.add_documents(DOCS)
    retriever = ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=store.as_retriever(search_kwargs={"k": 2})
    )
    docs = retriever.invoke("When was the Battle of Hastings?")
    assert len(docs) == 2
    assert docs[0].id == "b" and docs[0].metadata["page"] == 2
    assert "1066" in docs[0].page_content and "Hastings" in docs[0].page_content
    total_before = sum(d.metadata["lean_compression"]["origin_tokens"] for d in docs)
    total_after = sum(d.metadata["lean_compression"]["compressed_tokens"] for d in docs)
    assert total_after <= 0.55 * total_before


def test_empty_document_passes_through(compressor: LeanCompressor) -> None:
    out = compressor.transform_documents([Document(page_content="  ", metadata={"k": 1})])
    assert out[0].page_content == "  " and out[0].metadata["lean_compression"]["skipped"] == "empty"


def test_bad_rate_is_a_clear_error() -> None:
    from lean_plugins.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="rate"):
        LeanCompressor(rate=2.0).transform_documents(DOCS)
