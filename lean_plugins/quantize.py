"""int8 CPU inference for the MiniLM-size encoders (the compressor's classifier, the sentence encoder).

torch's dynamic int8 quantisation (``quantize_dynamic``: int8 weights, activations quantised
per call with one scale per tensor) of every linear layer moved the compressor's keep
probabilities far from float32 (correlation 0.93 on a 2k-token text; top-half overlap 0.88):
a few activation channels are tens of times larger than the rest (after the LayerNorms and
the GELU), and one scale per tensor leaves the other channels a handful of levels. (One scale
per token as well reached 0.997 but cost as much as it saved.) So each
linear layer is first smoothed as in SmoothQuant (Xiao et al., 2023): its input channel ``j``
is divided by ``s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)`` and the weight's column
``j`` multiplied by it (the product is unchanged in exact arithmetic), which moves the
outliers from the activations, quantised per call, into the weights, quantised per output
channel. ``max|X_j|`` comes from one float32 pass over a fixed English calibration text
shipped in the package (``data/calibration.txt``, written for this purpose; no benchmark text).
The division is an element-wise multiply before each linear layer, cheap next to the product.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from lean_plugins._optional import require
from lean_plugins.paths import package_data

#: SmoothQuant's migration strength (0: all outliers stay in the activations, 1: all move to
#: the weights). 0.65 of {0.5, 0.65, 0.8}: keep-probability correlation with float32 on a
#: 2k-token text of the held-out pairs 0.89 / 0.94 / 0.90 (0.93 without smoothing).
SMOOTHING_ALPHA = 0.65

#: Linear layers (name suffixes) left in float32 on the int8 path, the rest quantised. The
#: second linear layer of each block's feed-forward part (``output.dense``, whose input is the
#: GELU output) is the one int8 hurts most, and most in the first layers, whose errors every
#: later layer carries (keep-probability correlation with float32 on 52 development paragraphs:
#: 0.963 with every layer in int8, 0.983 / 0.986 / 0.994 with that layer kept in layer 0 / layers
#: 0-1 / all layers, at 1.30x / 1.26x / 1.22x / 1.19x the float32 speed of a 2k-token pass).
#: Chosen on answer survival by ``scripts/quantize_lab.py``: with each of the 13 development
#: articles left out, layer 0 only was the first set within 0.5 point of float32 on the other 12
#: in 9 folds (none was in the other 4; every layer in int8 in none); on all 13, 0.46 / 0.28 /
#: 0.18 / 0.05 points below float32 (rate 0.5 / 0.33, with and without the question) against
#: 0.46 / 0.32 / 1.01 below and 0.14 above with every layer in int8 (docs/compress.md).
FLOAT32_LINEARS: tuple[str, ...] = ("layer.0.output.dense",)

_CALIBRATION = "calibration.txt"


@functools.cache
def calibration_texts() -> tuple[str, ...]:
    """The shipped calibration sentences (one per line)."""
    lines = package_data(_CALIBRATION).read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip())


def _smoothed_linear_class() -> Any:
    torch = require("torch", "compress")

    class SmoothedLinear(torch.nn.Module):
        """``linear(x * inv_scale)``: a linear layer whose weight columns were multiplied by
        ``1 / inv_scale`` (SmoothQuant), so the product is the original one."""

        def __init__(self, linear: Any, inv_scale: Any) -> None:
            super().__init__()
            self.linear = linear
            self.register_buffer("inv_scale", inv_scale)

        def forward(self, x: Any) -> Any:
            return self.linear(x * self.inv_scale)

    return SmoothedLinear


SmoothedLinear = None  # set on first use (torch is optional)


def quantize_int8(
    model: Any,
    calibrate: Iterable[dict[str, Any]],
    *,
    alpha: float = SMOOTHING_ALPHA,
    skip: Sequence[str] = (),
    keep_float32: Sequence[str] | None = None,
) -> Any:
    """Quantise ``model``'s linear layers to int8 in place (CPU), smoothed on ``calibrate``.

    ``calibrate`` yields keyword inputs for ``model`` (tokenised calibration texts); their
    float32 activations set the smoothing. Linear layers whose name ends with one of ``skip``
    (a 2-output head gains nothing) or of ``keep_float32`` (default :data:`FLOAT32_LINEARS`,
    read at call time) stay float32. Returns ``model``.
    """
    global SmoothedLinear
    torch = require("torch", "compress")
    if SmoothedLinear is None:
        SmoothedLinear = _smoothed_linear_class()
    kept = (*skip, *(FLOAT32_LINEARS if keep_float32 is None else keep_float32))
    linears = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith(kept)
    }
    peaks: dict[str, Any] = {}

    def record(name: str, _module: Any, inputs: tuple[Any, ...]) -> None:
        peak = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0).float()
        peaks[name] = torch.maximum(peaks[name], peak) if name in peaks else peak

    hooks = [m.register_forward_pre_hook(functools.partial(record, n)) for n, m in linears.items()]
    try:
        with torch.inference_mode():
            for batch in calibrate:
                model(**batch)
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        for name, linear in linears.items():
            act = peaks[name].clamp(min=1e-5)
            weight_peak = linear.weight.abs().amax(0).float().clamp(min=1e-5)
            scale = (act**alpha / weight_peak ** (1 - alpha)).clamp(min=1e-5)
            smoothed = torch.nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
            smoothed.weight.copy_(linear.weight.float() * scale)
            if linear.bias is not None:
                smoothed.bias.copy_(linear.bias.float())
            model.set_submodule(name, SmoothedLinear(smoothed, (1.0 / scale).contiguous()))
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        # torch 2.10+ points eager-mode quantisation users to torchao; the API still works
        # and needs no extra dependency.
        warnings.simplefilter("ignore")
        quantize_dynamic(
            model,
            {f"{name}.linear": per_channel_dynamic_qconfig for name in linears},
            inplace=True,
        )
    return model.eval()


def inference_linear(module: Any, *, prepack: bool = False) -> Any:
    """How an encoder's linear layer runs at inference, as a callable ``x -> y``.

    A plain ``nn.Linear`` becomes ``F.linear`` on its weight (the same kernel as the module, no
    module call); with ``prepack`` a bfloat16 one has its weight reordered once for oneDNN's
    matrix kernels (AVX512-BF16 / AMX), which skips that reordering on every call (a MiniLM
    embedding of one sentence: 6.2 -> 4.9 ms of CPU on one thread). Anything else (the int8
    path's smoothed, quantised layers) is called as it is.
    """
    torch = require("torch", "embeddings")
    from torch.nn import functional

    if type(module) is not torch.nn.Linear:
        return module
    weight = module.weight.detach()
    bias = None if module.bias is None else module.bias.detach()
    mkldnn = getattr(torch.ops, "mkldnn", None)
    if prepack and weight.dtype == torch.bfloat16 and weight.device.type == "cpu" and mkldnn is not None:
        try:
            packed = mkldnn._reorder_linear_weight(weight, 1)
            pointwise = mkldnn._linear_pointwise
            pointwise(torch.zeros(1, weight.shape[1], dtype=weight.dtype), packed, bias, "none", [], "")

            def packed_linear(x: Any) -> Any:
                return pointwise(x, packed, bias, "none", [], "")

            return packed_linear
        except (AttributeError, RuntimeError):  # a torch without these (private) oneDNN ops
            pass
    return functools.partial(functional.linear, weight=weight, bias=bias)


def int8_is_fast() -> bool:
    """True where torch's dynamic int8 linear layers run on fbgemm's x86 kernels (AVX2 or
    better), the case the int8 path was measured on; elsewhere (ARM's qnnpack, old x86) ``auto``
    stays float32."""
    torch = require("torch", "compress")
    engines = torch.backends.quantized.supported_engines
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: "")()
    return ("x86" in engines or "fbgemm" in engines) and capability in ("AVX2", "AVX512")
