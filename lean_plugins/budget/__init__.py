"""Layer 4: output budget. Stops generation at a fixed or predicted per-call token budget,
keeps the text, and accounts every call's tokens and dollars.

Light to import: plain Python (tiktoken loads on first count).
"""

from lean_plugins.budget.accounting import UsageAccountant, UsageTotals, default_accountant
from lean_plugins.budget.call import BudgetedCall
from lean_plugins.budget.counting import StreamingTokenCounter
from lean_plugins.budget.output_budget import DEFAULT_ROUTE, OutputBudget
from lean_plugins.budget.policy import BUDGET_STOP_REASONS, BudgetResult, BudgetRun
from lean_plugins.budget.predictor import BudgetPredictor, query_kind, route_for_template

__all__ = [
    "BUDGET_STOP_REASONS",
    "DEFAULT_ROUTE",
    "BudgetPredictor",
    "BudgetResult",
    "BudgetRun",
    "BudgetedCall",
    "OutputBudget",
    "StreamingTokenCounter",
    "UsageAccountant",
    "UsageTotals",
    "default_accountant",
    "query_kind",
    "route_for_template",
]
