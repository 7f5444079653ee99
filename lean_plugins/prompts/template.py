"""Template text: ``{variable}`` parsing, formatting, and masking of protected spans.

Templates use the f-string convention LangChain and LlamaIndex share: ``{name}`` is a
variable, ``{{`` and ``}}`` are literal braces. Only plain names are variables (no attribute
or index access), so formatting never evaluates anything taken from the template.

The rewriting rules (:mod:`lean_plugins.prompts.minifier`) must never change a variable, code,
JSON or quoted text. :func:`mask` replaces each such span with one private-use character
before the rules run and :meth:`Masked.unmask` puts the original text back, so a rule can
neither edit nor split a protected span.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lean_plugins.errors import ConfigurationError, MissingVariableError

# One scanner for the three brace forms, left to right, so "{{{x}}}" parses as "{" + {x} + "}".
_BRACE = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
# The same scan, plus a single brace left over, which an f-string template refuses ("{q}}").
_BRACE_OR_SINGLE = re.compile(_BRACE.pattern + r"|[{}]")

# Placeholders come from Unicode plane 15 (private use): never in real prompt text, not \w,
# not whitespace, so a regex rule treats each as one opaque character.
_PLACEHOLDER_BASE = 0xF0000
_PLACEHOLDER = re.compile("[\U000f0000-\U000ffffd]")

_FENCED_CODE = r"```[\s\S]*?```"
_INLINE_CODE = r"`[^`\n]+`"
_DOUBLE_QUOTED = r"\"[^\"\n]{1,400}\""
_CURLY_QUOTED = r"“[^”\n]{1,400}”"
# A single quote opens only where an apostrophe cannot be ("don't", "Bob's" stay text).
_SINGLE_QUOTED = r"(?<![\w'])'[^'\n]{1,400}'(?![\w])"
_VARIABLE = r"\{[A-Za-z_][A-Za-z0-9_]*\}"
# A line that is an SQL statement is code even without backticks (text-to-SQL prompts).
_SQL_LINE = r"(?m:^(?:SELECT|INSERT|UPDATE|DELETE|WITH|CREATE)\b[^\n]*;$)"
_PROTECTED = re.compile(
    "|".join(
        f"(?:{p})"
        for p in (
            _FENCED_CODE,
            _INLINE_CODE,
            _SQL_LINE,
            _VARIABLE,
            _DOUBLE_QUOTED,
            _CURLY_QUOTED,
            _SINGLE_QUOTED,
        )
    )
)


def template_variables(template: str) -> list[str]:
    """Names of the ``{variables}`` in ``template``, in order of first appearance."""
    seen: dict[str, None] = {}
    for match in _BRACE.finditer(template):
        if match.group(1):
            seen.setdefault(match.group(1), None)
    return list(seen)


def format_template(template: str, values: Mapping[str, Any], *, owner: str = "template") -> str:
    """Substitute ``{name}`` with ``values[name]`` and unescape ``{{``/``}}``.

    A variable missing from ``values`` raises :class:`MissingVariableError` naming it; a single
    ``{`` or ``}`` that is not part of ``{name}``, ``{{`` or ``}}`` raises
    :class:`ConfigurationError`, as LangChain's f-string templates do.
    """

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        if token in "{}":
            at = match.start()
            raise ConfigurationError(
                f"Single {token!r} at character {at} of the {owner} "
                f"({template[max(0, at - 20) : at + 1]!r}); write {token * 2!r} for a literal brace, "
                "or {name} for a variable."
            )
        name = match.group(1)
        if name not in values:
            raise MissingVariableError(
                f"The {owner} needs the input variable {name!r}, which was not given. Pass "
                f"{name}=... (given: {sorted(values) or 'nothing'})."
            )
        return str(values[name])

    return _BRACE_OR_SINGLE.sub(substitute, template)


def strip_variables(template: str) -> str:
    """The fixed text of a template: every ``{variable}`` removed, braces unescaped."""
    return _BRACE.sub(lambda m: "" if m.group(1) else m.group(0)[0], template)


def _brace_block_end(text: str, start: int) -> int:
    """End of the ``{{ ... }}`` block (escaped JSON) opening at ``start``, nesting counted."""
    depth, i = 0, start
    while i < len(text) - 1:
        pair = text[i : i + 2]
        if pair == "{{":
            depth += 1
            i += 2
            continue
        if pair == "}}":
            depth -= 1
            i += 2
            if depth == 0:
                return i
            continue
        i += 1
    return len(text)


@dataclass(frozen=True)
class Masked:
    """Text with its protected spans replaced by placeholders; :meth:`unmask` reverses it."""

    text: str
    spans: tuple[str, ...]

    def unmask(self, text: str | None = None) -> str:
        source = self.text if text is None else text
        return _PLACEHOLDER.sub(lambda m: self.spans[ord(m.group(0)) - _PLACEHOLDER_BASE], source)

    def lost_spans(self, text: str) -> list[str]:
        """Protected spans missing from a rewritten (still masked) ``text``."""
        present = {ord(c) - _PLACEHOLDER_BASE for c in _PLACEHOLDER.findall(text)}
        return [span for i, span in enumerate(self.spans) if i not in present]


def mask(text: str) -> Masked:
    """Replace variables, code, escaped-brace (JSON) blocks and quoted text with placeholders."""
    spans: list[str] = []
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("{{", i):
            end = _brace_block_end(text, i)
        else:
            match = _PROTECTED.match(text, i)
            end = match.end() if match else -1
        if end > i:
            out.append(chr(_PLACEHOLDER_BASE + len(spans)))
            spans.append(text[i:end])
            i = end
        else:
            out.append(text[i])
            i += 1
    return Masked("".join(out), tuple(spans))


def is_placeholder(char: str) -> bool:
    return bool(_PLACEHOLDER.fullmatch(char))
