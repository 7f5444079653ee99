"""LlamaIndex: book the prefix-cache tokens LLMs report in the savings ledger.

Register :class:`PrefixCacheEventHandler` with the instrumentation dispatcher
(``get_dispatcher().add_event_handler(PrefixCacheEventHandler())``). On each chat or completion
end it reads the response's ``raw`` usage (OpenAI ``usage.prompt_tokens_details.cached_tokens``;
Anthropic ``usage.cache_read_input_tokens`` / ``cache_creation_input_tokens``), else a usage
in ``additional_kwargs``, and books it as the ledger's ``prefix cache`` row.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from lean_plugins.prompts.prefix_cache import record_prefix_cache
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMCompletionEndEvent


def _model_of(raw: Any) -> str | None:
    model = raw.get("model") if isinstance(raw, dict) else getattr(raw, "model", None)
    return model if isinstance(model, str) else None


class PrefixCacheEventHandler(BaseEventHandler):
    """Books each LLM response's prefix-cache reads and writes in the ledger."""

    model: str | None = Field(default=None, description="Model to price at when the response names none.")
    tenant: str | None = Field(default=None, description="Tenant recorded with each event.")

    @classmethod
    def class_name(cls) -> str:
        return "PrefixCacheEventHandler"

    def handle(self, event: BaseEvent, **kwargs: Any) -> Any:
        if not isinstance(event, (LLMChatEndEvent, LLMCompletionEndEvent)) or event.response is None:
            return None
        response = event.response
        raw = getattr(response, "raw", None)
        sources = [raw, getattr(response, "additional_kwargs", None)]
        message = getattr(response, "message", None)
        if message is not None:
            sources.append(getattr(message, "additional_kwargs", None))
        for usage in sources:
            if usage and record_prefix_cache(usage, model=_model_of(raw) or self.model, tenant=self.tenant):
                return None
        return None
