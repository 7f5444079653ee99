"""A cheap English check, so the English-only embedded model passes other languages through."""

from __future__ import annotations

import re
import unicodedata

# The usual English function words (a short NLTK-style list); also the stop-word baseline
# of the benchmark.
ENGLISH_STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves""".split()
)

# Frequent function words of other Latin-script languages (fr, de, es, it, pt, nl) that are
# not English words; headline-style English has few stop words, so it takes both signals.
_FOREIGN_STOPWORDS = (
    frozenset(
        """le la les des est et une du dans pour que qui sur au aux avec ce cette sont pas
    der das und ist nicht mit dem ein eine zu von sich auf auch wird werden
    el los las y es por con para del se lo como pero su
    il di che per non gli della delle sono nel anche
    os da em um uma não ao pelo pela
    het een van niet zijn ook voor maar""".split()
    )
    - ENGLISH_STOPWORDS
)

_LATIN_WORD = re.compile(r"[a-zà-ÿ]+")


def looks_english(text: str, *, min_words: int = 12) -> bool:
    """False when ``text`` is clearly not English: mostly non-Latin letters, or (for texts of
    at least ``min_words`` Latin words) more French/German/Spanish/Italian/Portuguese/Dutch
    function words than English ones. Code, numbers and
    short snippets count as English, so they are compressed rather than skipped.
    """
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return True
    non_ascii = sum(1 for c in letters if not c.isascii())
    if non_ascii / len(letters) > 0.3:
        return False
    latin_words = _LATIN_WORD.findall(text.lower())
    if len(latin_words) < min_words:
        return True
    english = sum(1 for w in latin_words if w in ENGLISH_STOPWORDS) / len(latin_words)
    foreign = sum(1 for w in latin_words if w in _FOREIGN_STOPWORDS) / len(latin_words)
    return not (foreign >= 0.08 and foreign > english)


def fold(text: str) -> str:
    """Lower case without accents: a query typed as "fiancee" matches "fiancée"."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))
