"""LangChain: book the prefix-cache tokens chat models report in the savings ledger.

Add :class:`PrefixCacheCallbackHandler` to a model's or chain's callbacks. On each call's
end it reads the reported ``usage_metadata["input_token_details"]`` (``cache_read``,
``cache_creation``; set by langchain-openai and langchain-anthropic) and books them as the
ledger's ``prefix cache`` row, priced by :mod:`lean_plugins.pricing`'s cache prices.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from lean_plugins.prompts.prefix_cache import record_prefix_cache


class PrefixCacheCallbackHandler(BaseCallbackHandler):
    """Books each call's prefix-cache reads and writes (from its reported usage) in the ledger.

    ``model``: the model name to price at when the response does not name one;
    ``tenant``: recorded with each event."""

    def __init__(self, *, model: str | None = None, tenant: str | None = None) -> None:
        self.model = model
        self.tenant = tenant

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        llm_output = response.llm_output or {}
        for generations in response.generations:
            for generation in generations:
                message = getattr(generation, "message", None)
                usage = getattr(message, "usage_metadata", None)
                if not usage:
                    continue
                metadata = getattr(message, "response_metadata", None) or {}
                model = metadata.get("model_name") or metadata.get("model") or llm_output.get("model_name") or self.model
                record_prefix_cache(usage, model=model, tenant=self.tenant)
