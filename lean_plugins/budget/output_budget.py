"""``OutputBudget``: a fixed or predicted per-call output budget, its stopping policy and its
accounting. Framework adapters create one :class:`~lean_plugins.budget.policy.BudgetRun` per
call with :meth:`OutputBudget.start`; everything else here is plain Python.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from lean_plugins.budget.accounting import UsageAccountant, default_accountant
from lean_plugins.budget.policy import BudgetResult, BudgetRun
from lean_plugins.budget.predictor import BudgetPredictor, query_kind
from lean_plugins.errors import ConfigurationError
from lean_plugins.ledger import record
from lean_plugins.tokens import DEFAULT_TOKENIZER, Tokenizer, count_tokens

logger = logging.getLogger("lean_plugins.budget")

DEFAULT_ROUTE = "default"


class OutputBudget:
    """Stops generation at a per-call token budget and keeps the text.

    ``OutputBudget(200)``: every call gets 200 output tokens. With a ``predictor``, each call
    gets the budget learned for its route (see :class:`BudgetPredictor`), at most
    ``max_tokens``, which is also the cold-start budget and the baseline the ledger compares
    with (the caller's own fixed ``max_tokens``).

    Args:
        max_tokens: the caller's fixed output limit (the fixed budget without a predictor).
        predictor: learns budgets per route; ``True`` builds one persisted in the cache dir.
        route: default route name of calls (``start(route=...)`` overrides).
        tokenizer: how streamed text is counted (cl100k_base unless the model is ours).
        soft_window: the final fraction of the budget in which a sentence end may end the
            answer (0 turns the soft stop off).
        confidence_threshold: end-of-sequence probability above which a local model is
            stopped at its sentence end (``None``: off). Needs a model that reports it.
        model, tenant: recorded with every ledger event and usage row.
        accountant: where usage is counted (the process-wide one by default).
        record_usage: also record plain ``llm``/``call`` usage events (turn off when another
            component already accounts the same calls).
        raise_on_stop: raise :class:`BudgetExceededError` (carrying the partial text) when
            the budget stops a call, instead of returning the partial result.
    """

    def __init__(
        self,
        max_tokens: int | None = None,
        *,
        predictor: BudgetPredictor | bool | None = None,
        route: str | None = None,
        tokenizer: str | Tokenizer = DEFAULT_TOKENIZER,
        soft_window: float = 0.15,
        confidence_threshold: float | None = None,
        model: str | None = None,
        tenant: str | None = None,
        accountant: UsageAccountant | None = None,
        record_usage: bool = True,
        raise_on_stop: bool = False,
    ) -> None:
        # bool is an int subclass: OutputBudget(True) would silently be a 1-token budget.
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise ConfigurationError(f"max_tokens must be a positive int, got {max_tokens!r}.")
        if predictor is True:
            predictor = BudgetPredictor.persistent()
        if max_tokens is None and not predictor:
            raise ConfigurationError(
                "OutputBudget needs max_tokens (a fixed budget), or a predictor plus max_tokens as "
                "its cold-start default and cap: OutputBudget(256) or "
                "OutputBudget(512, predictor=BudgetPredictor.persistent())."
            )
        if predictor and max_tokens is None:
            raise ConfigurationError(
                "A predicted budget needs max_tokens: the cold-start budget and the cap of every "
                "prediction (your usual max_tokens), e.g. OutputBudget(512, predictor=...)."
            )
        self.max_tokens: int = max_tokens  # type: ignore[assignment]
        self.predictor: BudgetPredictor | None = predictor or None
        self.route = route
        self.tokenizer = tokenizer
        self.soft_window = soft_window
        self.confidence_threshold = confidence_threshold
        self.model = model
        self.tenant = tenant
        self.accountant = accountant or default_accountant()
        self.record_usage = record_usage
        self.raise_on_stop = raise_on_stop
        BudgetRun(1, soft_window=soft_window, confidence_threshold=confidence_threshold)  # validate

    def settings(self) -> dict[str, Any]:
        """What decides a call's answer under this budget (plain values, stable across
        processes): part of a cache key, so an answer cut at one budget is never served for
        another."""
        return {
            "max_tokens": self.max_tokens,
            "predicted": self.predictor is not None,
            "route": self.route,
            "soft_window": self.soft_window,
            "confidence_threshold": self.confidence_threshold,
            "tokenizer": self.tokenizer if isinstance(self.tokenizer, str) else type(self.tokenizer).__name__,
        }

    def __repr__(self) -> str:
        return "OutputBudget(" + ", ".join(f"{k}={v!r}" for k, v in self.settings().items()) + ")"

    # -- budgets ------------------------------------------------------------------------------
    def budget_for(self, prompt: str | None = None, *, route: str | None = None) -> int:
        """The budget a call with this prompt (and route) gets now."""
        if self.predictor is None:
            return self.max_tokens
        route = route or self.route or DEFAULT_ROUTE
        predicted = self.predictor.predict(route, prompt, default=self.max_tokens)
        return min(predicted, self.max_tokens)

    def start(
        self,
        prompt: str | None = None,
        *,
        route: str | None = None,
        budget: int | None = None,
        model: str | None = None,
        tenant: str | None = None,
        input_tokens: int | None = None,
        streamed: bool = True,
        tokenizer: str | Tokenizer | None = None,
        cached: bool = False,
    ) -> BudgetRun:
        """Begin one call; feed its stream to the returned run (or pass the run as a local
        model's stopping criterion), then call ``run.finish()`` for the result and accounting."""
        route = route or self.route or DEFAULT_ROUTE
        kind = query_kind(prompt)
        budget = budget if budget is not None else self.budget_for(prompt, route=route)
        tok = tokenizer or self.tokenizer
        if input_tokens is None:
            input_tokens = count_tokens(prompt, tok) if prompt else 0
        call = {
            "prompt": prompt,
            "model": model or self.model,
            "tenant": tenant if tenant is not None else self.tenant,
            "input_tokens": input_tokens,
            "streamed": streamed,
        }

        def on_finish(run: BudgetRun, result: BudgetResult) -> None:
            self._account(run, result, call)

        run = BudgetRun(
            budget,
            tokenizer=tok,
            soft_window=self.soft_window,
            confidence_threshold=self.confidence_threshold,
            route=route,
            query_kind=kind,
            on_finish=on_finish,
        )
        run.cached = cached
        run.streamed = streamed
        return run

    def stopping_criterion(self, prompt: str | None = None, **kwargs: Any) -> BudgetRun:
        """A :data:`~lean_plugins.generation.StoppingCriterion` for a local model (a
        :class:`BudgetRun`; call its ``finish(text)`` when generation ends)."""
        return self.start(prompt, **kwargs)

    # -- one-shot helpers ---------------------------------------------------------------------
    def apply(self, text: str, prompt: str | None = None, **kwargs: Any) -> BudgetResult:
        """Apply the budget to a complete (non-streamed) answer: truncate and account it."""
        run = self.start(prompt, streamed=False, **kwargs)
        run.feed(text)
        return self.finish(run)

    def stream(self, chunks: Iterable[str], prompt: str | None = None, **kwargs: Any) -> Iterator[str]:
        """Budget a stream of text chunks: yields the kept text; stops reading at the budget.

        The generator's return value (``StopIteration.value``) is the :class:`BudgetResult`.
        """
        run = self.start(prompt, **kwargs)
        iterator = iter(chunks)
        try:
            for chunk in iterator:
                out = run.feed(chunk)
                if out:
                    yield out
                if run.stopped:
                    break
        finally:
            close = getattr(iterator, "close", None)
            if run.stopped and close is not None:
                close()  # stop the producer: nothing more will be read
        result = self.finish(run)
        rest = run.remaining_text()
        if rest:
            yield rest
        return result

    # -- local models (the stopping-criterion contract of lean_plugins.generation) -------------
    def stream_local(
        self, llm: Any, prompt: str | Sequence[int], *, route: str | None = None, **generate_kwargs: Any
    ) -> Iterator[str]:
        """Stream a local model's answer under this budget, the stop exact to the token.

        ``llm``: a :class:`~lean_plugins.pruning.LeanLocalLLM` (or any object whose
        ``stream(prompt, max_new_tokens=, stopping_criteria=)`` follows the contract in
        :mod:`lean_plugins.generation` and yields chunks with ``text`` and, last, ``result``).
        The budget runs as a stopping criterion: generation stops after the budget's last
        token, or at a sentence end when the model's end-of-sequence probability passes
        ``confidence_threshold``. Yields text sure to be kept; returns the :class:`BudgetResult`.
        """
        text_prompt = prompt if isinstance(prompt, str) else None
        run = self.start(
            text_prompt,
            route=route,
            model=self.model or getattr(llm, "model_name", None),
            input_tokens=0,  # the model reports its own prompt count at the end
        )
        streamed, emitted, final = "", 0, None
        for chunk in llm.stream(
            prompt, max_new_tokens=run.budget, stopping_criteria=[run], **generate_kwargs
        ):
            streamed += chunk.text
            if chunk.result is not None:
                final = chunk.result
                break
            safe = min(run.safe_length(), len(streamed))
            if safe > emitted:
                yield streamed[emitted:safe]
                emitted = safe
        result = self.finish(
            run,
            final.text if final is not None else streamed,
            output_tokens=getattr(final, "completion_tokens", None),
            input_tokens=getattr(final, "prompt_tokens", None),
        )
        if len(result.text) > emitted:
            yield result.text[emitted:]
        return result

    def generate_local(
        self, llm: Any, prompt: str | Sequence[int], *, route: str | None = None, **generate_kwargs: Any
    ) -> BudgetResult:
        """Generate with a local model under this budget; see :meth:`stream_local`."""
        stream = self.stream_local(llm, prompt, route=route, **generate_kwargs)
        while True:
            try:
                next(stream)
            except StopIteration as stop:
                return stop.value

    def finish(self, run: BudgetRun, text: str | None = None, **kwargs: Any) -> BudgetResult:
        """``run.finish(...)``, then raise if this budget was built with ``raise_on_stop``."""
        result = run.finish(text, **kwargs)
        if self.raise_on_stop and result.stopped:
            raise result.exceeded_error()
        return result

    # -- accounting ---------------------------------------------------------------------------
    def _account(self, run: BudgetRun, result: BudgetResult, call: dict[str, Any]) -> None:
        model, tenant = call["model"], call["tenant"]
        cached = run.cached
        generated = result.tokens_generated
        if cached:
            output_before = generated  # nothing was generated; the cache layer counts the saving
        elif result.stopped:
            # Without the budget the model would have gone on, up to the caller's own limit.
            output_before = max(generated, self.max_tokens or result.budget)
        else:
            output_before = generated  # a natural end costs the same with or without a budget
        meta = {
            "stop_reason": result.stop_reason,
            "budget": result.budget,
            "baseline_max_tokens": self.max_tokens,
            "route": result.route,
            "query_kind": result.query_kind,
            "tokens_used": result.tokens_used,
        }
        if not cached:
            record(
                layer="budget",
                kind="stop",
                output_before=output_before,
                output_after=generated,
                model=model,
                tenant=tenant,
                meta=meta,
            )
        if self.record_usage:
            self.accountant.record_call(
                model=model,
                tenant=tenant,
                input_tokens=run.input_tokens if run.input_tokens is not None else call["input_tokens"],
                output_tokens=generated,
                cached=cached,
                streamed=run.streamed,
                meta=meta,
            )
        if self.predictor is not None and not cached and result.stop_reason != "confidence":
            self.predictor.observe(
                result.route or DEFAULT_ROUTE,
                result.budget if result.stopped else generated,
                kind=result.query_kind,
                truncated=result.stopped,
            )
        logger.debug("budget %s: %s", result.stop_reason, meta)
