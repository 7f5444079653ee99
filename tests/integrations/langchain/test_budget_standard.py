"""LangChain's standard chat-model suites on a budgeted model: with_output_budget's result
stands wherever a chat model goes (the fake provider answers every call the same, so the
tool and structured-output checks, which need a model that reads the request, are covered by
tests/integrations/langchain/test_budget.py instead)."""

from __future__ import annotations

from typing import Any

from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from lean_plugins.langchain import BudgetedChatModel

from lean_plugins.budget import OutputBudget
from tests.integrations.langchain.budget_fakes import ToolCallingFake


class _BudgetedSettings:
    @property
    def chat_model_class(self) -> type[BudgetedChatModel]:
        return BudgetedChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        model = ToolCallingFake(answer="Hello there, this is a fairly short answer from the model.")
        return {"model": model, "budget": OutputBudget(8)}

    has_tool_calling = False
    has_structured_output = False
    supports_json_mode = False
    supports_image_inputs = False
    returns_usage_metadata = True


class TestBudgetedChatModelUnit(_BudgetedSettings, ChatModelUnitTests):
    pass


class TestBudgetedChatModelIntegration(_BudgetedSettings, ChatModelIntegrationTests):
    pass
