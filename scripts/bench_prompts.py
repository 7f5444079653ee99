"""Benchmark of layer 2: lean forms of the frameworks' own shipped prompts.

Prompts: every template in ``llama_index.core.prompts.default_prompts`` and LangChain's
(langchain-classic) question-answering (stuff, map-reduce, refine, map-rerank),
summarisation (stuff, map-reduce, refine) and condense-question prompts, identical texts
counted once. For each: cl100k tokens of the fixed text (the template with its variables
removed) before and after, for whitespace/rule lines only, ``minify`` and ``lean_from``
(through each framework's adapter); every variable is asserted to be kept; and the MiniLM
cosine between the instruction text before and after.

Run: ``python scripts/bench_prompts.py [--quick] [--markdown-out PATH]`` or
``lean-plugins bench prompts``. ``--quick`` skips the variant with the layer-1 compressor on
long paragraphs and tries fewer prose rates in the generalisation folds.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

TARGET = 0.40
LANGCHAIN_MODULES = (
    "question_answering.stuff_prompt",
    "question_answering.map_reduce_prompt",
    "question_answering.refine_prompts",
    "question_answering.map_rerank_prompt",
    "summarize.stuff_prompt",
    "summarize.map_reduce_prompt",
    "summarize.refine_prompts",
    "conversational_retrieval.prompts",
)

# Other prompts the frameworks ship, never read while writing the phrasebook: how far the
# lean rewrites carry to templates whose idioms they were not written for.
HELD_OUT_MODULES = (
    "llama_index.core.selectors.prompts",
    "llama_index.core.question_gen.prompts",
    "llama_index.core.chat_engine.condense_question",
    "llama_index.core.indices.query.query_transform.prompts",
    "llama_index.core.evaluation.faithfulness",
    "llama_index.core.evaluation.relevancy",
    "llama_index.core.evaluation.correctness",
    "langchain_classic.chains.llm_math.prompt",
    "langchain_classic.chains.qa_generation.prompt",
    "langchain_classic.chains.sql_database.prompt",
    "langchain_classic.chains.api.prompt",
    "langchain_classic.chains.llm_checker.prompt",
    "langchain_classic.chains.query_constructor.prompt",
    "langchain_classic.memory.prompt",
    "langchain_classic.chains.hyde.prompts",
    "langchain_classic.evaluation.criteria.prompt",
    "langchain_classic.evaluation.qa.eval_prompt",
)


@dataclass
class Row:
    name: str
    source: str  # fixed text with variables in braces, messages joined by a blank line
    variables: list[str]
    ws: str = ""
    minified: str = ""
    lean: str = ""
    lean_compressed: str | None = None
    cosine: float = 0.0


def llama_index_prompts() -> list[tuple[str, object]]:
    from llama_index.core.prompts import BasePromptTemplate, default_prompts

    return [
        (f"llama_index/{k}", v) for k, v in vars(default_prompts).items() if isinstance(v, BasePromptTemplate)
    ]


def langchain_prompts() -> list[tuple[str, object]]:
    from langchain_core.prompts import BasePromptTemplate

    out = []
    for module in LANGCHAIN_MODULES:
        mod = importlib.import_module(f"langchain_classic.chains.{module}")
        short = module.replace("question_answering.", "qa.").replace("conversational_retrieval.", "conv.")
        out += [
            (f"langchain/{short}.{k}", v) for k, v in vars(mod).items() if isinstance(v, BasePromptTemplate)
        ]
    return out


def langchain_texts(prompt: object) -> list[str]:
    """The template text of each text message (one for a plain PromptTemplate)."""
    from langchain_core.prompts import PromptTemplate
    from lean_plugins.langchain import LeanPromptTemplate

    if isinstance(prompt, (PromptTemplate, LeanPromptTemplate)):
        return [prompt.template]
    return [m.prompt.template for m in prompt.messages if hasattr(m, "prompt")]  # type: ignore[attr-defined]


def build_rows(with_compressor: bool) -> list[Row]:
    from lean_plugins.langchain import lean_from as lc_lean_from
    from lean_plugins.llama_index import lean_from as li_lean_from

    from lean_plugins.prompts import lean_text, minify, template_variables
    from lean_plugins.prompts.minifier import Rule as MinifyRule
    from lean_plugins.prompts.minifier import apply_rules, rule_lines, tidy, whitespace

    ws_rules = [MinifyRule(f.__name__, "", f) for f in (whitespace, rule_lines, tidy)]
    rows: list[Row] = []
    seen: set[str] = set()
    for name, prompt in [*llama_index_prompts(), *langchain_prompts()]:
        if name.startswith("llama_index/"):
            sources = [prompt.get_template()]  # type: ignore[attr-defined]
            leans = [li_lean_from(prompt).get_template()]  # type: ignore[arg-type]
        else:
            sources = langchain_texts(prompt)
            leans = langchain_texts(lc_lean_from(prompt))  # type: ignore[arg-type]
        source = "\n\n".join(sources)
        if source in seen:
            continue  # e.g. the summarisation PROMPT shipped in three modules
        seen.add(source)
        variables = sorted({v for s in sources for v in template_variables(s)})
        lean = "\n\n".join(leans)
        minified = "\n\n".join(minify(s) for s in sources)
        for form, text in (("minify", minified), ("lean_from", lean)):
            kept = sorted(template_variables(text))
            assert kept == variables, f"{name}: {form} changed the variables {variables} -> {kept}"
        row = Row(
            name, source, variables, "\n\n".join(apply_rules(s, ws_rules) for s in sources), minified, lean
        )
        if with_compressor:
            row.lean_compressed = "\n\n".join(lean_text(s, compressor="auto") for s in sources)
            assert sorted(template_variables(row.lean_compressed)) == variables, name
        rows.append(row)
    return rows


def held_out_rows() -> list[tuple[str, int, int, int]]:
    """(module, fixed tokens before, after minify, after lean_text) of each held-out prompt."""
    from langchain_core.prompts import PromptTemplate as LangChainPrompt
    from llama_index.core.prompts import BasePromptTemplate as LlamaPrompt

    from lean_plugins.prompts import lean_text, minify, template_variables

    out, seen = [], set()
    for module in HELD_OUT_MODULES:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        for value in vars(mod).values():
            if isinstance(value, LlamaPrompt) and hasattr(value, "template"):
                text = value.template
            elif isinstance(value, LangChainPrompt) and value.template_format == "f-string":
                text = value.template
            else:
                continue
            if text in seen or fixed(text) == 0:
                continue
            seen.add(text)
            lean = lean_text(text)
            assert set(template_variables(lean)) == set(template_variables(text)), module
            out.append((module, fixed(text), fixed(minify(text)), fixed(lean)))
    return out


def add_cosines(rows: list[Row]) -> None:
    from lean_plugins.embeddings import get_encoder
    from lean_plugins.prompts import strip_variables

    encoder = get_encoder()
    # Instruction text: the fixed text without decoration (rule lines, blank lines), which
    # carries no instruction but moves a MiniLM vector a lot on a short prompt.
    before = encoder.encode([strip_variables(r.ws) for r in rows])
    after = encoder.encode([strip_variables(r.lean) for r in rows])
    for row, b, a in zip(rows, before, after, strict=True):
        row.cosine = float(b @ a)


def fixed(text: str) -> int:
    from lean_plugins.prompts import strip_variables
    from lean_plugins.tokens import count_tokens

    return count_tokens(strip_variables(text))


def reduction(before: int, after: int) -> float:
    return 1 - after / before


def summarize(rows: list[Row], attr: str) -> tuple[float, float, int, int]:
    """Mean per-prompt reduction, aggregate reduction, tokens before, tokens after."""
    counted = [r for r in rows if fixed(r.source) > 0]
    before = sum(fixed(r.source) for r in counted)
    after = sum(fixed(getattr(r, attr)) for r in counted)
    mean = statistics.mean(reduction(fixed(r.source), fixed(getattr(r, attr))) for r in counted)
    return mean, reduction(before, after), before, after


# -- generalisation: the development templates, by left-out project ------------------------

#: Candidate budgets for whole few-shot examples (``lean_text(max_example_tokens=...)``; None:
#: keep every example); each fold picks one on its training projects only.
EXAMPLE_BUDGETS: tuple[int | None, ...] = (None, 100, 200, 400)
COSINE_MEAN_FLOOR, COSINE_MIN_FLOOR = 0.90, 0.80
GENERALISATION_TARGET = 0.35


@dataclass
class Template:
    project: str
    id: str
    kind: str
    text: str


def dev_templates() -> list[Template]:
    """The development templates (``<shared data>/prompts/dev_templates.jsonl``), or [] without them."""
    import json

    from lean_plugins.paths import shared_data_dir

    base = shared_data_dir()
    path = base / "prompts" / "dev_templates.jsonl" if base else None
    if path is None or not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            out.append(Template(record["id"].split("/")[0], record["id"], record["kind"], record["template"]))
    return out


def framework_templates() -> list[Template]:
    """Every distinct text template the two frameworks ship that this benchmark reads."""
    from langchain_core.prompts import PromptTemplate as LangChainPrompt
    from llama_index.core.prompts import BasePromptTemplate as LlamaPrompt

    out, seen = [], set()
    items = [(n, [p.get_template()]) for n, p in llama_index_prompts()]  # type: ignore[attr-defined]
    items += [(n, langchain_texts(p)) for n, p in langchain_prompts()]
    for module in HELD_OUT_MODULES:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        for key, value in vars(mod).items():
            if isinstance(value, LlamaPrompt) and hasattr(value, "template"):
                items.append((f"{module}.{key}", [value.template]))
            elif isinstance(value, LangChainPrompt) and value.template_format == "f-string":
                items.append((f"{module}.{key}", [value.template]))
    for name, texts in items:
        project = "llama_index" if name.startswith("llama_index") else "langchain"
        for text in texts:
            if text not in seen and fixed(text):
                seen.add(text)
                out.append(Template(project, name, "framework", text))
    return out


def rule_projects(templates: list[Template]) -> dict[str, set[str]]:
    """For each phrasebook rule, the projects whose templates it changes inside ``lean_text``."""
    from lean_plugins.prompts import lean as lean_module

    seen: dict[str, set[str]] = {r.name: set() for r in lean_module.CONCISE_REWRITES}
    original = lean_module.concise_rewrites
    try:
        for template in templates:
            fired: set[str] = set()

            def recording(text, rewrites=lean_module.CONCISE_REWRITES, fired=fired):  # type: ignore[no-untyped-def]
                return original(text, rewrites, fired=fired)

            lean_module.concise_rewrites = recording  # type: ignore[assignment]
            lean_module.lean_text(template.text)
            for name in fired:
                seen[name].add(template.project)
    finally:
        lean_module.concise_rewrites = original  # type: ignore[assignment]
    return seen


def admitted_rules(left_out: set[str], min_projects: int = 2) -> list:
    """The phrasebook rules one could have written without the ``left_out`` projects: those
    seen in at least ``min_projects`` other projects."""
    from lean_plugins.prompts.lean import CONCISE_REWRITES

    return [r for r in CONCISE_REWRITES if len(set(r.seen_in) - left_out) >= min_projects]


class DocumentCosine:
    """MiniLM cosine of two texts of any length (``lean_plugins.prompts.prose.template_vector``:
    each variable read as its name, 200-token windows averaged by their tokens), the same
    measure ``lean_text``'s ``min_cosine`` guard uses."""

    def __init__(self) -> None:
        from lean_plugins.embeddings import get_encoder

        self.encoder = get_encoder()

    def vector(self, text: str):  # type: ignore[no-untyped-def]
        from lean_plugins.prompts.prose import template_vector

        return template_vector(text, self.encoder)

    def __call__(self, before: str, after: str) -> float:
        return float(self.vector(before) @ self.vector(after))


@dataclass
class Shortened:
    template: Template
    before: int
    after: int
    cosine: float
    lean: str
    lost: list[str]


#: Candidate prose rates (``lean_text(prose_rate=...)``; None: rules only); each fold picks one
#: on its training projects only, after the example budget.
PROSE_RATES: tuple[float | None, ...] = (None, 0.6, 0.5, 0.4, 0.3)
QUICK_PROSE_RATES: tuple[float | None, ...] = (None, 0.5, 0.4)
_LEAN_CACHE: dict[tuple, str] = {}


def never_lost(source: str, lean: str, max_example_tokens: int | None = None) -> list[str]:
    """What the issue says is never lost, missing from ``lean``: variables, numbers, quoted
    strings, negation words, code fences and JSON keys of ``source`` (its few-shot examples
    beyond ``max_example_tokens`` dropped first: dropping whole examples is a rewrite the issue
    allows). One entry per missing item."""
    import re

    from lean_plugins.prompts import template_variables
    from lean_plugins.prompts.lean import cap_examples
    from lean_plugins.prompts.prose import PROSE_GUARD

    if max_example_tokens is not None:
        source = cap_examples(source, max_example_tokens)
    source = without_examples(source)
    lost = [f"variable {v}" for v in template_variables(source) if v not in template_variables(lean)]
    lost += [f"number {n}" for n in sorted(set(re.findall(r"\d+(?:[.,]\d+)*", source))) if n not in lean]
    quoted = re.findall(r"\"[^\"\n]{1,400}\"|“[^”\n]{1,400}”|(?<![\w'])'[^'\n]{1,400}'(?![\w])", source)
    lost += [f"quoted {q}" for q in sorted(set(quoted)) if q not in lean]
    negations = next(r.words for r in PROSE_GUARD if r.name == "negation")

    def words(text: str) -> set[str]:
        # A contraction is the same negation: "do not" -> "Don't" keeps it ("won't" -> "will not").
        text = text.lower().replace("’", "'").replace("won't", "will not").replace("can't", "can not")
        text = text.replace("cannot", "can not").replace("n't", " not")
        return {w.strip(".,;:!?\"'()[]*") for w in text.split()}

    lost += [f"negation {w}" for w in sorted(words(source) & negations) if w not in words(lean)]
    if lean.count("```") < source.count("```"):
        lost.append("code fence")
    keys = re.findall(r"[\"']([\w ./-]{1,60})[\"']\s*:", "".join(re.findall(r"\{\{[\s\S]*?\}\}", source)))
    lost += [f"JSON key {k}" for k in sorted(set(keys)) if k not in lean]
    return lost


def without_examples(text: str) -> str:
    """``text`` without its few-shot examples, which the example rules may shorten: units under
    ``## Example N`` headers (or repeated XML blocks) and bodies under a label used more than
    once ("Content: ...", up to the next label line)."""
    import re

    from lean_plugins.prompts.lean import _LABEL_LINE, _example_units

    lines = text.split("\n")
    drop = {k for start, end in _example_units(lines) for k in range(start, end)}
    labels = [m.group("label").lower() if (m := _LABEL_LINE.match(line)) else None for line in lines]
    repeated = {label for label in labels if label and labels.count(label) > 1}
    inside = False
    for k, label in enumerate(labels):
        if label is not None:
            inside = label in repeated
        if inside or re.match(r"(?i)^\W*example\s*#?\s*\d+", lines[k]):
            drop.add(k)
    return "\n".join(line for k, line in enumerate(lines) if k not in drop)


def shorten(
    templates: list[Template],
    rules: list,
    max_example_tokens: int | None,
    cos: DocumentCosine,
    prose_rate: float | None = None,
) -> list[Shortened]:
    from lean_plugins.prompts import lean_text, template_variables

    out = []
    names = tuple(r.name for r in rules)
    for t in templates:
        key = (t.id, names, max_example_tokens, prose_rate)
        if key not in _LEAN_CACHE:
            _LEAN_CACHE[key] = lean_text(
                t.text, max_example_tokens=max_example_tokens, rewrites=rules, prose_rate=prose_rate
            )
        lean = _LEAN_CACHE[key]
        assert template_variables(lean) == template_variables(t.text), f"{t.id}: variables changed"
        lost = never_lost(t.text, lean, max_example_tokens)
        out.append(Shortened(t, fixed(t.text), fixed(lean), cos(t.text, lean), lean, lost))
    return out


def total_cut(rows: list[Shortened]) -> float:
    return reduction(sum(r.before for r in rows), sum(r.after for r in rows))


def _score(rows: list[Shortened]) -> tuple[bool, float]:
    """(keeps the cosine floors and loses nothing, total cut if so else the minimum cosine)."""
    cosines = [r.cosine for r in rows]
    ok = (
        statistics.mean(cosines) >= COSINE_MEAN_FLOOR
        and min(cosines) >= COSINE_MIN_FLOOR
        and not any(r.lost for r in rows)
    )
    return ok, total_cut(rows) if ok else min(cosines)


def choose_budget(train: list[Template], rules: list, cos: DocumentCosine) -> int | None:
    """The example budget with the largest total cut on ``train`` (rules only) that keeps the
    cosine floors (else the one with the highest minimum cosine)."""
    scored = [(*_score(shorten(train, rules, budget, cos)), budget) for budget in EXAMPLE_BUDGETS]
    return max(scored, key=lambda s: (s[0], s[1]))[2]


def choose_prose_rate(
    train: list[Template], rules: list, budget: int | None, cos: DocumentCosine, rates: tuple[float | None, ...]
) -> float | None:
    """The prose rate with the largest total cut on ``train`` (with ``budget``) that keeps the
    cosine floors and loses nothing (else rules only)."""
    scored = [(*_score(shorten(train, rules, budget, cos, rate)), rate) for rate in rates]
    good = [s for s in scored if s[0]]
    return max(good, key=lambda s: s[1])[2] if good else None


def generalisation(templates: list[Template], prose_rates: tuple[float | None, ...] = PROSE_RATES) -> dict:
    """Leave-one-project-out: each project shortened with the rules admitted without it, the
    example budget and then the prose rate chosen on the other projects; rules only and rules
    with prose compression; and the in-sample runs next to them."""
    from lean_plugins.prompts.lean import CONCISE_REWRITES

    cos = DocumentCosine()
    projects = sorted({t.project for t in templates})
    left_out: list[Shortened] = []
    left_out_prose: list[Shortened] = []
    # Left out at each fixed rate (rules and example budget still chosen per fold).
    fixed_rate: dict[float | None, list[Shortened]] = {rate: [] for rate in prose_rates}
    folds = []
    for project in projects:
        rules = admitted_rules({project})
        train = [t for t in templates if t.project != project]
        test = [t for t in templates if t.project == project]
        budget = choose_budget(train, rules, cos)
        rate = choose_prose_rate(train, rules, budget, cos, prose_rates)
        left_out += shorten(test, rules, budget, cos)
        left_out_prose += shorten(test, rules, budget, cos, rate)
        for candidate in prose_rates:
            fixed_rate[candidate] += shorten(test, rules, budget, cos, candidate)
        folds.append((project, len(rules), budget, rate))
    every = list(CONCISE_REWRITES)
    budget = choose_budget(templates, every, cos)
    rate = choose_prose_rate(templates, every, budget, cos, prose_rates)
    curve = []
    for candidate in prose_rates:
        rows = shorten(templates, every, budget, cos, candidate)
        cosines = [r.cosine for r in rows]
        curve.append((candidate, total_cut(rows), statistics.mean(cosines), min(cosines)))
    return {
        "left_out": left_out,
        "left_out_prose": left_out_prose,
        "in_sample": shorten(templates, every, budget, cos),
        "in_sample_prose": shorten(templates, every, budget, cos, rate),
        "folds": folds,
        "in_sample_budget": budget,
        "in_sample_rate": rate,
        "curve": curve,
        "left_out_curve": [
            (rate, total_cut(rows), statistics.mean(r.cosine for r in rows), min(r.cosine for r in rows))
            for rate, rows in fixed_rate.items()
        ],
        "prose_rates": prose_rates,
    }


def group_rows(rows: list[Shortened], key) -> list[tuple[str, int, int, int, float, float, float, int]]:  # type: ignore[no-untyped-def]
    """(group, n, before, after, total cut, mean cosine, min cosine, never-lost violations) per
    group and in total."""
    groups: dict[str, list[Shortened]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    out = []
    for name, members in [*sorted(groups.items()), ("**total**", rows)]:
        cosines = [m.cosine for m in members]
        out.append(
            (
                name,
                len(members),
                sum(m.before for m in members),
                sum(m.after for m in members),
                total_cut(members),
                statistics.mean(cosines),
                min(cosines),
                sum(len(m.lost) for m in members),
            )
        )
    return out


# -- prefix-cache layout: stable-prefix tokens before and after --------------------------------


def stable_prefix_rows(templates: list[Template]) -> list[tuple[str, str, int, int, int, int, int]]:
    """(group, id, fixed tokens of the source, of the lean form, stable-prefix tokens of the
    source, of lean_text as written, of the lean stable-first layout) per template."""
    from lean_plugins.prompts import lean_text
    from lean_plugins.prompts.layout import stable_first, stable_prefix_tokens

    out = []
    for t in templates:
        lean = lean_text(t.text)
        group = t.project if t.kind == "framework" else "development templates"
        out.append(
            (
                group,
                t.id,
                fixed(t.text),
                fixed(lean),
                stable_prefix_tokens(t.text),
                stable_prefix_tokens(lean),
                stable_prefix_tokens(stable_first(lean)),
            )
        )
    return out


def adapter_stable_prefix_rows() -> list[tuple[str, str, int, int, int, int, int]]:
    """The same through each framework's ``lean_from`` (chat messages joined, system first)."""
    from lean_plugins.langchain import lean_from as lc_lean_from
    from lean_plugins.llama_index import lean_from as li_lean_from

    from lean_plugins.prompts.layout import stable_prefix_tokens

    out, seen = [], set()
    for name, prompt in [*llama_index_prompts(), *langchain_prompts()]:
        if name.startswith("llama_index/"):
            source = prompt.get_template()  # type: ignore[attr-defined]
            lean = li_lean_from(prompt).get_template()  # type: ignore[arg-type]
            as_written = li_lean_from(prompt, layout="as_written").get_template()  # type: ignore[arg-type]
        else:
            source = "\n\n".join(langchain_texts(prompt))
            lean = "\n\n".join(langchain_texts(lc_lean_from(prompt)))  # type: ignore[arg-type]
            as_written = "\n\n".join(langchain_texts(lc_lean_from(prompt, layout="as_written")))  # type: ignore[arg-type]
        if source in seen or not fixed(source):
            continue
        seen.add(source)
        group = "LlamaIndex" if name.startswith("llama_index/") else "LangChain"
        out.append(
            (
                group,
                name,
                fixed(source),
                fixed(lean),
                stable_prefix_tokens(source),
                stable_prefix_tokens(as_written),
                stable_prefix_tokens(lean),
            )
        )
    return out


def stable_prefix_summary(rows: list) -> list[tuple[str, int, int, int, int, int, int]]:
    """(group, n, fixed tokens source, lean, stable prefix: source, lean as written, lean
    stable-first), totals."""
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(row[0], []).append(row)
    return [
        (name, len(members), *(sum(m[i] for m in members) for i in (2, 3, 4, 5, 6)))  # type: ignore[misc]
        for name, members in groups.items()
    ]


def before_after(title: str, before: str, after: str) -> list[str]:
    """Markdown lines: ``title``, the source folded away, the lean form shown."""
    return [
        title,
        "",
        "<details><summary>before</summary>",
        "",
        "```text",
        before.replace("```", "'''"),
        "```",
        "</details>",
        "",
        "```text",
        after.replace("```", "'''"),
        "```",
        "",
    ]


def generalisation_markdown(result: dict, prefix_summary: list) -> list[str]:
    out = ["", "## Lean prompt templates: generalisation to projects left out (layer 2)", ""]
    folds = result["folds"]
    out.append(
        "The development templates (`../shared/data/prompts/dev_templates.jsonl`: "
        f"{len(result['left_out'])} real templates from {len(folds)} open-source projects) with whole "
        "projects left out: each project is shortened with only the phrasebook rules seen in at least two "
        "*other* projects (the frameworks' shipped prompts count as two projects, `llama_index` and "
        "`langchain`), and with the few-shot example budget chosen on the other projects (candidates "
        f"{', '.join(map(str, EXAMPLE_BUDGETS))} tokens of whole examples; the largest total cut keeping MiniLM cosine mean "
        f">= {COSINE_MEAN_FLOOR} and min >= {COSINE_MIN_FLOOR} on the training projects). Fixed-text cl100k "
        "tokens (template with its variables removed), totals over templates. `cos`: MiniLM "
        "(all-MiniLM-L6-v2) cosine of the template before and after, each variable read as its name, long "
        "texts embedded in 200-token windows averaged by tokens. Every variable is kept (asserted)."
    )
    out += [
        "",
        "Two variants: **rules only** (phrasebook, articles, examples) and **rules + prose "
        "compression** (`lean_text(prose_rate=r)`: the shipped layer-1 token classifier, trained on "
        "generic sentence compression and never on templates, keeps about `r` of the tokens of "
        "instruction prose lines, with negations, restrictions, numbers, symbols, labels, tags, "
        "capitalised terms and every protected span kept, format lines and examples left whole; "
        "`min_cosine=0.85`, the default, compresses a template less, then keeps its examples whole, when "
        "its own cosine would fall below 0.85). Each fold chooses the example budget (rules only), then the prose rate "
        f"among {', '.join(map(str, result['prose_rates']))} on its training projects (largest total "
        "cut keeping the cosine floors and losing nothing). `lost`: items the issue says are never lost "
        "(variables, numbers, quoted strings, negation words, code fences, JSON keys of the source "
        "outside its few-shot examples) missing from the output, counted automatically.",
    ]
    for variant, suffix in (("rules only", ""), ("rules + prose compression", "_prose")):
        for title, rows_key, key in (
            ("per project, left out", "left_out", lambda r: r.template.project),
            ("per kind, left out", "left_out", lambda r: r.template.kind),
            ("per project, in sample (every rule, budget and rate chosen on all)", "in_sample", lambda r: r.template.project),
            ("per kind, in sample", "in_sample", lambda r: r.template.kind),
        ):
            rows = result[rows_key + suffix]
            out += [
                "",
                f"**{variant.capitalize()}, {title}**",
                "",
                "| group | n | before | after | total cut | cos mean | cos min | lost |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for name, n, before, after, cut, mean, low, lost in group_rows(rows, key):
                out.append(f"| {name} | {n} | {before:,} | {after:,} | {cut:.1%} | {mean:.3f} | {low:.3f} | {lost} |")
    for variant, key in (("rules only", "left_out"), ("rules + prose compression", "left_out_prose")):
        left = result[key]
        cut = total_cut(left)
        cosines = [r.cosine for r in left]
        met = cut >= GENERALISATION_TARGET and statistics.mean(cosines) >= COSINE_MEAN_FLOOR and min(cosines) >= COSINE_MIN_FLOOR
        out += [
            "",
            f"Target ({variant}): >= {GENERALISATION_TARGET:.0%} of fixed-text tokens in total on left-out projects with "
            f"cosine mean >= {COSINE_MEAN_FLOOR} and min >= {COSINE_MIN_FLOOR}: {'met' if met else '**not met**'} "
            f"({cut:.1%}, cosine mean {statistics.mean(cosines):.3f}, min {min(cosines):.3f}; "
            f"{sum(len(r.lost) for r in left)} never-lost violations).",
        ]
    out += [
        "",
        "The minimum cosine of the prose variant holds by construction: `lean_text`'s guard "
        "(`min_cosine=0.85`) uses this same MiniLM measure. What the folds choose is the rate, i.e. how "
        "close the mean comes to its floor; below 0.5 the guard and the per-sentence floor leave "
        "little to gain.",
        "",
        "Cut against cosine per prose rate, the same rate for every fold (rules and example budget "
        "still chosen per fold), left out:",
        "",
        "| prose rate | left out: total cut | cos mean | cos min | in sample: total cut | cos mean | cos min |",
        "|---|---|---|---|---|---|---|",
    ]
    for (rate, cut, mean, low), (_, in_cut, in_mean, in_low) in zip(
        result["left_out_curve"], result["curve"], strict=True
    ):
        out.append(
            f"| {'rules only' if rate is None else rate} | {cut:.1%} | {mean:.3f} | {low:.3f} | "
            f"{in_cut:.1%} | {in_mean:.3f} | {in_low:.3f} |"
        )
    out += [
        "",
        "What prose compression does to a template, left out: the one with the lowest cosine, and the "
        "largest one (rules + prose compression as in its fold).",
        "",
    ]
    prose_rows = result["left_out_prose"]
    lowest, largest = min(prose_rows, key=lambda r: r.cosine), max(prose_rows, key=lambda r: r.before)
    for r in [lowest] if lowest is largest else [lowest, largest]:
        out += before_after(
            f"**`{r.template.id}`** ({r.template.kind}): {r.before} -> {r.after} fixed tokens "
            f"({reduction(r.before, r.after):.1%}), cosine {r.cosine:.3f}",
            r.template.text,
            r.lean,
        )
    out += [
        "Folds (left-out project: rules admitted, example budget, prose rate chosen): "
        + ", ".join(f"{p}: {n}, {b}, {r}" for p, n, b, r in folds)
        + f". In sample: budget {result['in_sample_budget']}, rate {result['in_sample_rate']}.",
        "",
        "## Prompts laid out for prefix caches (layer 2)",
        "",
        "Stable-prefix tokens: fixed-text tokens before a template's first per-call variable, the part a "
        "provider's prefix cache can reuse between calls (no variable is declared slow here). Source; "
        "`lean_text` in the source order; lean and laid out stable-first (`lean_from`'s default). Totals.",
        "",
        "| prompts | n | fixed tokens: source -> lean | stable prefix: source | lean, as written | lean, stable-first |",
        "|---|---|---|---|---|---|",
    ]
    for name, n, total, lean_total, source, as_written, stable in prefix_summary:
        out.append(
            f"| {name} | {n} | {total:,} -> {lean_total:,} | {source:,} ({source / total:.0%}) | "
            f"{as_written:,} ({as_written / lean_total:.0%}) | {stable:,} ({stable / lean_total:.0%}) |"
        )
    out += [
        "",
        "Shares: of the fixed text of the same form. A prefix cache bills only from its minimum (1,024 "
        "tokens at OpenAI and Anthropic), reached by these templates only with long slow parts (tool lists, "
        "shared documents) in the stable prefix; the demo simulates it on its own requests.",
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the layer-1 compressor variant")
    parser.add_argument("--markdown-out", type=Path, help="write the Markdown section here")
    parser.add_argument(
        "--audit", action="store_true", help="only check each phrasebook rule's seen_in against where it fires"
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.audit:
        return audit()

    rows = build_rows(with_compressor=not args.quick)
    add_cosines(rows)
    counted = [r for r in rows if fixed(r.source) > 0]

    header = (
        f"{'prompt':<58} {'vars':>4} {'before':>6} {'ws':>5} {'minify':>6} {'lean':>5} {'cut':>6} {'cos':>5}"
    )
    print(header)
    for r in rows:
        b = fixed(r.source)
        cut = f"{reduction(b, fixed(r.lean)):.1%}" if b else "n/a"
        print(
            f"{r.name:<58} {len(r.variables):>4} {b:>6} {fixed(r.ws):>5} {fixed(r.minified):>6} "
            f"{fixed(r.lean):>5} {cut:>6} {r.cosine:>5.3f}"
        )
    variants = [("whitespace + rule lines only", "ws"), ("minify (rules)", "minified"), ("lean_from", "lean")]
    if not args.quick and all(r.lean_compressed is not None for r in rows):
        variants.append(("lean_text(compressor='auto')", "lean_compressed"))
    summary = []
    print()
    for label, attr in variants:
        for group, members in (
            ("LlamaIndex", [r for r in counted if r.name.startswith("llama_index/")]),
            ("LangChain", [r for r in counted if r.name.startswith("langchain/")]),
            ("all", counted),
        ):
            mean, agg, before, after = summarize(members, attr)
            summary.append((label, group, len(members), mean, agg, before, after))
            print(
                f"{label:<30} {group:<10} n={len(members):<3} mean {mean:6.1%}  aggregate {agg:6.1%}  {before}->{after}"
            )
    held = held_out_rows()
    held_summary = None
    if held:
        held_summary = (
            len(held),
            statistics.mean(reduction(b, m) for _, b, m, _ in held),
            statistics.mean(reduction(b, lt) for _, b, _, lt in held),
            sum(b for _, b, _, _ in held),
            sum(lt for _, _, _, lt in held),
        )
        n, m_mean, l_mean, before, after = held_summary
        print(
            f"held-out shipped prompts       n={n:<3} minify mean {m_mean:6.1%}  lean mean {l_mean:6.1%}  {before}->{after}"
        )
    cosines = [r.cosine for r in counted]
    print(f"MiniLM cosine before/after: mean {statistics.mean(cosines):.3f}, min {min(cosines):.3f}")
    lean_mean = next(s[3] for s in summary if s[0] == "lean_from" and s[1] == "all")
    print(
        f"target mean reduction >= {TARGET:.0%}: {'met' if lean_mean >= TARGET else 'NOT met'} ({lean_mean:.2%})"
    )

    templates = dev_templates()
    prefix_rows = adapter_stable_prefix_rows() + stable_prefix_rows(templates)
    prefix_summary = stable_prefix_summary(prefix_rows)
    print("\nstable-prefix tokens (fixed text before the first per-call variable), totals:")
    for name, n, total, lean_total, source, as_written, stable in prefix_summary:
        print(
            f"  {name:<24} n={n:<3} fixed {total:>6} -> {lean_total:>6}  stable prefix: source {source:>5}  "
            f"lean as written {as_written:>5}  stable-first {stable:>5}"
        )
    extra: list[str] = []
    if templates:
        result = generalisation(templates, QUICK_PROSE_RATES if args.quick else PROSE_RATES)
        for variant, suffix in (("rules only", ""), ("rules + prose compression", "_prose")):
            print(
                f"\ngeneralisation, {variant}, left-out projects (rules seen in >= 2 other projects, budget "
                "and rate chosen on the others), in sample beside:"
            )
            for key in (lambda r: r.template.project, lambda r: r.template.kind):
                inside = {g[0]: g for g in group_rows(result["in_sample" + suffix], key)}
                for name, n, before, after, cut, mean, low, lost in group_rows(result["left_out" + suffix], key):
                    ins = inside[name]
                    print(
                        f"  {name:<18} n={n:<3} {before:>6} -> {after:>6}  {cut:6.1%}  cos mean {mean:.3f} min {low:.3f}"
                        f"  lost {lost}   | in sample {ins[4]:6.1%} cos mean {ins[5]:.3f} min {ins[6]:.3f}"
                    )
        print(f"  folds (project, rules, budget, rate): {result['folds']}")
        print(f"  in sample: budget {result['in_sample_budget']}, rate {result['in_sample_rate']}")
        for rate, cut, mean, low in result["curve"]:
            print(f"  curve, in sample: rate {rate}: cut {cut:.1%} cos mean {mean:.3f} min {low:.3f}")
        for rate, cut, mean, low in result["left_out_curve"]:
            print(f"  curve, left out (fixed rate): rate {rate}: cut {cut:.1%} cos mean {mean:.3f} min {low:.3f}")
        extra = generalisation_markdown(result, prefix_summary)
    else:
        print("development templates not found (../shared/data or LEAN_PLUGINS_DATA): generalisation skipped")

    if args.markdown_out:
        args.markdown_out.write_text(
            markdown(rows, summary, cosines, lean_mean, held_summary) + "\n".join(extra) + "\n", encoding="utf-8"
        )
    return 0


def audit() -> int:
    """Print rules whose ``seen_in`` differs from the projects they fire on; 1 if any does."""
    from lean_plugins.prompts.lean import CONCISE_REWRITES

    templates = framework_templates() + dev_templates()
    fired = rule_projects(templates)
    bad = 0
    for rule in CONCISE_REWRITES:
        if set(rule.seen_in) != fired[rule.name] or len(fired[rule.name]) < 2:
            bad += 1
            print(f"{rule.name}: seen_in {sorted(rule.seen_in)}, fires on {sorted(fired[rule.name])}")
    print(f"{len(CONCISE_REWRITES)} rules, {bad} to fix")
    return 1 if bad else 0


def markdown(
    rows: list[Row], summary: list[tuple], cosines: list[float], lean_mean: float, held: tuple | None
) -> str:
    counted = [r for r in rows if fixed(r.source) > 0]
    out = ["## Lean prompt templates (layer 2)", ""]
    out.append(
        f"Fixed text (template with its variables removed) of the frameworks' own shipped prompts: "
        f"{sum(1 for r in rows if r.name.startswith('llama_index/'))} LlamaIndex default prompts and "
        f"{sum(1 for r in rows if r.name.startswith('langchain/'))} distinct LangChain (langchain-classic) QA, "
        "summarisation and condense-question prompts (chat prompts: their text messages together). "
        "cl100k_base tokens. Every variable of every prompt is kept (asserted). `cos` is the MiniLM "
        "(all-MiniLM-L6-v2, 256-token window) cosine of the instruction text before (fixed text "
        "without rule lines and blank lines) and after. "
        "The mean is over prompts with fixed text (LlamaIndex's `{query_str}`-only prompt has none)."
    )
    out += [
        "",
        "| variant | prompts | n | mean reduction | aggregate reduction | tokens before -> after |",
        "|---|---|---|---|---|---|",
    ]
    for label, group, n, mean, agg, before, after in summary:
        out.append(f"| {label} | {group} | {n} | {mean:.1%} | {agg:.1%} | {before:,} -> {after:,} |")
    gap = "met" if lean_mean >= TARGET else f"**not met** ({TARGET - lean_mean:.1%} short)"
    out += [
        "",
        f"Target: mean reduction of the fixed text >= {TARGET:.0%} with every variable kept: {gap} "
        f"({lean_mean:.2%}). MiniLM cosine of the instruction text: mean {statistics.mean(cosines):.3f}, "
        f"min {min(cosines):.3f}.",
        "",
        "| prompt | vars | before | minify | lean_from | reduction | cos |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = fixed(r.source)
        cut = f"{reduction(b, fixed(r.lean)):.1%}" if b else "n/a"
        out.append(
            f"| `{r.name}` | {len(r.variables)} | {b} | {fixed(r.minified)} | {fixed(r.lean)} | {cut} | {r.cosine:.3f} |"
        )
    out += [
        "",
        "The phrasebook (`lean_plugins/data/prompt_phrasebook.json`) was first written while reading these "
        "prompts, so these figures are in-sample; only rules that fire in at least two projects are kept.",
        "",
    ]
    if held:
        n, m_mean, l_mean, before, after = held
        out += [
            f"**Held out**: {n} other distinct prompts the two frameworks ship (selectors, question generation, "
            "evaluation, SQL, API, memory, HyDE, query constructor; never read while writing the rules): "
            f"`minify` mean {m_mean:.1%}, `lean_from` mean {l_mean:.1%} "
            f"({before:,} -> {after:,} fixed tokens), every variable kept. This is the figure to expect "
            "on templates the phrasebook was not written for.",
            "",
        ]
    out += [
        "### The five largest prompts, before and after `lean_from`",
        "",
    ]
    for r in sorted(counted, key=lambda r: -fixed(r.source))[:5]:
        b, a = fixed(r.source), fixed(r.lean)
        out += before_after(
            f"**`{r.name}`**: {b} -> {a} fixed tokens ({reduction(b, a):.1%}), cosine {r.cosine:.3f}",
            r.source,
            r.lean,
        )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
