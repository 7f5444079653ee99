"""Prompt layout for providers' prefix caches: what never changes first, per-call values last.

A provider's prefix cache (OpenAI automatic, Anthropic ``cache_control`` breakpoints, vLLM and
:class:`~lean_plugins.local.LeanLocalLLM` KV reuse) bills or skips only the part of a prompt
that is byte-identical to an earlier one *from its start*. A template that puts ``{question}``
first, or an instruction after the retrieved documents, shares almost nothing between calls.

Three kinds of text, in this order, wherever the order does not change the meaning:

1. **stable**: fixed instructions and examples (no variable);
2. **slow**: lines holding only *slow* variables, which change rarely (a tool list, a schema,
   a long document many calls share); the caller names them (``slow_variables``);
3. **per call**: every other variable (the question, retrieved documents, the date).

:func:`stable_first` moves a fixed instruction paragraph that sits after a per-call variable
up, before the first per-call block, and moves slow blocks up after it. It moves nothing that
points at where it stands ("above", "below", "the following", "then", ...), no label that
introduces the next variable ("Question:"), and not the closing cue after the last variable
("Answer:"). Code, quoted text and JSON blocks move only as a whole (they are masked).
:func:`stable_prefix` is the fixed text before the first per-call variable: the part a cache
can reuse across calls.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from lean_plugins.prompts.template import Masked, is_placeholder, mask, strip_variables, template_variables
from lean_plugins.tokens import Tokenizer, count_tokens

_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Words that tie a sentence to its place: moving it would change what it points at.
_POSITIONAL = re.compile(
    r"\b(?:above|below|following|follows|preceding|previous|previously|earlier|later|before|after|"
    r"then|now|finally|lastly|last|next|again|remember|reminder|aforementioned|here|there|these|those|"
    r"this|it|they|them)\b",
    re.IGNORECASE,
)
_CUE_WORDS = 8  # a closing line this short ("Helpful Answer:") is the cue the answer follows


def _variables_in(line: str, masked: Masked) -> set[str]:
    names: set[str] = set()
    for char in line:
        if is_placeholder(char):
            span = masked.spans[ord(char) - 0xF0000]
            match = _VARIABLE.fullmatch(span)
            if match:
                names.add(match.group(1))
            else:  # a code or JSON span may hold a variable too
                names.update(template_variables(span))
    return names


def _is_label(line: str) -> bool:
    return line.rstrip().endswith(":")


# A list item: reordering it would renumber or regroup its list.
_LIST_ITEM = re.compile(r"^\s*(?:[-*•+]|\d+[.)]|[a-zA-Z][.)])\s")
# Markup or a heading: it frames the text around it ("<context>", "[END]", "# Task", a fence).
_MARKUP = re.compile(r"^\s*(?:[<\[#`|>]|[-=_*~]{3})")


def _frames_next(line: str) -> bool:
    """A label, heading, markup line or list item: it belongs with the lines after it."""
    stripped = line.strip()
    return _is_label(stripped) or bool(_MARKUP.match(stripped) or _LIST_ITEM.match(stripped)) or not stripped


def _sentence_line(line: str) -> bool:
    """A whole instruction sentence on its own: starts with a capital letter, at least two
    words, ends with . ! or ?; not a list item, markup, heading or label."""
    stripped = line.strip()
    return (
        len(stripped.split()) >= 2
        and stripped[:1].isupper()
        and stripped[-1:] in ".!?"
        and not _LIST_ITEM.match(stripped)
        and not _MARKUP.match(stripped)
    )


def _movable(lines: list[str]) -> bool:
    """A run of lines moves only if every line is a free-standing instruction sentence that
    does not point at its place: anything else (a heading, a closing tag, a list item, a
    label) frames or belongs to the text around it."""
    text = "\n".join(lines)
    if not text.strip() or _POSITIONAL.search(text):
        return False
    return all(_sentence_line(line) for line in lines)


def stable_first(template: str, *, slow_variables: Collection[str] = ()) -> str:
    """``template`` laid out stable-first (see the module doc); the same text when nothing
    can move. Every line is kept, only the order of whole blocks changes."""
    masked = mask(template)
    lines = masked.text.split("\n")
    slow = set(slow_variables)
    kinds = []
    for line in lines:
        names = _variables_in(line, masked)
        kinds.append("call" if names - slow else "slow" if names else "fixed")
    if "call" not in kinds:
        return template
    first_call = kinds.index("call")
    last_call = len(kinds) - 1 - kinds[::-1].index("call")
    start = first_call
    # Moved text goes before the block the first per-call value sits in: its labels, heading
    # and the list it is an item of stay together.
    while start > 0 and kinds[start - 1] == "fixed" and _frames_next(lines[start - 1]):
        start -= 1
    # Blocks after `start`: runs of fixed lines between variable lines, and the variable lines.
    moved_fixed: list[str] = []
    moved_slow: list[str] = []
    kept: list[str] = []
    i = start
    while i < len(lines):
        if kinds[i] != "fixed":
            j = i + 1
            block = [lines[i]]
            if kinds[i] == "slow" and _movable_slow(kept, lines[i]):
                labels = _trailing_labels(kept)
                del kept[len(kept) - len(labels) :]
                moved_slow += [*labels, lines[i]]
            else:
                kept += block
            i = j
            continue
        j = i
        while j < len(lines) and kinds[j] == "fixed":
            j += 1
        run = lines[i:j]
        intro: list[str] = []
        if j < len(lines):  # labels right before the next variable line introduce it
            while run and _is_label(run[-1]):
                intro.insert(0, run.pop())
        if i > last_call:  # after the last per-call value: keep a short closing cue in place
            cue: list[str] = []
            while run and _is_label(run[-1]) and len(run[-1].split()) <= _CUE_WORDS:
                cue.insert(0, run.pop())
            intro = cue + intro
        if run and _movable(run):
            moved_fixed += run
            kept += intro
        else:
            kept += run + intro
        i = j
    out = lines[:start] + moved_fixed + moved_slow + kept
    return masked.unmask("\n".join(out))


def _trailing_labels(kept: list[str]) -> list[str]:
    labels: list[str] = []
    for line in reversed(kept):
        if not _is_label(line):
            break
        labels.insert(0, line)
    return labels


def _movable_slow(kept: list[str], line: str) -> bool:
    """A slow block moves only as "Label:" lines plus a line that is just the variable, or a
    "Label: {variable}" line, and only if it does not point at its place."""
    if _POSITIONAL.search("\n".join([*_trailing_labels(kept), line])):
        return False
    body = line.strip()
    return len(body) == 1 or bool(re.fullmatch(r"[A-Z][\w #/-]{0,40}: ?.", body))


def _first_call_offset(template: str, slow_variables: Collection[str]) -> int | None:
    slow = set(slow_variables)
    for match in re.finditer(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}", template):
        if match.group(1) and match.group(1) not in slow:
            return match.start()
    return None


def stable_prefix(template: str, *, slow_variables: Collection[str] = ()) -> str:
    """The template text before its first per-call variable (slow variables count as stable):
    what a prefix cache can reuse from one call to the next."""
    offset = _first_call_offset(template, slow_variables)
    return template if offset is None else template[:offset]


def stable_prefix_tokens(
    template: str, *, slow_variables: Collection[str] = (), tokenizer: str | Tokenizer = "cl100k_base"
) -> int:
    """Tokens of the fixed text of :func:`stable_prefix` (slow variables' values not counted)."""
    return count_tokens(strip_variables(stable_prefix(template, slow_variables=slow_variables)), tokenizer)


def split_at_stable_prefix(template: str, *, slow_variables: Collection[str] = ()) -> tuple[str, str]:
    """``template`` cut at the start of the line holding its first per-call variable: (stable
    part, rest). Where a cache breakpoint goes. The rest is ``""`` when no variable is per call."""
    offset = _first_call_offset(template, slow_variables)
    if offset is None:
        return template, ""
    cut = template.rfind("\n", 0, offset) + 1
    return template[:cut], template[cut:]


#: The content-block marker Anthropic's API (and langchain-anthropic) reads as a cache breakpoint.
EPHEMERAL_CACHE_CONTROL = {"type": "ephemeral"}


def breakpoint_position(
    templates: Sequence[str | None], rendered: Sequence[str | None], *, slow_variables: Collection[str] = ()
) -> tuple[int, int] | None:
    """Where a cache breakpoint goes in a rendered chat prompt: ``(message index, characters of
    that message's text before the breakpoint)``, or None when no stable text leads.

    ``templates[i]`` is the template of message ``i`` (None: not a text template, e.g. a
    history placeholder, counted as per call); ``rendered[i]`` its rendered text. The breakpoint
    follows the stable prefix: inside the first message holding a per-call variable when that
    message starts with stable lines, else at the end of the message before it."""
    for index, (template, text) in enumerate(zip(templates, rendered, strict=True)):
        if template is None or text is None or _first_call_offset(template, slow_variables) is not None:
            if template is not None and text is not None:
                stable, _ = split_at_stable_prefix(template, slow_variables=slow_variables)
                lead = len(stable) - len(stable.lstrip("\n"))
                cut = _rendered_length(stable, text)
                if stable.strip() and cut is not None and cut > lead:
                    return index, cut
            if index == 0 or rendered[index - 1] is None:
                return None
            return index - 1, len(rendered[index - 1] or "")
    last = len(rendered) - 1
    return (last, len(rendered[last] or "")) if last >= 0 and rendered[last] else None


def _rendered_length(stable_template: str, text: str) -> int | None:
    """Characters of ``text`` the rendered ``stable_template`` covers (None: not a prefix of it)."""
    if template_variables(stable_template):
        return None  # slow variables' values are not known here: use the message boundary
    literal = stable_template.replace("{{", "{").replace("}}", "}")
    return len(literal) if text.startswith(literal) else None
