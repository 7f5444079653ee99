"""Settings and conversions shared by the LangChain wrappers of ``LeanLocalLLM``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.messages.ai import UsageMetadata
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lean_plugins._optional import require_extra
from lean_plugins.pruning import LeanLocalLLM
from lean_plugins.pruning.runtime import check_sampling


class LocalModelSettings(BaseModel):
    """Which local model to serve, and the default generation settings."""

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    model_name: str = Field(alias="model")
    """Model folder (dense or pruned) or hub name."""
    device: str = "auto"
    """``auto``: CUDA when available, else CPU."""
    dtype: str = "auto"
    """``auto``: bfloat16 on GPU, float32 on CPU."""
    attention: str = "auto"
    """``auto``: flash_attention_2 when flash-attn and CUDA are there, else sdpa, else eager."""
    max_tokens: int | None = Field(default=256, alias="max_new_tokens")
    """Default maximum number of generated tokens (per call: ``max_tokens=``)."""
    temperature: float = 0.0
    """0 means greedy decoding."""
    top_p: float = 1.0
    stop: list[str] | None = None
    """Default stop sequences (added to the per-call ones)."""
    timeout: float | None = None
    """Accepted for API compatibility; local generation is bounded by ``max_tokens``."""
    max_retries: int = 0
    """Accepted for API compatibility; local calls are not retried."""
    client: LeanLocalLLM | None = Field(default=None, exclude=True)
    """An already loaded model to use instead of loading ``model``."""

    @model_validator(mode="after")
    def _settings_usable(self) -> LocalModelSettings:
        """Fail at construction, where the user wrote it: sampling settings that make no sense,
        or the [local] extra missing (the model itself loads on the first call)."""
        check_sampling(self.temperature, self.top_p)
        if self.client is None:
            require_extra("local")
        return self

    def local_llm(self) -> LeanLocalLLM:
        if self.client is None:
            self.client = LeanLocalLLM.shared(
                self.model_name, device=self.device, dtype=self.dtype, attention=self.attention
            )
        return self.client

    def identifying_params(self) -> dict[str, Any]:
        """Everything that changes this model's answers (LangChain's cache key and tracing):
        which weights (the folder's fingerprint, or the loaded model's), how they are run, and the
        default generation settings. Per-call arguments are added by LangChain."""
        from lean_plugins.cache.keys import folder_fingerprint, loaded_model_fingerprint

        if self.client is not None:
            weights = loaded_model_fingerprint(self.client.model, self.client.tokenizer)
        else:
            weights = folder_fingerprint(self.model_name)
        return {
            "model_name": self.model_name,
            "weights": weights,
            "dtype": self.dtype,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            # Not "stop": LangChain writes the call's own stop under that key.
            "default_stop": list(self.stop) if self.stop else None,
        }

    def pop_call_settings(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Remove the generation settings a call passed as keyword arguments from ``kwargs`` and
        return them as field values (``max_new_tokens`` -> ``max_tokens``)."""
        fields = ("max_tokens", "temperature", "top_p")
        settings = {field: kwargs.pop(field) for field in fields if field in kwargs}
        if "max_new_tokens" in kwargs:
            settings.setdefault("max_tokens", kwargs.pop("max_new_tokens"))
        return settings

    def generation_kwargs(self, stop: Sequence[str] | None, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        max_tokens = kwargs.get("max_tokens", kwargs.get("max_new_tokens", self.max_tokens))
        return {
            "max_new_tokens": max_tokens,
            "stop": list(self.stop or []) + list(stop or []),
            "temperature": kwargs.get("temperature", self.temperature),
            "top_p": kwargs.get("top_p", self.top_p),
            "stopping_criteria": kwargs.get("stopping_criteria"),
        }


def message_text(message: BaseMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    parts = []
    for block in message.content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            raise ValueError(
                f"LeanChatModel takes text only; got a {block.get('type') if isinstance(block, dict) else type(block).__name__!r} "
                "content block. Send text, or use a multimodal model."
            )
    return "".join(parts)


def message_dicts(messages: Sequence[BaseMessage], roles: Mapping[str, str]) -> list[dict[str, str]]:
    """LangChain messages as ``{"role", "content"}`` dicts for the chat template."""
    return [{"role": roles.get(m.type, "user"), "content": message_text(m)} for m in messages]


def usage(result: Any) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=result.prompt_tokens,
        output_tokens=result.completion_tokens,
        total_tokens=result.total_tokens,
    )
