"""Speed measurements of dense vs pruned models (used by scripts/bench_pruning.py and
scripts/gpu_check.py). Speed needs no trained weights, so the models are randomly initialised."""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lean_plugins._optional import require
from lean_plugins.pruning.modeling import forward_cache_kwarg, new_kv_cache

#: ~150M parameters (GQA, 12 query / 4 KV heads): the CPU speed benchmark.
LLAMA_150M = dict(
    vocab_size=32000, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=4096,
)  # fmt: skip
#: ~1.1B parameters (the TinyLlama shape): the GPU check.
LLAMA_1B = dict(
    vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
    num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=16384,
)  # fmt: skip
#: A few-MB model for dry runs of the scripts.
LLAMA_TINY = dict(
    vocab_size=512, hidden_size=128, intermediate_size=344, num_hidden_layers=2,
    num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=4096,
)  # fmt: skip


def random_llama(shape: dict[str, int], *, seed: int = 0, dtype: Any = None, device: str = "cpu") -> Any:
    torch = require("torch", "local")
    transformers = require("transformers", "local")
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        **shape, tie_word_embeddings=False, eos_token_id=2, bos_token_id=1, pad_token_id=0
    )
    with torch.device(device):  # initialise on the target device: much faster on a GPU
        model = transformers.LlamaForCausalLM(config).eval()
    return model.to(dtype=dtype or torch.float32)


class IdTokenizer:
    """A stand-in tokenizer for randomly initialised models: prompts are token ids already,
    decoding writes the ids (the runtime only needs ``decode`` and the special ids)."""

    eos_token_id = 2
    pad_token_id = 0
    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [int(t) for t in text.split()]}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return " ".join(str(i) for i in ids)


def _sync(device: Any) -> None:
    torch = require("torch", "local")
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def best_time(fn: Callable[[], Any], repeats: int, device: Any) -> float:
    """Fastest of ``repeats`` timed runs (after one warm-up), in seconds."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


@dataclass
class SpeedResult:
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    #: Tokens per second of this process's CPU time (all its threads), over every timed run:
    #: steadier than wall time on a machine shared with other jobs (waiting costs no CPU time).
    prefill_tokens_per_cpu_s: float = 0.0
    decode_tokens_per_cpu_s: float = 0.0


def measure_speed(
    model: Any,
    *,
    context: int,
    decode_tokens: int,
    batch: int = 1,
    repeats: int = 2,
    vocab: int | None = None,
) -> SpeedResult:
    """Prefill of ``context`` tokens (batch 1, best of ``repeats``) and greedy decode after a
    ``context``-token prompt at ``batch`` rows (median step time of ``repeats`` runs of
    ``decode_tokens`` steps), both with the model's KV cache."""
    torch = require("torch", "local")
    device = next(model.parameters()).device
    vocab = vocab or model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    kwarg = forward_cache_kwarg(model)

    x1 = torch.randint(3, vocab, (1, context), generator=gen).to(device)

    def prefill() -> None:
        with torch.inference_mode():
            model(input_ids=x1, use_cache=True, logits_to_keep=1, **{kwarg: new_kv_cache(model)})

    cpu = time.process_time()
    prefill_s = best_time(prefill, repeats, device)
    prefill_cpu = (time.process_time() - cpu) / (repeats + 1)  # best_time runs it once more to warm up
    with torch.inference_mode():
        cache = new_kv_cache(model)
        logits = model(input_ids=x1, use_cache=True, logits_to_keep=1, **{kwarg: cache}).logits
        if batch > 1:  # the same prompt in every row: one prefill, the cache repeated
            cache.batch_repeat_interleave(batch)
            logits = logits.repeat(batch, 1, 1)
    base_cache = cache

    def decode_steps() -> list[float]:
        times = []
        with torch.inference_mode():
            c = copy.deepcopy(base_cache)
            token = logits[:, -1:].argmax(-1)
            for step in range(decode_tokens):
                pos = torch.full((batch, 1), context + step, device=device)
                start = time.perf_counter()
                out = model(input_ids=token, position_ids=pos, use_cache=True, **{kwarg: c}).logits
                token = out[:, -1:].argmax(-1)
                _sync(device)
                times.append(time.perf_counter() - start)
        return times

    decode_steps()  # warm-up
    # The median step: robust to bursts of other load on a shared machine.
    cpu = time.process_time()
    step_s = statistics.median([t for _ in range(repeats) for t in decode_steps()])
    decode_cpu = (time.process_time() - cpu) / (repeats * decode_tokens)
    return SpeedResult(context / prefill_s, batch / step_s, context / prefill_cpu, batch / decode_cpu)


def measure_ttft(
    llm: Any, *, prefix_tokens: int, question_tokens: int = 16, repeats: int = 3
) -> tuple[float, float]:
    """Time to first token of ``llm`` (a LeanLocalLLM) for a prompt of ``prefix_tokens`` shared
    tokens plus a short question: (seconds without a cached prefix, seconds with it)."""
    torch = require("torch", "local")
    gen = torch.Generator().manual_seed(1)
    vocab = min(llm.model.config.vocab_size, 30000)
    prefix = torch.randint(3, vocab, (prefix_tokens,), generator=gen).tolist()
    questions = [
        torch.randint(3, vocab, (question_tokens,), generator=gen).tolist() for _ in range(repeats + 1)
    ]
    device = llm.device

    def cold() -> None:
        llm.clear_prefix_cache()
        llm.generate(prefix + questions[0], max_new_tokens=1)

    cold_s = best_time(cold, repeats, device)
    llm.clear_prefix_cache()
    llm.cache_prefix(prefix)
    it = iter(questions * 4)

    def warm() -> None:
        result = llm.generate(prefix + next(it), max_new_tokens=1, prefix=prefix)
        assert result.cached_prefix_tokens == prefix_tokens

    warm_s = best_time(warm, repeats, device)
    return cold_s, warm_s
