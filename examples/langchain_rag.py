"""An ordinary LangChain RAG chain, made lean in a few lines. Runs offline.

The chain is the one from LangChain's RAG tutorial: a vector store retriever, a prompt, a chat
model, an output parser. The lean parts are marked ``# lean``: the query-aware compressor on
the retrieved documents, ``lean_from`` on the prompt, an output budget on the model, and
``with_cache`` around the whole chain (exact + semantic, keyed on the question). A savings ledger reports what each one saved.

Offline, the model is the demo's stand-in (it answers with the retrieved sentence most similar
to the question, and is not a language model). With a key, use a real one, e.g.
``ChatOpenAI(model="gpt-4o-mini")``; nothing else changes.

    python examples/langchain_rag.py
"""

from __future__ import annotations

import tempfile

from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from lean_plugins.langchain import LeanCompressor, lean_from, with_cache, with_output_budget

from lean_plugins.cache import LeanCache
from lean_plugins.demo.knowledge import load_knowledge_base
from lean_plugins.demo.langchain_parts import MiniLMEmbeddings, StandInChatModel
from lean_plugins.ledger import Ledger


def build_chain(llm):
    docs = [Document(page_content=s.text, metadata={"title": s.title}) for s in load_knowledge_base()]
    retriever = InMemoryVectorStore.from_documents(docs, MiniLMEmbeddings()).as_retriever()
    prompt = ChatPromptTemplate.from_messages(
        [
            (
                "system",
                "Use the following pieces of context to answer the user's question.\n"
                "If you don't know the answer, just say that you don't know, don't try to make up "
                "an answer.\n----------------\n{context}",
            ),
            ("human", "{question}"),
        ]
    )

    compressor = LeanCompressor(rate=0.33)  # lean: keep a third of the context, question first

    def retrieve(question: str) -> str:
        docs = compressor.compress_documents(retriever.invoke(question), question)  # lean
        return "\n\n".join(d.page_content for d in docs)

    chain = (
        {"context": RunnableLambda(retrieve), "question": RunnablePassthrough()}
        | lean_from(prompt)  # lean: the same prompt, fewer tokens
        | with_output_budget(llm, 256)  # lean: stop at the budget, keep the text
        | StrOutputParser()
    )
    # lean: the whole chain cached per question; a hit (a repeat or a paraphrase) skips
    # retrieval, compression and the model
    return with_cache(chain, cache=LeanCache(tempfile.mkdtemp()))


def main() -> list[str]:
    llm = StandInChatModel()  # offline stand-in; e.g. ChatOpenAI(model="gpt-4o-mini")
    chain = build_chain(llm)

    questions = [
        "How long is a year on Mars?",
        "How hot is it on the surface of Venus?",
        "How long is a year on Mars?",  # a repeat: served by the cache
    ]
    with Ledger() as ledger:
        answers = [chain.invoke(q) for q in questions]
    for q, a in zip(questions, answers, strict=True):
        print(f"Q: {q}\nA: {a}\n")
    print(ledger.summary(price="gpt-4o-mini"))
    return answers


if __name__ == "__main__":
    main()
