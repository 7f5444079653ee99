"""LlamaIndex node postprocessor on :class:`lean_plugins.compress.LeanCompressor`.

Unlike LlamaIndex's ``LongLLMLinguaPostprocessor`` it returns one node per node in, each with
its own metadata and score, and runs offline on CPU. The query ranks sentences by relevance
(all-MiniLM-L6-v2), so the token budget goes to the sentences that answer it first.
"""

from __future__ import annotations

from typing import Any

from lean_plugins._optional import require_extra
from lean_plugins.compress.compressor import CompressionResult
from lean_plugins.compress.compressor import LeanCompressor as CoreCompressor
from llama_index.core.bridge.pydantic import Field, PrivateAttr, model_validator
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle

STATS_KEY = "lean_compression"


def node_text(node: BaseNode) -> str:
    """The node's own text, without metadata."""
    return node.get_content(metadata_mode=MetadataMode.NONE)


def with_result(node: BaseNode, result: CompressionResult) -> BaseNode:
    """A copy of ``node`` holding the compressed text and the stats in its metadata.

    The stats key is excluded from what the LLM and the embedder see, so it costs no tokens.
    """
    copy = node.model_copy()
    copy.set_content(result.text)
    copy.metadata = {**node.metadata, STATS_KEY: result.stats()}
    copy.excluded_llm_metadata_keys = [*node.excluded_llm_metadata_keys, STATS_KEY]
    copy.excluded_embed_metadata_keys = [*node.excluded_embed_metadata_keys, STATS_KEY]
    return copy


def build_core(component: Any) -> CoreCompressor:
    """The core compressor configured from an adapter's fields."""
    if component.compressor is not None:
        return component.compressor
    return CoreCompressor(
        component.model,
        component.device,
        rate=component.rate,
        force_tokens=component.force_tokens,
        protected_patterns=component.protected_patterns,
        relevance_weight=component.relevance_weight,
        dtype=component.dtype,
    )


def compress_extra_installed(component: Any) -> Any:
    """Validator body of both LlamaIndex compressor components: fail at construction (where
    the user wrote it) when torch or llmlingua is missing, not at the first query."""
    if component.compressor is None:
        require_extra("compress")
    return component


class LeanCompressorPostprocessor(BaseNodePostprocessor):
    """Compress retrieved nodes, query-aware, keeping each node's metadata and score.

    .. code-block:: python

        from lean_plugins.llama_index import LeanCompressorPostprocessor

        engine = index.as_query_engine(node_postprocessors=[LeanCompressorPostprocessor(rate=0.5)])
    """

    model: str | None = Field(
        default=None, description="LLMLingua-2 model name or folder; None: embedded MiniLM model."
    )
    device: str = Field(default="cpu", description="Torch device of the model.")
    dtype: str = Field(
        default="auto",
        description="Weights' dtype: auto is bfloat16 on a GPU and on CPUs with bfloat16 in hardware, "
        "float32 elsewhere; or float32 / bfloat16 / float16 / int8 (CPU only, opt-in).",
    )
    rate: float = Field(default=0.5, description="Share of tokens to keep, in (0, 1].")
    target_tokens: int | None = Field(
        default=None, description="Token budget for all nodes of a query (wins over rate)."
    )
    shared_budget: bool = Field(
        default=True,
        description="One budget across the nodes, spent on the most query-relevant sentences first.",
    )
    force_tokens: list[str] = Field(
        default_factory=list, description="Strings whose words are never dropped."
    )
    protected_patterns: list[str] = Field(
        default_factory=list, description="Regexes never dropped (on top of numbers, URLs, e-mails, code)."
    )
    relevance_weight: float = Field(
        default=1.0, description="How strongly query relevance outranks keep probability."
    )
    compressor: CoreCompressor | None = Field(
        default=None, exclude=True, description="A ready core compressor to share."
    )

    _core: CoreCompressor | None = PrivateAttr(default=None)
    _extra_installed = model_validator(mode="after")(compress_extra_installed)

    @classmethod
    def class_name(cls) -> str:
        return "LeanCompressorPostprocessor"

    @property
    def core(self) -> CoreCompressor:
        if self._core is None:
            self._core = build_core(self)
        return self._core

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if not nodes:
            return []
        results = self.core.compress_documents(
            [node_text(n.node) for n in nodes],
            rate=self.rate,
            target_tokens=self.target_tokens,
            query=query_bundle.query_str if query_bundle is not None else None,
            per_document=not self.shared_budget,
        )
        return [
            NodeWithScore(node=with_result(n.node, r), score=n.score)
            for n, r in zip(nodes, results, strict=False)
        ]
