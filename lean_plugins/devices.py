"""Torch device and dtype choices every layer shares (one home for ``"auto"``)."""

from __future__ import annotations

import functools
from typing import Any

from lean_plugins._optional import require
from lean_plugins.errors import ConfigurationError

DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
#: What the encoders (the compressor's classifier, the sentence encoder) accept: the dtypes
#: above and ``"int8"``, float32 weights whose linear layers are quantised to int8 on CPU
#: (``lean_plugins.quantize``).
ENCODER_PRECISIONS = (*DTYPE_NAMES, "int8")
#: What ``"auto"`` picks for an encoder on a CPU without bfloat16 in hardware: ``"int8"`` would
#: run the int8 path there where torch's int8 kernels are fast (x86 with AVX2 or better,
#: ``quantize.int8_is_fast``; float32 elsewhere). float32: with the layers of
#: ``quantize.FLOAT32_LINEARS`` chosen with each development article left out
#: (``scripts/quantize_lab.py``), int8 answer survival on the left-out articles was 0.46 / 0.09 /
#: 0.46 / 0.74 points below float32 (rate 0.5 / 0.33 with the question, then without): the last
#: is outside the 0.5 allowed (docs/compress.md).
CPU_AUTO_WITHOUT_BFLOAT16 = "float32"


def resolve_device(device: str | None = "auto", *, extra: str = "local") -> str:
    """``auto`` (or None): ``cuda`` when a GPU is visible, else ``cpu``."""
    torch = require("torch", extra)
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


_ONEDNN_ISAS_WITHOUT_BF16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
)


@functools.cache  # the hardware does not change; asked on every query-aware compress call
def cpu_has_native_bfloat16() -> bool:
    """True when this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX).

    Without it, oneDNN emulates bfloat16 and a model runs slower than in float32, so
    ``auto`` only picks bfloat16 on CPUs that have it.
    """
    import os

    # oneDNN capped below its bfloat16 ISAs (how a benchmark emulates an AVX2-only CPU) runs
    # bfloat16 emulated, whatever the CPU has
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if cap in _ONEDNN_ISAS_WITHOUT_BF16:
        return False
    torch = require("torch", "compress")
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # private torch API: treat any failure as "not supported"
            continue
    return False


def resolve_precision(precision: str | None, device: str) -> str:
    """The precision an encoder runs in: a name of :data:`ENCODER_PRECISIONS` other than ``auto``.

    ``auto`` (or None): bfloat16 on a GPU and on CPUs that have it in hardware
    (:func:`cpu_has_native_bfloat16`, looked up at call time so tests can replace it; keep
    scores agree with float32 to a correlation of 0.9999 and compression runs 1.6-1.8x faster
    there), else :data:`CPU_AUTO_WITHOUT_BFLOAT16` (int8 only where ``quantize.int8_is_fast``,
    also looked up at call time; float32 otherwise). ``int8`` runs on CPU only.
    """
    if precision in (None, "auto"):
        if str(device).startswith("cuda") or cpu_has_native_bfloat16():
            return "bfloat16"
        if CPU_AUTO_WITHOUT_BFLOAT16 == "int8" and str(device).startswith("cpu"):
            from lean_plugins import quantize

            return "int8" if quantize.int8_is_fast() else "float32"
        return "float32"
    if precision not in ENCODER_PRECISIONS:
        raise ConfigurationError(f"dtype must be one of {ENCODER_PRECISIONS}, got {precision!r}.")
    if precision == "int8" and not str(device).startswith("cpu"):
        raise ConfigurationError(
            f"dtype='int8' runs on CPU only (torch's dynamic int8 kernels), got device {device!r}; "
            "use dtype='auto' or 'bfloat16' on a GPU."
        )
    return str(precision)


def weight_dtype(precision: str, *, extra: str = "local") -> Any:
    """The ``torch.dtype`` an encoder's weights load in for ``precision`` (float32 for int8,
    whose linear layers are quantised after loading)."""
    torch = require("torch", extra)
    return torch.float32 if precision == "int8" else getattr(torch, precision)


def resolve_dtype(dtype: Any, device: str, *, cpu_auto: str = "float32", extra: str = "local") -> Any:
    """A ``torch.dtype`` from ``"auto"``, a name such as ``"bfloat16"``, or a dtype.

    ``auto``: bfloat16 on a GPU, ``cpu_auto`` on CPU. Causal LMs keep float32 on CPU, where
    generation quality figures were measured; encoders use :func:`resolve_precision`.
    """
    torch = require("torch", extra)
    if dtype in (None, "auto"):
        if str(device).startswith("cuda"):
            return torch.bfloat16
        return getattr(torch, cpu_auto)
    if isinstance(dtype, str):
        value = getattr(torch, dtype, None)
        if not isinstance(value, torch.dtype) or not value.is_floating_point:  # int8: resolve_precision
            raise ConfigurationError(
                f"Unknown dtype {dtype!r}; use 'auto', 'float32', 'bfloat16' or 'float16'."
            )
        return value
    if not isinstance(dtype, torch.dtype):
        raise ConfigurationError(
            f"dtype must be a torch.dtype or one of {DTYPE_NAMES}, got {type(dtype).__name__} {dtype!r}."
        )
    return dtype


#: The CPU features that decide which encoder path is fast (what ``lscpu`` shows as flags).
SPEED_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_summary() -> str:
    """The CPU's model name, its cores and which of :data:`SPEED_CPU_FLAGS` it has (Linux
    ``/proc/cpuinfo``, the source of ``lscpu``), for benchmark tables."""
    import os
    import platform

    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    have = [f for f in SPEED_CPU_FLAGS if f in flags]
    return f"{name}, {os.cpu_count()} cores, flags {' '.join(have) or 'none of ' + ' '.join(SPEED_CPU_FLAGS)}"
