"""Settings of a demo run: the model, the price, and how each lean layer is configured.

The lean settings were chosen once, from the layers' own documented defaults and benchmarks,
and are printed in the report; the question set was fixed before them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lean_plugins.errors import ConfigurationError

#: Layers the lean run can switch on, in the order of a request's path.
LAYERS = ("prompts", "compress", "cache", "budget", "local")
LAYER_TITLES = {
    "prompts": "lean prompt (lean_from)",
    "compress": "query-aware compression (LeanCompressor)",
    "cache": "exact+semantic cache (with_cache / CachedQueryEngine)",
    "budget": "output budget (with_output_budget)",
    "local": "local model (LeanLocalLLM)",
}


@dataclass(frozen=True)
class LLMSpec:
    """Which model answers: ``standin``, ``openai:MODEL`` or ``local:PATH``."""

    kind: str
    target: str | None = None

    @classmethod
    def parse(cls, value: str) -> LLMSpec:
        kind, _, target = value.partition(":")
        kind = kind.strip().lower()
        if kind == "standin" and not target:
            return cls("standin")
        if kind in ("openai", "local") and target:
            return cls(kind, target)
        raise ConfigurationError(
            f"--llm {value!r} is not understood. Use 'standin' (offline, no model), "
            "'local:PATH' (a Hugging Face causal LM folder, served by LeanLocalLLM) or "
            "'openai:MODEL' (needs langchain-openai / llama-index-llms-openai and OPENAI_API_KEY)."
        )

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}:{self.target}"


@dataclass
class DemoSettings:
    """Everything that decides a demo run's figures."""

    llm: LLMSpec = field(default_factory=lambda: LLMSpec("standin"))
    price_model: str = "gpt-4o-mini"
    """Model whose list price turns tokens into dollars (both runs at the same price)."""
    plain_max_tokens: int = 256
    """The plain run's fixed ``max_tokens``, as a user sets it once for every call."""
    compress_rate: float = 0.33
    """Share of retrieved-context tokens the query-aware compressor keeps (layer 1's
    benchmarked answer-survival setting)."""
    budget_predicted: bool = True
    """Let the budget layer learn each route's budget from observed answer lengths (in memory,
    fresh for every run); its cold-start budget and cap is ``plain_max_tokens``."""
    cache_threshold: float | None = None
    """Semantic cache threshold; ``None`` keeps LeanCache's calibrated default."""
    cache_at: str = "question"
    """``question``: the chain / engine wrapped in ``with_cache`` / ``CachedQueryEngine``, keyed on
    the user's question (a hit skips retrieval, compression and the model). ``llm``: the
    frameworks' own hook, keyed on the full prompt (LangChain ``cache=`` on the model,
    LlamaIndex ``CachedLLM``)."""
    frameworks: tuple[str, ...] = ("langchain", "llama_index")
    ablation: bool = True
    """Also run each layer alone, for the per-layer savings and the multiplicative total."""
    workdir: Path | None = None
    """Where run-time files (cache stores) go; default ``paths.cache_dir("demo")``."""

    def __post_init__(self) -> None:
        if self.cache_at not in ("question", "llm"):
            raise ConfigurationError(f"cache_at must be 'question' or 'llm', got {self.cache_at!r}.")

    def compressor_kwargs(self) -> dict[str, Any]:
        return {"rate": self.compress_rate}

    def output_budget(self) -> Any:
        from lean_plugins.budget import OutputBudget
        from lean_plugins.budget.predictor import BudgetPredictor

        return OutputBudget(
            self.plain_max_tokens,
            predictor=BudgetPredictor() if self.budget_predicted else None,
            model=self.price_model,
            # The demo accounts every model call itself, from the model's call log.
            record_usage=False,
        )

    def cache_kwargs(self) -> dict[str, Any]:
        """Settings of the run's exact+semantic ``LeanCache`` (a fresh one for every run)."""
        kwargs: dict[str, Any] = {"mode": "exact+semantic"}
        if self.cache_threshold is not None:
            kwargs["threshold"] = self.cache_threshold
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["llm"] = str(self.llm)
        data["workdir"] = None if self.workdir is None else str(self.workdir)
        return data
