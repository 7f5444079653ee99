"""Quality kept, measured with a real reader: RAG question answering on SQuAD articles.

Workload: the 13 SQuAD 2.0 development articles of ``../shared/data/qa`` (``squad_normans_dev``
and ``squad_dev_articles``), answerable questions only, split once: 4 articles
(``DEV_ARTICLES``) on which this bench's own choices were made (reader dtype, answer length),
and the other 9, on which it reports (``--articles report``, the default). Base questions are
drawn round-robin over the articles (seed 0). The stream adds, after every fourth base
question, a verbatim repeat of an earlier one, and every other question of the same paragraph
whose gold answer is the same span (SQuAD annotators' own rewordings of a question, or near
misses asking something else with the same answer): a question-level cache must serve the
first and may serve the second only if the answer is right for the question asked.

Per stream item: the top-k paragraphs of its article by MiniLM cosine to the question (the
shared encoder; distractor paragraphs included), joined the framework's way, put in each
framework's default RAG prompt (LangChain's "stuff" chat prompt; LlamaIndex's chat text-QA
prompt), and answered greedily by the reader (default ``smollm2-135m-instruct`` in bfloat16,
batched, at most ``MAX_NEW_TOKENS``), the gold answer's log-likelihood scored in the same pass.

Runs (each framework): plain; compression query-aware at LeanCompressor's default rate and at
0.33; lean template (``lean_from``); lean template with ``prose_rate``; output budget
(predicted, cap = the plain run's max tokens; greedy decoding makes the budgeted answer the
plain one cut where the budget stops its stream, so the budget reads each answer in stream
order, learning as it goes); question-level cache (``LeanCache``, exact+semantic, shipped
defaults) on the stream; all layers (compression at the default rate, lean template, budget,
cache). Each finished run is written to a checkpoint file and reused by a later call with the
same settings (``--assemble`` tabulates what is finished).

Per run: accuracy (a gold answer contained in the reply, SQuAD normalisation), SQuAD token F1,
the reader's mean log-likelihood per token of the first gold answer given the prompt (paired
with plain), cl100k input / output tokens, dollars at a named price, and quality kept = run
accuracy / plain accuracy with a paired bootstrap 95% interval (requests resampled). A cache
hit is right only if the served reply contains the gold answer of the question asked. No layer
setting is tuned here: every layer runs at its shipped default (the one non-default,
``prose_rate``, is fixed below). Layer 1's relevance weights were fitted on all 13 articles
(docs/compressor-model.md), so compression rows are in-sample for that part.

    python scripts/bench_quality.py [--quick] [--markdown-out PATH] [--llm SPEC] [--runs 0,1,...]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lean_plugins.paths import shared_data_dir
from lean_plugins.pricing import resolve_price
from lean_plugins.reader import Answer, contains_gold, make_reader, token_f1
from lean_plugins.tokens import count_tokens

SQUAD_FILES = ("qa/squad_normans_dev.json", "qa/squad_dev_articles.json")
#: Articles the bench's own choices (reader dtype, answer length) were made on, drawn once with
#: ``sorted(random.Random(24).sample(titles, 4))``; the figures are reported on the other 9.
DEV_ARTICLES = ("Huguenot", "Immune_system", "Packet_switching", "Prime_number")
TOP_K = 3
#: Greedy answer length (and the output budget's cap): SmolLM2 restates the question in a
#: sentence, so the gold span comes early; chosen on the development articles (docs/benchmarks.md).
MAX_NEW_TOKENS = 32
PROSE_RATE = 0.5
BOOTSTRAP = 2000
FRAMEWORKS = ("langchain", "llama_index")


@dataclass(frozen=True)
class Question:
    qid: str
    article: str
    paragraph: int
    question: str
    golds: tuple[str, ...]


@dataclass(frozen=True)
class StreamItem:
    question: Question
    kind: str  # first | repeat | reworded
    source: str | None = None


@dataclass
class Article:
    title: str
    paragraphs: list[str]
    questions: list[Question] = field(default_factory=list)


def load_articles(data: Path, which: str = "all") -> list[Article]:
    """The 13 articles (``all``), the 4 development ones (``dev``) or the 9 others (``report``)."""
    if which not in ("all", "dev", "report"):
        raise ValueError(f"articles must be all, dev or report, not {which!r}")
    articles = []
    for name in SQUAD_FILES:
        for raw in json.loads((data / name).read_text(encoding="utf-8"))["data"]:
            article = Article(raw["title"], [p["context"] for p in raw["paragraphs"]])
            for i, paragraph in enumerate(raw["paragraphs"]):
                for qa in paragraph["qas"]:
                    golds = tuple(dict.fromkeys(a["text"] for a in qa.get("answers", []) if a.get("text")))
                    if golds and not qa.get("is_impossible", False):
                        article.questions.append(Question(qa["id"], raw["title"], i, qa["question"], golds))
            if which == "all" or (raw["title"] in DEV_ARTICLES) == (which == "dev"):
                articles.append(article)
    return articles


def build_stream(articles: list[Article], n_base: int, seed: int = 0) -> list[StreamItem]:
    rng = random.Random(seed)
    pools = [rng.sample(a.questions, len(a.questions)) for a in articles]
    base: list[Question] = []
    while len(base) < n_base and any(pools):
        for pool in pools:
            if pool and len(base) < n_base:
                base.append(pool.pop())
    taken = {q.qid for q in base}
    stream: list[StreamItem] = []
    for i, q in enumerate(base):
        stream.append(StreamItem(q, "first"))
        article = next(a for a in articles if a.title == q.article)
        for other in article.questions:
            if (
                other.qid not in taken
                and other.paragraph == q.paragraph
                and set(map(str.lower, other.golds)) & set(map(str.lower, q.golds))
            ):
                stream.append(StreamItem(other, "reworded", q.qid))
                taken.add(other.qid)
                break
        if i % 4 == 3:
            earlier = base[rng.randrange(i)]
            stream.append(StreamItem(earlier, "repeat", earlier.qid))
    return stream


class Retriever:
    """Top-k paragraphs of the question's own article by MiniLM cosine."""

    def __init__(self, articles: list[Article]) -> None:
        from lean_plugins.embeddings import get_encoder

        self.encoder = get_encoder()
        self.articles = {a.title: a for a in articles}
        self.vectors = {a.title: np.asarray(self.encoder.encode(a.paragraphs)) for a in articles}
        self.memo: dict[str, list[str]] = {}

    def top_k(self, q: Question, k: int = TOP_K) -> list[str]:
        if q.qid not in self.memo:
            vector = np.asarray(self.encoder.encode([q.question]))[0]
            order = np.argsort(-(self.vectors[q.article] @ vector))[:k]
            self.memo[q.qid] = [self.articles[q.article].paragraphs[i] for i in order]
        return self.memo[q.qid]


# -- prompts ---------------------------------------------------------------------------------
def framework_prompt(framework: str, template: str) -> Callable[[str, str], list[dict[str, str]]]:
    """``(context, question) -> chat messages`` with the framework's default RAG prompt,
    as written (``plain``), through ``lean_from`` (``lean``), or with ``prose_rate`` (``prose``)."""
    kwargs = {"prose_rate": PROSE_RATE} if template == "prose" else {}
    if framework == "langchain":
        from lean_plugins.demo.langchain_app import default_qa_prompt

        prompt: Any = default_qa_prompt()
        if template != "plain":
            from lean_plugins.langchain import lean_from

            prompt = lean_from(prompt, **kwargs)
        roles = {"system": "system", "human": "user", "ai": "assistant"}

        def render(context: str, question: str) -> list[dict[str, str]]:
            return [
                {"role": roles[m.type], "content": m.content}
                for m in prompt.format_messages(context=context, question=question)
            ]

        return render
    from llama_index.core.prompts.chat_prompts import CHAT_TEXT_QA_PROMPT

    li_prompt: Any = CHAT_TEXT_QA_PROMPT
    if template != "plain":
        from lean_plugins.llama_index import lean_from as li_lean_from

        li_prompt = li_lean_from(li_prompt, **kwargs)

    def render_li(context: str, question: str) -> list[dict[str, str]]:
        return [
            {"role": m.role.value, "content": m.content or ""}
            for m in li_prompt.format_messages(context_str=context, query_str=question)
        ]

    return render_li


def join_context(framework: str, paragraphs: Sequence[str]) -> str:
    # LangChain's stuff chain joins with a blank line; LlamaIndex's compact synthesis too.
    return "\n\n".join(paragraphs)


# -- runs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    name: str
    compress: float | None = None
    template: str = "plain"
    budget: bool = False
    cache: bool = False


def run_specs(default_rate: float) -> list[RunSpec]:
    return [
        RunSpec("plain"),
        RunSpec(f"compression (rate {default_rate:g}, default)", compress=default_rate),
        RunSpec("compression (rate 0.33)", compress=0.33),
        RunSpec("lean template", template="lean"),
        RunSpec(f"lean template + prose_rate {PROSE_RATE:g}", template="prose"),
        RunSpec("output budget (predicted)", budget=True),
        RunSpec("question-level cache", cache=True),
        RunSpec("all layers", compress=default_rate, template="lean", budget=True, cache=True),
    ]


@dataclass
class ItemResult:
    qid: str
    kind: str
    reply: str
    correct: bool
    f1: float
    loglik: float
    input_tokens: int
    output_tokens: int
    cache_hit: bool = False
    budget_stopped: bool = False
    served_from: int | None = None  # a hit: the stream position of the request whose reply it served


class Bench:
    def __init__(self, reader: Any, retriever: Retriever, framework: str, compressor: Any) -> None:
        self.reader = reader
        self.retriever = retriever
        self.framework = framework
        self.compressor = compressor
        self.answers: dict[tuple[str, int], Answer] = {}
        self.logliks: dict[str, float] = {}
        self.renderers = {t: framework_prompt(framework, t) for t in ("plain", "lean", "prose")}
        self.compressed: dict[tuple[str, float], str] = {}

    def messages(self, spec: RunSpec, q: Question) -> list[dict[str, str]]:
        paragraphs = self.retriever.top_k(q)
        context = join_context(self.framework, paragraphs)
        if spec.compress is not None:
            key = (q.qid, spec.compress)
            if key not in self.compressed:
                parts = self.compressor.compress_documents(list(paragraphs), rate=spec.compress, query=q.question)
                self.compressed[key] = join_context(self.framework, [p.text for p in parts if p.text])
            context = self.compressed[key]
        return self.renderers[spec.template](context, q.question)

    @staticmethod
    def key(messages: list[dict[str, str]]) -> str:
        return json.dumps(messages, sort_keys=True)

    def generate(self, prompts: list[list[dict[str, str]]], golds: list[str], max_new_tokens: int) -> list[Answer]:
        """Answers (memoised per prompt), each prompt's gold log-likelihood scored in the same pass."""
        keys = [self.key(m) for m in prompts]
        todo: dict[str, tuple[list[dict[str, str]], str]] = {}
        for k, m, g in zip(keys, prompts, golds, strict=True):
            if (k, max_new_tokens) not in self.answers and k not in todo:
                todo[k] = (m, g)
        if todo:
            got = self.reader.answer_scored(
                [m for m, _ in todo.values()], [g for _, g in todo.values()], max_new_tokens=max_new_tokens
            )
            for (k, (_, g)), (answer, score) in zip(todo.items(), got, strict=True):
                self.answers[(k, max_new_tokens)] = answer
                self.logliks.setdefault(k + "\x00" + g, score)
        return [self.answers[(k, max_new_tokens)] for k in keys]

    def loglik(self, messages: list[dict[str, str]], gold: str) -> float:
        k = self.key(messages) + "\x00" + gold
        if k not in self.logliks:
            self.logliks[k] = self.reader.gold_loglik(messages, gold) if self.reader.has_loglik else math.nan
        return self.logliks[k]

    def run(self, spec: RunSpec, stream: list[StreamItem], workdir: Path) -> list[ItemResult]:
        prompts = [self.messages(spec, item.question) for item in stream]
        # Which items the cache serves, and from which earlier item: decided on the questions
        # alone (the question-level cache keys and verifies questions), before any answer exists.
        served_by: dict[int, int] = {}
        if spec.cache:
            from lean_plugins.cache import LeanCache

            cache = LeanCache(path=workdir / f"cache-{self.framework}-{len(list(workdir.iterdir()))}", record_hits=False)
            for i, item in enumerate(stream):
                hit = cache.lookup(item.question.question)
                if hit is not None:
                    served_by[i] = int(hit.response)
                else:
                    cache.put(item.question.question, str(i))
            cache.close()
        asked = [i for i in range(len(stream)) if i not in served_by]
        replies: dict[int, Answer] = {}
        stopped: set[int] = set()
        answers = self.generate([prompts[i] for i in asked], [stream[i].question.golds[0] for i in asked], MAX_NEW_TOKENS)
        for i, a in zip(asked, answers, strict=True):
            replies[i] = a
        if spec.budget:
            # Greedy decoding: the budgeted answer is the unbudgeted one cut where the budget
            # stops its stream (with_output_budget reading any provider's stream), so the budget
            # reads each whole answer in stream order and learns from it as it goes.
            from lean_plugins.budget import BudgetPredictor, OutputBudget

            budget = OutputBudget(MAX_NEW_TOKENS, predictor=BudgetPredictor(), record_usage=False)
            for i in asked:
                result = budget.apply(replies[i].text, "\n".join(m["content"] for m in prompts[i]))
                if result.stopped:
                    replies[i] = Answer(result.text.strip(), "budget")
                    stopped.add(i)
        results = []
        for i, item in enumerate(stream):
            q = item.question
            source = served_by.get(i)
            reply = replies[source if source is not None else i].text
            in_tok = 0 if source is not None else count_tokens("\n".join(m["content"] for m in prompts[i]))
            out_tok = 0 if source is not None else count_tokens(reply)
            results.append(
                ItemResult(
                    qid=q.qid,
                    kind=item.kind,
                    reply=reply,
                    correct=contains_gold(reply, q.golds),
                    f1=token_f1(reply, q.golds),
                    loglik=self.loglik(prompts[i], q.golds[0]) if not spec.cache or source is None else math.nan,
                    input_tokens=in_tok,
                    output_tokens=out_tok,
                    cache_hit=source is not None,
                    served_from=source,
                    budget_stopped=i in stopped,
                )
            )
        return results


# -- statistics ------------------------------------------------------------------------------
def paired_ratio_interval(run: np.ndarray, plain: np.ndarray, reps: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float, float]:
    """Run accuracy / plain accuracy and its paired bootstrap 95% interval."""
    rng = np.random.default_rng(seed)
    point = run.mean() / plain.mean() if plain.mean() else math.nan
    idx = rng.integers(0, len(run), size=(reps, len(run)))
    num, den = run[idx].mean(1), plain[idx].mean(1)
    ratios = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    lo, hi = np.nanpercentile(ratios, [2.5, 97.5])
    return float(point), float(lo), float(hi)


def paired_diff_interval(a: np.ndarray, b: np.ndarray, reps: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float, float]:
    mask = ~(np.isnan(a) | np.isnan(b))
    d = a[mask] - b[mask]
    if not len(d):
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(reps, len(d)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def wrong_serves(results: list[ItemResult]) -> int:
    """Hits that lost a right answer: the served reply was right for the question it was written
    for and is wrong for the question asked (a repeat of a wrongly answered question is not one)."""
    lost = 0
    for r in results:
        if not r.cache_hit or r.correct:
            continue
        source = r.served_from
        if source is None:  # a checkpoint written before served_from: the first request with that reply
            source = next(i for i, s in enumerate(results) if not s.cache_hit and s.reply == r.reply)
        lost += results[source].correct
    return lost


def summarize(name: str, results: list[ItemResult], plain: list[ItemResult], price: Any) -> dict[str, Any]:
    acc = np.array([r.correct for r in results], dtype=float)
    plain_acc = np.array([r.correct for r in plain], dtype=float)
    ll = np.array([r.loglik for r in results])
    plain_ll = np.array([r.loglik for r in plain])
    kept, lo, hi = paired_ratio_interval(acc, plain_acc)
    dll, dlo, dhi = paired_diff_interval(ll, plain_ll)
    inp = sum(r.input_tokens for r in results)
    out = sum(r.output_tokens for r in results)
    dollars = price.cost(inp, out)
    plain_dollars = price.cost(sum(r.input_tokens for r in plain), sum(r.output_tokens for r in plain))
    return {
        "run": name,
        "n": len(results),
        "accuracy": float(acc.mean()),
        "f1": float(np.mean([r.f1 for r in results])),
        "loglik": float(np.nanmean(ll)) if not np.all(np.isnan(ll)) else math.nan,
        "loglik_diff": (dll, dlo, dhi),
        "input_tokens": inp,
        "output_tokens": out,
        "dollars": dollars,
        "cost_share": dollars / plain_dollars if plain_dollars else math.nan,
        "quality_kept": (kept, lo, hi),
        "cache_hits": sum(r.cache_hit for r in results),
        "wrong_hits": wrong_serves(results),
        "wrong_served": sum(r.cache_hit and not r.correct for r in results),
        "budget_stopped": sum(r.budget_stopped for r in results),
    }


def fmt_row(s: dict[str, Any]) -> list[str]:
    kept, lo, hi = s["quality_kept"]
    dll, dlo, dhi = s["loglik_diff"]
    ll = "n/a" if math.isnan(s["loglik"]) else f"{s['loglik']:.3f}"
    dl = "" if math.isnan(dll) or s["run"] == "plain" else f"{dll:+.3f} [{dlo:+.3f}, {dhi:+.3f}]"
    return [
        s["run"],
        str(s["n"]),
        f"{100 * s['accuracy']:.1f}%",
        f"{s['f1']:.3f}",
        ll,
        dl,
        f"{s['input_tokens']:,}",
        f"{s['output_tokens']:,}",
        f"${s['dollars']:.5f}",
        f"{100 * s['cost_share']:.1f}%",
        "" if s["run"] == "plain" else f"{kept:.3f} [{lo:.3f}, {hi:.3f}]",
        f"{s['cache_hits']} ({s['wrong_hits']} lost a right answer; {s['wrong_served']} wrong in all)"
        if s["cache_hits"]
        else "",
        str(s["budget_stopped"]) if s["budget_stopped"] else "",
    ]


HEADER = [
    "run",
    "n",
    "accuracy",
    "F1",
    "gold loglik",
    "loglik vs plain [95%]",
    "input tok",
    "output tok",
    "dollars",
    "cost vs plain",
    "quality kept [95%]",
    "cache hits",
    "budget stops",
]


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(x) for x in col) for col in zip(HEADER, *rows, strict=True)]
    out = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def loglik_only(bench: Bench, questions: list[Question], specs: list[RunSpec]) -> list[tuple[str, int, tuple[float, float, float], float]]:
    """Gold log-likelihood of each prompt variant over many questions (no generation)."""
    plain = np.array([bench.loglik(bench.messages(specs[0], q), q.golds[0]) for q in questions])
    out = [(specs[0].name, len(questions), (math.nan, math.nan, math.nan), float(np.nanmean(plain)))]
    for spec in specs[1:]:
        ll = np.array([bench.loglik(bench.messages(spec, q), q.golds[0]) for q in questions])
        out.append((spec.name, len(questions), paired_diff_interval(ll, plain), float(np.nanmean(ll))))
    return out


def reader_speed(reader: Any) -> str:
    """Prefill and decode tokens/s of a local reader, batch 1 and 8 (wall and CPU seconds)."""
    if not hasattr(reader, "llm"):
        return "reader speed: n/a (not a local model)"
    llm = reader.llm
    ids = llm.encode("The quick brown fox jumps over the lazy dog. " * 60, add_special_tokens=False)[:512]
    lines = []
    llm.generate(ids[:16], max_new_tokens=2)  # warm-up
    for batch in (1, 8):
        t, c = time.perf_counter(), time.process_time()
        llm.generate_batch([ids] * batch, max_new_tokens=1)
        prefill_wall, prefill_cpu = time.perf_counter() - t, time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        results = llm.generate_batch([ids[:64]] * batch, max_new_tokens=33)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        tokens = sum(r.completion_tokens for r in results)
        lines.append(
            f"batch {batch}: prefill {batch * len(ids) / prefill_wall:,.0f} tok/s "
            f"({prefill_cpu / (batch * len(ids)) * 1000:.2f} CPU-ms/token), decode {tokens / wall:,.1f} tok/s "
            f"({cpu / tokens * 1000:.0f} CPU-ms/token, 64-token prompts, 33 new)"
        )
    return "reader speed (" + llm.model_name + f", {llm.model.dtype}): " + "; ".join(lines)


def checkpoint_name(framework: str, index: int) -> str:
    return f"{framework}--run{index}.json"


def load_checkpoint(path: Path) -> list[ItemResult] | None:
    """A finished run's results, written by :func:`save_checkpoint` (None when absent)."""
    if not path.is_file():
        return None
    return [ItemResult(**item) for item in json.loads(path.read_text(encoding="utf-8"))["items"]]


def save_checkpoint(path: Path, framework: str, name: str, results: list[ItemResult], seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    body = {"framework": framework, "run": name, "seconds": seconds, "items": [vars(r) for r in results]}
    tmp.write_text(json.dumps(body, default=str), encoding="utf-8")
    tmp.replace(path)  # whole or absent: a run killed half-way leaves no file


def main(argv: list[str] | None = None) -> int:
    global MAX_NEW_TOKENS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 base questions, LangChain only")
    parser.add_argument("--markdown-out", type=Path)
    parser.add_argument("--llm", default="smollm2-135m-instruct", help="packaged model, folder, or provider:model")
    parser.add_argument(
        "--dtype", default="bfloat16", help="local reader dtype (default bfloat16: answers as float32's, see docs)"
    )
    parser.add_argument("--questions", type=int, default=None, help="base questions (default 300; quick 40)")
    parser.add_argument("--articles", default="report", choices=("report", "dev", "all"),
                        help="the 9 report articles (default), the 4 development ones, or all 13")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    parser.add_argument("--frameworks", default=None, help="comma list (default both; quick langchain)")
    parser.add_argument("--runs", default=None, help="comma list of run numbers 0-7, run in that order (default all)")
    parser.add_argument("--loglik-questions", type=int, default=0, help="also score gold log-likelihood on N questions")
    parser.add_argument("--price-model", default="gpt-4o-mini")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--speed", action="store_true", help="also measure reader prefill/decode speed")
    parser.add_argument("--loglik-only", action="store_true", help="skip generation: only the gold log-likelihood table")
    parser.add_argument("--dump", type=Path, help="write every request's reply and scores to this JSON file")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="folder of finished runs (default: the user cache, per settings); a finished run is reused")
    parser.add_argument("--assemble", action="store_true", help="only tabulate the finished runs in --checkpoints")
    args = parser.parse_args(argv)
    data = shared_data_dir()
    if data is None:
        print("evaluation data not found: put it at ../shared/data or set LEAN_PLUGINS_DATA", file=sys.stderr)
        return 2
    MAX_NEW_TOKENS = args.max_new_tokens
    n_base = args.questions or (40 if args.quick else 300)
    frameworks = (args.frameworks or ("langchain" if args.quick else ",".join(FRAMEWORKS))).split(",")
    price = resolve_price(args.price_model)
    started, cpu_started = time.perf_counter(), time.process_time()
    articles = load_articles(data, args.articles)
    stream = build_stream(articles, n_base)
    kinds = {k: sum(s.kind == k for s in stream) for k in ("first", "repeat", "reworded")}
    from lean_plugins.paths import cache_dir

    signature = f"{args.llm}-{args.dtype}-{args.articles}-{n_base}q-{MAX_NEW_TOKENS}tok".replace("/", "_").replace(":", "_")
    checkpoints = args.checkpoints or cache_dir("bench", "quality", signature)
    reader: Any = None if args.assemble else make_reader(args.llm, dtype=args.dtype, batch_size=args.batch_size)
    retriever = None if args.assemble else Retriever(articles)
    import inspect

    from lean_plugins.compress import LeanCompressor

    default_rate = inspect.signature(LeanCompressor).parameters["rate"].default
    compressor = None if args.assemble else LeanCompressor(record_ledger=False)
    specs = list(enumerate(run_specs(default_rate)))
    if args.runs:
        chosen = [0] + [int(x) for x in args.runs.split(",") if int(x) != 0]
        specs = [specs[i] for i in chosen]
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    sections = []
    titles = ", ".join(a.title.replace("_", " ") for a in articles)
    header = (
        f"reader: {args.llm} ({args.dtype}, greedy, at most {MAX_NEW_TOKENS} new tokens); price: "
        f"{args.price_model} (${price.input_per_1m:g} / ${price.output_per_1m:g} per 1M in/out, {price.source}); "
        f"stream: {len(stream)} requests ({kinds['first']} questions, {kinds['repeat']} verbatim repeats, "
        f"{kinds['reworded']} same-answer rewordings) over the {len(articles)} {args.articles} SQuAD articles "
        f"({titles}); top-{TOP_K} paragraphs of the article by MiniLM"
    )
    print(header, flush=True)
    print(f"checkpoints: {checkpoints}", file=sys.stderr, flush=True)
    dumped: list[dict[str, Any]] = []
    for framework in frameworks:
        bench = None if args.assemble else Bench(reader, retriever, framework, compressor)
        summaries = []
        plain: list[ItemResult] | None = None
        for index, spec in [] if args.loglik_only else specs:
            path = checkpoints / checkpoint_name(framework, index)
            t = time.perf_counter()
            results = load_checkpoint(path)
            if results is None:
                if bench is None:
                    continue
                results = bench.run(spec, stream, workdir)
                save_checkpoint(path, framework, spec.name, results, time.perf_counter() - t)
            plain = plain or results
            summaries.append(summarize(spec.name, results, plain, price))
            dumped.append({"framework": framework, "run": spec.name, "items": [vars(r) for r in results]})
            if args.dump:
                args.dump.write_text(json.dumps(dumped, indent=1, default=str), encoding="utf-8")
            print(
                f"[{framework}] {spec.name}: {time.perf_counter() - t:.0f} s | " + " | ".join(fmt_row(summaries[-1])),
                file=sys.stderr,
                flush=True,
            )
        rows = [fmt_row(s) for s in summaries]
        if not rows and not args.loglik_questions:
            continue
        print(f"\n== {framework} ==\n" + text_table(rows))
        section = f"**{framework}**\n\n" + (markdown_table(rows) if rows else "")
        if args.loglik_questions and bench is not None:
            pool = [q for a in articles for q in a.questions]
            random.Random(1).shuffle(pool)
            pool = pool[: args.loglik_questions]
            ll_rows = loglik_only(bench, pool, [s for _, s in specs if not s.cache and not s.budget])
            lines = ["| prompt | questions | gold loglik | vs plain [95%] |", "|---|---|---|---|"]
            for name, n, (d, lo, hi), mean in ll_rows:
                vs = "" if math.isnan(d) else f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                lines.append(f"| {name} | {n} | {mean:.3f} | {vs} |")
            print("\n".join(lines))
            section += "\n\nGold log-likelihood only (one forward pass per question, no generation):\n\n" + "\n".join(lines)
        sections.append(section)
    speed = reader_speed(reader) if args.speed and reader is not None else ""
    if speed:
        print(speed)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    footer = f"wall {wall:.0f} s, CPU {cpu:.0f} s (this process)"
    print(footer)
    if args.markdown_out:
        body = [
            "## Quality with a real reader (`bench quality`)",
            "",
            header + ".",
            "",
            "Accuracy: a gold answer contained in the reply (SQuAD normalisation); F1: SQuAD token F1; "
            "gold loglik: the reader's mean log-probability per token of the first gold answer after the "
            "prompt (one forward pass), paired difference with plain; quality kept: accuracy / plain "
            "accuracy, paired bootstrap 95% interval over the stream's requests. A cache hit is right only "
            "if the served reply contains the asked question's gold answer; a hit *lost a right answer* where "
            "its reply was right for the question it was written for and is wrong for the question asked.",
            "",
            *[s + "\n" for s in sections],
        ]
        if speed:
            body += [speed, ""]
        body.append(footer)
        args.markdown_out.write_text("\n".join(body) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
