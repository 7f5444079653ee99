"""The cache's fast numeric path: the query's embedding and the verifier in bfloat16, with every
verdict near a boundary redone in float32, so a lookup serves what the float32 path serves.

The cache's floor (minimum cosine) and the cross-encoder's threshold were calibrated on float32
vectors and logits. On a CPU with bfloat16 in hardware (AVX512-BF16 or AMX) a one-sentence
MiniLM embedding and a cross-encoder pass run about twice as fast in bfloat16 (weights
prepacked for oneDNN), but their values move a little: a query's cosine to a stored float32
vector by up to :data:`COSINE_MARGIN` / 2, a logit by up to :data:`LOGIT_MARGIN` / 2 (the
largest deviations seen on the QQP *tune* split, doubled; ``scripts/bench_cache.py``). A
bfloat16 verdict is kept only where no such move could change it (:func:`uncertain_ranks`,
:func:`apart`, :func:`logits_settled`); otherwise the lookup runs again in float32, from the query's float32
embedding on. Stored vectors are always float32 (``put`` embeds in float32), so a store is the
same whichever path reads it.

``LeanCache(precision=...)``: ``"auto"`` (default) picks bfloat16 where the CPU has it
(:func:`lean_plugins.devices.cpu_has_native_bfloat16`) and float32 elsewhere; ``"float32"`` or
``"bfloat16"`` force a path. The int8 path (``lean_plugins.quantize``) is not offered here: its
query vectors move by up to ~0.01 in cosine (vs float32), so most verdicts near a hit would be
redone and the lookup would cost both paths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lean_plugins.errors import ConfigurationError

CACHE_PRECISIONS = ("auto", "float32", "bfloat16")

#: Distance from the cosine floor (and between two candidates) under which a bfloat16 query's
#: cosines do not settle the candidate list: about twice the largest deviation measured on the
#: QQP *tune* split (10,000 questions embedded one at a time, prepacked bfloat16 vs float32,
#: against float32 stored vectors: max 0.0026, 99th percentile 0.0016, median 0.0003).
COSINE_MARGIN = 0.005
#: Distance from the verifier's threshold under which a bfloat16 logit does not settle the
#: verdict: about twice the largest deviation on the same split (the cross-encoder in bfloat16
#: on the bfloat16 cosine vs float32 on the float32 one, 3,128 pairs over the floor that the
#: guard passes: max 0.160, 99th percentile 0.061, median 0.010).
LOGIT_MARGIN = 0.35


def resolve_cache_precision(precision: str, has_bfloat16: Callable[[], bool] | None = None) -> str:
    """``"float32"`` or ``"bfloat16"`` for ``LeanCache(precision=...)``.

    ``auto``: bfloat16 where ``has_bfloat16()`` (default
    :func:`lean_plugins.devices.cpu_has_native_bfloat16`, looked up at call time) says the CPU
    multiplies bfloat16 in hardware; without it bfloat16 is emulated and slower than float32.
    """
    if precision not in CACHE_PRECISIONS:
        raise ConfigurationError(
            f"LeanCache precision must be one of {CACHE_PRECISIONS}, got {precision!r} ('auto' picks "
            "bfloat16 on CPUs with AVX512-BF16 / AMX, float32 elsewhere)."
        )
    if precision != "auto":
        return precision
    if has_bfloat16 is None:
        from lean_plugins import devices

        has_bfloat16 = devices.cpu_has_native_bfloat16
    return "bfloat16" if has_bfloat16() else "float32"


def uncertain_ranks(
    similarities: Sequence[float], floor: float, top_k: int, margin: float = COSINE_MARGIN
) -> set[int]:
    """Ranks (0: nearest) of the bfloat16 candidates whose place in the float32 candidate list
    is not settled: within ``margin`` of the floor, and the last of the ``top_k`` nearest and
    the next one (``similarities`` holds ``top_k + 1`` where the store has them) when they
    could swap. Such a candidate changes the outcome only if the guard passes it and it is
    reached before the verified ones are complete; the lookup then runs again in float32.
    """
    out = {rank for rank, s in enumerate(similarities[: top_k + 1]) if not apart(s, floor, margin)}
    if (
        len(similarities) > top_k
        and similarities[top_k] >= floor - margin
        and not apart(similarities[top_k - 1], similarities[top_k], margin)
    ):
        out |= {top_k - 1, top_k}
    return out


def apart(a: float, b: float, margin: float = COSINE_MARGIN) -> bool:
    """Whether two bfloat16 cosines keep their order (and their side of a floor) in float32."""
    return abs(a - b) >= margin


def logits_settled(logits: Sequence[float], threshold: float, margin: float = LOGIT_MARGIN) -> bool:
    """Whether every bfloat16 logit is far enough from the threshold to keep its verdict."""
    return all(abs(v - threshold) >= margin for v in logits)
