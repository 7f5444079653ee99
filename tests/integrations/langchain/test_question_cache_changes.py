"""``with_cache`` keeps apart chains that differ in a model setting LangChain's own key leaves out,
or in a module-level setting a function of the chain reads. Found by a user-style attack on the
question-level cache (a part changed in place *after* wrapping is not seen: docs/cache.md).

Real parts: LangChain prompts, runnables and an exact LeanCache; the chat model is a small
deterministic ``BaseChatModel`` that says its temperature and what it was sent (so a served
answer shows which chain made it).
"""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from lean_plugins.langchain import with_cache
from pydantic import PrivateAttr

from lean_plugins.cache import LeanCache


class EchoModel(BaseChatModel):
    """Answers with its temperature and the messages it read; declares no identifying params,
    as many custom models do."""

    temperature: float = 0.0
    _calls: list = PrivateAttr(default_factory=list)  # state, not a setting

    @property
    def calls(self) -> int:
        return len(self._calls)

    @property
    def _llm_type(self) -> str:
        return "echo"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        self._calls.append(messages)
        text = f"t={self.temperature} | " + " || ".join(str(m.content) for m in messages)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


PRICES = {"apple": 1.0}
CURRENCY = "USD"


def quote(question: str) -> str:
    return f"{question}: apple costs {PRICES['apple']} {CURRENCY}"


def exact_cache(tmp_path) -> LeanCache:
    return LeanCache(tmp_path / "cache", mode="exact")


def test_a_model_setting_the_model_does_not_identify_still_separates_chains(tmp_path):
    # A custom model whose _identifying_params leave out its temperature: LangChain's own key
    # cannot tell the two apart, the description of the chain can.
    cache = exact_cache(tmp_path)
    prompt = ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("human", "{question}")])
    cold, hot = EchoModel(), EchoModel(temperature=1.0)
    first = with_cache({"question": lambda q: q} | prompt | cold | StrOutputParser(), cache=cache)
    second = with_cache({"question": lambda q: q} | prompt | hot | StrOutputParser(), cache=cache)
    assert first.invoke("Why is the sky blue?").startswith("t=0.0")
    assert second.invoke("Why is the sky blue?").startswith("t=1.0")
    assert first.invoke("Why is the sky blue?").startswith("t=0.0") and cold.calls == 1  # a hit


def test_a_global_setting_a_function_reads_is_part_of_the_namespace(tmp_path, monkeypatch):
    # with_cache describes the chain when it is wrapped (docs/cache.md): a chain wrapped again
    # after a module-level setting changed gets a new namespace, not the old answer.
    cache = exact_cache(tmp_path)
    llm = EchoModel()
    chain = RunnableLambda(quote) | llm | StrOutputParser()
    assert "apple costs 1.0 USD" in with_cache(chain, cache=cache).invoke("Price?")
    assert "apple costs 1.0 USD" in with_cache(chain, cache=cache).invoke("Price?") and llm.calls == 1  # a hit
    monkeypatch.setitem(PRICES, "apple", 2.5)
    assert "apple costs 2.5 USD" in with_cache(chain, cache=cache).invoke("Price?")
    monkeypatch.setattr(f"{__name__}.CURRENCY", "EUR")
    assert "apple costs 2.5 EUR" in with_cache(chain, cache=cache).invoke("Price?")
    assert llm.calls == 3
