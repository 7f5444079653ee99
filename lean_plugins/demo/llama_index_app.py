"""The demo's LlamaIndex query engine, plain and lean.

Plain is ``VectorStoreIndex.from_documents(...).as_query_engine(llm=...)`` with everything at
LlamaIndex's defaults (node parser, ``similarity_top_k=2``, "compact" response mode, the
default text-QA prompt) and the model's fixed ``max_tokens``. Lean adds our components at the
framework's own extension points: ``LeanCompressorPostprocessor`` (query-aware) as a node
postprocessor, ``lean_from`` on the default text-QA prompt through ``update_prompts``, the
model wrapped by ``with_output_budget``, and the configured engine wrapped in
``CachedQueryEngine`` (the question-level cache).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.llms import LLM

from lean_plugins.demo.knowledge import Section
from lean_plugins.demo.llama_index_parts import MiniLMEmbedding
from lean_plugins.demo.settings import DemoSettings

TEXT_QA_PROMPT_KEY = "response_synthesizer:text_qa_template"


class LlamaIndexDemo:
    """Builds the plain and the lean query engine over one shared vector index."""

    framework = "llama_index"

    def __init__(self, sections: list[Section], settings: DemoSettings) -> None:
        self.settings = settings
        docs = [Document(text=s.text, metadata={"title": s.title}) for s in sections]
        self.index = VectorStoreIndex.from_documents(docs, embed_model=MiniLMEmbedding())

    def query_engine(self, llm: LLM, layers: Collection[str], cache: Any = None) -> Any:
        """The query engine with ``layers`` (a subset of prompts, compress, cache, budget) on.

        With ``cache_at="question"`` the configured engine is wrapped in ``CachedQueryEngine``
        (a hit skips retrieval, compression and the LLM); with ``cache_at="llm"`` the LLM is
        wrapped in ``CachedLLM``. ``cache`` is the core ``LeanCache``.
        """
        kwargs: dict[str, Any] = {}
        if "compress" in layers:
            from lean_plugins.llama_index import LeanCompressorPostprocessor

            kwargs["node_postprocessors"] = [LeanCompressorPostprocessor(**self.settings.compressor_kwargs())]
        model: Any = llm
        if "budget" in layers:
            from lean_plugins.llama_index import with_output_budget

            model = with_output_budget(llm, self.settings.output_budget())
        if "cache" in layers and self.settings.cache_at == "llm":
            from lean_plugins.llama_index import CachedLLM

            model = CachedLLM(llm=model, cache=cache)
        engine = self.index.as_query_engine(llm=model, **kwargs)
        if "prompts" in layers:
            from lean_plugins.llama_index import lean_from

            default = engine.get_prompts()[TEXT_QA_PROMPT_KEY]
            engine.update_prompts({TEXT_QA_PROMPT_KEY: lean_from(default)})
        if "cache" in layers and self.settings.cache_at == "question":
            from lean_plugins.llama_index import CachedQueryEngine

            return CachedQueryEngine(engine, cache=cache)
        return engine

    def ask(self, engine: Any, question: str) -> str:
        return str(engine.query(question))
