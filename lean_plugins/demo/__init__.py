"""``lean-plugins demo``: a fixed question set through LangChain and LlamaIndex, plain vs lean.

- :mod:`~lean_plugins.demo.knowledge`: the shipped knowledge base (CC0) and question set.
- :mod:`~lean_plugins.demo.standin`: the offline stand-in model (not a language model) and the
  call log every demo model writes to; :mod:`~lean_plugins.demo.langchain_parts` and
  :mod:`~lean_plugins.demo.llama_index_parts` make it a LangChain chat model and a LlamaIndex
  ``CustomLLM`` (with MiniLM embeddings for both frameworks).
- :mod:`~lean_plugins.demo.langchain_app`, :mod:`~lean_plugins.demo.llama_index_app`: the plain
  and lean pipelines; :mod:`~lean_plugins.demo.harness` runs and measures them;
  :mod:`~lean_plugins.demo.report` prints the table and writes the HTML report.

Light at import time: nothing here imports torch or a framework until a run starts.
"""
