"""LlamaIndex prompt template backed by :class:`lean_plugins.prompts.LeanPrompt`.

``LeanPromptTemplate`` is a ``BasePromptTemplate``: it goes wherever LlamaIndex takes a
prompt, e.g. ``query_engine.update_prompts({"response_synthesizer:text_qa_template": t})``.
``lean_from`` turns LlamaIndex's own templates (plain, chat, selector) into lean ones.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from typing import Any

from lean_plugins.errors import ConfigurationError
from lean_plugins.prompts import LeanPrompt, format_template, lean_text
from lean_plugins.prompts.layout import EPHEMERAL_CACHE_CONTROL, split_at_stable_prefix, stable_first
from llama_index.core.base.llms.generic_utils import prompt_to_messages
from llama_index.core.base.llms.types import CacheControl, CachePoint, ChatMessage, MessageRole, TextBlock
from llama_index.core.bridge.pydantic import Field
from llama_index.core.llms.llm import BaseLLM
from llama_index.core.prompts import ChatPromptTemplate, PromptTemplate, SelectorPromptTemplate
from llama_index.core.prompts.base import BasePromptTemplate
from llama_index.core.prompts.prompt_type import PromptType
from llama_index.core.types import BaseOutputParser


class LeanPromptTemplate(BasePromptTemplate):
    """A compact, sectioned prompt; each render records its token saving in the ledger.

    Pass a core :class:`~lean_plugins.prompts.LeanPrompt`, or its sections as keywords:

    .. code-block:: python

        from lean_plugins.llama_index import LeanPromptTemplate

        qa = LeanPromptTemplate(
            task="Answer from the context only.",
            context="{context_str}",
            input="Query: {query_str}\\nAnswer:",
            prompt_type="text_qa",
        )
        query_engine.update_prompts({"response_synthesizer:text_qa_template": qa})

    ``format_messages`` returns one user message, as LlamaIndex's ``PromptTemplate`` does.
    Calls that only measure the empty prompt (every variable given as ``""``, which is how
    LlamaIndex sizes chunks) are not recorded in the ledger.
    """

    # Typed Any: pydantic would otherwise try to rebuild the core dataclass as a model.
    lean: Any = Field(description="The core LeanPrompt that renders the text.")
    cache_breakpoint: bool = Field(
        default=False,
        description=(
            "format_messages puts a CachePoint (Anthropic cache_control, read by "
            "llama-index-llms-anthropic) after the stable prefix of the user message."
        ),
    )

    def __init__(
        self,
        lean: LeanPrompt | None = None,
        *,
        prompt_type: str = PromptType.CUSTOM,
        output_parser: BaseOutputParser | None = None,
        metadata: dict[str, Any] | None = None,
        template_var_mappings: dict[str, Any] | None = None,
        function_mappings: dict[str, Callable] | None = None,
        partial_kwargs: dict[str, Any] | None = None,
        cache_breakpoint: bool = False,
        **sections: Any,
    ) -> None:
        if lean is None:
            lean = LeanPrompt(**sections)
        elif not isinstance(lean, LeanPrompt):
            raise ConfigurationError(
                f"lean must be a lean_plugins.prompts.LeanPrompt, got {type(lean).__name__}."
            )
        elif sections:
            raise ConfigurationError(
                f"Pass either a LeanPrompt or its sections, not both (got sections {sorted(sections)})."
            )
        metadata = dict(metadata or {})
        metadata["prompt_type"] = prompt_type
        super().__init__(
            lean=lean,
            template_vars=list(lean.input_variables or []),
            kwargs=dict(partial_kwargs or {}),
            metadata=metadata,
            output_parser=output_parser,
            template_var_mappings=template_var_mappings,
            function_mappings=function_mappings,
            cache_breakpoint=cache_breakpoint,
        )

    @classmethod
    def class_name(cls) -> str:
        return "LeanPromptTemplate"

    def partial_format(self, **kwargs: Any) -> LeanPromptTemplate:
        """A copy with some variables fixed (LlamaIndex's partial)."""
        output_parser = self.output_parser
        self.output_parser = None  # deepcopy of some output parsers fails, as in PromptTemplate
        try:
            prompt = deepcopy(self)
        finally:
            self.output_parser = output_parser
        prompt.output_parser = output_parser
        prompt.kwargs.update(kwargs)
        return prompt

    def format(
        self,
        llm: BaseLLM | None = None,
        completion_to_prompt: Callable[[str], str] | None = None,
        **kwargs: Any,
    ) -> str:
        """Render the lean prompt with the partial and given variables."""
        del llm  # the text does not depend on the model
        values = self._map_all_vars({**self.kwargs, **kwargs})
        # LlamaIndex passes every variable it has; like PromptTemplate, ignore the extra ones.
        used = {k: v for k, v in values.items() if k in (self.lean.input_variables or [])}
        # get_empty_prompt_txt passes the partials again plus "" for every other variable.
        fresh = [v for k, v in kwargs.items() if k not in self.kwargs or self.kwargs[k] is not v]
        measuring = bool(kwargs) and all(v == "" for v in fresh)
        prompt = self.lean.render(used, record=not measuring)
        if self.output_parser is not None:
            prompt = self.output_parser.format(prompt)
        if completion_to_prompt is not None:
            prompt = completion_to_prompt(prompt)
        return prompt

    def format_messages(self, llm: BaseLLM | None = None, **kwargs: Any) -> list[ChatMessage]:
        """The rendered prompt as one user message (with ``cache_breakpoint``: its stable
        prefix, a ``CachePoint``, then the rest)."""
        del llm
        text = self.format(**kwargs)
        if not self.cache_breakpoint:
            return prompt_to_messages(text)
        slow = [*self.lean.slow_variables, *self.lean.partial_variables, *self.kwargs]
        stable, _ = split_at_stable_prefix(self.lean.template(), slow_variables=slow)
        values = self._map_all_vars({**self.kwargs, **kwargs})
        prefix = format_template(stable, values, owner="LeanPromptTemplate") if stable.strip() else ""
        if not prefix or not text.startswith(prefix):
            return prompt_to_messages(text)
        blocks: list[Any] = [TextBlock(text=prefix), CachePoint(cache_control=CacheControl(**EPHEMERAL_CACHE_CONTROL))]
        if text[len(prefix) :]:
            blocks.append(TextBlock(text=text[len(prefix) :]))
        return [ChatMessage(role=MessageRole.USER, blocks=blocks)]

    def get_template(self, llm: BaseLLM | None = None) -> str:
        """The lean template text (variables in braces)."""
        return self.lean.template()

    def token_report(self) -> Any:
        """:class:`~lean_plugins.prompts.TokenReport` of the fixed text against the source."""
        return self.lean.token_report()


def lean_from(prompt: BasePromptTemplate, **kwargs: Any) -> BasePromptTemplate:
    """The lean equivalent of a LlamaIndex prompt template.

    ``PromptTemplate`` -> :class:`LeanPromptTemplate` (prompt type, partials, mappings and
    output parser kept); ``ChatPromptTemplate`` -> ``ChatPromptTemplate`` with each message
    rewritten; ``SelectorPromptTemplate`` -> the same selector over lean templates. Each text
    is laid out stable-first (``layout="as_written"`` keeps the order; ``slow_variables`` count
    as stable); ``cache_breakpoint=True`` makes a ``PromptTemplate``'s lean form mark its stable
    prefix with a ``CachePoint``. Other ``kwargs`` go to :func:`lean_plugins.prompts.lean_text`
    (``prose_rate``, ``min_cosine``, ``max_example_tokens``, ...).
    """
    if isinstance(prompt, LeanPromptTemplate):
        return prompt
    layout = kwargs.pop("layout", "stable_first")
    slow_variables = list(kwargs.pop("slow_variables", ()))
    cache_breakpoint = kwargs.pop("cache_breakpoint", False)
    options = {"layout": layout, "slow_variables": slow_variables, "cache_breakpoint": cache_breakpoint}

    def lean(text: str) -> str:
        out = lean_text(text, **kwargs)
        return stable_first(out, slow_variables=slow_variables) if layout == "stable_first" else out

    if isinstance(prompt, SelectorPromptTemplate):
        return SelectorPromptTemplate(
            default_template=lean_from(prompt.default_template, **options, **kwargs),
            conditionals=[(cond, lean_from(t, **options, **kwargs)) for cond, t in prompt.conditionals or []],
        )
    if isinstance(prompt, PromptTemplate):
        return LeanPromptTemplate(
            LeanPrompt(task=lean(prompt.template), source_template=prompt.template, slow_variables=slow_variables),
            cache_breakpoint=cache_breakpoint,
            prompt_type=prompt.metadata.get("prompt_type", PromptType.CUSTOM),
            output_parser=prompt.output_parser,
            metadata={k: v for k, v in prompt.metadata.items() if k != "prompt_type"},
            template_var_mappings=prompt.template_var_mappings,
            function_mappings=prompt.function_mappings,
            partial_kwargs=dict(prompt.kwargs),
        )
    if isinstance(prompt, ChatPromptTemplate):
        messages = [
            ChatMessage(role=m.role, content=lean(m.content))
            if isinstance(m.content, str)
            else m
            for m in prompt.message_templates
        ]
        return ChatPromptTemplate(
            messages,
            prompt_type=prompt.metadata.get("prompt_type", PromptType.CUSTOM),
            output_parser=prompt.output_parser,
            template_var_mappings=prompt.template_var_mappings,
            function_mappings=prompt.function_mappings,
            **prompt.kwargs,
        )
    raise ConfigurationError(
        f"lean_from() supports PromptTemplate, ChatPromptTemplate and SelectorPromptTemplate, got "
        f"{type(prompt).__name__}. Build a LeanPromptTemplate from sections instead."
    )
