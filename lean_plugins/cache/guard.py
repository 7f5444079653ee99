"""The semantic guard: a near-duplicate may be served only if the two prompts agree on the
details a cosine score glosses over.

A cosine threshold alone serves answers to different questions ("flights to Paris" vs.
"flights to Rome", "is X safe" vs. "is X not safe"). A candidate must also agree with the
query on

* numbers (digits and number words: "3 days" is not "5 days");
* negation (one negated and one not is a different question);
* named entities and rare content words (capitalised words inside a sentence, words with
  inner capitals or digits, and words the encoder's vocabulary does not hold whole).

Each prompt's entities must occur among the other's words (case-insensitive), so "Kerala" and
"kerala" agree, "Kerala" and "Goa" do not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'’\-]*|\d+(?:[.,:/]\d+)*")
_DIGITS = re.compile(r"\d+(?:[.,:/]\d+)*")
# Between two words: a sentence ends there (a capital after it is not a name).
_SENTENCE_GAP = re.compile(r"[.!?:;]\s|[.!?:;]$|\n|[\"“(]\s*$")

NUMBER_WORDS = {
    "zero": "0", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "thirteen": "13", "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17",
    "eighteen": "18", "nineteen": "19", "twenty": "20", "thirty": "30", "forty": "40",
    "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90",
    "hundred": "100", "thousand": "1000", "million": "1e6", "billion": "1e9", "trillion": "1e12",
    "first": "1st", "second": "2nd", "third": "3rd", "fourth": "4th", "fifth": "5th",
    "half": "0.5", "twice": "x2", "double": "x2", "triple": "x3", "dozen": "12",
}  # fmt: skip
NEGATIONS = frozenset(
    "not no never none nobody nothing neither nor nowhere cannot without cant dont doesnt didnt "
    "isnt arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt aint".split()
)
# Function words never count as rare content words, whatever the vocabulary says.
STOPWORDS = frozenset(
    "a an the and or but if then of to in on at by for with from as is are was were be been "
    "being am do does did doing have has had having i me my we our you your he him his she her "
    "it its they them their this that these those what which who whom whose when where why how "
    "can could should would will shall may might must there here than so too very just also "
    "about into over under after before between through during up down out off again further "
    "all any both each few more most other some such only own same".split()
)


_SUFFIXES = (
    "ations", "ation", "ments", "ment", "ness", "ings", "ing", "ised", "ized", "ises", "izes", "ise",
    "ize", "ers", "ies", "ied", "ed", "er", "es", "ly", "s", "able", "ible", "ity", "al", "ful",
)  # fmt: skip
_PREFIXES = ("un", "re", "de", "dis", "in", "im", "non", "pre", "over", "under", "mis")


def _known_word(word: str, vocabulary: Collection[str]) -> bool:
    """True when ``word`` or a simple stem of it is a whole word of ``vocabulary``.

    WordPiece vocabularies hold "download" but not "downloading" or "deallocate"; inflected
    and prefixed forms of common words are common too, not rare content.
    """
    if word in vocabulary:
        return True
    stems = [word]
    for prefix in _PREFIXES:
        if word.startswith(prefix) and len(word) - len(prefix) >= 4:
            stems.append(word[len(prefix) :])
    for stem in list(stems):
        for suffix in _SUFFIXES:
            if stem.endswith(suffix) and len(stem) - len(suffix) >= 3:
                base = stem[: -len(suffix)]
                stems += [base, base + "e", base + "y", base[:-1]]
    return any(s in vocabulary for s in stems[1:])


def _fold(word: str) -> str:
    word = word.lower().replace("’", "'")
    if word.endswith("'s"):
        word = word[:-2]
    word = word.strip("'-")
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


@dataclass(frozen=True)
class PromptFacts:
    """What the guard compares: numbers, negation, entities and rare words of one prompt."""

    numbers: frozenset[str]
    negated: bool
    entities: frozenset[str]
    #: Every folded word (hyphenated words also split), to find the other prompt's entities in.
    words: frozenset[str] = frozenset()


@dataclass
class SemanticGuard:
    """Checks that a cached prompt agrees with a query on numbers, negation and entities.

    ``vocabulary`` is a set of lower-case whole words considered common (default: the
    whole-word entries of the shared MiniLM encoder's WordPiece vocabulary); a content word
    outside it is "rare" and must appear in both prompts.
    """

    vocabulary: Collection[str] | None = None
    check_numbers: bool = True
    check_negation: bool = True
    check_entities: bool = True
    _vocab_loader: Callable[[], Collection[str]] | None = field(default=None, repr=False)

    def _vocab(self) -> Collection[str]:
        if self.vocabulary is None:
            self.vocabulary = (self._vocab_loader or default_vocabulary)()
        return self.vocabulary

    def facts(self, prompt: str) -> PromptFacts:
        """Extract the facts of ``prompt``."""
        return _facts(prompt, self._vocab() if self.check_entities else frozenset())

    def agrees(self, query: str, cached: str) -> bool:
        """True when ``cached`` may answer ``query`` as far as the guard can tell."""
        a, b = self.facts(query), self.facts(cached)
        if self.check_numbers and a.numbers != b.numbers:
            return False
        if self.check_negation and a.negated != b.negated:
            return False
        # Each prompt's entities must occur in the other, in any case ("Kerala" / "kerala").
        return not (self.check_entities and not (a.entities <= b.words and b.entities <= a.words))


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


@lru_cache(maxsize=4096)
def _facts_cached(prompt: str, _vocab_id: int, vocab_ref: _VocabRef) -> PromptFacts:
    vocabulary = vocab_ref.vocab
    numbers: set[str] = set()
    entities: set[str] = set()
    words: set[str] = set()
    sequence: list[str] = []
    negated = False
    previous_end = 0
    for match in _WORD.finditer(prompt):
        token = match.group(0)
        gap = prompt[previous_end : match.start()]
        sentence_start = previous_end == 0 or bool(_SENTENCE_GAP.search(gap))
        previous_end = match.end()
        lower = token.lower().replace("’", "'")
        if _DIGITS.fullmatch(token):
            numbers.add(token.replace(",", ""))
            continue
        if lower in NUMBER_WORDS:
            numbers.add(NUMBER_WORDS[lower])
        bare = lower.replace("'", "")
        if bare in NEGATIONS or lower.endswith("n't"):
            negated = True
        is_name = (
            (token[0].isupper() and not sentence_start)
            or any(c.isupper() for c in token[1:])
            or any(c.isdigit() for c in token)
        )
        folded = _fold(token)
        words.add(folded)
        sequence.append(folded)
        if "-" in folded:
            words.update(_fold(part) for part in folded.split("-") if part)
            words.add(folded.replace("-", ""))
        if folded and lower not in STOPWORDS and lower not in NUMBER_WORDS and bare not in NEGATIONS:
            rare = bool(vocabulary) and lower.isalpha() and not _known_word(lower, vocabulary)
            if is_name or rare:
                # "hip-hop" must be found as "hip hop" or "hiphop" too: keep its parts.
                entities.update(_fold(part) for part in folded.split("-") if part)
    # "hip hop" also matches "hiphop": add each adjacent pair of words, joined.
    words.update(a + b for a, b in pairwise(sequence))
    return PromptFacts(frozenset(numbers), negated, frozenset(entities), frozenset(words))
