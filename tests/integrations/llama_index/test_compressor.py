"""LeanCompressorPostprocessor in a real query engine; LeanCompressorTransform in a pipeline."""

from __future__ import annotations

import pytest
from lean_plugins.llama_index import LeanCompressorPostprocessor, LeanCompressorTransform
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.llms.mock import MockLLM
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from lean_plugins.compress.data import words
from lean_plugins.embeddings import get_encoder

TEXTS = {
    "rollo": (
        "Rollo was the Viking leader who swore fealty to King Charles III of West Francia in 911, "
        "receiving the lands that later became the Duchy of Normandy for his many followers."
    ),
    "hastings": (
        "The Norman conquest of England began in 1066 when William the Conqueror defeated "
        "King Harold at the Battle of Hastings and was crowned king on Christmas Day."
    ),
    "weather": (
        "Farmers in the valley complained about the mud on the roads every spring, and the rain "
        "ruined many of the harvests in the region during the long wet seasons of that decade."
    ),
}


class MiniLMEmbedding(BaseEmbedding):
    """LlamaIndex embeddings over the package's shared MiniLM encoder."""

    def _get_query_embedding(self, query: str) -> list[float]:
        return get_encoder().encode(query).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return get_encoder().encode(text).tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return get_encoder().encode(texts).tolist()


@pytest.fixture(scope="module")
def postprocessor() -> LeanCompressorPostprocessor:
    return LeanCompressorPostprocessor(rate=0.5)


def nodes() -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=text, id_=key, metadata={"topic": key}), score=0.9 - i / 10)
        for i, (key, text) in enumerate(TEXTS.items())
    ]


def test_class_names() -> None:
    assert LeanCompressorPostprocessor.class_name() == "LeanCompressorPostprocessor"
    assert LeanCompressorTransform.class_name() == "LeanCompressorTransform"


def test_keeps_each_nodes_metadata_and_score(postprocessor: LeanCompressorPostprocessor) -> None:
    before = nodes()
    after = postprocessor.postprocess_nodes(before, query_str="Who swore fealty to King Charles III?")
    assert [n.node.node_id for n in after] == ["rollo", "hastings", "weather"]
    assert [n.score for n in after] == [n.score for n in before]
    for b, a in zip(before, after, strict=False):
        assert a.node.metadata["topic"] == b.node.metadata["topic"]
        assert set(words(a.node.get_content())) <= set(words(b.node.get_content()))
        # the stats stay out of the LLM's view of the node
        assert "lean_compression" not in a.node.get_content(metadata_mode=MetadataMode.LLM)
    assert b.node.get_content() == TEXTS["weather"]  # the input nodes are not modified
    kept = [n.node.metadata["lean_compression"]["compressed_tokens"] for n in after]
    assert kept[0] == max(kept) and "Rollo" in after[0].node.get_content()


async def test_async_postprocess(postprocessor: LeanCompressorPostprocessor) -> None:
    out = await postprocessor.apostprocess_nodes(nodes(), QueryBundle("When was Hastings?"))
    assert len(out) == 3


def test_inside_a_vector_store_query_engine(postprocessor: LeanCompressorPostprocessor) -> None:
    docs = [Document(text=text, doc_id=key, metadata={"topic": key}) for key, text in TEXTS.items()]
    index = VectorStoreIndex.from_documents(docs, embed_model=MiniLMEmbedding())
    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=2, node_postprocessors=[postprocessor])
    response = engine.query("When was the Battle of Hastings?")
    assert len(response.source_nodes) == 2
    top = response.source_nodes[0]
    assert top.node.metadata["topic"] == "hastings" and top.score is not None
    assert "1066" in top.node.get_content() and "Hastings" in top.node.get_content()
    stats = [n.node.metadata["lean_compression"] for n in response.source_nodes]
    assert sum(s["compressed_tokens"] for s in stats) <= 0.55 * sum(s["origin_tokens"] for s in stats)


def test_transform_in_an_ingestion_pipeline() -> None:
    pipeline = IngestionPipeline(transformations=[LeanCompressorTransform(rate=0.5)])
    docs = [Document(text=text, doc_id=key, metadata={"topic": key}) for key, text in TEXTS.items()]
    out = pipeline.run(documents=docs)
    assert [n.metadata["topic"] for n in out] == list(TEXTS)
    for node, text in zip(out, TEXTS.values(), strict=False):
        stats = node.metadata["lean_compression"]
        assert abs(stats["rate"] - 0.5) <= 0.1
        assert set(words(node.get_content())) <= set(words(text))


def test_empty_node_list(postprocessor: LeanCompressorPostprocessor) -> None:
    assert postprocessor.postprocess_nodes([]) == []
