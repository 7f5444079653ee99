"""Runs the fixed question set through each framework, plain and lean, and measures it.

For every framework the demo runs the question set once plain, once with each available layer
alone (for the per-layer savings), and once with all of them (the lean run). Each request is
measured from the model's own call log: real cl100k counts of what was sent and received
(or the provider's usage for a real API model), the dollars at one model's list price, and
quality next to cost: whether the answer string was in what the model saw, and, for a cache
hit, whether the entry that served it came from the same question (a verbatim repeat or a
true paraphrase, by the question set's labels).

The cache wraps the chain / query engine (``with_cache`` / ``CachedQueryEngine``) and is keyed
on the user's question: a hit skips retrieval, compression and the model call. Caching the full
RAG prompt instead (``--cache-at llm``) keys on retrieved text that differs between paraphrases.
"""

from __future__ import annotations

import importlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lean_plugins.demo.knowledge import Question, contains_answer, load_knowledge_base, load_questions
from lean_plugins.demo.settings import LAYERS, STANDIN, DemoSettings, LLMSpec
from lean_plugins.demo.standin import CallLog
from lean_plugins.ledger import Ledger, record
from lean_plugins.pricing import Price, resolve_price

logger = logging.getLogger("lean_plugins.demo")

FRAMEWORKS = ("langchain", "llama_index")

#: Public names each layer must export, per framework, for the demo to switch it on.
_LAYER_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "prompts": {
        "langchain": ("lean_plugins.langchain:lean_from",),
        "llama_index": ("lean_plugins.llama_index:lean_from",),
    },
    "compress": {
        "langchain": ("lean_plugins.langchain:LeanCompressor",),
        "llama_index": ("lean_plugins.llama_index:LeanCompressorPostprocessor",),
    },
    "cache": {
        "langchain": ("lean_plugins.cache:LeanCache", "lean_plugins.langchain:with_cache"),
        "llama_index": ("lean_plugins.cache:LeanCache", "lean_plugins.llama_index:CachedQueryEngine"),
    },
    "budget": {
        "langchain": ("lean_plugins.budget:OutputBudget", "lean_plugins.langchain:with_output_budget"),
        "llama_index": ("lean_plugins.budget:OutputBudget", "lean_plugins.llama_index:with_output_budget"),
    },
    "local": {
        "langchain": ("lean_plugins.langchain:LeanChatModel",),
        "llama_index": ("lean_plugins.llama_index:LeanLocalLLM",),
    },
}


def layer_availability(framework: str) -> dict[str, str | None]:
    """For each layer: ``None`` when usable in ``framework``, else why not (for the report)."""
    status: dict[str, str | None] = {}
    for layer in LAYERS:
        reason = None
        for name in _LAYER_NAMES[layer][framework]:
            module, _, attr = name.partition(":")
            try:
                getattr(importlib.import_module(module), attr)
            except Exception as exc:  # any failure means "not available", reported as such
                reason = f"{module}.{attr}: {type(exc).__name__}: {exc}".splitlines()[0][:160]
                break
        status[layer] = reason
    return status


@dataclass
class RequestResult:
    """One question of one run, measured."""

    qid: str
    kind: str
    label: str
    question: str
    answer: str
    response: str
    input_tokens: int
    output_tokens: int
    model_calls: int
    dollars: float
    seconds: float
    context_has_answer: bool
    """The answer string was in what the model saw (for a cache hit: in what the model saw
    when the serving entry was made)."""
    cache_hit: bool = False
    cache_match: str | None = None
    cache_source: str | None = None
    """Request id whose answer served this hit."""
    cache_hit_correct: bool | None = None
    """The serving entry came from a request with the same label (repeat or true paraphrase)."""
    finish_reason: str | None = None
    """Why the model stopped, as it reported it (``budget`` when the output budget cut it)."""

    @property
    def response_has_answer(self) -> bool:
        return contains_answer(self.response, self.answer)


@dataclass
class RunResult:
    """One pass of the question set through one framework with a set of layers."""

    framework: str
    config: str
    layers: tuple[str, ...]
    requests: list[RequestResult]
    ledger: dict[str, Any]
    ledger_table: str
    seconds: float
    prompts: list[str] = field(default_factory=list)
    """Every prompt the run sent to the model, in order (for the simulated prefix-cache report)."""
    model: str = "standin"
    """The model that answered (``standin`` or the ``--llm`` spec): runs compare only with the
    plain run of the same model."""

    @property
    def correct_answers(self) -> int:
        """Replies that contain the question's answer string (a cache hit: the reply it was served)."""
        return sum(r.response_has_answer for r in self.requests)

    @property
    def budget_cuts(self) -> list[RequestResult]:
        """Requests whose model call the output budget stopped."""
        return [r for r in self.requests if r.finish_reason == "budget"]

    @property
    def input_tokens(self) -> int:
        return sum(r.input_tokens for r in self.requests)

    @property
    def output_tokens(self) -> int:
        return sum(r.output_tokens for r in self.requests)

    @property
    def dollars(self) -> float:
        return sum(r.dollars for r in self.requests)

    @property
    def cache_hits(self) -> int:
        return sum(r.cache_hit for r in self.requests)

    @property
    def wrong_cache_hits(self) -> int:
        return sum(r.cache_hit_correct is False for r in self.requests)

    @property
    def answer_contexts(self) -> int:
        return sum(r.context_has_answer for r in self.requests)


@dataclass
class DemoResult:
    """Everything the report shows."""

    settings: DemoSettings
    llm_name: str
    price: Price
    questions: list[Question]
    availability: dict[str, dict[str, str | None]]
    runs: list[RunResult] = field(default_factory=list)

    def run(self, framework: str, config: str) -> RunResult | None:
        return next((r for r in self.runs if r.framework == framework and r.config == config), None)


def run_questions(
    framework: str,
    config: str,
    layers: Iterable[str],
    ask: Callable[[str], str],
    call_log: CallLog,
    questions: list[Question],
    settings: DemoSettings,
    price: Price,
    cache: Any = None,
    model: str = "standin",
) -> RunResult:
    """Ask every question through ``ask`` (the chain or engine), measuring each request.

    ``cache`` is the run's :class:`~lean_plugins.demo.rag_check.TracingCache` (or ``None``):
    it tags every entry with the request that wrote it, so each hit is checked against the
    request that made the entry it served.
    """
    layers = tuple(layers)
    results: list[RequestResult] = []
    by_id: dict[str, RequestResult] = {}
    sent: list[str] = []
    started = time.perf_counter()
    with Ledger(f"{framework}:{config}") as ledger:
        for q in questions:
            t0 = time.perf_counter()
            mark = call_log.mark()
            seen = 0
            if cache is not None:
                cache.current, seen = q.id, len(cache.hits)
            response = ask(q.question)
            calls = call_log.since(mark)
            sent += [c.prompt for c in calls]
            in_tok = sum(c.input_tokens for c in calls)
            out_tok = sum(c.output_tokens for c in calls)
            result = RequestResult(
                qid=q.id,
                kind=q.kind,
                label=q.label,
                question=q.question,
                answer=q.answer,
                response=response,
                input_tokens=in_tok,
                output_tokens=out_tok,
                model_calls=len(calls),
                dollars=price.cost(in_tok, out_tok),
                seconds=time.perf_counter() - t0,
                context_has_answer=any(contains_answer(c.prompt, q.answer) for c in calls),
                finish_reason=calls[-1].finish_reason if calls else None,
            )
            for c in calls:
                record(
                    layer="llm",
                    kind="call",
                    input_before=c.input_tokens,
                    input_after=c.input_tokens,
                    output_before=c.output_tokens,
                    output_after=c.output_tokens,
                    model=settings.price_model,
                    meta={"request": q.id},
                )
            hits = cache.hits[seen:] if cache is not None else []
            if hits:
                # The cache booked what each hit avoided in the ledger itself; here each hit is
                # checked against the request whose answer it served.
                sources = [by_id.get(owner) for _, owner, _ in hits]
                result.cache_hit = True
                result.cache_match = hits[0][2]
                result.cache_source = ", ".join(s.qid if s else "?" for s in sources)
                result.cache_hit_correct = all(s is not None and s.label == q.label for s in sources)
                result.context_has_answer = result.context_has_answer or any(
                    s is not None and s.context_has_answer for s in sources
                )
            results.append(result)
            by_id[q.id] = result
        summary = ledger.summary(price=price)
    return RunResult(
        framework=framework,
        config=config,
        layers=layers,
        requests=results,
        ledger=summary.to_dict(),
        ledger_table=summary.to_table(),
        seconds=time.perf_counter() - started,
        prompts=sent,
        model=model,
    )


def _make_llm(framework: str, spec: LLMSpec, settings: DemoSettings, call_log: CallLog) -> Any:
    """The model of one run (the same model for plain and lean; only what it is sent differs)."""
    max_tokens = settings.plain_max_tokens
    if spec.is_standin:
        if framework == "langchain":
            from lean_plugins.demo.langchain_parts import StandInChatModel

            return StandInChatModel(max_tokens=max_tokens, call_log=call_log)
        from lean_plugins.demo.llama_index_parts import StandInLLM

        return StandInLLM(max_tokens=max_tokens, call_log=call_log)
    from lean_plugins.demo.models import make_model

    return make_model(framework, spec, max_tokens=max_tokens, call_log=call_log)


#: The stand-in's plain run, the baseline of one-layer runs made with the stand-in while the
#: plain and lean runs use a real model.
STANDIN_PLAIN = "plain-standin"


def configs(
    availability: dict[str, str | None], settings: DemoSettings
) -> list[tuple[str, tuple[str, ...], LLMSpec]]:
    """The runs of one framework: plain, each available layer alone, and all of them (lean),
    each with the model that answers it."""
    usable = [
        layer
        for layer in LAYERS
        if availability.get(layer) is None and (layer != "local" or settings.llm.kind == "local")
    ]
    # The local model is the model itself, not a step: it is in every run or in none.
    steps = [layer for layer in usable if layer != "local"]
    main = settings.llm
    out: list[tuple[str, tuple[str, ...], LLMSpec]] = [("plain", (), main), ("lean", tuple(steps), main)]
    if settings.ablation:
        ablation = STANDIN if settings.ablation_llm == "standin" else main
        if ablation != main:
            out.append((STANDIN_PLAIN, (), ablation))
        out += [(layer, (layer,), ablation) for layer in steps]
    return out


def describe_model(spec: LLMSpec) -> str:
    """How the report names a real model."""
    if spec.kind == "local":
        from lean_plugins.packaged_models import packaged_model

        packaged = packaged_model(spec.target or "")
        what = f"{packaged.hub_id}, from the {packaged.distribution} package" if packaged else "a local folder"
        return f"{spec.target} ({what}; LeanLocalLLM, greedy decoding)"
    return str(spec)


def run_demo(
    settings: DemoSettings | None = None,
    *,
    questions: list[Question] | None = None,
    progress: Callable[[str], None] | None = None,
    progress_bar: bool = False,
) -> DemoResult:
    """Run the whole demo and return its measurements (see :mod:`lean_plugins.demo.report`).

    ``progress`` gets one line per run; ``progress_bar`` shows a tqdm bar over each run's
    requests on stderr (the CLI does: a run on a local model takes minutes).
    """
    settings = settings or DemoSettings()
    questions = questions if questions is not None else load_questions()
    price = resolve_price(settings.price_model)
    assert price is not None
    sections = load_knowledge_base()
    if settings.workdir is not None:
        workdir = Path(settings.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        from lean_plugins.paths import cache_dir

        workdir = cache_dir("demo")
    # Every demo run gets fresh cache stores: figures never depend on an earlier run.
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    say = progress or (lambda _msg: None)
    from lean_plugins.demo.standin import STANDIN_NAME

    llm_name = STANDIN_NAME if settings.llm.is_standin else describe_model(settings.llm)
    result = DemoResult(settings, llm_name, price, questions, availability={})
    for framework in settings.frameworks:
        if framework not in FRAMEWORKS:
            raise ValueError(f"unknown framework {framework!r}; use one of {FRAMEWORKS}")
        availability = layer_availability(framework)
        result.availability[framework] = availability
        if framework == "langchain":
            from lean_plugins.demo.langchain_app import LangChainDemo

            app: Any = LangChainDemo(sections, settings)
        else:
            from lean_plugins.demo.llama_index_app import LlamaIndexDemo

            app = LlamaIndexDemo(sections, settings)
        for config, layers, spec in configs(availability, settings):
            call_log = CallLog()
            llm = _make_llm(framework, spec, settings, call_log)
            cache = None
            if "cache" in layers:
                from lean_plugins.demo.rag_check import TracingCache

                cache = TracingCache(run_dir / f"cache-{framework}-{config}", **settings.cache_kwargs())
            if framework == "langchain":
                pipeline = app.chain(llm, layers, cache)
            else:
                pipeline = app.query_engine(llm, layers, cache)
            say(f"{framework}: {config} run ({len(questions)} questions, model {spec})")
            from tqdm.auto import tqdm

            asked = tqdm(questions, desc=f"{framework} {config}", unit="request", disable=not progress_bar)
            try:
                run = run_questions(
                    framework,
                    config,
                    layers,
                    lambda question, app=app, pipeline=pipeline: app.ask(pipeline, question),
                    call_log,
                    asked,  # type: ignore[arg-type]  # a list, seen through a progress bar
                    settings,
                    price,
                    cache,
                    model=str(spec),
                )
            finally:
                if cache is not None:
                    cache.close()
            result.runs.append(run)
    return result
