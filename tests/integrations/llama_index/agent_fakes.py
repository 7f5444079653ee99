"""A deterministic ``FunctionCallingLLM`` for the LlamaIndex agent tests.

:class:`ScriptedFunctionLLM` answers with ``policy(messages, tools)`` (plain dicts, as the
LangChain one in ``tests/integrations/langchain/agent_fakes.py``): it reads what it is sent,
calls tools through ``chat_with_tools`` like a provider's function-calling LLM (tool calls in
``additional_kwargs["tool_calls"]``), streams word by word, stops at ``max_tokens`` and
records each call's input tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from pydantic import Field

from lean_plugins.agents import request_tokens
from lean_plugins.tokens import count_tokens, encode, get_tokenizer


def plain(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        role = {"user": "human", "assistant": "ai"}.get(m.role.value, m.role.value)
        item: dict[str, Any] = {"role": role, "content": m.content or ""}
        calls = m.additional_kwargs.get("tool_calls")
        if calls:
            item["tool_calls"] = calls
        out.append(item)
    return out


class ScriptedFunctionLLM(FunctionCallingLLM):
    """Replies with ``policy(messages, tools)``; see the module docstring."""

    policy: Any = Field(description="policy(messages, tools) -> {'text': ..., 'tool_calls': [...]}")
    model_name: str = Field(default="gpt-4o-mini", description="The model name (prices).")
    max_tokens: int | None = Field(default=None, description="Output tokens at most.")
    calls: list[dict[str, Any]] = Field(default_factory=list, description="Input tokens of each call served.")

    @classmethod
    def class_name(cls) -> str:
        return "ScriptedFunctionLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(is_function_calling_model=True, is_chat_model=True, model_name=self.model_name)

    def _prepare_chat_with_tools(self, tools: Sequence[Any], user_msg: Any = None, chat_history: Any = None,
                                 verbose: bool = False, allow_parallel_tool_calls: bool = False, **kwargs: Any) -> dict[str, Any]:  # fmt: skip
        messages = list(chat_history or [])
        if user_msg:
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg) if isinstance(user_msg, str) else user_msg)
        specs = [{"type": "function", "function": t.metadata.to_openai_tool()["function"]} for t in tools]
        return {"messages": messages, "tools": specs, **kwargs}

    def get_tool_calls_from_response(self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any) -> list[ToolSelection]:
        calls = response.message.additional_kwargs.get("tool_calls") or []
        if not calls and error_on_no_tool_call:
            raise ValueError("Expected at least one tool call.")
        return [ToolSelection(tool_id=c["id"], tool_name=c["name"], tool_kwargs=c["args"]) for c in calls]

    def _reply(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        tools = kwargs.get("tools") or []
        sent = plain(messages)
        reply = self.policy(sent, tools)
        text = reply.get("text", "")
        if self.max_tokens is not None and count_tokens(text) > self.max_tokens:
            text = get_tokenizer().decode_bytes(encode(text)[: self.max_tokens]).decode("utf-8", errors="ignore")
        self.calls.append({"input_tokens": request_tokens(sent, tools)})
        return text, reply.get("tool_calls", [])

    @staticmethod
    def _message(text: str, calls: list[dict[str, Any]]) -> ChatMessage:
        return ChatMessage(role=MessageRole.ASSISTANT, content=text, additional_kwargs={"tool_calls": calls} if calls else {})

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        text, calls = self._reply(messages, kwargs)
        return ChatResponse(message=self._message(text, calls), raw={"usage": {"prompt_tokens": self.calls[-1]["input_tokens"]}})

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        text, calls = self._reply(messages, kwargs)

        def gen() -> ChatResponseGen:
            so_far = ""
            words = text.split(" ") if text else []
            for i, word in enumerate(words):
                piece = word if i == 0 else " " + word
                so_far += piece
                last = i == len(words) - 1
                yield ChatResponse(message=self._message(so_far, calls if last else []), delta=piece)
            if not words:
                yield ChatResponse(message=self._message("", calls), delta="")

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self.chat(messages, **kwargs)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        sync = self.stream_chat(messages, **kwargs)

        async def gen() -> ChatResponseAsyncGen:
            for response in sync:
                yield response

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self.chat([ChatMessage(role=MessageRole.USER, content=prompt)]).message.content or "")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text = self.complete(prompt).text

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=text, delta=text)

        return gen()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self.complete(prompt)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        text = self.complete(prompt).text

        async def gen() -> CompletionResponseAsyncGen:
            yield CompletionResponse(text=text, delta=text)

        return gen()


def search_then_answer(answers: dict[str, str], tool: str = "search") -> Any:
    """For a new goal call ``tool`` with the goal; after its output, answer with
    ``answers[goal]`` (and a quote of the output) when the output it was sent holds it."""

    def policy(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
        goal = next((m["content"] for m in reversed(messages) if m["role"] == "human"), "")
        last = messages[-1]
        if last["role"] == "human":
            return {"tool_calls": [{"name": tool, "args": {"query": goal}, "id": f"call-{len(messages)}"}]}
        expected = answers.get(goal, "")
        if last["role"] == "tool" and expected and expected in last["content"]:
            return {"text": f"{expected}. The search says: {last['content']}"}
        return {"text": "Not found in the result."}

    return policy

