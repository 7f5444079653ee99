"""Real models for the demo (``--llm openai:MODEL`` or ``--llm local:PATH``), metered into the
same :class:`~lean_plugins.demo.standin.CallLog` as the stand-in.

The meters are framework callbacks attached to the model instance, so they see exactly the
calls that reach the model: what it was sent and what it returned, with the provider's own
usage when it reports one (cl100k counts otherwise).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from lean_plugins._optional import require
from lean_plugins.demo.settings import LLMSpec
from lean_plugins.demo.standin import CallLog
from lean_plugins.errors import ConfigurationError, MissingDependencyError


def _usage_pair(usage: Any) -> tuple[int | None, int | None]:
    if not usage:
        return None, None
    get = usage.get if isinstance(usage, dict) else lambda k: getattr(usage, k, None)
    inp = get("input_tokens") or get("prompt_tokens")
    out = get("output_tokens") or get("completion_tokens")
    return (int(inp) if inp is not None else None, int(out) if out is not None else None)


def langchain_meter(call_log: CallLog, *, provider_usage: bool = True) -> Any:
    """A LangChain callback handler that logs every call reaching the model it is attached to.

    ``provider_usage``: take token counts from the model's reported usage (an API's billed
    tokens); a local model's own tokenizer counts are not what the price is for, so for it the
    cl100k counts of the text are logged instead."""
    from langchain_core.callbacks import BaseCallbackHandler

    class CallLogHandler(BaseCallbackHandler):
        def __init__(self) -> None:
            self.prompts: dict[UUID, str] = {}

        def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: UUID, **kwargs: Any) -> None:
            self.prompts[run_id] = "\n".join(m.text for m in messages[0])

        def on_llm_start(self, serialized: Any, prompts: list[str], *, run_id: UUID, **kwargs: Any) -> None:
            self.prompts[run_id] = prompts[0]

        def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
            prompt = self.prompts.pop(run_id, "")
            generation = response.generations[0][0]
            usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
            if usage and usage.get("total_cost") == 0:
                return  # LangChain marks a response served from its LLM cache this way
            inp, out = _usage_pair(usage) if provider_usage else (None, None)
            metadata = getattr(getattr(generation, "message", None), "response_metadata", None) or {}
            finish = metadata.get("finish_reason") or (generation.generation_info or {}).get("finish_reason")
            call_log.add(prompt, generation.text, input_tokens=inp, output_tokens=out, finish_reason=finish)

    return CallLogHandler()


def llama_index_meter(call_log: CallLog, *, provider_usage: bool = True) -> Any:
    """A LlamaIndex callback manager that logs every call of the LLM it is given to
    (``provider_usage`` as for :func:`langchain_meter`)."""
    from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
    from llama_index.core.callbacks.base_handler import BaseCallbackHandler

    class CallLogHandler(BaseCallbackHandler):
        def __init__(self) -> None:
            super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])

        def on_event_start(
            self, event_type: Any, payload: Any = None, event_id: str = "", parent_id: str = "", **kwargs: Any
        ) -> str:
            return event_id

        def on_event_end(
            self, event_type: Any, payload: Any = None, event_id: str = "", **kwargs: Any
        ) -> None:
            if event_type != CBEventType.LLM or not payload:
                return
            if EventPayload.PROMPT in payload:
                prompt = str(payload[EventPayload.PROMPT])
                reply = payload.get(EventPayload.COMPLETION)
            else:
                prompt = "\n".join(str(m.content) for m in payload.get(EventPayload.MESSAGES, []))
                reply = payload.get(EventPayload.RESPONSE)
            text = getattr(reply, "text", None) or str(getattr(reply, "message", reply).content or "")
            raw = getattr(reply, "raw", None) or {}
            usage = raw.get("usage") if isinstance(raw, dict) else getattr(raw, "usage", None)
            inp, out = _usage_pair(usage) if provider_usage else (None, None)
            finish = raw.get("finish_reason") if isinstance(raw, dict) else getattr(raw, "finish_reason", None)
            call_log.add(prompt, text, input_tokens=inp, output_tokens=out, finish_reason=finish)

        def start_trace(self, trace_id: str | None = None) -> None:
            return None

        def end_trace(self, trace_id: str | None = None, trace_map: Any = None) -> None:
            return None

    return CallbackManager([CallLogHandler()])


def make_model(framework: str, spec: LLMSpec, *, max_tokens: int, call_log: CallLog) -> Any:
    """The model named by ``spec`` for ``framework``, metered into ``call_log``."""
    if spec.kind == "openai":
        import os

        if not os.environ.get("OPENAI_API_KEY"):
            raise ConfigurationError(
                "--llm openai:MODEL needs OPENAI_API_KEY in the environment; without a key, run "
                "the offline stand-in (--llm standin) or a local model (--llm local:PATH)."
            )
        if framework == "langchain":
            openai = require("langchain_openai", "langchain")
            return openai.ChatOpenAI(
                model=spec.target, max_tokens=max_tokens, callbacks=[langchain_meter(call_log)]
            )
        try:
            from llama_index.llms.openai import OpenAI
        except ImportError as exc:
            raise MissingDependencyError(
                "--llm openai:MODEL with LlamaIndex needs llama-index-llms-openai: "
                "pip install llama-index-llms-openai"
            ) from exc
        return OpenAI(model=spec.target, max_tokens=max_tokens, callback_manager=llama_index_meter(call_log))
    if spec.kind == "local":
        if framework == "langchain":
            from lean_plugins.langchain import LeanChatModel

            return LeanChatModel(
                model=spec.target,
                max_tokens=max_tokens,
                temperature=0.0,
                callbacks=[langchain_meter(call_log, provider_usage=False)],
            )
        from lean_plugins.llama_index import LeanLocalLLM

        llm = LeanLocalLLM(model=spec.target, max_new_tokens=max_tokens, temperature=0.0)
        llm.callback_manager = llama_index_meter(call_log, provider_usage=False)
        return llm
    raise ConfigurationError(f"no real model for --llm {spec}")
