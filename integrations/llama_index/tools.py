"""LlamaIndex agents: tools whose long outputs are compressed before they enter the memory.

``FunctionAgent`` and ``AgentWorkflow`` put every tool output into the chat memory, and the
LLM re-reads it on every later step. Wrap the tools::

    from llama_index.core.agent.workflow import FunctionAgent
    from lean_plugins.llama_index.tools import compress_tool_outputs

    agent = FunctionAgent(tools=compress_tool_outputs([search, read_file]), llm=llm)

The model is sent the compressed text (JSON stays JSON with its keys, numbers and ids; fenced
code kept, unfenced source code kept or cut by whole top-level blocks, a stack trace cut by
whole middle frames only; numbers protected: :class:`lean_plugins.agents.ToolResultCompressor`), ranked
for the goal: the user's goal when the app knows it (``goal``), else the arguments the agent
called the tool with. Nothing is lost: the tool's own output stays in
``ToolOutput.raw_output``, and the text it returned in ``raw_output`` when that was its text.
Short outputs and error outputs pass unchanged, and so do the outputs of ``return_direct``
tools: such an output is the answer the user gets, not something the model reads again, so
:func:`compress_tool_outputs` leaves those tools unwrapped and :class:`LeanCompressedTool`
passes their outputs through. Each compressed output is booked once in the
ledger (``compress / tool_output``, at ``model``'s price); the steps that re-read it later
are not counted again, so the ledger understates what a long run saves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from lean_plugins.agents import ToolResultCompressor
from lean_plugins.ledger import record
from llama_index.core.tools import AsyncBaseTool, BaseTool, ToolMetadata, ToolOutput
from llama_index.core.tools.types import adapt_to_async_tool

__all__ = ["LeanCompressedTool", "compress_tool_outputs"]

Goal = str | Callable[[], str | None] | None


class LeanCompressedTool(AsyncBaseTool):
    """``tool`` with its long outputs compressed (see the module docstring).

    Args:
        tool: any LlamaIndex tool (``FunctionTool``, ``QueryEngineTool``, ...).
        compressor: a shared :class:`~lean_plugins.agents.ToolResultCompressor` (default: a new one).
        goal: the text outputs are ranked for: a string, a callable returning the current
            goal, or ``None`` (the tool call's arguments).
        model: the agent LLM's model name, for the ledger's prices.
        tenant: recorded with each ledger event.
    """

    def __init__(
        self,
        tool: BaseTool,
        compressor: ToolResultCompressor | None = None,
        *,
        goal: Goal = None,
        model: str | None = None,
        tenant: str | None = None,
    ) -> None:
        self.tool = adapt_to_async_tool(tool)
        self.compressor = compressor or ToolResultCompressor()
        self.goal = goal
        self.model = model
        self.tenant = tenant

    @classmethod
    def class_name(cls) -> str:
        return "LeanCompressedTool"

    @property
    def metadata(self) -> ToolMetadata:
        return self.tool.metadata

    def _goal(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        goal = self.goal() if callable(self.goal) else self.goal
        if goal:
            return goal
        parts = [str(a) for a in args] + [str(v) for v in kwargs.values() if isinstance(v, (str, int, float))]
        return " ".join(parts) or None

    def _lean(self, output: ToolOutput, goal: str | None) -> ToolOutput:
        text = output.content
        if output.is_error or not isinstance(text, str) or not text or self.metadata.return_direct:
            # A return_direct output is the user's final answer: never shortened.
            return output
        done = self.compressor.compress(text, goal)
        if not done.changed:
            return output
        record(
            layer="compress",
            kind="tool_output",
            input_before=done.original_tokens,
            input_after=done.tokens,
            model=self.model,
            tenant=self.tenant,
            meta={"tool": output.tool_name, "kind": done.kind},
        )
        return ToolOutput(
            tool_name=output.tool_name,
            content=done.text,
            raw_input=output.raw_input,
            raw_output=output.raw_output if output.raw_output is not None else text,
            is_error=output.is_error,
        )

    def call(self, *args: Any, **kwargs: Any) -> ToolOutput:
        return self._lean(self.tool.call(*args, **kwargs), self._goal(args, kwargs))

    async def acall(self, *args: Any, **kwargs: Any) -> ToolOutput:
        output = await self.tool.acall(*args, **kwargs)
        goal = self._goal(args, kwargs)
        if self.compressor.cached(output.content or "", goal) is None:
            # the compressor is CPU work: off the event loop
            return await asyncio.to_thread(self._lean, output, goal)
        return self._lean(output, goal)

    def __repr__(self) -> str:
        return f"LeanCompressedTool({self.metadata.name!r}, {self.compressor!r})"


def compress_tool_outputs(
    tools: Sequence[BaseTool],
    compressor: ToolResultCompressor | None = None,
    *,
    goal: Goal = None,
    model: str | None = None,
    tenant: str | None = None,
) -> list[BaseTool]:
    """Every tool of ``tools`` wrapped by :class:`LeanCompressedTool`, one compressor shared;
    ``return_direct`` tools are returned as they are (their output is the user's answer)."""
    compressor = compressor or ToolResultCompressor()
    return [
        t if t.metadata.return_direct else LeanCompressedTool(t, compressor, goal=goal, model=model, tenant=tenant)
        for t in tools
    ]

