"""The contract between a generating model and whoever may stop it (the output budget).

:class:`~lean_plugins.pruning.LeanLocalLLM` calls each stopping criterion after every new
token with a :class:`GenerationStep`; the first criterion that returns ``True`` stops
generation cleanly, keeping everything generated so far. Plain Python, no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class GenerationStep:
    """State of one sequence after a new token was generated."""

    token_ids: tuple[int, ...]
    """Every token generated so far (prompt excluded), the newest last."""
    text: str
    """The decoded generated text so far."""
    eos_probability: float | None = None
    """The model's probability of end-of-sequence at the step that produced the newest token
    (``None`` where the model cannot tell, e.g. a remote API)."""

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


#: Returns True to stop generation after this step.
StoppingCriterion = Callable[[GenerationStep], bool]

#: Why a generation ended (``natural``: the model's own end or a stop sequence).
STOP_REASONS = ("natural", "stop_sequence", "budget", "soft_budget", "confidence", "max_tokens")
