"""LangChain document compressor and transformer on :class:`lean_plugins.compress.LeanCompressor`.

As a ``BaseDocumentCompressor`` it plugs into ``ContextualCompressionRetriever`` (query-aware);
as a ``BaseDocumentTransformer`` it compresses documents at ingestion. Either way one
document comes out per document in, with its own metadata plus ``metadata["lean_compression"]``
(origin/compressed tokens, rate, and why a document was passed through, if it was).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, BaseDocumentTransformer, Document
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from lean_plugins._optional import require_extra
from lean_plugins.compress.compressor import CompressionResult
from lean_plugins.compress.compressor import LeanCompressor as CoreCompressor

STATS_KEY = "lean_compression"


class LeanCompressor(BaseDocumentCompressor, BaseDocumentTransformer):
    """Drop low-information words from documents with an offline LLMLingua-2 model.

    Example:
        .. code-block:: python

            from langchain_classic.retrievers import ContextualCompressionRetriever
            from lean_plugins.langchain import LeanCompressor

            retriever = ContextualCompressionRetriever(
                base_compressor=LeanCompressor(rate=0.5), base_retriever=vector_store.as_retriever()
            )
    """

    model: str | None = None
    """LLMLingua-2 model name or folder; None uses the embedded all-MiniLM-L6-v2 model (offline)."""
    device: str = "cpu"
    """Torch device of the model."""
    dtype: str = "auto"
    """Weights' dtype: ``auto`` is bfloat16 on a GPU and on CPUs with bfloat16 in hardware,
    float32 elsewhere; or ``float32`` / ``bfloat16`` / ``float16`` / ``int8`` (CPU only, opt-in)."""
    rate: float = 0.5
    """Share of tokens to keep, in (0, 1]."""
    target_tokens: int | None = None
    """Token budget for all documents of one call (wins over ``rate``)."""
    use_query: bool = True
    """In ``compress_documents``, fill the sentences most similar to the query first."""
    shared_budget: bool = True
    """``compress_documents``: one budget across the documents (relevant ones keep more).
    ``transform_documents`` always compresses each document at its own rate."""
    force_tokens: list[str] = Field(default_factory=list)
    """Strings whose words are never dropped."""
    protected_patterns: list[str] = Field(default_factory=list)
    """Regexes whose matches are never dropped (on top of numbers, URLs, e-mails, code)."""
    relevance_weight: float = 1.0
    """How strongly query relevance outranks the model's keep probability."""
    compressor: CoreCompressor | None = None
    """A ready core compressor to share between adapters (overrides the fields above)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _core: CoreCompressor | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _compress_extra_installed(self) -> LeanCompressor:
        """Fail here, where the user wrote it, when torch or llmlingua is missing (not at the
        first call, deep inside a chain)."""
        if self.compressor is None:
            require_extra("compress")
        return self

    @property
    def core(self) -> CoreCompressor:
        """The core compressor (built on first use)."""
        if self.compressor is not None:
            return self.compressor
        if self._core is None:
            self._core = CoreCompressor(
                self.model,
                self.device,
                rate=self.rate,
                force_tokens=self.force_tokens,
                protected_patterns=self.protected_patterns,
                relevance_weight=self.relevance_weight,
                dtype=self.dtype,
            )
        return self._core

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Compress retrieved documents, spending the budget on the query's sentences first."""
        results = self.core.compress_documents(
            [d.page_content for d in documents],
            rate=self.rate,
            target_tokens=self.target_tokens,
            query=query if self.use_query else None,
            per_document=not self.shared_budget,
        )
        return [_with_result(d, r) for d, r in zip(documents, results, strict=False)]

    def transform_documents(self, documents: Sequence[Document], **kwargs: Any) -> Sequence[Document]:
        """Compress each document at its own rate (``rate=`` / ``target_tokens=`` / ``query=``
        keyword arguments override the fields for this call)."""
        results = self.core.compress_documents(
            [d.page_content for d in documents],
            rate=kwargs.get("rate", self.rate),
            target_tokens=kwargs.get("target_tokens", self.target_tokens),
            query=kwargs.get("query"),
            per_document=True,
        )
        return [_with_result(d, r) for d, r in zip(documents, results, strict=False)]


def _with_result(document: Document, result: CompressionResult) -> Document:
    metadata = {**document.metadata, STATS_KEY: result.stats()}
    return Document(page_content=result.text, metadata=metadata, id=document.id)
