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
5. ``dedupe`` and ``tidy`` again, since rewrites can make two sentences equal.

Variables, code, ``{{escaped JSON}}`` and quoted text are masked through every step, and
the result is checked to hold the same variables as the source; if it does not, the
``minify`` output is returned instead.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from lean_plugins.prompts.minifier import MINIFY_RULES, Rule, dedupe, tidy
from lean_plugins.prompts.template import Masked, is_placeholder, mask, template_variables
from lean_plugins.tokens import count_tokens, truncate_to_tokens

logger = logging.getLogger("lean_plugins.prompts")


@dataclass(frozen=True)
class Rewrite:
    """A concise rewrite: ``pattern`` -> ``replacement`` (``re.sub``), with a checked example."""

    name: str
    pattern: str
    replacement: str | Callable[[re.Match[str]], str]
    example: tuple[str, str]
    flags: int = re.IGNORECASE

    def apply(self, text: str) -> str:
        return re.sub(self.pattern, self.replacement, text, flags=self.flags)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _label(match: re.Match[str]) -> str:
    """'Some text is provided below.' -> 'Text:' (the named thing becomes a label)."""
    return _cap(match.group("x").strip()) + ":"


_SENT = r"(?:(?<=^)|(?<=\n)|(?<=[.!?] ))"  # where a sentence starts


def _drop_if_said_before(match: re.Match[str]) -> str:
    """Drop a restated "refine the original answer" only if an earlier sentence said it."""
    earlier = match.string[: match.start()].lower()
    return "" if f"refine the existing {match.group('x').lower()}" in earlier else match.group(0)


CONCISE_REWRITES: tuple[Rewrite, ...] = (
    Rewrite(
        "intro_numbered_list",
        rf"{_SENT}(?:some |a |an |the )?(?P<x>[\w -]{{1,40}}?) (?:is|are) (?:provided |given |shown |listed )?below\. "
        r"it is provided in a numbered list",
        lambda m: f"{_cap(m.group('x').strip())}: numbered list",
        (
            "Some choices are given below. It is provided in a numbered list (1 to {n}).",
            "Choices: numbered list (1 to {n}).",
        ),
    ),
    Rewrite(
        "intro_below_label",
        rf"{_SENT}(?:some |a |an |the )?(?P<x>[\w -]{{1,60}}?) (?:is|are) (?:provided |given |shown |listed )?below[.:]?(?=\n)",
        _label,
        ("Some choices are given below.\n{context_list}", "Choices:\n{context_list}"),
    ),
    Rewrite(
        "intro_below_sentence",
        rf"{_SENT}(?:some |a |an |the )?[\w -]{{1,40}}? (?:is|are) (?:also )?(?:provided|given|shown|listed)(?: below)?\. ?",
        "",
        ("A question is also provided. Answer it.", "Answer it."),
    ),
    Rewrite(
        "we_have_provided",
        rf"{_SENT}(?:we have (?:also )?provided|here (?:is|are)) (?:a |an |the |some )?(?P<x>[^.:\n]{{1,40}}?)(?: below)?[.:]",
        _label,
        ("We have provided an existing answer: {existing_answer}", "Existing answer: {existing_answer}"),
    ),
    Rewrite(
        "is_as_follows",
        rf"{_SENT}the (?P<x>[\w ]{{1,30}}?) (?:is|are) as follows:",
        _label,
        ("The original query is as follows: {query_str}", "Original query: {query_str}"),
    ),
    Rewrite(
        "describes_layout",
        rf"{_SENT}we first provide [^.\n]*\. ?",
        "",
        ("We first provide the text, and then the schema. Extract fields.", "Extract fields."),
    ),
    Rewrite(
        "we_wish_to",
        rf"{_SENT}(?:we wish to|we want to|we need to|your job is to) (?P<v>\w)",
        lambda m: m.group("v").upper(),
        ("We wish to extract fields.", "Extract fields."),
    ),
    Rewrite(
        "opportunity_to",
        rf"{_SENT}we have the opportunity to (?P<v>\w)",
        lambda m: m.group("v").upper(),
        ("We have the opportunity to refine the answer.", "Refine the answer."),
    ),
    Rewrite(
        "context_information",
        r"\b(?P<c>c)ontext information\b",
        r"\g<c>ontext",
        ("Context information: the context information", "Context: the context"),
    ),
    Rewrite(
        "not_prior_knowledge",
        r"\b(?:given|using only) the (?P<x>[\w ]{1,40}?)(?: above)? and not prior knowledge, ",
        lambda m: f"Using only the {m.group('x')}, ",
        (
            "Given the context and not prior knowledge, answer the query.",
            "Using only the context, answer the query.",
        ),
    ),
    Rewrite(
        "numbered_list",
        r"\bit is provided in a numbered list\b",
        "Numbered list",
        ("It is provided in a numbered list (1 to {n}).", "Numbered list (1 to {n})."),
    ),
    Rewrite(
        "each_item_corresponds",
        r", where each item in the list corresponds to (?:a|an) (?P<x>\w+)",
        r", one \g<x> per item",
        (
            "list (1 to 5), where each item in the list corresponds to a summary.",
            "list (1 to 5), one summary per item.",
        ),
    ),
    Rewrite(
        "new_piece_of_information",
        rf"{_SENT}(?:given the [\w ]{{1,30}}, )?here is a new piece of information:",
        "New information:",
        ("Given the context, here is a new piece of information: {x}", "New information: {x}"),
    ),
    Rewrite(
        "corresponding_to",
        r"\bthe (?P<x>numbers?) corresponding to the\b",
        r"the \g<x> of the",
        ("the number corresponding to the summary", "the number of the summary"),
    ),
    Rewrite(
        "that_is_most",
        r"\bthat (?:is|are) (?P<x>most|least|more|less) ",
        r"\g<x> ",
        ("the summary that is most relevant", "the summary most relevant"),
    ),
    Rewrite(
        "should_be_format",
        rf"{_SENT}(?:this|the output format|the output|it) should be (?:in )?(?:the following format|as follows):?",
        "Format:",
        ("This should be in the following format:", "Format:"),
    ),
    Rewrite(
        "following_format",
        r"\b(?:in|using) the following (?P<x>[\w-]+ )?format:",
        lambda m: f"as {m.group('x').strip()}:" if m.group("x") else "as:",
        (
            "Provide keywords in the following comma-separated format: 'K: <k>'",
            "Provide keywords as comma-separated: 'K: <k>'",
        ),
    ),
    Rewrite(
        "use_the_following_format",
        r"\buse the following format, each taking one line:",
        "Use this format, one per line:",
        ("Use the following format, each taking one line:", "Use this format, one per line:"),
    ),
    Rewrite(
        "write_a_summary",
        r"\bwrite an? (?:(?P<adj>concise|short|brief) )?summary of the following(?: text)?",
        lambda m: "Summarize" + (f" {m.group('adj').lower()}ly" if m.group("adj") else ""),
        ("Write a concise summary of the following:", "Summarize concisely:"),
    ),
    Rewrite(
        "as_many_as_possible",
        r"\bas many (?P<x>[\w ]{1,25}?) as possible\b",
        r"all \g<x>",
        ("Include as many key details as possible.", "Include all key details."),
    ),
    Rewrite(
        "say_so",
        r"\bsay (?:that )?you don't know\b",
        "say so",
        ("If you don't know the answer, say that you don't know.", "If you don't know the answer, say so."),
    ),
    Rewrite(
        "dont_try_to",
        r"\b(?P<neg>don't|do not|never) try to make up an answer\b",
        r"\g<neg> make one up",
        ("Don't try to make up an answer.", "Don't make one up."),
    ),
    Rewrite(
        "use_x_to_answer",
        rf"{_SENT}use the following (?:pieces? of |portion of (?:an? )?)?(?P<x>[\w ]{{1,20}}?) to answer (?P<q>[^.,\n]{{1,40}})\.",
        lambda m: f"Answer {m.group('q')} using the {m.group('x')}.",
        (
            "Use the following pieces of context to answer the question at the end.",
            "Answer the question at the end using the context.",
        ),
    ),
    Rewrite(
        "in_addition_also",
        rf"{_SENT}in addition to (?:giving|providing) an? \w+, also (?P<v>\w)",
        lambda m: "Also " + m.group("v"),
        ("In addition to giving an answer, also return a score.", "Also return a score."),
    ),
    Rewrite(
        "pay_attention_to_use",
        rf"{_SENT}pay attention to use (?P<v>\w)",
        lambda m: "Use " + m.group("v"),
        ("Pay attention to use only real columns.", "Use only real columns."),
    ),
    Rewrite(
        "be_careful_not_to",
        rf"{_SENT}be careful (?:to not|not to) (?P<v>\w)",
        lambda m: "Don't " + m.group("v"),
        ("Be careful to not query missing columns.", "Don't query missing columns."),
    ),
    Rewrite(
        "pay_attention_to_which",
        rf"{_SENT}pay attention to (?P<w>which|what|how) ",
        lambda m: "Mind " + m.group("w") + " ",
        ("Pay attention to which column is in which table.", "Mind which column is in which table."),
    ),
    Rewrite(
        "sentence_also",
        rf"{_SENT}also, (?P<v>\w)",
        lambda m: m.group("v").upper(),
        ("Also, qualify column names.", "Qualify column names."),
    ),
    Rewrite(
        "that_you_can_see_in",
        r"\bthat you can see in\b",
        "in",
        ("names that you can see in the schema", "names in the schema"),
    ),
    Rewrite(
        "an_input_question",
        r"\ban input question\b",
        "a question",
        ("Given an input question, write", "Given a question, write"),
    ),
    Rewrite(
        "as_well_as",
        r"\bas well as\b",
        "and",
        ("the numbers as well as the score", "the numbers and the score"),
    ),
    Rewrite(
        "next_to_it_along_with",
        r"\bnext to it along with\b",
        "and",
        (
            "Each document has a number next to it along with a summary.",
            "Each document has a number and a summary.",
        ),
    ),
    Rewrite(
        "exclude_irrelevant",
        r"\bdo not include any (?P<x>\w+) that (?:are|is) not relevant(?: to the question)?",
        r"Exclude irrelevant \g<x>",
        (
            "Do not include any documents that are not relevant to the question.",
            "Exclude irrelevant documents.",
        ),
    ),
    Rewrite(
        "in_the_form_of",
        r"\bshould be in the form of\b",
        "has the form",
        ("Each triplet should be in the form of (a, b)", "Each triplet has the form (a, b)"),
    ),
    Rewrite(
        "from_the_given",
        r"\bfrom the given\b",
        "from the",
        ("triplets from the given text", "triplets from the text"),
    ),
    Rewrite(
        "with_some_more_context",
        r"\bwith some more context below\b",
        "with the context below",
        (
            "Refine it (only if needed) with some more context below.",
            "Refine it (only if needed) with the context below.",
        ),
    ),
    Rewrite(
        "restated_refine",
        r"(?<=\n)given the new context, refine the original (?P<x>answer|summary)(?: to better answer the (?:query|question))?\.\s?",
        _drop_if_said_before,
        (
            "Refine the existing answer.\n{c}\nGiven the new context, refine the original answer. Else keep it.",
            "Refine the existing answer.\n{c}\nElse keep it.",
        ),
    ),
    Rewrite(
        "refine_to_better_answer",
        r"\brefine the original (?P<x>answer|summary) to better answer the (?:query|question)\b",
        r"refine the original \g<x>",
        (
            "Given the context, refine the original answer to better answer the query.",
            "Given the context, refine the original answer.",
        ),
    ),
    Rewrite(
        "give_a_response_to",
        r"\bgive a response to the following (?P<x>task|question|query):",
        r"Respond to the \g<x>:",
        ("Give a response to the following task: {t}", "Respond to the task: {t}"),
    ),
    Rewrite(
        "sentence_ends_rephrase",
        r"\bto be a standalone question\b",
        "as a standalone question",
        (
            "rephrase the question to be a standalone question",
            "rephrase the question as a standalone question",
        ),
    ),
    Rewrite(
        "you_are_given_named",
        rf"{_SENT}you are given an? (?P<x>\w+) named:? ",
        lambda m: f"For {m.group('x')} ",
        ("You are given a table named: 't' with schema, write SQL.", "For table 't' with schema, write SQL."),
    ),
    Rewrite(
        "for_instance_examples",
        r"\bfor instance, some (?:[\w ]{1,30} )?examples below\b",
        "Examples",
        ("For instance, some select statement examples below (x):", "Examples (x):"),
    ),
    Rewrite(
        "how_to_determine",
        rf"{_SENT}how to determine the (?P<x>\w+):",
        lambda m: f"{_cap(m.group('x'))} rules:",
        ("How to determine the score:", "Score rules:"),
    ),
    Rewrite(
        "that_should_be_a_score",
        r", that should be a score of (?P<n>\d+)",
        r": score \g<n>",
        (
            "If the context lacks the answer, that should be a score of 0",
            "If the context lacks the answer: score 0",
        ),
    ),
    Rewrite(
        "you_should_consult",
        r"\b(?P<x>\w+) you should consult to answer the question\b",
        r"\g<x> to consult",
        (
            "Respond with the numbers of the documents you should consult to answer the question.",
            "Respond with the numbers of the documents to consult.",
        ),
    ),
    Rewrite(
        "name_of_the_column_is",
        r"\(the name of the (?P<x>[\w ]{1,30}?) column is (?P<y>\S+)\)",
        r"(\g<x> column: \g<y>)",
        ("(the name of the embeddings column is X)", "(embeddings column: X)"),
    ),
    Rewrite(
        "that_do_not_exist",
        r"\b(?:for )?(?P<x>columns|tables|fields) that do not exist\b",
        r"nonexistent \g<x>",
        ("Don't query for columns that do not exist.", "Don't query nonexistent columns."),
    ),
    Rewrite(
        "based_on_relevance",
        r"\bbased on (?:their|its) relevance to\b",
        "by relevance to",
        (
            "Rank the passages based on their relevance to the query.",
            "Rank the passages by relevance to the query.",
        ),
    ),
    Rewrite(
        "the_information_from_sources",
        r"\bthe information from multiple sources\b",
        "the sources",
        ("Using only the information from multiple sources, answer.", "Using only the sources, answer."),
    ),
    Rewrite(
        "focus_on_useful_items",
        r"\bfocus on extracting the (?P<x>\w+) that we can use to best (?P<v>\w+)",
        r"Prefer \g<x> that best help \g<v>",
        (
            "Focus on extracting the keywords that we can use to best lookup answers.",
            "Prefer keywords that best help lookup answers.",
        ),
    ),
    Rewrite(
        "output_format_should_be",
        r"\bthe output format should be\b",
        "Output format:",
        ("The output format should be [] > [].", "Output format: [] > []."),
    ),
    Rewrite(
        "listed_in_order_restated",
        r"\bthe (?P<x>\w+) should be listed in descending order using identifiers\. the most relevant (?P=x) should be listed first\.",
        r"List the \g<x> by identifier, most relevant first.",
        (
            "The passages should be listed in descending order using identifiers. The most relevant passages should be listed first.",
            "List the passages by identifier, most relevant first.",
        ),
    ),
    Rewrite(
        "only_output_no_explanation",
        r"\bonly (?:response|respond with|return|output) the (?P<x>[\w ]+?)(?: results)?, do not say any (?:other )?words? or explain\b",
        r"Output only the \g<x>, no explanation",
        (
            "Only response the ranking results, do not say any word or explain.",
            "Output only the ranking, no explanation.",
        ),
    ),
    Rewrite(
        "check_portion_for_relevant_text",
        rf"{_SENT}use the following portion of a long document to see if any of the text is relevant to answer the question\.",
        "Find text relevant to the question in this part of a long document.",
        (
            "Use the following portion of a long document to see if any of the text is relevant to answer the question.",
            "Find text relevant to the question in this part of a long document.",
        ),
    ),
    Rewrite(
        "answer_from_query_results",
        r"\blook at the results of the query and return the answer\b",
        "answer from its results",
        ("then look at the results of the query and return the answer.", "then answer from its results."),
    ),
    Rewrite(
        "query_all_columns",
        r"\bnever query for all the columns from a specific table, only ask for a few relevant columns given the question\.",
        "Never query all columns of a table; only the few relevant to the question.",
        (
            "Never query for all the columns from a specific table, only ask for a few relevant columns given the question.",
            "Never query all columns of a table; only the few relevant to the question.",
        ),
    ),
    Rewrite(
        "score_is_a_number_from",
        r"\bthe (?P<x>[\w ]{1,20}) is a number from (?P<r>\S+) based on how relevant you think the \w+ is to the question\.",
        lambda m: f"{_cap(m.group('x'))}: {m.group('r')}.",
        (
            "The relevance score is a number from 1-10 based on how relevant you think the document is to the question.",
            "Relevance score: 1-10.",
        ),
    ),
    Rewrite(
        "explain_why_selected",
        r"\band explain why (?:this|these) \w+ (?:was|were) selected in relation to the question\b",
        "and explain why",
        (
            "'ANSWER: <n>' and explain why this summary was selected in relation to the question.",
            "'ANSWER: <n>' and explain why.",
        ),
    ),
    Rewrite(
        "in_the_form_of",
        r"\bin the form of\b",
        "as",
        ("triplets in the form of (s, p, o)", "triplets as (s, p, o)"),
    ),
    Rewrite("the_given", r"\bthe given\b", "the", ("to answer the given question", "to answer the question")),
    Rewrite(
        "given_the_following",
        r"\bgiven the following\b",
        "Given the",
        ("Given the following conversation, rephrase", "Given the conversation, rephrase"),
    ),
    Rewrite(
        "given_the_inputs",
        rf"{_SENT}given (?:the|a|an) (?![^,\n]*\bnot\b)(?:[a-z]+ ){{0,5}}?[a-z]+, (?P<v>[a-z])",
        lambda m: m.group("v").upper(),
        ("Given the text and schema, extract the fields.", "Extract the fields."),
    ),
)


def concise_rewrites(text: str) -> str:
    """Apply every :data:`CONCISE_REWRITES` entry in order.

    A rewrite whose match would swallow a protected span (a variable, code, quoted text) is
    skipped for this text, so one greedy pattern cannot cost the others.
    """
    for rewrite in CONCISE_REWRITES:
        rewritten = rewrite.apply(text)
        if sorted(filter(is_placeholder, rewritten)) == sorted(filter(is_placeholder, text)):
            text = rewritten
    return text


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
) -> str:
    """The lean form of ``template_text`` (see the module doc for the steps).

    ``compressor``: ``None`` (default) leaves long instruction paragraphs to the rules;
    ``"auto"`` runs layer 1's ``LeanCompressor`` on them when it is installed (off by
    default: on these short, dense instructions it drops words that carry meaning, see
    docs/prompts.md); or pass any ``text -> text`` callable.
    """
    if not isinstance(template_text, str):
        raise TypeError(f"lean_text() takes the template text as a str, got {type(template_text).__name__}")
    masked = mask(template_text)
    # Escaped-brace blocks are JSON examples: same data, compact whitespace.
    masked = Masked(masked.text, tuple(compact_json(s) if s.startswith("{{") else s for s in masked.spans))
    current = masked.text
    steps: list[Rule] = [
        *MINIFY_RULES,
        Rule("join_broken_lines", "join a sentence broken over two lines", join_broken_lines),
        Rule("concise_rewrites", "shorter phrasings of verbose idioms", concise_rewrites),
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
    steps += [Rule("dedupe", "", dedupe), Rule("tidy", "", tidy)]
    for step in steps:
        rewritten = step.apply(current)
        if masked.lost_spans(rewritten):
            logger.warning("lean_text step %r dropped protected text; step skipped", step.name)
            continue
        current = rewritten
    result = masked.unmask(current)
    if set(template_variables(result)) != set(template_variables(template_text)):  # belt and braces
        logger.warning("lean_text changed the template's variables; returning the minified form")
        from lean_plugins.prompts.minifier import minify

        return minify(template_text)
    return result


LEAN_RULES = CONCISE_REWRITES
