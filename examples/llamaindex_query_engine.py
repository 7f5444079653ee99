"""An ordinary LlamaIndex query engine, made lean in a few lines. Runs offline.

``VectorStoreIndex.from_documents(...).as_query_engine()`` as in LlamaIndex's starter example,
with our components at LlamaIndex's own extension points (marked ``# lean``): the query-aware
compressor as a node postprocessor, ``lean_from`` on the default text-QA prompt, an output
budget around the LLM, and ``CachedQueryEngine`` around the engine (exact + semantic, keyed on
the question). A savings ledger
reports what each one saved.

Offline, the LLM is the demo's stand-in (it answers with the retrieved sentence most similar to
the question, and is not a language model). With a key, use a real one, e.g.
``OpenAI(model="gpt-4o-mini")`` from llama-index-llms-openai; nothing else changes.

    python examples/llamaindex_query_engine.py
"""

from __future__ import annotations

import tempfile

from lean_plugins.llama_index import (
    CachedQueryEngine,
    LeanCompressorPostprocessor,
    lean_from,
    with_output_budget,
)
from llama_index.core import Document, VectorStoreIndex

from lean_plugins.cache import LeanCache
from lean_plugins.demo.knowledge import load_knowledge_base
from lean_plugins.demo.llama_index_parts import MiniLMEmbedding, StandInLLM
from lean_plugins.ledger import Ledger

QA_PROMPT = "response_synthesizer:text_qa_template"


def build_query_engine(llm):
    docs = [Document(text=s.text, metadata={"title": s.title}) for s in load_knowledge_base()]
    index = VectorStoreIndex.from_documents(docs, embed_model=MiniLMEmbedding())

    llm = with_output_budget(llm, 256)  # lean: stop at the budget, keep the text
    engine = index.as_query_engine(
        llm=llm,
        node_postprocessors=[LeanCompressorPostprocessor(rate=0.33)],  # lean: compress, query-aware
    )
    default_prompt = engine.get_prompts()[QA_PROMPT]
    engine.update_prompts({QA_PROMPT: lean_from(default_prompt)})  # lean: same prompt, fewer tokens
    # lean: answers (with their source nodes) cached per question; a hit (a repeat or a
    # paraphrase) skips retrieval, compression and the LLM
    return CachedQueryEngine(engine, cache=LeanCache(tempfile.mkdtemp()))


def main() -> list[str]:
    engine = build_query_engine(StandInLLM())  # offline stand-in; e.g. OpenAI(model="gpt-4o-mini")
    questions = [
        "How long is a year on Mars?",
        "How hot is it on the surface of Venus?",
        "How long is a year on Mars?",  # a repeat: served by the cache
    ]
    with Ledger() as ledger:
        answers = [str(engine.query(q)) for q in questions]
    for q, a in zip(questions, answers, strict=True):
        print(f"Q: {q}\nA: {a}\n")
    print(ledger.summary(price="gpt-4o-mini"))
    return answers


if __name__ == "__main__":
    main()
