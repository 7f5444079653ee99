"""LangChain prompt templates backed by :class:`lean_plugins.prompts.LeanPrompt`.

``LeanPromptTemplate`` is a ``StringPromptTemplate`` (LCEL ``prompt | llm``, ``partial``,
``input_variables``); ``LeanChatPromptTemplate`` is a ``ChatPromptTemplate`` (system + human
messages) usable wherever one is. ``lean_from`` turns LangChain's own templates into these.

Both serialise with ``langchain_core.load.dumpd``. ``load`` refuses classes outside
langchain's namespaces unless told otherwise, so load them back with :func:`load_lean_prompt`
(or ``load(data, valid_namespaces=["lean_plugins"], allowed_objects=LOADABLE_CLASSES)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.load import load
from langchain_core.messages import BaseMessage
from langchain_core.prompts import (
    AIMessagePromptTemplate,
    BasePromptTemplate,
    ChatPromptTemplate,
    HumanMessagePromptTemplate,
    MessagesPlaceholder,
    PromptTemplate,
    StringPromptTemplate,
    SystemMessagePromptTemplate,
)
from pydantic import Field, PrivateAttr, model_validator

from lean_plugins.errors import ConfigurationError
from lean_plugins.prompts import LeanPrompt, lean_text, template_variables
from lean_plugins.prompts.layout import EPHEMERAL_CACHE_CONTROL, breakpoint_position, stable_first

_NAMESPACE = ["lean_plugins", "langchain", "prompt_template"]
_TEXT_MESSAGE_TEMPLATES = (SystemMessagePromptTemplate, HumanMessagePromptTemplate, AIMessagePromptTemplate)
_SECTION_FIELDS = ("role", "task", "context", "constraints", "output_format", "examples", "input")


class _LeanSerializable:
    """Serialisable under our own namespace, so ``load`` imports this module."""

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        """``["lean_plugins", "langchain", "prompt_template"]``: the module to import on load."""
        return _NAMESPACE

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True


class LeanPromptTemplate(_LeanSerializable, StringPromptTemplate):
    """A compact, sectioned prompt template; every render records its token saving.

    Example:
        .. code-block:: python

            from lean_plugins.langchain import LeanPromptTemplate

            prompt = LeanPromptTemplate(
                task="Answer from the context only.",
                context="{context}",
                input="Question: {question}\\nAnswer:",
            )
            chain = prompt | llm
    """

    role: str | None = None
    """Who the model is ("You are a support agent.")."""
    task: str | None = None
    """What to do."""
    context: str | None = None
    """Background or retrieved text, usually a variable ("{context}")."""
    constraints: list[str] | None = None
    """Rules, rendered as "- " lines under "Rules:"."""
    output_format: str | None = None
    """The shape of the answer, rendered after "Format:"."""
    examples: list[dict[str, str]] | None = None
    """Few-shot examples, each ``{"input": ..., "output": ...}``."""
    input: str | None = None
    """The part carrying the user's input ("Question: {question}\\nAnswer:"), rendered last."""
    example_budget: int | None = None
    """Token budget for examples; the most relevant to the input (MiniLM) that fit are used."""
    example_prefixes: list[str] = Field(default_factory=lambda: ["Input: ", "Output: "])
    """Prefixes of an example's input and output lines."""
    example_query_variables: list[str] | None = None
    """Variables whose values pick the examples (default: those of ``input``)."""
    source_template: str | None = None
    """The verbose template this one replaces (set by ``lean_from``), for the ledger."""
    record_to_ledger: bool = True
    """Record tokens before/after for each render in the savings ledger."""
    template_format: str = "f-string"
    """Only f-string templates (``{name}``, ``{{`` for a brace) are supported."""
    layout: str = "stable_first"
    """``"stable_first"``: sections without variables first, then those with only
    ``slow_variables``, then per-call ones (a longer prefix for providers' caches);
    ``"as_written"``: the fixed section order."""
    slow_variables: list[str] = Field(default_factory=list)
    """Variables that change rarely (a tool list, a shared document): counted as stable."""

    _core: LeanPrompt | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _fill_input_variables(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        if values.get("template_format", "f-string") != "f-string":
            raise ConfigurationError(
                f"LeanPromptTemplate supports template_format='f-string' only, got "
                f"{values['template_format']!r}; convert the template to f-string style."
            )
        if isinstance(values.get("constraints"), str):
            values["constraints"] = [values["constraints"]]
        if values.get("examples"):
            values["examples"] = [
                e if isinstance(e, dict) else {"input": e[0], "output": e[1]} for e in values["examples"]
            ]
        sections = {k: values.get(k) for k in _SECTION_FIELDS}
        used = LeanPrompt(**sections, record_to_ledger=False).input_variables or []
        partials = values.get("partial_variables") or {}
        if "input_variables" not in values or values["input_variables"] is None:
            values["input_variables"] = [v for v in used if v not in partials]
        else:
            # Let the core validate: undeclared -> error naming it, unused -> warning.
            LeanPrompt(
                **sections, input_variables=[*values["input_variables"], *partials], record_to_ledger=False
            )
        return values

    @property
    def _prompt_type(self) -> str:
        return "lean"

    def lean_prompt(self) -> LeanPrompt:
        """The core :class:`LeanPrompt` this template renders with."""
        if self._core is None:
            self._core = LeanPrompt(
                **{k: getattr(self, k) for k in _SECTION_FIELDS},
                example_budget=self.example_budget,
                example_prefixes=tuple(self.example_prefixes),  # type: ignore[arg-type]
                example_query_variables=self.example_query_variables,
                source_template=self.source_template,
                record_to_ledger=self.record_to_ledger,
                name=self.name,
                layout=self.layout,
                slow_variables=tuple(self.slow_variables),
            )
        return self._core

    @property
    def template(self) -> str:
        """The lean template text (all examples included)."""
        return self.lean_prompt().template()

    def format(self, **kwargs: Any) -> str:
        """Render with the partial and given variables.

        Like LangChain's own templates, keys the template does not use are ignored: in LCEL a
        prompt often receives the whole chain input. (A declared but unused input variable
        still warns, at construction.)
        """
        values = self._merge_partial_and_user_variables(**kwargs)
        core = self.lean_prompt()
        used = {k: v for k, v in values.items() if k in (core.input_variables or [])}
        # pretty_repr()/pretty_print() render "{name}" for each variable: not a model call.
        placeholder_render = bool(used) and all(v == f"{{{k}}}" for k, v in used.items())
        return core.render(used, record=not placeholder_render)

    def token_report(self) -> Any:
        """:class:`~lean_plugins.prompts.TokenReport` of the fixed text against the source."""
        return self.lean_prompt().token_report()


class LeanChatPromptTemplate(_LeanSerializable, ChatPromptTemplate):
    """A ``ChatPromptTemplate`` whose messages are lean; renders record their token saving.

    Build it from sections (system message) and a human message with :meth:`from_sections`,
    or from an existing chat template with :func:`lean_from`.
    """

    source_templates: list[str | None] | None = None
    """For each message, the verbose template it replaces (None: not rewritten)."""
    cache_breakpoint: bool = False
    """Mark the end of the stable prefix as an Anthropic cache breakpoint: the message text is
    split into content blocks and the block before the first per-call value gets
    ``cache_control={"type": "ephemeral"}`` (read by langchain-anthropic; other chat models
    take the same text as content blocks)."""
    slow_variables: list[str] = Field(default_factory=list)
    """Variables that change rarely (a tool list, a shared document): kept in the stable prefix."""
    record_to_ledger: bool = True
    """Record tokens before/after for each render in the savings ledger."""

    @classmethod
    def from_sections(
        cls,
        *,
        human: str = "{input}",
        role: str | None = None,
        task: str | None = None,
        context: str | None = None,
        constraints: str | Sequence[str] | None = None,
        output_format: str | None = None,
        examples: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> LeanChatPromptTemplate:
        """A system message rendered compactly from sections, then the ``human`` message."""
        system = LeanPrompt(
            role=role,
            task=task,
            context=context,
            constraints=constraints,
            output_format=output_format,
            examples=examples,
            record_to_ledger=False,
        ).template()
        messages: list[Any] = [("system", system)] if system else []
        return cls([*messages, ("human", human)], **kwargs)

    def format_messages(self, **kwargs: Any) -> list[BaseMessage]:
        messages = super().format_messages(**kwargs)
        if self.cache_breakpoint:
            messages = self._with_cache_breakpoint(messages)
        if self.record_to_ledger and self.source_templates:
            values = self._merge_partial_and_user_variables(**kwargs)
            rendered = [
                m.content if isinstance(m, BaseMessage) and isinstance(m.content, str) else None
                for m in self._one_message_per_template(messages)
            ]
            LeanPrompt.record_messages(self.source_templates, rendered, values, name=self.name)
        return messages

    def _with_cache_breakpoint(self, messages: list[BaseMessage]) -> list[BaseMessage]:
        aligned = self._one_message_per_template(messages)
        if aligned and aligned[0] is None:
            return messages  # a placeholder expanded: messages and templates do not line up
        templates = [
            m.prompt.template
            if isinstance(m, _TEXT_MESSAGE_TEMPLATES) and isinstance(getattr(m, "prompt", None), PromptTemplate)
            else None
            for m in self.messages
        ]
        texts = [m.content if isinstance(m.content, str) else None for m in messages]
        slow = [*self.slow_variables, *self.partial_variables]
        position = breakpoint_position(templates, texts, slow_variables=slow)
        if position is None:
            return messages
        index, cut = position
        text = texts[index] or ""
        blocks: list[str | dict[str, Any]] = [
            {"type": "text", "text": text[:cut], "cache_control": dict(EPHEMERAL_CACHE_CONTROL)}
        ]
        if text[cut:]:
            blocks.append({"type": "text", "text": text[cut:]})
        out = list(messages)
        out[index] = messages[index].model_copy(update={"content": blocks})
        return out

    async def aformat_messages(self, **kwargs: Any) -> list[BaseMessage]:
        # Rendering does no I/O; the sync path records the ledger event too.
        return self.format_messages(**kwargs)

    def _one_message_per_template(self, messages: list[BaseMessage]) -> list[BaseMessage | None]:
        # A placeholder expands to any number of messages; only 1:1 templates line up.
        if len(messages) == len(self.messages):
            return list(messages)
        return [None] * len(self.messages)


#: Classes a dumped lean prompt may contain; pass as ``allowed_objects`` to ``load``.
LOADABLE_CLASSES = (
    LeanPromptTemplate,
    LeanChatPromptTemplate,
    PromptTemplate,
    SystemMessagePromptTemplate,
    HumanMessagePromptTemplate,
    AIMessagePromptTemplate,
    MessagesPlaceholder,
)


def load_lean_prompt(data: dict[str, Any] | str) -> BasePromptTemplate:
    """Load a ``dumpd``/``dumps`` result of a lean template (only the classes above allowed)."""
    import json
    import warnings

    obj = json.loads(data) if isinstance(data, str) else data
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*`load` is in beta.*")
        return load(obj, valid_namespaces=["lean_plugins"], allowed_objects=LOADABLE_CLASSES)


def lean_from(prompt: BasePromptTemplate, **kwargs: Any) -> BasePromptTemplate:
    """The lean equivalent of a LangChain prompt template.

    A ``PromptTemplate`` becomes a :class:`LeanPromptTemplate`, a ``ChatPromptTemplate`` a
    :class:`LeanChatPromptTemplate` (each text message rewritten; placeholders and fixed
    messages kept). Variables, partials, metadata and tags carry over. Each text is laid out
    stable-first (:func:`lean_plugins.prompts.layout.stable_first`; ``layout="as_written"``
    keeps the order), with ``slow_variables`` counted as stable. ``cache_breakpoint=True``
    (chat prompts) marks the end of the stable prefix for Anthropic's prompt cache. Other
    ``kwargs`` go to :func:`lean_plugins.prompts.lean_text` (``example_tokens``, ``compressor``,
    ``prose_rate``, ``min_cosine``, ``max_example_tokens``).
    """
    if isinstance(prompt, (LeanPromptTemplate, LeanChatPromptTemplate)):
        return prompt
    layout = kwargs.pop("layout", "stable_first")
    slow_variables = list(kwargs.pop("slow_variables", ()))
    cache_breakpoint = kwargs.pop("cache_breakpoint", False)

    def lean(text: str) -> str:
        out = lean_text(text, **kwargs)
        return stable_first(out, slow_variables=slow_variables) if layout == "stable_first" else out

    common = {"metadata": prompt.metadata, "tags": prompt.tags, "name": prompt.name}
    if isinstance(prompt, PromptTemplate):
        _require_f_string(prompt)
        return LeanPromptTemplate(
            task=lean(prompt.template),
            slow_variables=slow_variables,
            source_template=prompt.template,
            input_variables=list(prompt.input_variables),
            partial_variables=dict(prompt.partial_variables),
            output_parser=prompt.output_parser,
            **common,
        )
    if isinstance(prompt, ChatPromptTemplate):
        messages: list[Any] = []
        sources: list[str | None] = []
        for message in prompt.messages:
            inner = getattr(message, "prompt", None)
            if isinstance(message, _TEXT_MESSAGE_TEMPLATES) and isinstance(inner, PromptTemplate):
                _require_f_string(inner)
                text = lean(inner.template)
                if set(template_variables(text)) != set(inner.input_variables):
                    raise ConfigurationError(
                        f"lean_from lost a variable of {inner.template!r}"
                    )  # never expected
                messages.append(type(message).from_template(text, **message.additional_kwargs))
                sources.append(inner.template)
            else:
                messages.append(message)
                sources.append(None)
        return LeanChatPromptTemplate(
            messages,
            source_templates=sources,
            cache_breakpoint=cache_breakpoint,
            slow_variables=slow_variables,
            partial_variables=dict(prompt.partial_variables),
            **common,
        )
    raise ConfigurationError(
        f"lean_from() supports PromptTemplate and ChatPromptTemplate, got {type(prompt).__name__}. "
        "Build a LeanPromptTemplate from sections, or pass the inner PromptTemplate."
    )


def _require_f_string(prompt: PromptTemplate) -> None:
    if prompt.template_format != "f-string":
        raise ConfigurationError(
            f"lean_from() rewrites f-string templates only; this one is {prompt.template_format!r}. "
            "Convert it to f-string style ({name} variables) first."
        )
