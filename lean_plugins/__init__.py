"""lean-plugins: cut the tokens and dollars of LangChain and LlamaIndex applications.

Five layers, each usable on its own:

=========  ==============================  ===========================================
layer      core module                     what it saves
=========  ==============================  ===========================================
1          :mod:`lean_plugins.compress`    input tokens of retrieved context
2          :mod:`lean_plugins.prompts`     fixed prompt-template tokens
3          :mod:`lean_plugins.pruning`     API calls, via a pruned local model
4          :mod:`lean_plugins.budget`      output tokens past a useful answer
5          :mod:`lean_plugins.cache`       whole calls, on repeated questions
=========  ==============================  ===========================================

Shared pieces: :mod:`lean_plugins.tokens`, :mod:`lean_plugins.embeddings`,
:mod:`lean_plugins.pricing`, :mod:`lean_plugins.ledger`.

``import lean_plugins`` stays light: heavy dependencies (torch, frameworks) load only in
the layer that needs them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lean-plugins")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["__version__"]
