"""LlamaIndex ``TransformComponent`` that compresses nodes at ingestion (``IngestionPipeline``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lean_plugins.llama_index.compressor_postprocessor import (
    build_core,
    compress_extra_installed,
    node_text,
    with_result,
)

from lean_plugins.compress.compressor import LeanCompressor as CoreCompressor
from llama_index.core.bridge.pydantic import Field, PrivateAttr, model_validator
from llama_index.core.schema import BaseNode, TransformComponent


class LeanCompressorTransform(TransformComponent):
    """Compress each node's text at its own rate; ids, metadata and relationships are kept.

    .. code-block:: python

        from llama_index.core.ingestion import IngestionPipeline
        from llama_index.core.node_parser import SentenceSplitter
        from lean_plugins.llama_index import LeanCompressorTransform

        pipeline = IngestionPipeline(transformations=[SentenceSplitter(), LeanCompressorTransform(rate=0.6)])
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
    rate: float = Field(default=0.5, description="Share of tokens to keep in each node, in (0, 1].")
    force_tokens: list[str] = Field(
        default_factory=list, description="Strings whose words are never dropped."
    )
    protected_patterns: list[str] = Field(
        default_factory=list, description="Regexes never dropped (on top of numbers, URLs, e-mails, code)."
    )
    relevance_weight: float = Field(default=1.0, description="Unused without a query; kept for symmetry.")
    compressor: CoreCompressor | None = Field(
        default=None, exclude=True, description="A ready core compressor to share."
    )

    _core: CoreCompressor | None = PrivateAttr(default=None)
    _extra_installed = model_validator(mode="after")(compress_extra_installed)

    @classmethod
    def class_name(cls) -> str:
        return "LeanCompressorTransform"

    @property
    def core(self) -> CoreCompressor:
        if self._core is None:
            self._core = build_core(self)
        return self._core

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        if not nodes:
            return []
        results = self.core.compress_documents(
            [node_text(n) for n in nodes], rate=kwargs.get("rate", self.rate), per_document=True
        )
        return [with_result(n, r) for n, r in zip(nodes, results, strict=False)]
