"""One test per entry of the guard's rule tables (lean_plugins/data/cache_guard_rules.json).

Each case runs the guard with only the check under test switched on, so removing or breaking
one rule fails its own case. No model is loaded: the guard gets a small fixed vocabulary.
"""

from __future__ import annotations

import unicodedata
from itertools import combinations

import pytest

from lean_plugins.cache.guard import CHECKS, SemanticGuard, rules

R = rules()
VOCAB = frozenset("what is it are there do does how i you we cats dogs birds fly users say go here".split())


def only(*checks: str) -> SemanticGuard:
    """A guard that runs only ``checks``."""
    return SemanticGuard(vocabulary=VOCAB, skip=[c for c in CHECKS if c not in checks])


def refuses(check: str, query: str, cached: str) -> bool:
    return only(check).refusal(query, cached) == check


# Every table must be exercised below; a new table without tests fails here.
TESTED_TABLES = {
    "about", "function_words", "negations", "number_words", "negating_prefixes",
    "negating_prefix_exceptions", "negating_suffixes", "antonyms", "sibling_words", "gradable_adjectives",
    "irregular_degrees", "degree_markers", "quantifiers", "modals", "weak_modals", "time_words",
    "capitalised_time_words", "gendered_words", "units", "units_after_number_only", "currencies",
    "operator_words", "operators", "symmetric_connectors", "code_markers", "weak_quantifiers",
    "modal_free_after", "adjective_suffixes", "infix_only_operators", "degree_exempt", "weak_times",
    "time_words_after_number_only", "currencies_after_number_only", "determiners", "method_nouns",
    "question_words", "emphasis_words", "operator_aliases", "symbol_categories", "symbols_ignored",
    "identifier_patterns", "case_insensitive_identifiers", "quote_pairs", "mention_triggers", "mention_skip_words",
}  # fmt: skip


def test_every_table_is_tested() -> None:
    assert set(R) == TESTED_TABLES
    assert "MIT" in R["about"]


@pytest.mark.parametrize("word", R["function_words"])
def test_function_word_is_never_an_entity(word: str) -> None:
    guard = SemanticGuard(vocabulary=frozenset({"tell", "now"}))  # any other word is rare
    assert word not in guard.facts(f"Tell me {word} now").entities
    assert "zyzzyva" in guard.facts("Tell me zyzzyva now").entities


@pytest.mark.parametrize("word", R["negations"])
def test_negation_word(word: str) -> None:
    assert refuses("negation", f"Do you {word} know it?", "Do you know it?")


@pytest.mark.parametrize(("word", "value"), sorted(R["number_words"].items()))
def test_number_word(word: str, value: str) -> None:
    assert refuses("numbers", f"Are there {word} cats?", "Are there cats?")
    if value.isdigit():
        assert not refuses("numbers", f"Are there {word} cats?", f"Are there {value} cats?")


@pytest.mark.parametrize(("word", "value"), [(w, v) for w, v in sorted(R["number_words"].items()) if v.replace("e", "").isdigit()])
def test_number_word_plural(word: str, value: str) -> None:
    # "in billions" is not "in trillions"; "seconds" (an ordinal's plural) is a unit, not a number.
    assert refuses("numbers", f"Is it in {word}s?", "Is it in units?")
    assert only("numbers").facts(f"Is it in {word}s?").numbers == {value}
    assert only("numbers").facts("How many seconds?").numbers == frozenset()


PREFIX_EXAMPLES = {
    "un": "safe", "dis": "connect", "non": "profit", "anti": "virus", "mis": "use", "in": "valid",
    "im": "possible", "il": "legal", "ir": "regular", "de": "activate", "a": "typical",
}  # fmt: skip


@pytest.mark.parametrize("prefix", sorted(R["negating_prefixes"]))
def test_negating_prefix(prefix: str) -> None:
    stem = PREFIX_EXAMPLES[prefix]
    assert len(stem) >= R["negating_prefixes"][prefix]
    assert refuses("negating prefix", f"Is it {prefix}{stem}?", f"Is it {stem}?")
    assert refuses("negating prefix", f"Is it {stem}?", f"Is it {prefix}{stem}?")
    # A stem shorter than the table's minimum is not read as prefix + word ("unit" / "it").
    short = stem[: R["negating_prefixes"][prefix] - 1]
    assert not refuses("negating prefix", f"Is it {prefix}{short}?", f"Is it {short}?")


@pytest.mark.parametrize("word", R["negating_prefix_exceptions"])
def test_negating_prefix_exception(word: str) -> None:
    prefix = next(p for p in sorted(R["negating_prefixes"], key=len, reverse=True) if word.startswith(p))
    assert not refuses("negating prefix", f"Is it {word}?", f"Is it {word[len(prefix) :]}?")


@pytest.mark.parametrize(("positive", "negative"), R["negating_suffixes"])
def test_negating_suffix(positive: str, negative: str) -> None:
    assert refuses("negating prefix", f"Is it use{positive}?", f"Is it use{negative}?")
    assert refuses("negating prefix", f"Is it care{negative}?", f"Is it care{positive}?")


ANTONYM_PAIRS = sorted({(x, y) for group in R["antonyms"] for x, y in combinations(group, 2)})


@pytest.mark.parametrize(("x", "y"), ANTONYM_PAIRS)
def test_antonym_pair(x: str, y: str) -> None:
    assert refuses("antonyms", f"What does {x} mean here?", f"What does {y} mean here?")
    # Both words on both sides ("advantages and disadvantages") is the same question.
    assert not refuses("antonyms", f"Is it {x} or {y}?", f"Is it {y} or {x}?")


SIBLING_PAIRS = sorted({(x, y) for group in R["sibling_words"] for x, y in combinations(group, 2)})


@pytest.mark.parametrize(("x", "y"), SIBLING_PAIRS)
def test_sibling_pair(x: str, y: str) -> None:
    assert refuses("siblings", f"Why do we need {x} at night?", f"Why do we need {y} at night?")
    assert refuses("siblings", f"What is {y} good for?", f"What is {x} good for?")
    # Both on both sides ("the difference between a cat and a dog") is the same question.
    assert not refuses("siblings", f"Is {x} better than {y}?", f"Is {y} better than {x}?")


@pytest.mark.parametrize("adjective", sorted(set(R["gradable_adjectives"]) - set(R["degree_exempt"])))
def test_gradable_adjective(adjective: str) -> None:
    assert refuses("degree", f"Is it more {adjective}?", f"Is it {adjective}?")
    assert refuses("degree", f"Is it the most {adjective}?", f"Is it more {adjective}?")


@pytest.mark.parametrize(("word", "base_and_degree"), sorted(R["irregular_degrees"].items()))
def test_irregular_degree(word: str, base_and_degree: list[str]) -> None:
    base, _ = base_and_degree
    expected = base not in R["degree_exempt"]
    assert refuses("degree", f"Is it {word}?", f"Is it {base}?") == expected


@pytest.mark.parametrize("word", R["degree_exempt"])
def test_degree_exempt(word: str) -> None:
    # "the best book" asks for what "a good book" asks for.
    superlative = next(w for w, (base, kind) in R["irregular_degrees"].items() if (base, kind) == (word, "superlative"))
    assert not refuses("degree", f"What is the {superlative} book?", f"What is a {word} book?")
    assert refuses("degree", "What is the biggest book?", "What is a big book?")


@pytest.mark.parametrize("noun", R["method_nouns"])
def test_method_noun(noun: str) -> None:
    # "the fastest way to learn Go" asks how to learn Go fast; "the fastest car" is not "a fast car".
    assert not refuses("degree", f"What is the fastest {noun} to learn Go?", f"How to learn Go fast with a {noun}?")
    assert refuses("degree", "What is the fastest car?", "What is a fast car?")


@pytest.mark.parametrize(("marker", "kind"), sorted(R["degree_markers"].items()))
def test_degree_marker(marker: str, kind: str) -> None:
    other = next(m for m, k in R["degree_markers"].items() if k != kind)
    assert refuses("degree", f"Which one has {marker} users?", f"Which one has {other} users?")


@pytest.mark.parametrize("suffix", R["adjective_suffixes"])
def test_adjective_suffix(suffix: str) -> None:
    word = {
        "ful": "useful", "ous": "famous", "ive": "expensive", "able": "reliable", "ible": "flexible",
        "al": "formal", "ent": "efficient", "ant": "important", "less": "careless", "ar": "popular",
        "ary": "necessary", "ile": "fragile",
    }[suffix]  # fmt: skip
    assert refuses("degree", f"Is it more {word}?", f"Is it {word}?")


#: Word -> class tables: the check, the table, its weak classes, a question template, and two
#: words of other classes to compare with.
CLASS_TABLES = {
    "quantifiers": ("quantifiers", "weak_quantifiers", "Do {}birds fly?", ("few", "all")),
    "time": ("time_words", "weak_times", "What happens {}here?", ("tomorrow", "yesterday")),
}
CLASS_CASES = [
    (check, word, cls) for check, spec in CLASS_TABLES.items() for word, cls in sorted(R[spec[0]].items())
]


@pytest.mark.parametrize(("check", "word", "cls"), CLASS_CASES)
def test_class_word(check: str, word: str, cls: str) -> None:
    table, weak_table, template, (other, fallback) = CLASS_TABLES[check]
    weak = cls in R[weak_table]
    assert refuses(check, template.format(word + " "), template.format("")) != weak
    other = other if R[table][other] != cls else fallback
    assert refuses(check, template.format(word + " "), template.format(other + " "))


@pytest.mark.parametrize("word", R["weak_quantifiers"])
def test_weak_quantifier(word: str) -> None:
    # "What are some good books" asks what "What are good books" asks.
    example = next(w for w, c in R["quantifiers"].items() if c == word)
    assert not refuses("quantifiers", f"What are {example} good books?", "What are good books?")


@pytest.mark.parametrize(("phrase", "cls"), sorted(R["modals"].items()))
def test_modal(phrase: str, cls: str) -> None:
    weak = cls in R["weak_modals"]
    other = "must" if cls != "must" else "may"
    # Two strong modals conflict anywhere; a weak one ("can") only where the question is asked with it.
    assert refuses("modals", f"Tell me if we {phrase} go there.", f"Tell me if we {other} go there.") != weak
    # A modal that is not asked with does not conflict with none ("... should be loaded" / "... to load").
    assert not refuses("modals", f"Tell me if we {phrase} go there.", "Tell me if we go there.")
    if " " not in phrase:
        assert refuses("modals", f"{phrase.title()} we go there?", "Do we go there?") != weak
        assert refuses("modals", f"{phrase.title()} we go there?", f"{other.title()} we go there?")


@pytest.mark.parametrize("word", R["question_words"])
def test_question_word_asks_with_its_modal(word: str) -> None:
    assert refuses("modals", f"{word.title()} should pay for it?", f"{word.title()} can pay for it?")
    assert not refuses("modals", f"{word.title()} is it for?", "Tell me who it is for?")


@pytest.mark.parametrize("word", R["weak_modals"])
def test_weak_modal(word: str) -> None:
    assert not refuses("modals", f"Where {word} I buy bread?", "Where do I buy bread?")
    assert refuses("modals", f"Where {word} I buy bread?", "Where should I buy bread?")


@pytest.mark.parametrize("word", R["modal_free_after"])
def test_modal_free_after(word: str) -> None:
    # "How should I ..." asks for a way, as "How can I ..." does; "Should I ..." asks for advice.
    assert not refuses("modals", f"{word.title()} should I learn Go?", f"{word.title()} can I learn Go?")
    assert refuses("modals", "Should I learn Go?", "Can I learn Go?")


@pytest.mark.parametrize("word", R["weak_times"])
def test_weak_time(word: str) -> None:
    example = next(w for w, c in R["time_words"].items() if c == word)
    assert not refuses("time", f"Are we going to see {example} war?", "Are we going to see war?")


@pytest.mark.parametrize(("word", "cls"), sorted(R["capitalised_time_words"].items()))
def test_capitalised_time_word(word: str, cls: str) -> None:
    assert refuses("time", f"Is the shop open in {word} again?", "Is the shop open again?")
    assert only("time").facts(f"Is the shop open in {word} again?").times == {cls}


@pytest.mark.parametrize(("word", "cls"), sorted(R["time_words_after_number_only"].items()))
def test_time_word_after_number(word: str, cls: str) -> None:
    other = "pm" if cls == "am" else "am"
    assert refuses("time", f"Is it open at 9 {word}?", f"Is it open at 9 {other}?")
    assert only("time").facts(f"Why {word} here?").times == frozenset()


@pytest.mark.parametrize(("word", "gender"), sorted(R["gendered_words"].items()))
def test_gendered_word(word: str, gender: str) -> None:
    other = "she" if gender == "male" else "he"
    assert refuses("gender", f"What did {word} say?", f"What did {other} say?")
    # A question without a pronoun is no conflict ("What did Ann say" / "What did she say").
    assert not refuses("gender", f"What did {word} say?", "What did they say?")


@pytest.mark.parametrize(("alias", "unit"), sorted(R["units"].items()))
def test_unit(alias: str, unit: str) -> None:
    assert refuses("units", f"Is 5 {alias} enough?", "Is 5 enough?")
    other = "kg" if unit != "kg" else "km"
    assert refuses("units", f"Is 5 {alias} enough?", f"Is 5 {other} enough?")
    same = next(a for a, u in R["units"].items() if u == unit)
    assert not refuses("units", f"Is 5 {alias} enough?", f"Is 5 {same} enough?")


@pytest.mark.parametrize("alias", R["units_after_number_only"])
def test_unit_only_after_a_number(alias: str) -> None:
    # "m", "s", "C" are letters, not units, away from a number.
    assert only("units").facts(f"Is {alias} here?").unit_words == frozenset()
    assert only("units").facts(f"Is 3 {alias} here?").units


@pytest.mark.parametrize(("alias", "currency"), sorted(R["currencies"].items()))
def test_currency(alias: str, currency: str) -> None:
    amount = f"{alias}5" if not alias.isalpha() else f"5 {alias}"
    assert refuses("currencies", f"Is {amount} enough?", "Is 5 enough?")
    other = "EUR" if currency != "EUR" else "USD"
    assert refuses("currencies", f"Is {amount} enough?", f"Is 5 {other} enough?")


@pytest.mark.parametrize("alias", R["currencies_after_number_only"])
def test_currency_only_next_to_a_number(alias: str) -> None:
    assert only("currencies").facts(f"Is it {alias} here?").currencies == frozenset()
    assert only("currencies").facts(f"Is it 5 {alias} here?").currencies


@pytest.mark.parametrize("op", R["operators"])
def test_operator(op: str) -> None:
    query = f"What is {op}x here?" if op in ("!", "~") else f"What is 3 {op} 4 here?"
    assert refuses("operators", query, "What is 3 4 here?")


@pytest.mark.parametrize("op", R["infix_only_operators"])
def test_infix_only_operator(op: str) -> None:
    # "videos & audios", "gay/lesbian": prose; between numbers or in code they are operators.
    assert not refuses("operators", f"Are cats {op} dogs pets?", "Are cats dogs pets?")
    assert refuses("operators", f"What is 6 {op} 3?", "What is 6 3?")


@pytest.mark.parametrize(("word", "symbol"), sorted(R["operator_words"].items()))
def test_operator_word(word: str, symbol: str) -> None:
    assert refuses("operators", f"What is 6 {word} 3?", "What is 6 3?")
    if symbol != "mod":
        assert not refuses("operators", f"What is 6 {word} 3?", f"What is 6 {symbol} 3?")


@pytest.mark.parametrize("connector", R["symmetric_connectors"])
def test_symmetric_connector(connector: str) -> None:
    # "cats and dogs" / "dogs and cats" ask the same; "cats chase dogs" / "dogs chase cats" do not.
    assert not refuses("order", f"Compare cats {connector} dogs", f"Compare dogs {connector} cats")
    assert refuses("order", "Why do cats chase dogs?", "Why do dogs chase cats?")


@pytest.mark.parametrize("word", R["emphasis_words"])
def test_emphasis_word(word: str) -> None:
    # "the ONE thing" in prose is emphasis; in code a capitalised common word is another name.
    guard = SemanticGuard(vocabulary=VOCAB | {word, "path"}, skip=[c for c in CHECKS if c != "code"])
    assert guard.refusal(f"Is it {word.upper()} good?", f"Is it {word} good?") is None
    assert guard.refusal(f"Is `x` {word.upper()} good?", f"Is `x` {word} good?") == "code"
    assert guard.facts(f"Is it {word.upper()} good?").shouted == {word}
    assert guard.refusal("Is PATH set?", "Is path set?") == "code"  # not an emphasis word


@pytest.mark.parametrize("determiner", R["determiners"])
def test_determiner_is_not_a_relation(determiner: str) -> None:
    # "from my laptop to the server" / "from the server to my laptop": the relation is "to".
    assert refuses(
        "order",
        f"Copy files from {determiner} laptop to server",
        f"Copy files from server to {determiner} laptop",
    )
    assert not refuses("order", f"Compare cats {determiner} dogs", f"Compare dogs {determiner} cats")


@pytest.mark.parametrize("marker", R["code_markers"])
def test_code_marker(marker: str) -> None:
    # In code an identifier's case is meaning ("myVar" / "myvar"); in prose it is not ("iPhone").
    assert refuses("code", f"Why does myVar {marker} bar fail?", f"Why does myvar {marker} bar fail?")
    assert not refuses("code", "Why does myVar bar fail?", "Why does myvar bar fail?")


# -- issue 26: literals the encoder cannot see or lemma folding erases ----------------------------
@pytest.mark.parametrize(("char", "op"), sorted(R["operator_aliases"].items()))
def test_operator_alias(char: str, op: str) -> None:
    if op == "!":  # a lone "!" ends a sentence: the prefix form is the operator
        same, written = f"Is {char}x true?", f"Is {op}x true?"
    else:
        same, written = f"Is 3 {char} 2?", f"Is 3 {op} 2?"
    assert not refuses("operators", same, written)
    assert refuses("operators", same, same.replace(char, " and "))


SYMBOL_EXAMPLES = {"Sm": "∑", "Sc": "₿", "Sk": "🏻", "So": "😀", "No": "²", "Me": "\u20dd"}


@pytest.mark.parametrize("category", R["symbol_categories"])
def test_symbol_category(category: str) -> None:
    char = SYMBOL_EXAMPLES[category]
    assert unicodedata.category(char) == category
    assert refuses("symbols", f"What is x{char} here?", "What is x here?")
    assert refuses("symbols", f"What is x{char} here?", f"What is x{char}{char} here?")  # a multiset
    assert not refuses("symbols", f"What is x{char} here?", f"what is x{char} here")


@pytest.mark.parametrize("char", R["symbols_ignored"])
def test_symbol_ignored(char: str) -> None:
    # A spacing accent typed for an apostrophe ("person´s") is in a counted category, but not counted.
    assert unicodedata.category(char) in R["symbol_categories"]
    assert not refuses("symbols", f"Is it the person{char}s car?", "Is it the person's car?")


IDENTIFIER_EXAMPLES = {
    "email": ("ann.lee@example.com", "ann.li@example.com"),
    "url": ("https://example.com/a/setup", "https://example.com/a/billing"),
    "handle": ("@ann_lee", "@ann_li"),
    "unix_path": ("~/projects/app/main.py", "~/projects/app/test.py"),
    "windows_path": ("C:\\Users\\ann\\notes.txt", "C:\\Users\\ann\\todo.txt"),
}


@pytest.mark.parametrize("kind", sorted(R["identifier_patterns"]))
def test_identifier_pattern(kind: str) -> None:
    first, second = IDENTIFIER_EXAMPLES[kind]
    assert only("identifiers").facts(f"Open {first} now.").literal_ids == {f"{kind}:{first.lower() if kind in R['case_insensitive_identifiers'] else first}"}
    assert refuses("identifiers", f"Open {first} now", f"Open {second} now")
    assert not refuses("identifiers", f"Open {first} now", f"Please open {first}.")


@pytest.mark.parametrize("kind", R["case_insensitive_identifiers"])
def test_case_insensitive_identifier(kind: str) -> None:
    first = IDENTIFIER_EXAMPLES[kind][0]
    assert not refuses("identifiers", f"Open {first} now", f"Open {first.upper()} now")
    url = IDENTIFIER_EXAMPLES["url"][0]  # a URL's path is case-sensitive
    assert "url" not in R["case_insensitive_identifiers"]
    assert refuses("identifiers", f"Open {url} now", f"Open {url.replace('setup', 'Setup')} now")


@pytest.mark.parametrize(("open_", "close"), R["quote_pairs"])
def test_quote_pair(open_: str, close: str) -> None:
    assert refuses("quotes", f"What does {open_}a red car{close} mean?", f"What does {open_}a blue car{close} mean?")
    # Case and spacing aside, the same span quoted or bare is the same text.
    assert not refuses("quotes", f"What does {open_}a red car{close} mean?", f"What does {open_}A  Red car{close} mean")
    assert not refuses("quotes", f"What does {open_}a red car{close} mean?", "What does a red car mean?")


@pytest.mark.parametrize("trigger", R["mention_triggers"])
def test_mention_trigger(trigger: str) -> None:
    assert refuses("mentioned words", f"Tell me {trigger} cats, please", f"Tell me {trigger} cat, please")
    assert not refuses("mentioned words", f"Tell me {trigger} cats, please", f"Please tell me {trigger} cats")
    # Outside the trigger the words fold as usual.
    assert not refuses("mentioned words", "Tell me about cats, please", "Tell me about cat, please")


@pytest.mark.parametrize("word", R["mention_skip_words"])
def test_mention_skip_word(word: str) -> None:
    assert only("mentioned words").facts(f"What is the plural of {word} cats?").mentioned == {"cats"}
    assert refuses("mentioned words", f"What is the plural of {word} cats?", f"What is the plural of {word} cat?")
