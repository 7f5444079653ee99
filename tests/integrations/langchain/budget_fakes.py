"""A provider-like fake chat model for the budget and composition tests: streams its answer in
words, then a tool call and the provider's usage; takes tools with ``bind_tools``; records
what it really generated (a paid API would bill it)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, FakeMessagesListChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from lean_plugins.tokens import count_tokens


class ToolCallingFake(BaseChatModel):
    """Answers every call with ``answer`` (capped at ``max_tokens`` cl100k tokens, as a provider
    would) and, when tools are bound, a call of the first tool with ``tool_args``."""

    answer: str
    model_name: str = "gpt-4o-mini"
    max_tokens: int | None = None
    tool_args: dict[str, Any] = Field(default_factory=lambda: {"city": "Paris"})
    streams: bool = True
    calls: list[dict[str, Any]] = Field(default_factory=list)
    """One entry per call the model really served: the text it generated, the tools it saw."""

    @property
    def _llm_type(self) -> str:
        return "tool-calling-fake"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "max_tokens": self.max_tokens}

    def get_num_tokens(self, text: str) -> int:
        return count_tokens(text)

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _text(self) -> str:
        from lean_plugins.tokens import encode, get_tokenizer

        if self.max_tokens is None:
            return self.answer
        ids = encode(self.answer)[: self.max_tokens]
        return get_tokenizer().decode_bytes(ids).decode("utf-8", errors="ignore")

    def _usage(self, messages: list[BaseMessage], text: str) -> dict[str, int]:
        prompt = sum(count_tokens(str(m.content)) for m in messages)
        out = count_tokens(text)
        return {"input_tokens": prompt, "output_tokens": out, "total_tokens": prompt + out}

    def _finish(self, text: str) -> str:
        return "length" if self.max_tokens is not None and count_tokens(self.answer) > self.max_tokens else "stop"

    def _tool_calls(self, tools: Any) -> list[dict[str, Any]]:
        if not tools:
            return []
        name = tools[0]["function"]["name"]
        return [{"name": name, "args": dict(self.tool_args), "id": "call_1", "type": "tool_call"}]

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        text = self._text()
        self.calls.append({"generated": text, "tools": kwargs.get("tools"), "streamed": False})
        message = AIMessage(
            content=text,
            tool_calls=self._tool_calls(kwargs.get("tools")),
            usage_metadata=self._usage(messages, text),
            response_metadata={"model_name": self.model_name, "finish_reason": self._finish(text)},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        if not self.streams:
            raise NotImplementedError
        text = self._text()
        record = {"generated": "", "tools": kwargs.get("tools"), "streamed": True}
        self.calls.append(record)
        words = text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == len(words) - 1 else word + " "
            record["generated"] += piece
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        calls = self._tool_calls(kwargs.get("tools"))
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=[
                    {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": 0}
                    for c in calls
                ],
                usage_metadata=self._usage(messages, text),
                response_metadata={"model_name": self.model_name, "finish_reason": self._finish(text)},
                chunk_position="last",
            )
        )


class NonStreamingFake(ToolCallingFake):
    """The same model without streaming (``_stream`` not implemented) and without a
    max-tokens field that works (it ignores it): only the wrapper can budget it."""

    def _text(self) -> str:
        return self.answer

    _stream = BaseChatModel._stream  # type: ignore[assignment]


class NoUsageToolModel(FakeMessagesListChatModel):
    """LangChain's ``FakeMessagesListChatModel`` (tool calls kept) as a provider that reports no
    usage (no ``usage_metadata``) and cannot stream; takes tools with ``bind_tools``. It
    answers an agent's n-th step (n AI messages sent) with ``responses[n]`` (the last one after
    that), not with a counter: its settings, which a cache keys on, stay the same."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        step = sum(isinstance(m, AIMessage) for m in messages)
        reply = self.responses[min(step, len(self.responses) - 1)]
        return ChatResult(generations=[ChatGeneration(message=reply)])


class StreamingNoUsageToolModel(NoUsageToolModel):
    """The same, streaming each reply word by word, then its tool calls as ``tool_call_chunks``."""

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        message = self._generate(messages, stop, run_manager, **kwargs).generations[0].message
        words = str(message.content).split(" ")
        for i, word in enumerate(words):
            yield ChatGenerationChunk(message=AIMessageChunk(content=word if i == 0 else " " + word))
        chunks = [
            {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i, "type": "tool_call_chunk"}
            for i, c in enumerate(getattr(message, "tool_calls", None) or [])
        ]
        yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=chunks, chunk_position="last"))
