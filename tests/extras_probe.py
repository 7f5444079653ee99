"""Try every public class of one adapter package the way a user would, with only one extra
installed; print one JSON line per name: ``ok``, ``needs:<extra>`` (a MissingDependencyError
at construction whose message says ``pip install "lean-plugins[<extra>]"``), ``late:<extra>``
(the same, but only at the first call) or ``bad:<what happened>``.

Run as ``python tests/extras_probe.py langchain|llamaindex [--block mod,mod,...]``. With
``--block`` those modules (and their submodules) cannot be imported, as if not installed: a
quick stand-in for a fresh virtual environment. Standalone: it needs nothing but the package.
"""

from __future__ import annotations

import importlib.abc
import json
import re
import sys
import tempfile
from collections.abc import Callable
from typing import Any

EXTRA_IN_MESSAGE = re.compile(r'pip install "lean-plugins\[([a-z]+)\]"')


class _Blocker(importlib.abc.MetaPathFinder):
    def __init__(self, names: list[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if any(fullname == n or fullname.startswith(n + ".") for n in self.names):
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked)", name=fullname)
        return None


Case = tuple[Callable[[], Any], "Callable[[Any], Any] | None"]


def langchain_cases() -> dict[str, Case]:
    import lean_plugins.langchain as lc
    from langchain_core.documents import Document
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.prompts import PromptTemplate

    from lean_plugins.budget import OutputBudget
    from lean_plugins.cache import LeanCache as Core
    from lean_plugins.prompts import LeanPrompt

    def fake() -> Any:
        return GenericFakeChatModel(messages=iter(["hi"]))

    folder = tempfile.mkdtemp()
    return {
        "LeanCache": (lambda: lc.LeanCache(path=folder), lambda c: c.lookup("a prompt", "llm")),
        "LeanCompressor": (lc.LeanCompressor, lambda c: c.compress_documents([Document("Some text.")], "q")),
        "LeanPromptTemplate": (
            lambda: lc.LeanPromptTemplate(lean=LeanPrompt(task="Answer {q}")),
            lambda t: t.format(q="x"),
        ),
        "LeanChatPromptTemplate": (
            lambda: lc.LeanChatPromptTemplate.from_messages([("human", "{q}")]),
            lambda t: t.format_messages(q="x"),
        ),
        "lean_from": (lambda: lc.lean_from(PromptTemplate.from_template("Answer {q}")), lambda t: t.format(q="x")),
        "LeanChatModel": (lambda: lc.LeanChatModel(model=folder), lambda m: m.invoke("hello")),
        "LeanLLM": (lambda: lc.LeanLLM(model=folder), lambda m: m.invoke("hello")),
        "OutputBudgetCallbackHandler": (lambda: lc.OutputBudgetCallbackHandler(OutputBudget(10)), None),
        "BudgetedChatModel": (lambda: lc.with_output_budget(fake(), 10), lambda m: m.invoke("hello")),
        "with_output_budget": (lambda: lc.with_output_budget(fake(), 10), lambda m: m.invoke("hello")),
        "with_cache": (lambda: lc.with_cache(fake(), cache=Core(path=folder)), lambda r: r.invoke("hello")),
        "CachedRunnable": (lambda: lc.with_cache(fake(), cache=Core(path=folder)), lambda r: r.invoke("hi")),
        "PrefixCacheCallbackHandler": (lc.PrefixCacheCallbackHandler, None),
    }


def llamaindex_cases() -> dict[str, Case]:
    from llama_index.core import PromptTemplate
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import CustomQueryEngine
    from llama_index.core.schema import NodeWithScore, TextNode

    class EchoEngine(CustomQueryEngine):
        def custom_query(self, query_str: str) -> str:
            return query_str

    def engine() -> Any:
        return EchoEngine()

    import lean_plugins.llama_index as li

    from lean_plugins.budget import OutputBudget
    from lean_plugins.cache import LeanCache as Core
    from lean_plugins.prompts import LeanPrompt

    folder = tempfile.mkdtemp()
    nodes = [NodeWithScore(node=TextNode(text="Some text."))]
    return {
        "CachedLLM": (lambda: li.CachedLLM(llm=MockLLM(), cache=Core(path=folder)), lambda m: m.complete("hi")),
        "CachedQueryEngine": (
            lambda: li.CachedQueryEngine(engine(), cache=Core(path=folder)),
            lambda e: e.query("hi"),
        ),
        "LeanCompressorPostprocessor": (
            li.LeanCompressorPostprocessor,
            lambda p: p.postprocess_nodes(nodes, query_str="q"),
        ),
        "LeanCompressorTransform": (li.LeanCompressorTransform, lambda t: t([TextNode(text="Some text.")])),
        "LeanLocalLLM": (lambda: li.LeanLocalLLM(model=folder), lambda m: m.complete("hello")),
        "LeanPromptTemplate": (
            lambda: li.LeanPromptTemplate(LeanPrompt(task="Answer {q}")),
            lambda t: t.format(q="x"),
        ),
        "lean_from": (lambda: li.lean_from(PromptTemplate("Answer {q}")), lambda t: t.format(q="x")),
        "OutputBudgetCallbackHandler": (lambda: li.OutputBudgetCallbackHandler(OutputBudget(10)), None),
        "OutputBudgetHandler": (lambda: li.OutputBudgetHandler(OutputBudget(10)), None),
        "with_output_budget": (lambda: li.with_output_budget(MockLLM(), 10), lambda m: m.complete("hello")),
        "BudgetedLLM": (lambda: li.with_output_budget(MockLLM(), 10), lambda m: m.chat([])),
        "PrefixCacheEventHandler": (li.PrefixCacheEventHandler, None),
    }


def outcome(construct: Callable[[], Any], use: Callable[[Any], Any] | None) -> str:
    """``ok``, ``needs:<extra>`` (raised at construction), ``late:<extra>`` (raised only at the
    first call), or ``bad:<error>``."""
    from lean_plugins.errors import MissingDependencyError

    phase = "construct"
    try:
        made = construct()
        phase = "use"
        if use is not None:
            use(made)
    except MissingDependencyError as exc:
        found = EXTRA_IN_MESSAGE.search(str(exc))
        if not found:
            return f"bad:no extra named in {exc}"
        return f"{'needs' if phase == 'construct' else 'late'}:{found.group(1)}"
    except Exception as exc:
        return f"bad:{phase}: {type(exc).__name__}: {exc}"
    return "ok"


def main(argv: list[str]) -> int:
    framework = argv[0]
    if "--block" in argv:
        sys.meta_path.insert(0, _Blocker(argv[argv.index("--block") + 1].split(",")))
    cases = langchain_cases() if framework == "langchain" else llamaindex_cases()
    import lean_plugins.langchain as lc
    import lean_plugins.llama_index as li

    exported = set((lc if framework == "langchain" else li).__all__)
    missing = exported - set(cases)
    for name in sorted(missing):
        print(json.dumps({"name": name, "outcome": "bad:not probed (add it to tests/extras_probe.py)"}))
    for name, (construct, use) in cases.items():
        print(json.dumps({"name": name, "outcome": outcome(construct, use)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
