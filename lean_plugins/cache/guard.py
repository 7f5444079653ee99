"""The semantic guard: a near-duplicate question may be served only if the two questions agree
on every detail that changes the answer and that a cosine score glosses over.

A cosine threshold alone serves answers to different questions ("flights to Paris" vs.
"flights to Rome", "is X safe" vs. "is X unsafe", "12 + 5" vs. "12 - 5"). The guard compares
two *questions* (not whole prompts: the LLM-level cache passes the final user message, the
question-level cache the user's question) and refuses the pair when they differ in

* numbers, with their sign ("-40" is not "40"; "twelve" is "12");
* negation ("not", "never", "n't") and negating prefixes and suffixes ("unsafe" / "safe",
  "non-profit" / "profit", "useless" / "useful");
* antonyms ("enable" / "disable", "bigger" / "smaller", "use" / "avoid");
* sibling words, one thing of a kind for another ("sleep" / "dream", "cat" / "dog", "tea" /
  "coffee"): a table of common words; the cross-encoder verifier learns the kind of swap for
  the words it does not list;
* the degree of a shared adjective ("big" / "bigger" / "biggest", "more X" / "most X");
* operators ("+" / "-", "==" / "!=", "≤" / "≥", "C++" / "C#"), units and currencies;
* emoji and other symbols, which the encoder does not see ("Is 😀 happy?" / "Is 😢 happy?" have
  cosine 1.0): each prompt's must equal the other's as a multiset;
* code spans and identifiers, compared case-sensitively ("IN" / "in" in SQL); e-mail addresses,
  URLs, handles and paths, compared exactly ("jane.doe@acme.com" / "john.doe@acme.com");
* quoted text ("Given the text 'The cat sat on the mat'"): each quoted span must occur in the
  other prompt, case and spacing aside;
* a word asked about ("the word banana", "the past tense of run", "the plural of mouse"): it must
  occur in the other prompt as written, without the lemma folding the other checks use;
* the order of the same words around a relation ("A think of B" / "B think of A",
  "USD to EUR" / "EUR to USD"), but not around "and" / "or" / "vs";
* quantifiers ("all" / "some"), modals ("must" / "may"), dates, weekdays and relative times
  ("tomorrow" / "yesterday", "next" / "last"), gendered pronouns ("he" / "she");
* named entities and rare content words (capitalised words inside a sentence, words with
  inner capitals or digits, words the encoder's vocabulary does not hold whole): each
  question's must occur among the other's words, case-insensitively.

The word tables live in ``lean_plugins/data/cache_guard_rules.json`` (one test per entry);
this module holds only the logic. :meth:`SemanticGuard.refusal` names the rule that refused.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import cache, lru_cache
from itertools import pairwise
from typing import Any

RULES_FILE = "cache_guard_rules.json"

#: Words of a prompt for the verifier's features and the word sets: letters first (any script),
#: or a number; inner apostrophes and hyphens stay in the word.
_WORD = re.compile(r"[^\W\d_][\w'’\-]*|\d+(?:[.,:/]\d+)*")
# Between two tokens: a sentence ends there (a capital after it is not a name).
_SENTENCE_GAP = re.compile(r"[.!?:;]\s|[.!?:;]$|\n|[\"“(]\s*$")


@cache
def rules() -> dict[str, Any]:
    """The guard's word tables (``lean_plugins/data/cache_guard_rules.json``)."""
    from lean_plugins.paths import package_data

    return json.loads(package_data(RULES_FILE).read_text(encoding="utf-8"))


_R = rules()
NUMBER_WORDS: dict[str, str] = _R["number_words"]
NEGATIONS = frozenset(_R["negations"])
#: Function words never count as content words, whatever the vocabulary says.
STOPWORDS = frozenset(_R["function_words"])
_ANTONYMS: dict[str, list[tuple[int, str]]] = {}
for _group, _members in enumerate(_R["antonyms"]):
    for _member in _members:
        _ANTONYMS.setdefault(_member, []).append((_group, _member))
#: Words of one kind that name different things ("sleep" / "dream", "cat" / "dog").
_SIBLINGS: dict[str, list[tuple[int, str]]] = {}
for _group, _members in enumerate(_R["sibling_words"]):
    for _member in _members:
        _SIBLINGS.setdefault(_member, []).append((_group, _member))
_PREFIXES: dict[str, int] = _R["negating_prefixes"]
_PREFIX_EXCEPTIONS = frozenset(_R["negating_prefix_exceptions"])
_ADJECTIVES = frozenset(_R["gradable_adjectives"])
_OPERATORS = frozenset(_R["operators"])
_SYMMETRIC = frozenset(_R["symmetric_connectors"])
#: Left out of a relation ("from my laptop to the server" / "from the server to my laptop").
_NOT_RELATION = _SYMMETRIC | frozenset(_R["determiners"])
_MULTIWORD_MODALS = {k: v for k, v in _R["modals"].items() if " " in k}
_UNIT_AFTER_NUMBER = frozenset(_R["units_after_number_only"])
_CURRENCY_AFTER_NUMBER = frozenset(_R["currencies_after_number_only"])
_METHOD_NOUNS = frozenset(_R["method_nouns"])
_SCALES = frozenset({"celsius", "fahrenheit", "kelvin"})
_INFIX_ONLY = frozenset(_R["infix_only_operators"])
_MODAL_FREE_AFTER = frozenset(_R["modal_free_after"])
_QUESTION_WORDS = frozenset(_R["question_words"])
_EMPHASIS = frozenset(_R["emphasis_words"])
#: "≤" is "<=", "×" is "*": compared as the ASCII operator they write.
_OPERATOR_ALIASES = str.maketrans(_R["operator_aliases"])
# The guard's tokens: code spans, numbers (sign only where it is not an infix minus), words
# (dotted identifiers and a "++" / "#" suffix kept: "os.path", "C++", "C#"), symbol runs of
# operators, currency and unit signs (any other symbol or emoji is compared by "symbols").
_TOKEN_SYMBOLS = "+-−*/=<>!%^&|~#@$€£¥₹₽₩¢°±§\\" + "".join(_R["operator_aliases"])
_TOKEN = re.compile(
    r"(?P<code>`[^`]+`)"
    r"|(?P<number>(?<![\w.)\]])[-+−]?\d+(?:[.,:/\-]\d+)*|\d+(?:[.,:/\-]\d+)*)(?P<suffix>[^\W\d_]+)?"
    r"|(?P<word>[^\W\d_][\w'’]*(?:[-.][^\W_][\w'’]*)*(?:\+\+|#)?)"
    rf"|(?P<symbol>[{re.escape(_TOKEN_SYMBOLS)}]+)"
)
_SYMBOL_CATEGORIES = frozenset(_R["symbol_categories"])
#: Left to the tokens above, or spacing accents typed for an apostrophe ("person´s").
_NOT_SYMBOLS = frozenset(_TOKEN_SYMBOLS) | frozenset(_R["symbols_ignored"])
_IDENTIFIER_PATTERNS = {kind: re.compile(pattern) for kind, pattern in _R["identifier_patterns"].items()}
_CASE_FREE_IDENTIFIERS = frozenset(_R["case_insensitive_identifiers"])
# A quoted span is at most _MAX_QUOTE characters: an unclosed quote mark must not make every
# opener scan to the end of a long line (quadratic time).
_MAX_QUOTE = 400
_QUOTED = [
    re.compile(rf"(?<!\w){re.escape(open_)}(?=\S)(.{{0,{_MAX_QUOTE}}}?\S){re.escape(close)}(?!\w)")
    for open_, close in _R["quote_pairs"]
]
#: First word -> the trigger phrases it opens ("past" -> ("past", "tense", "of"), ...).
_MENTION_TRIGGERS: dict[str, list[tuple[str, ...]]] = {}
for _trigger in _R["mention_triggers"]:
    _MENTION_TRIGGERS.setdefault(_trigger.split()[0], []).append(tuple(_trigger.split()))
_MENTION_SKIP = frozenset(_R["mention_skip_words"])
_QUOTE_MARKS = "'\"‘’“”«»„「」"
_MENTION_GAP = " \t:" + _QUOTE_MARKS
#: "the word for", "spell it", "define several ...": no word is asked about.
_NOT_MENTIONED = STOPWORDS | frozenset(_R["quantifiers"]) | frozenset(NUMBER_WORDS)

#: The checks, in the order :meth:`SemanticGuard.refusal` runs them (its return values).
CHECKS = (
    "numbers", "negation", "negating prefix", "antonyms", "siblings", "degree", "operators", "symbols",
    "units", "currencies", "code", "notation", "identifiers", "quotes", "mentioned words", "quantifiers",
    "modals", "time", "gender", "entities", "order",
)  # fmt: skip


def _fold(word: str) -> str:
    word = word.lower().replace("’", "'")
    if word.endswith("'s"):
        word = word[:-2]
    word = word.strip("'-")
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


@lru_cache(maxsize=65536)
def _lemmas(word: str) -> tuple[str, ...]:
    """``word`` (lower case) and its candidate bases without -s / -es / -ed / -ing and, for a
    gradable adjective, without -er / -est ("locked" -> "lock", "bigger" -> "big")."""
    w = word.lower().replace("’", "'").strip("'-")
    if w.endswith("'s"):
        w = w[:-2]
    out = [w]

    def add(stem: str) -> None:
        if len(stem) >= 2:
            out.extend((stem, stem + "e"))
            if len(stem) > 2 and stem[-1] == stem[-2]:
                out.append(stem[:-1])

    if w.endswith("ies") and len(w) > 4:
        out.append(w[:-3] + "y")
    elif w.endswith("s") and not w.endswith("ss") and len(w) > 3:
        out.append(w[:-1])
        if w.endswith("es"):
            out.append(w[:-2])
    if w.endswith("ied") and len(w) > 4:
        out.append(w[:-3] + "y")
    elif w.endswith("ed") and len(w) > 4:
        add(w[:-2])
    if w.endswith("ing") and len(w) > 5:
        add(w[:-3])
    base = _degree(w)
    if base is not None:
        out.append(base[0])
    return tuple(dict.fromkeys(out))


@lru_cache(maxsize=65536)
def _degree(word: str) -> tuple[str, str] | None:
    """``(adjective, "comparative" | "superlative")`` for "bigger", "best", "happiest"..."""
    irregular = _R["irregular_degrees"].get(word)
    if irregular is not None:
        return irregular[0], irregular[1]
    for suffix, kind in (("est", "superlative"), ("er", "comparative")):
        if word.endswith(suffix) and len(word) > len(suffix) + 1:
            stem = word[: -len(suffix)]
            candidates = [stem, stem + "e"]
            if len(stem) > 2 and stem[-1] == stem[-2]:
                candidates.append(stem[:-1])
            if stem.endswith("i"):
                candidates.append(stem[:-1] + "y")
            for candidate in candidates:
                if candidate in _ADJECTIVES:
                    return candidate, kind
    return None


@dataclass(frozen=True)
class _Token:
    text: str
    kind: str  # "code", "number", "word", "symbol"
    sentence_start: bool
    #: Canonical number ("-40", "1000") or the lower-case word.
    value: str
    #: First of a sentence or of a clause set off by a comma ("After a workout, what should I eat?").
    clause_start: bool = False


@dataclass(frozen=True)
class PromptFacts:
    """What the guard compares, extracted once per prompt."""

    numbers: frozenset[str]
    negated: bool
    entities: frozenset[str]
    #: Every folded word (hyphenated words also split, adjacent pairs also joined), to find
    #: the other prompt's entities in.
    words: frozenset[str] = frozenset()
    #: Every candidate base of every word ("locked" -> "lock"), for antonyms and prefixes.
    lemmas: frozenset[str] = frozenset()
    #: The parts of hyphenated words, with their bases ("thread-unsafe" -> "thread", "unsafe").
    parts: frozenset[str] = frozenset()
    antonyms: frozenset[tuple[int, str]] = frozenset()
    #: (group, word) of the sibling words it uses ("sleep" / "dream").
    siblings: frozenset[tuple[int, str]] = frozenset()
    degrees: tuple[tuple[str, frozenset[str]], ...] = ()
    #: "comparative" / "superlative" for each of "more", "most", "less", "least"... present.
    degree_markers: frozenset[str] = frozenset()
    #: The prompt with runs of whitespace as one space (code spans are looked up in it).
    text: str = ""
    operators: tuple[tuple[str, int], ...] = ()
    #: Units after a number ("5 km", "40 °C"); ``unit_words``: the others ("a day", "in km").
    units: frozenset[str] = frozenset()
    unit_words: frozenset[str] = frozenset()
    currencies: frozenset[str] = frozenset()
    code_spans: tuple[tuple[str, int], ...] = ()
    #: Lower-case word -> its exact spellings, when the prompt looks like code.
    code_case: tuple[tuple[str, frozenset[str]], ...] = ()
    looks_like_code: bool = False
    #: Lower-case forms of the words written as identifiers ("myVar", "file_name", "os.path").
    identifiers: frozenset[str] = frozenset()
    #: Common words written in capitals ("PATH", "IN", "US") and words written in lower case.
    shouted: frozenset[str] = frozenset()
    lowercase_words: frozenset[str] = frozenset()
    quantifiers: frozenset[str] = frozenset()
    modals: frozenset[str] = frozenset()
    #: Modals that open a sentence or follow its question word ("Should I ...?", "Who can ...?").
    asked_modals: frozenset[str] = frozenset()
    times: frozenset[str] = frozenset()
    genders: frozenset[str] = frozenset()
    #: The prompt's items in order (lemma of content words, numbers, operators), for role swaps.
    sequence: tuple[str, ...] = ()
    #: Symbols and emoji the tokens above do not cover ("😀", "→", "²"), with their counts.
    symbols: tuple[tuple[str, int], ...] = ()
    #: Emails, URLs, handles and paths, as ``kind:text`` (exact; e-mails and handles lower-case).
    literal_ids: frozenset[str] = frozenset()
    #: Quoted spans, lower-case with single spaces, and the whole prompt so normalised.
    quotes: frozenset[str] = frozenset()
    quote_text: str = ""
    #: Words asked about ("the word banana", "the past tense of run"), and every word as written
    #: (lower-case, no lemma folding) to find the other prompt's in.
    mentioned: frozenset[str] = frozenset()
    exact_words: frozenset[str] = frozenset()


@dataclass
class SemanticGuard:
    """Checks that a cached question agrees with a query on every detail that changes the answer.

    ``vocabulary`` is a set of lower-case whole words considered common (default: the
    whole-word entries of the shared MiniLM encoder's WordPiece vocabulary); a content word
    outside it is "rare" and must appear in both prompts. ``skip`` names checks of
    :data:`CHECKS` to leave out (``check_numbers`` / ``check_negation`` / ``check_entities``
    switch off those three).
    """

    vocabulary: Collection[str] | None = None
    check_numbers: bool = True
    check_negation: bool = True
    check_entities: bool = True
    skip: Collection[str] = ()
    _vocab_loader: Callable[[], Collection[str]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        unknown = set(self.skip) - set(CHECKS)
        if unknown:
            from lean_plugins.errors import ConfigurationError

            raise ConfigurationError(f"SemanticGuard(skip=...) names unknown checks {sorted(unknown)}; known: {CHECKS}.")

    def _vocab(self) -> Collection[str]:
        if self.vocabulary is None:
            self.vocabulary = (self._vocab_loader or default_vocabulary)()
        return self.vocabulary

    def facts(self, prompt: str) -> PromptFacts:
        """Extract the facts of ``prompt``."""
        return _facts(prompt, self._vocab() if self.check_entities else frozenset())

    def agrees(self, query: str, cached: str) -> bool:
        """True when ``cached`` may answer ``query`` as far as the guard can tell."""
        return self.refusal(query, cached) is None

    def refusal(self, query: str, cached: str) -> str | None:
        """The first check of :data:`CHECKS` on which ``query`` and ``cached`` differ, or ``None``."""
        a, b = self.facts(query), self.facts(cached)
        off = set(self.skip)
        if not self.check_numbers:
            off.add("numbers")
        if not self.check_negation:
            off.add("negation")
        if not self.check_entities:
            off.add("entities")
        for name in CHECKS:
            if name not in off and _DIFFERS[name](a, b):
                return name
        return None


# -- the checks: each True when the two prompts differ ---------------------------------------------
def _prefix_negates(a: PromptFacts, b: PromptFacts) -> bool:
    """A word of ``a`` is a word of ``b`` with a negating prefix or suffix ("unsafe" / "safe")."""
    b_words = b.lemmas | b.parts
    for word in (a.lemmas | a.parts) - b_words:
        if word in _PREFIX_EXCEPTIONS or word in STOPWORDS or word.replace("-", "") in b.words:
            continue
        for prefix, min_stem in _PREFIXES.items():
            stem = word[len(prefix) :].lstrip("-")
            if word.startswith(prefix) and len(stem) >= min_stem and stem in b_words and stem not in a.lemmas:
                return True
        for positive, negative in _R["negating_suffixes"]:
            for x, y in ((positive, negative), (negative, positive)):
                if word.endswith(y) and word[: -len(y)] + x in b.lemmas and len(word) > len(y) + 2:
                    return True
    return False


def _groups_differ(a: frozenset[tuple[int, str]], b: frozenset[tuple[int, str]]) -> bool:
    """Each side has a word of one group that the other lacks ("enable" / "disable"); both
    words on both sides ("advantages and disadvantages") is no conflict."""
    a_only, b_only = a - b, b - a
    groups = {g for g, _ in a_only}
    return any(g in groups for g, _ in b_only)


def _antonyms_differ(a: PromptFacts, b: PromptFacts) -> bool:
    return _groups_differ(a.antonyms, b.antonyms)


def _is_adjective(word: str) -> bool:
    """A gradable adjective of the table (or its -er / -est form), or a word with an adjective
    ending ("useful")."""
    return (
        word in _ADJECTIVES
        or _degree(word) is not None
        or (len(word) > 4 and word.endswith(tuple(_R["adjective_suffixes"])))
    )


def _degrees_differ(a: PromptFacts, b: PromptFacts) -> bool:
    """A word both prompts use, at another degree ("big" / "bigger", "more useful" / "most
    useful"), or "more" against "most" ("more users" / "most users")."""
    if a.degree_markers and b.degree_markers and a.degree_markers != b.degree_markers:
        return True
    da, db = dict(a.degrees), dict(b.degrees)
    positive = frozenset({"positive"})
    for base in (set(da) | set(db)) - set(_R["degree_exempt"]):
        if base in a.lemmas and base in b.lemmas and da.get(base, positive) != db.get(base, positive):
            return True
    return False


def _spans_found(spans: tuple[tuple[str, int], ...], text: str) -> bool:
    """Each code span occurs in ``text`` verbatim (as a span or bare; case-sensitive)."""
    return all(re.search(rf"(?<!\w){re.escape(span)}(?!\w)", text) for span, _ in spans)


def _code_differs(a: PromptFacts, b: PromptFacts) -> bool:
    if not (_spans_found(a.code_spans, b.text) and _spans_found(b.code_spans, a.text)):
        return True
    # A text written all in capitals is a case change of the whole text, not shouted words.
    shouted_a = frozenset() if a.text == a.text.upper() else a.shouted
    shouted_b = frozenset() if b.text == b.text.upper() else b.shouted
    if not (a.looks_like_code or b.looks_like_code):  # "the ONE thing", "STILL believe": emphasis
        shouted_a, shouted_b = shouted_a - _EMPHASIS, shouted_b - _EMPHASIS
    if (shouted_a - shouted_b) & b.lowercase_words or (shouted_b - shouted_a) & a.lowercase_words:
        return True
    if not (a.looks_like_code or b.looks_like_code):
        return False
    ca, cb = dict(a.code_case), dict(b.code_case)
    return any(ca[w] != cb[w] for w in (a.identifiers | b.identifiers) & set(ca) & set(cb))


# Notation: brackets, braces, quote marks (not an apostrophe inside a word), other symbol runs
# and numbers, in order. Sentence-final punctuation is left out.
_NOTATION_TOKEN = re.compile(r"[\[\]{}()]|(?<!\w)['’‘\"“”]|['’‘\"“”](?!\w)|\d+|[^\w\s\[\]{}()'’‘\"“”?!.]+")
_BRACKETS = re.compile(r"[\[\]{}]")


def _notation_differs(a: PromptFacts, b: PromptFacts) -> bool:
    """Where either prompt writes with brackets or braces (a slice, a JSON object, a list),
    their symbols, quote marks and numbers must come in the same order: ``x[1:]`` / ``x[:1]``,
    ``{"a": 1}`` / ``{'a': 1}``."""
    if not (_BRACKETS.search(a.text) or _BRACKETS.search(b.text)):
        return False
    return _NOTATION_TOKEN.findall(a.text) != _NOTATION_TOKEN.findall(b.text)


def _classes_differ(a: frozenset[str], b: frozenset[str], weak: Collection[str]) -> bool:
    """Different classes, weak ones left out: "Can I ..." asks what "Do I ..." asks, "What are
    some X" what "What are X" asks."""
    return a - frozenset(weak) != b - frozenset(weak)


def _modals_differ(a: PromptFacts, b: PromptFacts) -> bool:
    """The modals a question is asked with must agree ("Should I ...?" / "Can I ...?", "Who should
    pay?" / "Who can pay?"); other modals conflict only with another strong one ("you need to" /
    "you may"), not with none ("... should be loaded" / "... to load")."""
    weak = frozenset(_R["weak_modals"])
    if _classes_differ(a.asked_modals, b.asked_modals, weak):
        return True
    strong_a, strong_b = a.modals - weak, b.modals - weak
    return bool(strong_a and strong_b and strong_a != strong_b)


def _entities_differ(a: PromptFacts, b: PromptFacts) -> bool:
    return not (a.entities <= b.words and b.entities <= a.words)


def _order_differs(a: PromptFacts, b: PromptFacts) -> bool:
    """Two shared items in the other order with the same short relation between them: "what does
    A think of B" / "... B think of A", "7 > 3" / "3 > 7" ("A and B" / "B and A" pass)."""
    first_a = {w: i for i, w in reversed(list(enumerate(a.sequence)))}
    first_b = {w: i for i, w in reversed(list(enumerate(b.sequence)))}
    shared = [w for w in first_a if w in first_b and w not in _NOT_RELATION and w not in STOPWORDS]
    shared = sorted(shared, key=first_a.__getitem__)[:_MAX_ORDER_ITEMS]
    for i, u in enumerate(shared):
        for v in shared[i + 1 :]:
            if first_b[u] < first_b[v]:
                continue
            between_a = [w for w in a.sequence[first_a[u] + 1 : first_a[v]] if w not in _NOT_RELATION]
            between_b = [w for w in b.sequence[first_b[v] + 1 : first_b[u]] if w not in _NOT_RELATION]
            if between_a and between_a == between_b and len(between_a) <= _MAX_RELATION:
                return True
    return False


def _literal_facts(prompt: str) -> dict[str, Any]:
    """The facts compared character for character: symbols, identifiers, quotes, words asked about."""
    symbols = Counter(
        c
        for c in prompt
        if ord(c) > 127 and c not in _NOT_SYMBOLS and unicodedata.category(c) in _SYMBOL_CATEGORIES
    )
    literal_ids: set[str] = set()
    rest = prompt
    for kind, pattern in _IDENTIFIER_PATTERNS.items():
        for match in pattern.finditer(rest):
            found = match.group(0).rstrip(".,;:!?)]}'\"’”")
            literal_ids.add(f"{kind}:{found.lower() if kind in _CASE_FREE_IDENTIFIERS else found}")
        rest = pattern.sub(" ", rest)  # "@acme" inside an e-mail is not a handle
    # Quote marks doubled or nested inside a span ('""great""', "'\"x\"'") are not its text.
    quotes = {" ".join(m.group(1).strip(_QUOTE_MARKS).casefold().split()) for p in _QUOTED for m in p.finditer(prompt)}
    quotes.discard("")
    matches = list(_WORD.finditer(prompt))
    words = [m.group(0).lower().replace("’", "'").strip("'-") for m in matches]  # "'Jihad'"
    exact_words = set(words) | {w[:-2] for w in words if w.endswith("'s")}  # "life's meaning"
    mentioned: set[str] = set()
    for i, first in enumerate(words):
        for trigger in _MENTION_TRIGGERS.get(first, ()):
            n = len(trigger)
            if tuple(words[i : i + n]) != trigger:
                continue
            j = i + n
            while j < len(words) and words[j] in _MENTION_SKIP:
                j += 1
            # Only the next word, with nothing but spaces, quote marks or a colon on the way: in
            # "the meaning of the emoji 🙏?" the emoji is the target, not a word after it.
            gaps = (prompt[matches[k].end() : matches[k + 1].start()] for k in range(i + n - 1, j))
            if j < len(words) and words[j] not in _NOT_MENTIONED and not any(g.strip(_MENTION_GAP) for g in gaps):
                mentioned.add(words[j])
    return {
        "symbols": tuple(sorted(symbols.items())),
        "literal_ids": frozenset(literal_ids),
        "quotes": frozenset(quotes),
        "quote_text": " ".join(prompt.casefold().split()),
        "mentioned": frozenset(mentioned),
        "exact_words": frozenset(exact_words),
    }


def _quotes_differ(a: PromptFacts, b: PromptFacts) -> bool:
    """Each quoted span occurs in the other prompt (quoted or bare; case and spacing aside)."""
    return not all(
        re.search(rf"(?<!\w){re.escape(span)}(?!\w)", other.quote_text)
        for one, other in ((a, b), (b, a))
        for span in one.quotes
    )


def _mentions_differ(a: PromptFacts, b: PromptFacts) -> bool:
    """A word asked about is in the other prompt as written: "banana" is not "bananas" there."""
    return not (a.mentioned <= b.exact_words and b.mentioned <= a.exact_words)


_MAX_ORDER_ITEMS = 64  # pairs of items checked: O(n^2), so long prompts are cut
_MAX_RELATION = 4  # words of a relation between two swapped items ("think of", "bigger than")


_DIFFERS: dict[str, Callable[[PromptFacts, PromptFacts], bool]] = {
    "numbers": lambda a, b: a.numbers != b.numbers,
    "negation": lambda a, b: a.negated != b.negated,
    "negating prefix": lambda a, b: _prefix_negates(a, b) or _prefix_negates(b, a),
    "antonyms": _antonyms_differ,
    # "Why do we sleep at night?" / "Why do we dream at night?": one word of a kind for another.
    "siblings": lambda a, b: _groups_differ(a.siblings, b.siblings),
    "degree": _degrees_differ,
    "operators": lambda a, b: a.operators != b.operators,
    # Emoji and other symbols are invisible to the encoder ("Is 😀 happy?" / "Is 😢 happy?": cosine 1).
    "symbols": lambda a, b: a.symbols != b.symbols,
    # A unit after a number must match; bare unit words conflict only when each side has one the
    # other lacks ("a day on Mars" / "a year on Mars"; "calories a day" / "calories daily" pass).
    "units": lambda a, b: a.units != b.units or bool(a.unit_words - b.unit_words and b.unit_words - a.unit_words),
    "currencies": lambda a, b: a.currencies != b.currencies,
    "code": _code_differs,
    "notation": _notation_differs,
    "identifiers": lambda a, b: a.literal_ids != b.literal_ids,
    "quotes": _quotes_differ,
    "mentioned words": _mentions_differ,
    "quantifiers": lambda a, b: _classes_differ(a.quantifiers, b.quantifiers, _R["weak_quantifiers"]),
    "modals": lambda a, b: _modals_differ(a, b),
    "time": lambda a, b: _classes_differ(a.times, b.times, _R["weak_times"]),
    # "What did he say" / "What did she say"; one side without a pronoun is not a conflict.
    "gender": lambda a, b: bool(a.genders and b.genders and a.genders != b.genders),
    "entities": _entities_differ,
    "order": _order_differs,
}


def content_words(prompt: str) -> frozenset[str]:
    """Folded words of ``prompt`` that are not function words (for the overlap penalty)."""
    return frozenset(_fold(w) for w in _WORD.findall(prompt) if w.lower() not in STOPWORDS)


def word_overlap(a: str, b: str) -> float:
    """Jaccard overlap of the content words of ``a`` and ``b`` (0 when both have none)."""
    wa, wb = content_words(a), content_words(b)
    union = wa | wb
    return len(wa & wb) / len(union) if union else 0.0


def default_vocabulary() -> frozenset[str]:
    """Whole words of the shared encoder's WordPiece vocabulary (lower-case)."""
    from lean_plugins.embeddings import get_encoder

    vocab = get_encoder().tokenizer.get_vocab()
    return frozenset(w for w in vocab if w.isalpha())


_KNOWN_SUFFIXES = (
    "ations", "ation", "ments", "ment", "ness", "ings", "ing", "ised", "ized", "ises", "izes", "ise",
    "ize", "ers", "ies", "ied", "ed", "er", "es", "ly", "s", "able", "ible", "ity", "al", "ful",
)  # fmt: skip
_KNOWN_PREFIXES = ("un", "re", "de", "dis", "in", "im", "non", "pre", "over", "under", "mis")


def _known_word(word: str, vocabulary: Collection[str]) -> bool:
    """True when ``word`` or a simple stem of it is a whole word of ``vocabulary``.

    WordPiece vocabularies hold "download" but not "downloading" or "deallocate"; inflected
    and prefixed forms of common words are common too, not rare content.
    """
    if word in vocabulary:
        return True
    stems = [word]
    for prefix in _KNOWN_PREFIXES:
        if word.startswith(prefix) and len(word) - len(prefix) >= 4:
            stems.append(word[len(prefix) :])
    for stem in list(stems):
        for suffix in _KNOWN_SUFFIXES:
            if stem.endswith(suffix) and len(stem) - len(suffix) >= 3:
                base = stem[: -len(suffix)]
                stems += [base, base + "e", base + "y", base[:-1]]
    return any(s in vocabulary for s in stems[1:])


def _facts(prompt: str, vocabulary: Collection[str]) -> PromptFacts:
    return _facts_cached(prompt, id(vocabulary), _VocabRef(vocabulary))


class _VocabRef:
    """Hashable by identity, so ``lru_cache`` keys on the vocabulary object, not its content."""

    __slots__ = ("vocab",)

    def __init__(self, vocab: Collection[str]) -> None:
        self.vocab = vocab

    def __hash__(self) -> int:
        return id(self.vocab)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _VocabRef) and other.vocab is self.vocab


def _word_forms(text: str) -> set[str]:
    """Folded words of ``text``, each hyphenated, dotted or snake_case word also split and joined
    ("file_name" -> "file", "name", "filename")."""
    forms: set[str] = set()
    for word in _WORD.findall(text):
        folded = _fold(word)
        forms.add(folded)
        parts = [p for p in re.split(r"[-._]", folded) if p]
        if len(parts) > 1:
            forms.update(_fold(p) for p in parts)
            forms.add("".join(parts))
    return forms


def _tokens(prompt: str) -> list[_Token]:
    tokens: list[_Token] = []
    previous_end = 0
    for match in _TOKEN.finditer(prompt):
        gap = prompt[previous_end : match.start()]
        start = previous_end == 0 or bool(_SENTENCE_GAP.search(gap))
        previous_end = match.end()
        kind = match.lastgroup if match.lastgroup != "suffix" else "number"
        if kind == "number":
            number = match.group("number").replace(",", "").replace("−", "-").lstrip("+")
            tokens.append(_Token(number, "number", start, number))
            suffix = match.group("suffix")
            if suffix:  # "5km", "3rd", "1990s": the number, then its unit or ending
                tokens.append(_Token(suffix, "word", False, suffix.lower()))
            continue
        text = match.group(0)
        if kind == "symbol" and (set(text) <= {"!"} or text in ("-", "−")):
            # A lone "!" ends a sentence and a lone dash joins phrases; either is an operator only
            # between two numbers ("12 - 5"), or "!" right before a word or number ("!x").
            following = prompt[previous_end : previous_end + 1]
            if text[0] == "!" and following[:1].isalnum():
                tokens.append(_Token(text, "symbol", start, text))
            elif text != "!":
                tokens.append(_Token("-", "dash", start, "-"))
            continue
        tokens.append(_Token(text, kind, start, text.lower() if kind != "symbol" else text, start or "," in gap))
    return tokens


@lru_cache(maxsize=8192)
def _facts_cached(prompt: str, _vocab_id: int, vocab_ref: _VocabRef) -> PromptFacts:
    vocabulary = vocab_ref.vocab
    tokens = _tokens(prompt)
    numbers: set[str] = set()
    operators: Counter[str] = Counter()
    code_spans: Counter[str] = Counter()
    entities: set[str] = set()
    words: set[str] = set()
    lemmas: set[str] = set()
    parts: set[str] = set()
    antonyms: set[tuple[int, str]] = set()
    siblings: set[tuple[int, str]] = set()
    degrees: dict[str, set[str]] = {}
    degree_markers: set[str] = set()
    units: set[str] = set()
    unit_words: set[str] = set()
    currencies: set[str] = set()
    quantifiers: set[str] = set()
    modals: set[str] = set()
    asked_modals: set[str] = set()
    times: set[str] = set()
    genders: set[str] = set()
    code_case: dict[str, set[str]] = {}
    shouted: set[str] = set()
    identifiers: set[str] = set()
    lowercase_words: set[str] = set()
    folded_seq: list[str] = []
    sequence: list[str] = []
    negated = False
    sign_next = False
    looks_like_code = any(marker in prompt for marker in _R["code_markers"])

    def is_number(i: int) -> bool:
        return 0 <= i < len(tokens) and (
            tokens[i].kind == "number" or tokens[i].value in NUMBER_WORDS or tokens[i].value == "one"
        )

    for i, tok in enumerate(tokens):
        after_number = is_number(i - 1)
        if tok.kind == "code":
            code_spans[" ".join(tok.text[1:-1].split())] += 1
            words.update(_word_forms(tok.text))
            looks_like_code = True
            continue
        if tok.kind == "number":
            value = ("-" + tok.value.lstrip("-")) if sign_next else tok.value
            sign_next = False
            numbers.add(value)
            sequence.append(value)
            continue
        if tok.kind == "dash":
            if after_number and is_number(i + 1):
                operators["-"] += 1
                sequence.append("-")
            continue
        if tok.kind == "symbol":
            if tok.text.translate(_OPERATOR_ALIASES) in _INFIX_ONLY and not (after_number and is_number(i + 1)):
                continue  # "gay/lesbian", "data/train", "videos & audios": not an operator
            _symbol_facts(tok.text, tokens, i, operators, units, currencies, sequence)
            continue
        text, lower = tok.text, tok.value.replace("’", "'")
        if lower in _SCALES and i > 1 and tokens[i - 1].value in ("degree", "degrees"):
            after_number = is_number(i - 2)  # "40 degrees Celsius": the scale is the number's unit
        bare = lower.replace("'", "")
        if text.endswith(("++", "#")) or "_" in text or "." in text.strip(".") or any(c.isupper() for c in text[1:]):
            looks_like_code = looks_like_code or "_" in text or text.endswith(("++", "#"))
            if not text.endswith(("++", "#")):  # "C++" / "c++" name one language
                identifiers.add(lower)  # "myVar" is not "myvar"; "Datasets" and "datasets" are one word
        # A capital that only starts a sentence is not a different spelling.
        spelling = lower if tok.sentence_start and text[1:] == text[1:].lower() else text
        code_case.setdefault(lower, set()).add(spelling)
        if text.isupper() and len(text) > 1 and text.isalpha() and (not vocabulary or lower in vocabulary):
            shouted.add(lower)  # "PATH" the variable is not "path"; "NASA" has no lower-case twin
        elif text.islower():
            lowercase_words.add(lower)
        if lower in NUMBER_WORDS:
            numbers.add(NUMBER_WORDS[lower])
        elif lower.endswith("s") and NUMBER_WORDS.get(lower[:-1], "x").replace("e", "").isdigit():
            numbers.add(NUMBER_WORDS[lower[:-1]])  # "in billions" / "in trillions"; not "seconds" (2nd)
        skip_by = 2 if i + 1 < len(tokens) and tokens[i + 1].value == "by" else 1  # "divided by"
        if lower in _R["operator_words"] and after_number and is_number(i + skip_by):
            operators[_R["operator_words"][lower]] += 1
            sequence.append(_R["operator_words"][lower])
            continue
        if lower == "minus" and is_number(i + 1):
            sign_next = True
            continue
        if bare in NEGATIONS or lower.endswith("n't"):
            negated = True
        # A question may open after a leading clause: "When cooking pasta, should I salt the water?"
        # asks what "Should I salt the water when cooking pasta?" asks.
        opens_question = tok.clause_start or (
            i > 0 and tokens[i - 1].clause_start and tokens[i - 1].value in _QUESTION_WORDS
        )
        if opens_question and lower in _R["modals"]:
            asked_modals.add(_R["modals"][lower])  # "Should I ...", "Who can ..."
        measure = _word_classes(
            tok, tokens, i, after_number, units if after_number else unit_words, currencies, quantifiers, modals, times, genders
        )
        forms = _lemmas(lower)
        lemmas.update(forms)
        if "-" in lower:
            for part in lower.split("-"):
                parts.update(_lemmas(part) if part else ())
        for form in forms:
            antonyms.update(_ANTONYMS.get(form, ()))
            siblings.update(_SIBLINGS.get(form, ()))
        if i + 1 < len(tokens) and tokens[i + 1].kind == "word":  # "log in" / "log out"
            for form in forms:
                antonyms.update(_ANTONYMS.get(f"{form} {tokens[i + 1].value}", ()))
        degree = _degree(lower)
        following = tokens[i + 1].value if i + 1 < len(tokens) else ""
        # "the fastest way to learn X" asks how to learn X fast: a method, not a degree.
        if degree is not None and not (degree[1] == "superlative" and following in _METHOD_NOUNS):
            degrees.setdefault(degree[0], set()).add(degree[1])
            # "healthier" is "more healthy": against "less healthy" it is the more / less antonym.
            antonyms.update(_ANTONYMS.get("more" if degree[1] == "comparative" else "most", ()))
        marker = _R["degree_markers"].get(lower)
        if marker:
            degree_markers.add(marker)
            following = tokens[i + 1].value if i + 1 < len(tokens) and tokens[i + 1].kind == "word" else ""
            if _is_adjective(following):
                degrees.setdefault(following, set()).add(marker)
        is_name = (
            (text[0].isupper() and not tok.sentence_start)
            or any(c.isupper() for c in text[1:])
            or any(c.isdigit() for c in text)
        )
        folded = _fold(text)
        words.add(folded)
        folded_seq.append(folded)
        sequence.append(lower if lower in STOPWORDS or lower in _SYMMETRIC else folded)
        if "-" in text or "." in text or "_" in text:
            words.update(_word_forms(text))
        # Units and currencies are compared by their own rules ("Celsius" is "°C"), not as names.
        if folded and not measure and lower not in STOPWORDS and lower not in NUMBER_WORDS and bare not in NEGATIONS:
            rare = bool(vocabulary) and lower.isalpha() and not _known_word(lower, vocabulary)
            if "." in text:  # "Quora.com": the parts that are names or rare on their own
                entities.update(
                    _fold(part)
                    for part in text.split(".")
                    if part and (part[0].isupper() or (vocabulary and not _known_word(part.lower(), vocabulary)))
                )
            elif is_name or rare:
                # "hip-hop" must be found as "hip hop" or "hiphop" too: keep its parts.
                entities.update(_fold(part) for part in folded.split("-") if part)
    # "hip hop" also matches "hiphop": add each adjacent pair of words, joined.
    words.update(a + b for a, b in pairwise(folded_seq))
    for found in (units, unit_words):
        if found & _SCALES:
            found.discard("degree")  # "40 degrees Celsius" is "40 °C"
    return PromptFacts(
        numbers=frozenset(numbers),
        negated=negated,
        entities=frozenset(entities),
        words=frozenset(words),
        lemmas=frozenset(lemmas),
        parts=frozenset(parts),
        antonyms=frozenset(antonyms),
        siblings=frozenset(siblings),
        degrees=tuple(sorted((k, frozenset(v)) for k, v in degrees.items())),
        degree_markers=frozenset(degree_markers),
        text=" ".join(prompt.split()),
        operators=tuple(sorted(operators.items())),
        units=frozenset(units),
        unit_words=frozenset(unit_words),
        currencies=frozenset(currencies),
        code_spans=tuple(sorted(code_spans.items())),
        # Spellings matter only in code: prose skips the work.
        code_case=tuple((k, frozenset(v)) for k, v in code_case.items()) if looks_like_code else (),
        looks_like_code=looks_like_code,
        identifiers=frozenset(identifiers),
        shouted=frozenset(shouted),
        lowercase_words=frozenset(lowercase_words),
        quantifiers=frozenset(quantifiers),
        modals=frozenset(modals),
        asked_modals=frozenset(asked_modals),
        times=frozenset(times),
        genders=frozenset(genders),
        sequence=tuple(sequence),
        **_literal_facts(prompt),
    )


def _symbol_facts(
    run: str,
    tokens: list[_Token],
    i: int,
    operators: Counter[str],
    units: set[str],
    currencies: set[str],
    sequence: list[str],
) -> None:
    """Operators, currency signs and unit signs of one run of symbols ("$", "°", ">=", "%")."""
    rest = run.translate(_OPERATOR_ALIASES)
    while rest:
        if rest[0] in _R["currencies"]:
            currencies.add(_R["currencies"][rest[0]])
            sequence.append(_R["currencies"][rest[0]])
            rest = rest[1:]
            continue
        if rest[0] == "%":
            units.add("percent")
            rest = rest[1:]
            continue
        if rest[0] == "°":
            following = tokens[i + 1].value if i + 1 < len(tokens) else ""
            units.add(_R["units"].get("°" + following, "degree"))
            rest = rest[1:]
            continue
        # The longest operator at the front ("!==" before "!=" before "!").
        for size in range(len(rest), 0, -1):
            op = rest[:size].replace("−", "-")
            if op in _OPERATORS:
                operators[op] += 1
                sequence.append(op)
                rest = rest[size:]
                break
        else:
            operators[rest[0]] += 1
            rest = rest[1:]


def _word_classes(
    tok: _Token,
    tokens: list[_Token],
    i: int,
    after_number: bool,
    units: set[str],
    currencies: set[str],
    quantifiers: set[str],
    modals: set[str],
    times: set[str],
    genders: set[str],
) -> bool:
    """Add the rule-table classes of one word (unit, currency, quantifier, modal, time, gender);
    True when it is a unit or currency (or the letter of "°C")."""
    lower = tok.value
    singular = _fold(lower) if lower not in _R["units"] else lower
    previous_degree = i > 0 and tokens[i - 1].text == "°"
    measure = previous_degree
    before_number = i + 1 < len(tokens) and tokens[i + 1].kind == "number"
    for table, after_only, found, near_number in (
        (_R["units"], _UNIT_AFTER_NUMBER, units, after_number),
        (_R["currencies"], _CURRENCY_AFTER_NUMBER, currencies, after_number or before_number),  # "Rs 500"
    ):
        key = lower if lower in table else singular
        if key in table and not previous_degree and (near_number or key not in after_only):
            found.add(table[key])
            measure = True
    following = tokens[i + 1].value if i + 1 < len(tokens) else ""
    # "most people" counts; "the most useful", "most amazing", "enjoy it most" are degrees.
    degree_use = lower in _R["degree_markers"] and (
        not following or _is_adjective(following) or (i > 0 and tokens[i - 1].value == "the")
    )
    if lower in _R["quantifiers"] and not degree_use:
        quantifiers.add(_R["quantifiers"][lower])
    if i + 1 < len(tokens):
        phrase = f"{lower} {tokens[i + 1].value}"
        if phrase in _MULTIWORD_MODALS:
            modals.add(_MULTIWORD_MODALS[phrase])
    capital_time = _R["capitalised_time_words"].get(tok.text)
    if capital_time is not None and not (tok.text == "May" and tok.sentence_start):
        times.add(capital_time)
    elif lower in _R["modals"] and not any(t.value in _MODAL_FREE_AFTER for t in tokens[max(0, i - 2) : i]):
        # "How (long) should I ..." asks for a way, as "How can I ..." does; "Should I ..." asks for advice.
        modals.add(_R["modals"][lower])
    if lower in _R["time_words"]:
        times.add(_R["time_words"][lower])
    elif after_number and lower in _R["time_words_after_number_only"]:
        times.add(_R["time_words_after_number_only"][lower])
    if lower in _R["gendered_words"]:
        genders.add(_R["gendered_words"][lower])
    return measure
