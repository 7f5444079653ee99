"""Callbacks attached to a model instance (``Model(callbacks=[...])``) still see its calls once
the model is budgeted: the budgeted wrapper calls the model's ``_stream`` / ``_generate``
directly, so the model's own callback manager never runs; the wrapper must carry them.

Found in the demo: with ``--llm smollm2-135m-instruct`` the meter is attached to the
``LeanChatModel`` instance, and the lean LangChain run logged no model calls."""

from __future__ import annotations

import itertools
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import FakeListLLM, GenericFakeChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from lean_plugins.langchain import with_output_budget

from lean_plugins.budget import OutputBudget
from lean_plugins.demo.models import langchain_meter
from lean_plugins.demo.standin import CallLog
from tests.budget_helpers import ANSWER, first_tokens


class Ends(BaseCallbackHandler):
    """Records each call's start and end text, and the tags it ran with."""

    def __init__(self) -> None:
        self.starts = 0
        self.ends: list[str] = []
        self.tags: list[list[str]] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, *, tags: Any = None, **kwargs: Any) -> None:
        self.starts += 1
        self.tags.append(list(tags or []))

    def on_llm_start(self, serialized: Any, prompts: Any, *, tags: Any = None, **kwargs: Any) -> None:
        self.starts += 1
        self.tags.append(list(tags or []))

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.ends.append(response.generations[0][0].text)


def chat_model(**fields: Any) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=itertools.repeat(ANSWER), **fields)


def test_the_demo_meter_on_a_budgeted_chat_model_logs_each_call() -> None:
    log = CallLog()
    model = chat_model(callbacks=[langchain_meter(log, provider_usage=False)])
    prompt = ChatPromptTemplate.from_messages([("system", "Context: {context}"), ("human", "{question}")])
    chain = with_output_budget(prompt | model | StrOutputParser(), OutputBudget(6, soft_window=0.0))
    answer = chain.invoke({"context": "Normandy", "question": "Who were the Normans?"})
    assert answer == first_tokens(ANSWER, 6)
    assert [c.response for c in log.calls] == [answer]
    assert "Who were the Normans?" in log.calls[0].prompt and log.calls[0].output_tokens == 6


def test_instance_callbacks_and_tags_see_invoke_and_stream_of_a_budgeted_chat_model() -> None:
    ends = Ends()
    budgeted = with_output_budget(chat_model(callbacks=[ends], tags=["reader"]), OutputBudget(4, soft_window=0.0))
    budgeted.invoke("q")
    "".join(c.content for c in budgeted.stream("q"))
    assert ends.starts == 2 and ends.ends == [first_tokens(ANSWER, 4)] * 2
    assert all("reader" in t for t in ends.tags)


def test_a_handler_on_the_model_and_in_config_each_see_the_call_once() -> None:
    on_model, in_config = Ends(), Ends()
    budgeted = with_output_budget(chat_model(callbacks=[on_model]), OutputBudget(4, soft_window=0.0))
    budgeted.invoke("q", config={"callbacks": [in_config]})
    assert on_model.ends == in_config.ends == [first_tokens(ANSWER, 4)]


def test_instance_callbacks_of_a_text_llm_see_the_budgeted_call() -> None:
    ends = Ends()
    llm = FakeListLLM(responses=[ANSWER], callbacks=[ends])
    text = with_output_budget(llm, OutputBudget(5, soft_window=0.0)).invoke("q")
    assert ends.starts == 1 and ends.ends == [str(text)] and text == first_tokens(ANSWER, 5)
