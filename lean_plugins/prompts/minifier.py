"""``minify``: deterministic, rule-based shortening of an existing prompt template.

The rules run in the order of :data:`MINIFY_RULES`, on the template with its protected spans
(``{variables}``, ``{{escaped JSON}}``, code and quoted text) masked, so no rule can touch
them. A rule whose output lost a protected span is discarded (a safety net; no shipped rule
does that). Each rule is a plain function from text to text and is tested on its own.

=================  ==========================================================================
rule               what it does
=================  ==========================================================================
whitespace         tabs to spaces, trailing spaces and indentation removed, runs of spaces
                   collapsed, blank lines removed
rule_lines         lines of repeated ``- = _ * ~ # +`` removed; ``---text---`` becomes
                   ``text:``; a rule glued to text becomes a line break
politeness         "Thank you", "Thanks in advance" sentences and "please", "kindly" removed
filler_phrases     "I would like you to", "It is important that you", "Make sure to",
                   "Try to", "Note that", "just", "Can you ...?" and similar openers removed
wordy_phrases      "in order to" -> "to", "due to the fact that" -> "because", ...
transitions        sentences that only restate that the task starts ("Let's try this now:",
                   "Begin!", "Now it's your turn.") removed
dedupe             an instruction sentence that repeats an earlier one (same words, or the
                   same content words with at most one changed) is removed
tidy               spaces before punctuation, doubled punctuation, empty lines, sentence-
                   initial capitals after a removal
=================  ==========================================================================
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lean_plugins.prompts.template import is_placeholder, mask

logger = logging.getLogger("lean_plugins.prompts")


@dataclass(frozen=True)
class Rule:
    """One named text-to-text rewrite, applied to masked template text."""

    name: str
    description: str
    apply: Callable[[str], str]


# Sentence starts: the start of the text or a line, or after ". ", "! ", "? ", ": ".
_START = r"(?:(?<=^)|(?<=\n)|(?<=[.!?:] ))"


def _upper_first(match: re.Match[str]) -> str:
    """Replacement that drops the matched opener and capitalises the word after it."""
    return match.group("next").upper()


def whitespace(text: str) -> str:
    """Tabs to spaces; strip each line; collapse runs of spaces; drop blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    lines = [re.sub(r" {2,}", " ", line).strip() for line in text.split("\n")]
    return "\n".join(line for line in lines if line)


_RULE_CHARS = r"\-=_*~#+"
_RULE_RUN = rf"[{_RULE_CHARS}]{{3,}}"


def rule_lines(text: str) -> str:
    """Remove decoration lines (``-----``, ``=====``) and rules glued to text."""
    # "-----------text-----------" is a heading drawn with rules: keep the word as a label.
    text = re.sub(
        rf"{_RULE_RUN}([A-Za-z][\w ]{{0,30}}?){_RULE_RUN}",
        lambda m: f"\n{m.group(1)[:1].upper()}{m.group(1)[1:]}:\n",
        text,
    )
    lines = []
    for line in text.split("\n"):
        if re.fullmatch(rf"[\s{_RULE_CHARS}]*", line) and re.search(_RULE_RUN, line):
            continue  # a line that is only decoration
        lines.append(line)
    text = "\n".join(lines)
    # A rule glued to text ("stopwords.-----" or "-----Answer") separates two parts.
    text = re.sub(rf"\s*{_RULE_RUN}\s*", "\n", text)
    return text


_POLITE_SENTENCES = re.compile(
    r"(?i)(?:^|(?<=[\n.!?]) ?)(?:thank you|thanks)(?: (?:so |very )?much)?(?: in advance)?"
    r"(?: for [^.!?\n]{0,60})?[.!]*(?= |\n|$)"
)
_POLITE_OPENER = re.compile(rf"{_START}(?:please|kindly),? (?P<next>[a-z])", re.IGNORECASE)
_POLITE_WORDS = re.compile(r"(?i)\b(?:please|kindly)\b,? ?")


def politeness(text: str) -> str:
    """Remove thanks sentences and the words "please" and "kindly"."""
    text = _POLITE_SENTENCES.sub("", text)
    text = _POLITE_OPENER.sub(_upper_first, text)
    return _POLITE_WORDS.sub("", text)


_FILLER_OPENERS = (
    r"I would like you to",
    r"I would like to ask you to",
    r"I want you to",
    r"I need you to",
    r"I'd like you to",
    r"It is (?:very |really |extremely )?important (?:that you|for you to|to)",
    r"It's (?:very |really |extremely )?important (?:that you|for you to|to)",
    r"Make sure(?: that)?(?: you)?(?: to)?",
    r"Be sure to",
    r"Remember to",
    r"Keep in mind that",
    r"Note that",
    r"Try to",
    r"Your task is to",
    r"You are asked to",
    r"You are required to",
    r"You need to",
    r"You should",
)
_FILLER_OPENER = re.compile(rf"{_START}(?:{'|'.join(_FILLER_OPENERS)}) (?P<next>[a-z])", re.IGNORECASE)
_QUESTION_REQUEST = re.compile(rf"{_START}(?:Can|Could|Would|Will) you (?P<next>[a-z])([^?\n]*)\?")


def filler_phrases(text: str) -> str:
    """Remove openers that add no instruction ("I would like you to", "Try to", ...)."""
    text = _FILLER_OPENER.sub(_upper_first, text)
    text = _QUESTION_REQUEST.sub(lambda m: m.group("next").upper() + m.group(2) + ".", text)
    return re.sub(r"\bjust (?=(?:say|return|output|answer|reply|respond|write|give)\b)", "", text)


_WORDY = (
    (r"\bin order to\b", "to"),
    (r"\bdue to the fact that\b", "because"),
    (r"\bin the event that\b", "if"),
    (r"\bat this point in time\b", "now"),
    (r"\bfor the purpose of\b", "for"),
    (r"\bwith regard to\b", "about"),
    (r"\bin spite of the fact that\b", "although"),
    (r"\bis able to\b", "can"),
    (r"\bare able to\b", "can"),
    (r"\ba large number of\b", "many"),
    (r"\bprior to\b", "before"),
)


def wordy_phrases(text: str) -> str:
    """Replace wordy phrases with their short equivalents ("in order to" -> "to")."""
    for pattern, short in _WORDY:
        text = re.sub(pattern, short, text, flags=re.IGNORECASE)
    return text


_TRANSITIONS = re.compile(
    r"(?im)(?:^|(?<=[.!?]) )(?:let's (?:try this|begin|start|get started)(?: now)?|"
    r"now it's your turn|now, it's your turn|begin|here we go|now let's begin)[.!:]+(?= |$)"
)


def transitions(text: str) -> str:
    """Remove sentences that only announce the start of the task ("Let's try this now:")."""
    return _TRANSITIONS.sub("", text)


_STOPWORDS = frozenset(
    "a an the to of in on for and or is are be it this that with as by at from your you "
    "if any all not do does should must can will".split()
)


def _content_words(sentence: str) -> frozenset[str]:
    return frozenset(w for w in re.findall(r"[a-z0-9']+", sentence.lower()) if w not in _STOPWORDS)


def _is_instruction(sentence: str) -> bool:
    # Labelled lines ("Question: ...") and short fragments are data or format, not instructions.
    words = sentence.split()
    return len(words) >= 2 and sentence.rstrip()[-1:] in ".!" and not re.match(r"^[\w ]{1,25}:", sentence)


def dedupe(text: str) -> str:
    """Remove instruction sentences that repeat an earlier one.

    Two sentences repeat when their content words (stop words dropped) are equal, or differ
    by at most one word with at least four shared: "Do not make up an answer." repeats
    "Don't make up an answer!" -- meaning kept, tokens saved.
    """
    seen: list[frozenset[str]] = []
    out_lines = []
    for line in text.split("\n"):
        kept = []
        for sentence in re.split(r"(?<=[.!?])\s+", line):
            # A sentence holding a protected span (variable, quote) is never dropped.
            if _is_instruction(sentence) and not any(map(is_placeholder, sentence)):
                words = _content_words(sentence.replace("n't", " not"))
                if any(words == prev or (len(words & prev) >= 4 and len(words ^ prev) <= 1) for prev in seen):
                    continue
                seen.append(words)
            kept.append(sentence)
        out_lines.append(" ".join(s for s in kept if s))
    return "\n".join(out_lines)


def tidy(text: str) -> str:
    """Fix what removals leave behind: stray spaces, doubled punctuation, empty lines."""
    text = re.sub(r" {2,}", " ", text)
    text = re.sub(r" +([.,;:!?])(?=[\s.,;:!?]|$)", r"\1", text)  # not inside "a != b"
    # A removal can leave "done. ." or "done!."; an ellipsis "..." is kept.
    text = re.sub(r"(?<![.])([.!?]) ?[.!](?![.])", r"\1", text)
    text = re.sub(r"(?m)^[ ,;]+", "", text)
    text = re.sub(r"(?m) +$", "", text)
    text = re.sub(r"\n{2,}", "\n", text)
    return text.strip()


MINIFY_RULES: tuple[Rule, ...] = (
    Rule("whitespace", "strip lines, collapse spaces, drop blank lines", whitespace),
    Rule("rule_lines", "remove ----- / ===== decoration lines", rule_lines),
    Rule("politeness", "remove thanks sentences, 'please', 'kindly'", politeness),
    Rule("filler_phrases", "remove openers like 'I would like you to', 'Try to'", filler_phrases),
    Rule("wordy_phrases", "'in order to' -> 'to' and similar", wordy_phrases),
    Rule("transitions", "remove 'Let's try this now:', 'Begin!'", transitions),
    Rule("dedupe", "remove instruction sentences that repeat an earlier one", dedupe),
    Rule("tidy", "clean up spaces, punctuation and empty lines", tidy),
)


def apply_rules(text: str, rules: Sequence[Rule]) -> str:
    """Run ``rules`` on ``text`` with its protected spans masked; restore them at the end."""
    masked = mask(text)
    current = masked.text
    for rule in rules:
        rewritten = rule.apply(current)
        lost = masked.lost_spans(rewritten)
        if lost:  # never let a rule drop a variable, code or quoted text
            logger.warning("prompt rule %r dropped protected text %r; rule skipped", rule.name, lost)
            continue
        current = rewritten
    return masked.unmask(current)


def minify(template_text: str, rules: Sequence[Rule] = MINIFY_RULES) -> str:
    """Shorten ``template_text`` with the deterministic rules of :data:`MINIFY_RULES`.

    ``{variables}``, ``{{escaped JSON}}``, code (fenced or inline) and quoted text are never
    changed. The same input always gives the same output.
    """
    if not isinstance(template_text, str):
        raise TypeError(f"minify() takes the template text as a str, got {type(template_text).__name__}")
    return apply_rules(template_text, rules)
