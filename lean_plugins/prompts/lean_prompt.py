"""``LeanPrompt``: a structured prompt template that renders compactly and reports its tokens."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lean_plugins.errors import ConfigurationError, MissingVariableError
from lean_plugins.prompts.examples import Example, render_example, select_examples
from lean_plugins.prompts.template import format_template, strip_variables, template_variables
from lean_plugins.tokens import Tokenizer, count_tokens

logger = logging.getLogger("lean_plugins.prompts")

#: Render order of the sections. ``input`` is the part that carries the user's input
#: ("Question: {question}\nAnswer:"); it goes last, after the examples. With the default
#: ``layout="stable_first"`` this order holds within each of three groups: sections with no
#: variable, then sections with only slow variables, then sections with per-call ones.
SECTIONS = ("role", "task", "context", "constraints", "output_format", "examples", "input")
LAYOUTS = ("stable_first", "as_written")
#: Sections rendered under a label ("Context: ..."); the others are rendered as written.
SECTION_LABELS = {
    "context": "Context",
    "constraints": "Rules",
    "output_format": "Format",
    "examples": "Examples",
}


class UnusedVariableWarning(UserWarning):
    """An input variable is declared or passed but no section of the template uses it."""


def _escape_braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _labelled(label: str, body: str) -> str:
    # One delimiter style everywhere: "Label: text" for a short fixed line, "Label:\ntext" for
    # a block or a variable (whose value, e.g. retrieved documents, is usually a block).
    block = "\n" in body or bool(template_variables(body))
    return f"{label}:\n{body}" if block else f"{label}: {body}"


@dataclass(frozen=True)
class TokenReport:
    """Tokens of a template's fixed text (variables removed), whole and per section."""

    fixed_tokens: int
    sections: dict[str, int]
    tokenizer: str
    source_fixed_tokens: int | None = None
    example_budget: int | None = None
    stable_prefix_tokens: int | None = None
    """Fixed tokens before the first per-call variable: what a provider's prefix cache can reuse."""
    source_stable_prefix_tokens: int | None = None
    """The same for the source template."""

    @property
    def saved_tokens(self) -> int | None:
        """Fixed tokens saved against the source template (None without a source)."""
        return None if self.source_fixed_tokens is None else self.source_fixed_tokens - self.fixed_tokens

    @property
    def reduction(self) -> float | None:
        """Share of the source template's fixed tokens saved, 0..1."""
        if not self.source_fixed_tokens:
            return None
        return 1 - self.fixed_tokens / self.source_fixed_tokens

    def __str__(self) -> str:
        rows = [f"{name:<14} {tokens:>6}" for name, tokens in self.sections.items()]
        rows.append(f"{'fixed total':<14} {self.fixed_tokens:>6}")
        if self.source_fixed_tokens is not None:
            rows.append(f"{'source':<14} {self.source_fixed_tokens:>6}")
            rows.append(f"{'saved':<14} {self.saved_tokens:>6}  ({self.reduction:.0%})")
        if self.example_budget is not None:
            rows.append(f"{'example budget':<14} {self.example_budget:>6}")
        if self.stable_prefix_tokens is not None:
            source = "" if self.source_stable_prefix_tokens is None else f"  (source {self.source_stable_prefix_tokens})"
            rows.append(f"{'stable prefix':<14} {self.stable_prefix_tokens:>6}{source}")
        return f"tokens ({self.tokenizer})\n" + "\n".join(rows)


@dataclass
class LeanPrompt:
    """A prompt template of named, optional sections, rendered compactly.

    Sections (all optional, rendered in this order, empty ones left out): ``role`` ("You are
    ..."), ``task``, ``context``, ``constraints`` (one string or a list, rendered as "- "
    lines), ``output_format``, ``examples`` (few-shot, see ``example_budget``) and ``input``
    (the part with the user's input, e.g. "Question: {question}\\nAnswer:"). Sections are
    joined by one line break; labelled ones read "Label: text" or "Label:\\ntext".

    ``{name}`` in any section is an input variable (``{{``/``}}`` are literal braces).
    Pass ``input_variables`` to declare them: a section using an undeclared one is an error,
    a declared one no section uses is a warning. Rendering without a variable raises
    :class:`~lean_plugins.errors.MissingVariableError` naming it.

    With ``example_budget`` (tokens), each render keeps the examples most similar to the
    input (MiniLM cosine; the input is the values of ``example_query_variables``, by default
    those of the ``input`` section) that fit the budget.

    ``layout="stable_first"`` (default) renders sections without variables first, then those
    with only ``slow_variables`` (values that rarely change: a tool list, a shared document),
    then those with per-call variables, so providers' prefix caches can reuse the start;
    ``"as_written"`` keeps the order above.

    Each :meth:`format` records a ledger event (layer "prompts", kind "render"):
    ``input_before`` is the render of ``source_template`` (when the prompt came from
    :meth:`from_template`) or else the render with every example, ``input_after`` the lean
    render.
    """

    role: str | None = None
    task: str | None = None
    context: str | None = None
    constraints: str | Sequence[str] | None = None
    output_format: str | None = None
    examples: Sequence[Example | Mapping[str, Any] | Sequence[str]] | None = None
    input: str | None = None
    input_variables: Sequence[str] | None = None
    partial_variables: Mapping[str, Any] = field(default_factory=dict)
    example_budget: int | None = None
    example_prefixes: tuple[str, str] = ("Input: ", "Output: ")
    example_query_variables: Sequence[str] | None = None
    source_template: str | None = None
    tokenizer: str | Tokenizer = "cl100k_base"
    record_to_ledger: bool = True
    name: str | None = None
    layout: str = "stable_first"
    slow_variables: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigurationError(f"layout must be one of {LAYOUTS}, got {self.layout!r}.")
        self.slow_variables = tuple(self.slow_variables)
        if isinstance(self.constraints, str):
            self.constraints = [self.constraints]
        self.constraints = [c for c in (self.constraints or []) if c and c.strip()] or None
        self.examples = [Example.coerce(e) for e in (self.examples or [])]
        self.example_prefixes = tuple(self.example_prefixes)  # type: ignore[assignment]
        self.partial_variables = dict(self.partial_variables)
        if self.example_budget is not None and self.example_budget < 0:
            raise ConfigurationError(f"example_budget must be >= 0 tokens, got {self.example_budget}.")
        used = template_variables(self.template())
        if self.input_variables is None:
            declared = used
        else:
            declared = list(dict.fromkeys(self.input_variables))
            undeclared = [v for v in used if v not in declared and v not in self.partial_variables]
            if undeclared:
                raise ConfigurationError(
                    f"The template uses {undeclared} but input_variables={declared} does not declare "
                    f"{'it' if len(undeclared) == 1 else 'them'}; add to input_variables or remove "
                    "from the text."
                )
        unused = [v for v in [*declared, *self.partial_variables] if v not in used]
        if unused:
            warnings.warn(
                f"Input variable(s) {unused} are declared but no section of the prompt uses them.",
                UnusedVariableWarning,
                stacklevel=3,
            )
        self.input_variables = [v for v in declared if v not in self.partial_variables]
        for name in self.example_query_variables or []:
            if name not in used:
                raise ConfigurationError(
                    f"example_query_variables names {name!r}, which no section uses; pick from {used}."
                )
        self._example_vectors: Any = None

    # -- construction --------------------------------------------------------------------

    @classmethod
    def from_template(cls, template: str, *, lean: bool = False, **kwargs: Any) -> LeanPrompt:
        """A lean prompt from existing template text (f-string style ``{variables}``).

        The text is shortened by :func:`~lean_plugins.prompts.minify` (rules only), or with
        ``lean=True`` by :func:`~lean_plugins.prompts.lean_text` (rules, concise rewrites,
        compact examples, the compressor for long instructions), then laid out stable-first
        (:func:`~lean_plugins.prompts.layout.stable_first`; ``layout="as_written"`` keeps the
        order). The original is kept as ``source_template`` for :meth:`token_report` and the
        ledger.
        """
        from lean_plugins.prompts.lean import lean_text
        from lean_plugins.prompts.minifier import minify

        text = lean_text(template) if lean else minify(template)
        if kwargs.get("layout", "stable_first") == "stable_first":
            from lean_plugins.prompts.layout import stable_first

            text = stable_first(text, slow_variables=kwargs.get("slow_variables", ()))
        kwargs.setdefault("source_template", template)
        return cls(task=text, **kwargs)

    def to_config(self) -> dict[str, Any]:
        """Plain, JSON-able settings; ``LeanPrompt(**config)`` rebuilds the prompt."""
        return {
            "role": self.role,
            "task": self.task,
            "context": self.context,
            "constraints": list(self.constraints) if self.constraints else None,
            "output_format": self.output_format,
            "examples": [e.to_dict() for e in self.examples] or None,  # type: ignore[union-attr]
            "input": self.input,
            "input_variables": list(self.input_variables or []),
            "partial_variables": dict(self.partial_variables),
            "example_budget": self.example_budget,
            "example_prefixes": list(self.example_prefixes),
            "example_query_variables": list(self.example_query_variables or []) or None,
            "source_template": self.source_template,
            "tokenizer": self.tokenizer if isinstance(self.tokenizer, str) else "cl100k_base",
            "record_to_ledger": self.record_to_ledger,
            "name": self.name,
            "layout": self.layout,
            "slow_variables": list(self.slow_variables),
        }

    def partial(self, **values: Any) -> LeanPrompt:
        """A copy with some variables fixed; they leave ``input_variables``."""
        config = self.to_config()
        config["partial_variables"] = {**self.partial_variables, **values}
        config["input_variables"] = list(dict.fromkeys([*(self.input_variables or []), *values]))
        return type(self)(**config)

    # -- rendering -----------------------------------------------------------------------

    def section_texts(self, examples: Sequence[Example] | None = None) -> dict[str, str]:
        """Each non-empty section as template text (variables still in braces)."""
        chosen = self.examples if examples is None else examples
        out: dict[str, str] = {}
        for name in SECTIONS:
            if name == "constraints":
                items = self.constraints or []
                body = items[0] if len(items) == 1 else "\n".join(f"- {c}" for c in items)
            elif name == "examples":
                body = "\n".join(
                    _escape_braces(render_example(e, self.example_prefixes)) for e in chosen or []
                )
            else:
                body = (getattr(self, name) or "").strip()
            if body.strip():
                out[name] = _labelled(SECTION_LABELS[name], body.strip()) if name in SECTION_LABELS else body
        if self.layout == "stable_first":
            out = dict(sorted(out.items(), key=lambda item: self._stability(item[0], item[1])))
        return out

    def _stability(self, name: str, text: str) -> int:
        """0: no variable, 1: only slow variables, 2: a per-call variable (sorting is stable, so
        the section order holds within each group). Examples picked per input are per call."""
        names = set(template_variables(text)) - set(self.partial_variables)
        if name == "examples" and self.example_budget is not None:
            return 2
        if names - set(self.slow_variables):
            return 2
        return 1 if names else 0

    def template(self, examples: Sequence[Example] | None = None) -> str:
        """The lean template text: non-empty sections joined by line breaks."""
        return "\n".join(self.section_texts(examples).values())

    def _values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        merged = {**self.partial_variables, **values}
        missing = [v for v in self.input_variables or [] if v not in merged]
        if missing:
            raise MissingVariableError(
                f"LeanPrompt{f' {self.name!r}' if self.name else ''} is missing the input variable(s) "
                f"{missing}; pass {', '.join(f'{m}=...' for m in missing)} to format()."
            )
        extra = [
            k for k in values if k not in (self.input_variables or []) and k not in self.partial_variables
        ]
        if extra:
            warnings.warn(
                f"format() got {extra}, which the prompt does not use (its input variables are "
                f"{self.input_variables}).",
                UnusedVariableWarning,
                stacklevel=3,
            )
        return merged

    def _chosen_examples(self, values: Mapping[str, Any]) -> list[Example]:
        examples = list(self.examples or [])
        if self.example_budget is None or not examples:
            return examples
        names = self.example_query_variables or template_variables(self.input or "") or self.input_variables
        query = "\n".join(str(values[n]) for n in names or [] if n in values)
        if self._example_vectors is None:
            from lean_plugins.embeddings import get_encoder

            self._example_vectors = get_encoder().encode([e.input for e in examples])
        return select_examples(
            query,
            examples,
            self.example_budget,
            prefixes=self.example_prefixes,
            tokenizer=self.tokenizer,
            vectors=self._example_vectors,
        )

    def format(self, **values: Any) -> str:
        """Render the prompt; records the tokens saved in the ledger."""
        return self.render(values)

    def render(self, values: Mapping[str, Any], *, record: bool = True) -> str:
        """:meth:`format` with the values as a mapping; ``record=False`` skips the ledger
        (for renders that only measure the prompt, not calls to a model)."""
        merged = self._values(values)
        rendered = format_template(self.template(self._chosen_examples(merged)), merged, owner="LeanPrompt")
        if record and self.record_to_ledger:
            self._record(merged, rendered)
        return rendered

    def _record(self, values: Mapping[str, Any], rendered: str) -> None:
        from lean_plugins.ledger import record

        if self.source_template is not None:
            before_text = format_template(self.source_template, values, owner="source template")
        else:
            before_text = format_template(self.template(), values, owner="LeanPrompt")
        record(
            layer="prompts",
            kind="render",
            input_before=count_tokens(before_text, self.tokenizer),
            input_after=count_tokens(rendered, self.tokenizer),
            meta={"prompt": self.name} if self.name else {},
        )

    # -- measuring -----------------------------------------------------------------------

    @staticmethod
    def record_messages(
        source_templates: Sequence[str | None],
        rendered: Sequence[str | None],
        values: Mapping[str, Any],
        *,
        tokenizer: str | Tokenizer = "cl100k_base",
        name: str | None = None,
    ) -> None:
        """Ledger event for a chat render: each source message template against its lean render.

        ``source_templates[i]`` is the template the ``i``-th lean message came from (None for a
        message that was not rewritten, which counts the same on both sides and is skipped).
        """
        from lean_plugins.ledger import record

        before = after = 0
        for source, text in zip(source_templates, rendered, strict=False):
            if source is None or text is None:
                continue
            before += count_tokens(format_template(source, values, owner="source template"), tokenizer)
            after += count_tokens(text, tokenizer)
        record(
            layer="prompts",
            kind="render",
            input_before=before,
            input_after=after,
            meta={"prompt": name} if name else {},
        )

    def token_report(self) -> TokenReport:
        """Fixed-text tokens of the lean template, per section, against the source template."""
        sections = {
            name: count_tokens(strip_variables(text), self.tokenizer)
            for name, text in self.section_texts().items()
        }
        source = (
            count_tokens(strip_variables(self.source_template), self.tokenizer)
            if self.source_template is not None
            else None
        )
        from lean_plugins.prompts.layout import stable_prefix_tokens

        slow = [*self.slow_variables, *self.partial_variables]
        return TokenReport(
            stable_prefix_tokens=stable_prefix_tokens(self.template(), slow_variables=slow, tokenizer=self.tokenizer),
            source_stable_prefix_tokens=(
                stable_prefix_tokens(self.source_template, slow_variables=slow, tokenizer=self.tokenizer)
                if self.source_template is not None
                else None
            ),
            fixed_tokens=count_tokens(strip_variables(self.template()), self.tokenizer),
            sections=sections,
            tokenizer=self.tokenizer if isinstance(self.tokenizer, str) else type(self.tokenizer).__name__,
            source_fixed_tokens=source,
            example_budget=self.example_budget,
        )
