"""A deterministic tool-calling chat model for the agent tests and ``bench agent``.

:class:`ScriptedChatModel` is a real ``BaseChatModel`` (``bind_tools``, ``invoke``,
``stream``, async) whose replies come from a ``policy``: a plain function of the messages
and tool schemas it was sent (plain dicts), returning the text and the tool calls. It reads
what it is sent, so a layer that changes the request changes its answer. Like a provider it
streams text word by word with the tool calls and usage at the end, stops at its
``max_tokens``, and bills (``calls``) only what it generated, also when a reader closes its
stream early.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from lean_plugins.langchain.middleware import plain_messages
from pydantic import Field

from lean_plugins.agents import request_segments, request_tokens, tool_calls_text
from lean_plugins.tokens import count_tokens, encode, get_tokenizer

#: policy(messages, tools) -> {"text": str, "tool_calls": [{"name", "args", "id"}]}
Policy = Callable[[list[dict[str, Any]], list[dict[str, Any]]], dict[str, Any]]


def _prefix(text: str, tokens: int) -> str:
    ids = encode(text)[:tokens]
    return get_tokenizer().decode_bytes(ids).decode("utf-8", errors="ignore")


class ScriptedChatModel(BaseChatModel):
    """Replies with ``policy(messages, tools)``; see the module docstring."""

    policy: Any = Field(description="policy(messages, tools) -> {'text': ..., 'tool_calls': [...]}")
    model_name: str = "gpt-4o-mini"
    max_tokens: int | None = None
    cache_read_tokens: int = 0
    """Input tokens each call reports as read from a provider's prefix cache (usage details)."""
    calls: list[dict[str, Any]] = Field(default_factory=list)
    """One entry per call served: input and output tokens, tool calls, the request's segments."""

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "max_tokens": self.max_tokens}

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        kwargs.pop("tool_choice", None)
        return self.bind(tools=[t if isinstance(t, dict) else convert_to_openai_tool(t) for t in tools], **kwargs)

    def _reply(self, messages: list[BaseMessage], tools: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]], int, list]:
        plain = plain_messages(messages)
        reply = self.policy(plain, tools)
        text = reply.get("text", "")
        calls = [{"name": c["name"], "args": c["args"], "id": c["id"]} for c in reply.get("tool_calls", [])]
        if self.max_tokens is not None and count_tokens(text) > self.max_tokens:
            text = _prefix(text, self.max_tokens)
        return text, calls, request_tokens(plain, tools), request_segments(plain, tools)

    def _book(self, inputs: int, text: str, calls: list[dict[str, Any]], segments: list) -> int:
        out = count_tokens(text) + (count_tokens(tool_calls_text({"tool_calls": calls})) if calls else 0)
        self.calls.append({"input_tokens": inputs, "output_tokens": out, "tool_calls": calls, "text": text, "segments": segments})
        return out

    def _input_usage(self, inputs: int) -> dict[str, Any]:
        usage: dict[str, Any] = {"input_tokens": inputs, "output_tokens": 0, "total_tokens": inputs}
        if self.cache_read_tokens:
            usage["input_token_details"] = {"cache_read": min(self.cache_read_tokens, inputs)}
        return usage

    def _chunks(self, text: str, calls: list[dict[str, Any]], inputs: int) -> Iterator[AIMessageChunk]:
        # Usage of the prompt first (as Anthropic's message_start), then the words, then the
        # tool calls, the finish reason and the output usage.
        yield AIMessageChunk(content="", usage_metadata=self._input_usage(inputs))
        words = text.split(" ")
        for i, word in enumerate(words):
            yield AIMessageChunk(content=word if i == 0 else " " + word)
        out = count_tokens(text) + (count_tokens(tool_calls_text({"tool_calls": calls})) if calls else 0)
        finish = "length" if self.max_tokens is not None and count_tokens(text) >= self.max_tokens else "stop"
        yield AIMessageChunk(
            content="",
            tool_call_chunks=[
                {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i, "type": "tool_call_chunk"}
                for i, c in enumerate(calls)
            ],
            usage_metadata={"input_tokens": 0, "output_tokens": out, "total_tokens": out},
            response_metadata={"finish_reason": finish, "model_name": self.model_name},
        )

    def _stream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        text, calls, inputs, segments = self._reply(messages, kwargs.get("tools") or [])
        sent = []
        complete = False
        try:
            for chunk in self._chunks(text, calls, inputs):
                sent.append(chunk.content)
                if run_manager and chunk.content:
                    run_manager.on_llm_new_token(chunk.content, chunk=ChatGenerationChunk(message=chunk))
                yield ChatGenerationChunk(message=chunk)
            complete = True
        finally:  # a reader that closes the stream early is billed what was generated
            self._book(inputs, "".join(sent), calls if complete else [], segments)

    async def _astream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        stream = self._stream(messages, stop, None, **kwargs)
        try:
            for chunk in stream:
                if run_manager and chunk.message.content:
                    await run_manager.on_llm_new_token(chunk.message.content, chunk=chunk)
                yield chunk
        finally:  # closed early by the reader: the sync stream books what was generated
            stream.close()

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        text, calls, inputs, segments = self._reply(messages, kwargs.get("tools") or [])
        out = self._book(inputs, text, calls, segments)
        finish = "length" if self.max_tokens is not None and count_tokens(text) >= self.max_tokens else "stop"
        message = AIMessage(
            content=text,
            tool_calls=[{**c, "type": "tool_call"} for c in calls],
            usage_metadata={**self._input_usage(inputs), "output_tokens": out, "total_tokens": inputs + out},
            response_metadata={"finish_reason": finish, "model_name": self.model_name},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


# -- a small policy for the tests: search, then answer from what the search returned ------------
def last_user_text(messages: list[dict[str, Any]]) -> str:
    return next((tool_text(m) for m in reversed(messages) if m["role"] == "human"), "")


def tool_text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def search_then_answer(answers: dict[str, str], tool: str = "search") -> Policy:
    """A policy: for a new goal, call ``tool`` with the goal as query (id ``call-<n>``); after
    its result, answer with ``answers[goal]`` when that text is in the result it was sent
    (then quote the whole result, as a verbose model does), else say it was not found."""

    def policy(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
        goal = last_user_text(messages)
        last = messages[-1]
        if last["role"] == "human":
            n = sum(1 for m in messages if m["role"] == "human")
            return {"text": "", "tool_calls": [{"name": tool, "args": {"query": goal}, "id": f"call-{n}"}]}
        if last["role"] == "tool":
            expected = answers.get(goal, "")
            seen = tool_text(last)
            found = expected and expected in seen
            text = f"{expected}. The search result says: {seen}" if found else "Not found in the result."
            return {"text": text, "tool_calls": []}
        return {"text": "Done.", "tool_calls": []}

    return policy


def recording_tool_results(policy: Policy, seen: list[str]) -> Policy:
    """``policy``, appending to ``seen`` the text of each tool result it is sent last."""

    def recording(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
        if messages[-1]["role"] == "tool":
            seen.append(tool_text(messages[-1]))
        return policy(messages, tools)

    return recording
