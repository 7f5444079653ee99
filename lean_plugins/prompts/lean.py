"""``lean_text``: the lean form of an existing template, beyond :func:`minify`.

``minify`` only removes what carries no instruction. ``lean_text`` also *rewrites*:

1. :func:`~lean_plugins.prompts.minify` (all its rules);
2. :data:`CONCISE_REWRITES`: verbose instruction idioms common in framework prompts, each
   replaced by a shorter phrase with the same instruction ("Context information is below."
   -> "Context:", "in the following format:" -> "as:", "If you don't know the answer, say
   that you don't know" -> "If you don't know the answer, say so"). Each rewrite carries an
   example pair that the tests check;
3. :func:`compact_json` (whitespace outside strings in ``{{...}}`` JSON examples) and
   :func:`compact_examples`: in few-shot examples (a label such as ``Content:`` used more than
   once), a long example body is cut to its first sentence(s) within ``example_tokens``: the
   example still shows the format, at a fraction of the tokens;
4. the layer-1 compressor (``lean_plugins.compress.LeanCompressor``, when installed) on long
   instruction paragraphs that hold no variable, code, JSON or quoted text;
5. with ``prose_rate``, :func:`lean_plugins.prompts.prose.compress_prose`: layer 1's token
   classifier on instruction prose only, negations, restrictions, numbers, labels and every
   protected span kept, format lines and examples left whole; under ``min_cosine`` (MiniLM
   cosine of the template before and after) the rate is raised, then the example cap dropped;
6. ``dedupe`` and ``tidy`` again, since rewrites can make two sentences equal.

Variables, code, ``{{escaped JSON}}`` and quoted text are masked through every step, and
the result is checked to hold the same variables as the source; if it does not, the
``minify`` output is returned instead.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lean_plugins.errors import ConfigurationError
from lean_plugins.paths import package_data
from lean_plugins.prompts.minifier import MINIFY_RULES, Rule, dedupe, tidy
from lean_plugins.prompts.template import Masked, is_placeholder, mask, template_variables
from lean_plugins.tokens import count_tokens, truncate_to_tokens

logger = logging.getLogger("lean_plugins.prompts")


#: The phrasebook: every concise rewrite, as data (pattern, replacement, checked examples,
#: the projects whose prompts it was seen in). One file, read once.
PHRASEBOOK_PATH = package_data("prompt_phrasebook.json")

# Where a sentence starts; patterns write it as {SENT}.
_SENT = r"(?:(?<=^)|(?<=\n)|(?<=[.!?] ))"

#: What a rewrite may be for. A rule must be one of these general kinds; a rewrite written
#: for one template's wording has no place in the phrasebook.
CATEGORIES = (
    "filler",  # words that carry no instruction ("We wish to", "Also,")
    "verbose_idiom",  # a long phrasing with a short equivalent ("as well as" -> "and")
    "restated_instruction",  # an instruction said again in other words
    "role_preamble",  # boilerplate role text ("You are a helpful assistant.")
    "format_spec",  # format or layout announcements ("in the following format:")
)


@dataclass(frozen=True)
class Rewrite:
    """A concise rewrite: ``pattern`` -> ``replacement`` (``re.sub``), with checked examples.

    ``capitalize`` upper-cases the first character of each replacement (a rewrite that
    drops a sentence opener). ``requires_earlier`` (a replacement template) makes the
    rewrite apply only where the text before the match already says it: a restated
    instruction is dropped, a first statement kept. ``seen_in`` names the projects whose
    prompts the rewrite fires on (at least two; see ``scripts/bench_prompts.py --audit``).
    """

    name: str
    category: str
    pattern: str
    replacement: str
    examples: tuple[tuple[str, str], ...]
    seen_in: tuple[str, ...] = ()
    capitalize: bool = False
    requires_earlier: str | None = None
    ignore_case: bool = True

    @functools.cached_property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern.replace("{SENT}", _SENT), re.IGNORECASE if self.ignore_case else 0)

    def _replace(self, match: re.Match[str]) -> str:
        if self.requires_earlier is not None:
            said = match.expand(self.requires_earlier).lower()
            if said not in match.string[: match.start()].lower():
                return match.group(0)
        out = match.expand(self.replacement)
        return out[:1].upper() + out[1:] if self.capitalize else out

    def apply(self, text: str) -> str:
        return self.regex.sub(self._replace, text)

    @property
    def example(self) -> tuple[str, str]:
        """The first example pair (before, after)."""
        return self.examples[0]


def load_phrasebook(path: str | Path = PHRASEBOOK_PATH) -> tuple[Rewrite, ...]:
    """The rewrites of a phrasebook file, checked: unique names, known categories, valid
    patterns, at least one example and two projects each."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    rewrites = []
    for entry in raw["rewrites"]:
        try:
            rewrite = Rewrite(
                name=entry["name"],
                category=entry["category"],
                pattern=entry["pattern"],
                replacement=entry["replacement"],
                examples=tuple(tuple(pair) for pair in entry["examples"]),  # type: ignore[misc]
                seen_in=tuple(entry.get("seen_in", ())),
                capitalize=entry.get("capitalize", False),
                requires_earlier=entry.get("requires_earlier"),
                ignore_case=entry.get("ignore_case", True),
            )
            rewrite.regex  # noqa: B018 -- compile now, so a bad pattern fails at load
        except (KeyError, TypeError, re.error) as exc:
            raise ConfigurationError(
                f"Phrasebook {path}: entry {entry.get('name', entry)!r} is invalid ({exc}); each entry "
                "needs name, category, pattern (a Python regex), replacement and examples."
            ) from exc
        if rewrite.category not in CATEGORIES:
            raise ConfigurationError(
                f"Phrasebook {path}: {rewrite.name!r} has category {rewrite.category!r}; use one of {CATEGORIES}."
            )
        if not rewrite.examples:
            raise ConfigurationError(f"Phrasebook {path}: {rewrite.name!r} needs at least one example pair.")
        rewrites.append(rewrite)
    check_unique_names([r.name for r in rewrites], f"Phrasebook {path}")
    return tuple(rewrites)


def check_unique_names(names: Sequence[str], source: str) -> None:
    """A rule table's names are how tests and ``seen_in`` refer to its rules: one name, one rule."""
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ConfigurationError(f"{source}: rule name(s) {doubled} appear more than once; rename them.")


CONCISE_REWRITES: tuple[Rewrite, ...] = load_phrasebook()


def concise_rewrites(
    text: str, rewrites: Sequence[Rewrite] = CONCISE_REWRITES, *, fired: set[str] | None = None
) -> str:
    """Apply ``rewrites`` (default: the whole phrasebook) in order.

    A rewrite whose match would swallow a protected span (a variable, code, quoted text) is
    skipped for this text, so one greedy pattern cannot cost the others. The names of the
    rewrites that changed the text are added to ``fired`` when given.
    """
    for rewrite in rewrites:
        rewritten = rewrite.apply(text)
        if rewritten != text and sorted(filter(is_placeholder, rewritten)) == sorted(filter(is_placeholder, text)):
            text = rewritten
            if fired is not None:
                fired.add(rewrite.name)
    return text


def markdown_emphasis(text: str) -> str:
    """Drop ``**bold**`` and ``__bold__`` markers (emphasis, not content); capitals, which
    carry the same stress ("**NEVER**" -> "NEVER"), stay."""
    text = re.sub(r"(?<![\w*])\*\*(?=\S)([^*\n]+?)(?<=\S)\*\*(?![\w*])", r"\1", text)
    return re.sub(r"(?<!\w)__(?=\S)([^_\n]+?)(?<=\S)__(?!\w)", r"\1", text)


def join_broken_lines(text: str) -> str:
    """Join a sentence broken over two lines ("as well\\nas the score")."""
    return re.sub(r"(?<=[a-z,])\n(?=[a-z])", " ", text)


# "a few", "a little", "a lot", "a bit", "a number of" mean something else without "a".
_ARTICLE = r"(?:the|an?(?! (?:few|little|lot|bit|number of)\b))"
_CAPITAL_ARTICLE = r"(?:The|An?(?! (?:few|little|lot|bit|number of)\b))"


def drop_articles(text: str) -> str:
    """Telegraphic instructions: drop "the", "a", "an" from instruction lines.

    Only prose lines change: six words or more, either unlabelled or under a heading in
    capitals used once ("IMPORTANT NOTE: ..."); a "Label: value" line is data or an example. "a few", "a little",
    "a number of" keep their article because it carries meaning.
    """
    lines = text.split("\n")
    labels = [m.group("label").lower() if (m := _LABEL_LINE.match(line)) else None for line in lines]
    repeated = {label for label in labels if label and labels.count(label) > 1}
    out = []
    for line, label in zip(lines, labels, strict=True):
        # A labelled line is data ("Text: The cat sat.") unless its label is a heading in
        # capitals ("IMPORTANT NOTE: ...") used once.
        heading = label is not None and label not in repeated and line.split(":", 1)[0].isupper()
        if len(line.split()) >= 6 and (label is None or heading):
            line = re.sub(rf"(?<=[\w,;(]) {_ARTICLE} (?=[A-Za-z0-9])", " ", line)
            line = re.sub(
                rf"(^|[.!?] |^- ){_CAPITAL_ARTICLE} ([a-z])",
                lambda m: m.group(1) + m.group(2).upper(),
                line,
            )
        out.append(line)
    return "\n".join(out)


# A label is short: "Question:", "Helpful Answer:", "Follow Up Input:" (at most three words);
# a longer run before a colon is a sentence introducing something ("Provide the query as:").
_LABEL_LINE = re.compile(r"^(?P<label>[A-Z][\w#-]*(?: [\w#-]+){0,2}):(?P<rest>.*)$")


def compact_examples(text: str, example_tokens: int = 30, *, tokenizer: str = "cl100k_base") -> str:
    """Cut long bodies of few-shot examples to their first sentence(s) within ``example_tokens``.

    An example body is the text under a label that the template uses more than once
    ("Content:", "Text:"), up to the next label line. Bodies holding a variable, code,
    JSON or quoted text are left whole, so the slot the real input goes into never changes.
    """
    # "Example #2" headers only number the examples; the repeated labels already separate
    # them. The first becomes "Examples:" so the reader still sees where they start.
    headers = re.compile(r"(?im)^example #?\d+:?\n(?=[A-Z][\w #-]{0,30}:)")
    first = headers.search(text)
    if first:
        text = text[: first.start()] + "Examples:\n" + headers.sub("", text[first.end() :])
    lines = text.split("\n")
    labels = [m.group("label").lower() if (m := _LABEL_LINE.match(line)) else None for line in lines]
    repeated = {label for label in labels if label and labels.count(label) > 1}
    out: list[str] = []
    i = 0
    while i < len(lines):
        label = labels[i]
        if label not in repeated:
            out.append(lines[i])
            i += 1
            continue
        j = i + 1
        while j < len(lines) and labels[j] is None:
            j += 1
        block = lines[i:j]
        head = _LABEL_LINE.match(block[0]).group("label")  # type: ignore[union-attr]
        body = " ".join([block[0][len(head) + 1 :].strip(), *block[1:]]).strip()
        if any(is_placeholder(c) for c in body):
            out.extend(block)
        elif count_tokens(body, tokenizer) <= example_tokens + 5:
            # "Context:\nApples are red" -> "Context: Apples are red"; a body of several
            # lines (one triplet per line) shows a format, so it stays as it is.
            single = len(block) == 2 and not block[0][len(head) + 1 :].strip()
            out.extend([f"{head}: {body}"] if single else block)
        else:
            out.append(f"{head}: {_first_sentences(body, example_tokens, tokenizer)}")
        i = j
    return "\n".join(out)


def _first_sentences(body: str, budget: int, tokenizer: str) -> str:
    sentences = re.split(r"(?<=[.!?])\s+", body)
    kept = ""
    for sentence in sentences:
        candidate = f"{kept} {sentence}".strip()
        if count_tokens(candidate, tokenizer) > budget:
            break
        kept = candidate
    used = count_tokens(kept, tokenizer) if kept else 0
    if used < budget // 2:  # a short first sentence ("No Waiver."): fill up from the next one
        kept = truncate_to_tokens(body, budget, tokenizer).rsplit(" ", 1)[0]
    return kept + " …"


def compact_json(block: str) -> str:
    """Drop the whitespace outside quoted strings of an (escaped) JSON example block.

    Only whitespace changes, never a key, a value or the order, so the example shows the
    same data in the compact form ``json.dumps(..., separators=(",", ":"))`` writes.
    """
    out: list[str] = []
    quote = ""
    for char in block:
        if quote:
            out.append(char)
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
            out.append(char)
        elif not char.isspace():
            out.append(char)
    compact = "".join(out)
    if compact.count("'") % 2 or compact.count('"') % 2:  # unbalanced quotes: not JSON-like, keep
        return block
    return compact


_EXAMPLE_HEADER = re.compile(r"^(?P<level>#{1,6})\s*example\s*#?\s*\d+\b.*$", re.IGNORECASE)
_HEADING = re.compile(r"^(?P<level>#{1,6})\s*\S")
_XML_OPEN = re.compile(r"^\s*<(?P<tag>[A-Za-z_][\w-]*)>\s*$")


def _example_units(lines: list[str]) -> list[tuple[int, int]]:
    """(start, end) line ranges of few-shot example units: sections under numbered markdown
    headers ("## Example 1", up to the next heading of the same or a higher level), and runs
    of three or more sibling blocks of one XML tag (``<scenario>`` ... ``</scenario>``)."""
    units: list[tuple[int, int]] = []
    i = 0
    while i < len(lines):
        header = _EXAMPLE_HEADER.match(lines[i].strip())
        if header:
            level = len(header.group("level"))
            j = i + 1
            while j < len(lines):
                heading = _HEADING.match(lines[j].strip())
                if heading and len(heading.group("level")) <= level:
                    break
                j += 1
            units.append((i, j))
            i = j
            continue
        i += 1
    if units:
        return units
    blocks: dict[str, list[tuple[int, int]]] = {}
    i = 0
    while i < len(lines):
        opening = _XML_OPEN.match(lines[i])
        if opening:
            closing = f"</{opening.group('tag')}>"
            j = next((k for k in range(i + 1, len(lines)) if lines[k].strip() == closing), None)
            if j is not None:
                blocks.setdefault(opening.group("tag"), []).append((i, j + 1))
                i = j + 1
                continue
        i += 1
    runs = [b for b in blocks.values() if len(b) >= 3]
    return max(runs, key=len) if runs else []


def cap_examples(text: str, max_tokens: int, *, tokenizer: str = "cl100k_base") -> str:
    """Keep few-shot example units (see :func:`_example_units`) while their tokens fit
    ``max_tokens``; the first unit, and any unit holding a variable (the real input's slot),
    always stay. Units are kept or dropped whole, in their order, so every kept example still
    shows the full format."""
    lines = text.split("\n")
    units = _example_units(lines)
    if len(units) < 2:
        return text
    dropped: set[int] = set()
    used = 0
    for number, (start, end) in enumerate(units):
        body = "\n".join(lines[start:end])
        tokens = count_tokens(body, tokenizer)
        if number == 0 or template_variables(body) or used + tokens <= max_tokens:
            used += tokens
            continue
        dropped.update(range(start, end))
    return "\n".join(line for k, line in enumerate(lines) if k not in dropped)


@functools.lru_cache(maxsize=1)
def _load_compressor() -> Callable[[str], str] | None:
    """Layer 1's compressor as ``text -> text`` (keeping 70%), or None when unavailable."""
    try:
        from lean_plugins.compress import LeanCompressor

        # Not recorded: the saving is the prompt layer's, measured per render.
        compressor = LeanCompressor(rate=0.7, record_ledger=False)
    except Exception as exc:  # not installed or no model: lean_text works without it
        logger.info("layer-1 compressor unavailable for lean prompts: %s", exc)
        return None

    def run(text: str) -> str:
        return compressor.compress(text).text

    return run


def compress_long_paragraphs(
    text: str, compressor: Callable[[str], str], *, min_tokens: int = 40, tokenizer: str = "cl100k_base"
) -> str:
    """Run ``compressor`` on lines of plain instruction text of at least ``min_tokens`` tokens."""
    out = []
    for line in text.split("\n"):
        if count_tokens(line, tokenizer) >= min_tokens and not any(is_placeholder(c) for c in line):
            try:
                compressed = compressor(line).strip()
            except Exception as exc:
                logger.warning("compressor failed on a prompt paragraph (%s); kept it as written", exc)
                compressed = line
            line = compressed if compressed and len(compressed) < len(line) else line
        out.append(line)
    return "\n".join(out)


def lean_text(
    template_text: str,
    *,
    example_tokens: int = 30,
    compressor: str | Callable[[str], str] | None = None,
    tokenizer: str = "cl100k_base",
    rewrites: Sequence[Rewrite] = CONCISE_REWRITES,
    max_example_tokens: int | None = None,
    prose_rate: float | None = None,
    prose_min_words: int = 6,
    prose_scorer: object | None = None,
    min_cosine: float | None = 0.85,
) -> str:
    """The lean form of ``template_text`` (see the module doc for the steps).

    ``compressor``: ``None`` (default) leaves long instruction paragraphs to the rules;
    ``"auto"`` runs layer 1's ``LeanCompressor`` on them when it is installed (off by
    default: on these short, dense instructions it drops words that carry meaning, see
    docs/prompts.md); or pass any ``text -> text`` callable. ``rewrites``: the concise
    rewrites to use (default: the whole phrasebook; the benchmark passes subsets to measure
    rules on projects they were not admitted from).

    ``prose_rate``: share of instruction-prose tokens to keep with layer 1's token classifier
    (:func:`lean_plugins.prompts.prose.compress_prose`; e.g. 0.6), or None (default) to leave
    prose to the rules. Only lines of at least ``prose_min_words`` words that are not format
    lines, examples or data are touched; variables, negations, numbers, quoted text, code,
    JSON, labels and tags are always kept. ``prose_scorer``: a ``LeanCompressor``, a compressor
    model folder or name, or a callable text -> keep probability per word, to use instead of
    the shipped classifier. Without
    the ``compress`` extra or its model the prose is left to the rules (one warning logged).
    ``min_cosine``: with a lossy step on (``prose_rate`` or ``max_example_tokens``), when the
    MiniLM cosine of the template before and after falls below it, the prose is compressed
    less (``prose_rate`` + 0.1, + 0.2, ... up to none), then the examples are kept whole too,
    until it holds (:func:`lean_plugins.prompts.prose.guarded_settings`); None turns the check
    off. Without the encoder (no torch) the check is skipped (one warning logged).
    """
    if not isinstance(template_text, str):
        raise TypeError(f"lean_text() takes the template text as a str, got {type(template_text).__name__}")
    prose = None
    if prose_rate is not None:
        from lean_plugins.prompts.prose import as_scorer, check_prose_rate

        prose_rate = check_prose_rate(prose_rate)
        if isinstance(prose_min_words, bool) or not isinstance(prose_min_words, int) or prose_min_words < 1:
            raise ConfigurationError(f"prose_min_words must be a positive int, got {prose_min_words!r}.")
        prose = as_scorer(prose_scorer)
    if (prose is None or prose_rate is None or prose_rate >= 1) and max_example_tokens is None:
        return _lean_text(template_text, example_tokens, compressor, tokenizer, rewrites, None, None)
    from lean_plugins.prompts.prose import check_min_cosine, guarded_settings, shared_encoder, template_cosine

    floor = check_min_cosine(min_cosine)
    encoder = shared_encoder() if floor is not None else None
    out = template_text
    for rate, cap in guarded_settings(prose_rate if prose is not None else None, max_example_tokens):
        settings = (rate, prose_min_words, prose) if rate is not None and prose is not None else None
        out = _lean_text(template_text, example_tokens, compressor, tokenizer, rewrites, cap, settings)
        if encoder is None or floor is None or template_cosine(template_text, out, encoder) >= floor:
            return out
        logger.info("lean_text: cosine below min_cosine=%s with prose rate %s, example cap %s; relaxing", floor, rate, cap)
    return out


def _lean_text(
    template_text: str,
    example_tokens: int,
    compressor: str | Callable[[str], str] | None,
    tokenizer: str,
    rewrites: Sequence[Rewrite],
    max_example_tokens: int | None,
    prose: tuple[float, int, Callable[[str], Sequence[float]]] | None,
) -> str:
    source_text = template_text
    if max_example_tokens is not None:
        # Before masking: whole examples go, quoted text in them included.
        template_text = cap_examples(template_text, max_example_tokens, tokenizer=tokenizer)
    masked = mask(template_text)
    # Escaped-brace blocks are JSON examples: same data, compact whitespace.
    masked = Masked(masked.text, tuple(compact_json(s) if s.startswith("{{") else s for s in masked.spans))
    current = masked.text
    steps: list[Rule] = [
        *MINIFY_RULES,
        Rule("join_broken_lines", "join a sentence broken over two lines", join_broken_lines),
        Rule("markdown_emphasis", "drop **bold** markers", markdown_emphasis),
        Rule("concise_rewrites", "shorter phrasings of verbose idioms", lambda t: concise_rewrites(t, rewrites)),
        Rule(
            "compact_examples",
            "cut long few-shot example bodies",
            lambda t: compact_examples(t, example_tokens, tokenizer=tokenizer),
        ),
        # After compact_examples, which puts each short example body on its label's line.
        Rule("drop_articles", "telegraphic instruction lines", drop_articles),
    ]
    run = _load_compressor() if compressor == "auto" else compressor
    if callable(run):
        steps.append(
            Rule(
                "compressor",
                "layer-1 compressor on long paragraphs",
                lambda t: compress_long_paragraphs(t, run),
            )
        )
    if prose is not None and prose[0] < 1:
        from lean_plugins.prompts.prose import compress_prose

        rate, min_words, scorer = prose
        steps.append(
            Rule(
                "compress_prose",
                "layer-1 classifier on instruction prose",
                lambda t: compress_prose(t, rate, scorer, min_words=min_words, tokenizer=tokenizer),
            )
        )
    steps += [Rule("dedupe", "", dedupe), Rule("tidy", "", tidy)]
    for step in steps:
        rewritten = step.apply(current)
        if masked.lost_spans(rewritten):
            logger.warning("lean_text step %r dropped protected text; step skipped", step.name)
            continue
        current = rewritten
    result = masked.unmask(current)
    if set(template_variables(result)) != set(template_variables(source_text)):  # belt and braces
        logger.warning("lean_text changed the template's variables; returning the minified form")
        from lean_plugins.prompts.minifier import minify

        return minify(source_text)
    return result


LEAN_RULES = CONCISE_REWRITES
