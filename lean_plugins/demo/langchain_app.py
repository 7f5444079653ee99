"""The demo's LangChain RAG chain, plain and lean.

Plain is what a LangChain user writes from the docs: an in-memory vector store with MiniLM
embeddings, its retriever (``k=4``, LangChain's default), LangChain's own question-answering
prompt (the "stuff" chat prompt shipped in ``langchain-classic``) and the model with a fixed
``max_tokens``. Lean adds our components at the framework's own extension points:
``LeanCompressor`` as a query-aware document compressor after the retriever, ``lean_from`` on
the same prompt, ``with_output_budget`` around the model, and ``with_cache`` around the whole
chain (the question-level cache).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from lean_plugins.demo.knowledge import Section
from lean_plugins.demo.langchain_parts import MiniLMEmbeddings
from lean_plugins.demo.settings import DemoSettings

# LangChain's default question-answering chat prompt, as shipped in
# langchain_classic.chains.question_answering.stuff_prompt.CHAT_PROMPT (MIT licence); copied so
# the demo does not need langchain-classic. tests/test_demo_apps.py checks it is still equal.
STUFF_SYSTEM_TEMPLATE = """Use the following pieces of context to answer the user's question.
If you don't know the answer, just say that you don't know, don't try to make up an answer.
----------------
{context}"""


def default_qa_prompt() -> ChatPromptTemplate:
    """LangChain's default "stuff" question-answering chat prompt."""
    return ChatPromptTemplate.from_messages([("system", STUFF_SYSTEM_TEMPLATE), ("human", "{question}")])


def format_docs(docs: list[Document]) -> str:
    """How LangChain's stuff-documents chain joins documents (``document_separator="\\n\\n"``)."""
    return "\n\n".join(doc.page_content for doc in docs)


def _text(output: Any) -> str:
    """The answer text of whatever the model step returned."""
    if isinstance(output, str):
        return output
    for attr in ("text", "content"):
        value = getattr(output, attr, None)
        if isinstance(value, str):
            return value
    if isinstance(output, dict):
        for key in ("text", "content", "answer"):
            if isinstance(output.get(key), str):
                return output[key]
    return str(output)


class LangChainDemo:
    """Builds the plain and the lean RAG chain over one shared vector store."""

    framework = "langchain"

    def __init__(self, sections: list[Section], settings: DemoSettings) -> None:
        self.settings = settings
        docs = [Document(page_content=s.text, metadata={"title": s.title}) for s in sections]
        self.store = InMemoryVectorStore.from_documents(docs, MiniLMEmbeddings())
        self.retriever = self.store.as_retriever()

    def chain(self, llm: BaseChatModel, layers: Collection[str], cache: Any = None) -> Runnable:
        """The RAG chain with ``layers`` (a subset of prompts, compress, cache, budget) switched on.

        With ``cache_at="question"`` (the documented way to cache RAG) the whole chain is wrapped
        in ``with_cache``, keyed on the question: a hit skips retrieval, compression and the
        model. With ``cache_at="llm"`` the model gets LangChain's own per-model ``cache=`` (our
        ``LeanCache`` adapter), keyed on the full prompt. ``cache`` is the core ``LeanCache``.
        """
        if "cache" in layers and self.settings.cache_at == "llm":
            from lean_plugins.langchain import LeanCache

            llm = llm.model_copy(update={"cache": LeanCache(cache)})
        retrieve: Runnable = self.retriever
        if "compress" in layers:
            from lean_plugins.langchain import LeanCompressor

            compressor = LeanCompressor(**self.settings.compressor_kwargs())
            retriever = self.retriever

            def retrieve_and_compress(question: str) -> list[Document]:
                return list(compressor.compress_documents(retriever.invoke(question), question))

            retrieve = RunnableLambda(retrieve_and_compress)

        prompt: Any = default_qa_prompt()
        if "prompts" in layers:
            from lean_plugins.langchain import lean_from

            prompt = lean_from(prompt)

        model: Runnable = llm
        if "budget" in layers:
            from lean_plugins.langchain import with_output_budget

            model = with_output_budget(llm, self.settings.output_budget())

        chain = (
            {"context": retrieve | format_docs, "question": RunnablePassthrough()}
            | prompt
            | model
            | RunnableLambda(_text)
            | StrOutputParser()
        )
        if "cache" in layers and self.settings.cache_at == "question":
            from lean_plugins.langchain import with_cache

            return with_cache(chain, cache=cache)
        return chain

    def ask(self, chain: Runnable, question: str) -> str:
        return chain.invoke(question)
