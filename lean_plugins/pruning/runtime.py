"""``LeanLocalLLM``: serve a dense or pruned causal LM locally.

A small decode loop over a Hugging Face model, written out (rather than ``model.generate``) so
that every token passes through the hooks the other layers need: stop sequences that never
leak into streamed text, :data:`~lean_plugins.generation.StoppingCriterion` s called after
every token (the output budget plugs in here), per-call ``max_new_tokens``, usage counts, and
reuse of the KV cache of a shared prompt prefix. The prefix cache is keyed by the prefix's
token ids and a cached prefix is used only when the new prompt's ids start with exactly those
ids, at the same positions, so a changed prefix can never be served from a stale cache.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lean_plugins import ledger
from lean_plugins._optional import require
from lean_plugins.checks import check_text
from lean_plugins.errors import ConfigurationError
from lean_plugins.generation import GenerationStep, StoppingCriterion
from lean_plugins.pruning.modeling import (
    forward_cache_kwarg,
    load_model,
    new_kv_cache,
    resolve_attention,
)

logger = logging.getLogger("lean_plugins.pruning")

_SHARED: dict[tuple[str, str, str, str], LeanLocalLLM] = {}
_SHARED_LOCK = threading.Lock()


@dataclass
class GenerationResult:
    """One finished generation."""

    text: str
    """Generated text, stop sequence excluded."""
    token_ids: list[int]
    """Generated token ids (end-of-sequence excluded)."""
    prompt_tokens: int
    completion_tokens: int
    """Tokens the model generated, end-of-sequence included."""
    finish_reason: str
    """``natural`` (end of sequence), ``stop_sequence``, ``max_tokens`` or the stopping
    criterion's ``stop_reason`` attribute (``budget`` when it has none)."""
    stop_sequence: str | None = None
    cached_prefix_tokens: int = 0
    """Prompt tokens whose KV cache was reused instead of recomputed."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class StreamChunk:
    """A piece of streamed text; the last chunk of a stream carries the ``result``."""

    text: str
    result: GenerationResult | None = None


@dataclass
class _Sequence:
    """Decoding state of one sequence."""

    prompt_tokens: int
    max_new_tokens: int
    ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    steps: int = 0
    done: bool = False
    finish_reason: str = ""
    stop_sequence: str | None = None
    cached_prefix_tokens: int = 0

    def result(self) -> GenerationResult:
        return GenerationResult(
            text=self.text,
            token_ids=list(self.ids),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.steps,
            finish_reason=self.finish_reason,
            stop_sequence=self.stop_sequence,
            cached_prefix_tokens=self.cached_prefix_tokens,
        )


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of ``text`` that could still become a stop sequence."""
    hold = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), hold, -1):
            if text.endswith(stop[:n]):
                hold = n
                break
    if text.endswith("\ufffd"):  # an incomplete multi-byte character
        hold = max(hold, 1)
    return hold


def check_sampling(temperature: float, top_p: float) -> None:
    """Sampling settings that make sense, or a :class:`ConfigurationError` saying which to fix."""
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise ConfigurationError(
            f"temperature must be a number >= 0 (0 means greedy decoding), got {temperature!r}."
        )
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ConfigurationError(
            f"top_p must be in (0, 1] (1 keeps every token; 0 would keep none), got {top_p!r}."
        )


class LeanLocalLLM:
    """A local causal LM (dense or pruned) with streaming, stops, budgets and a prefix cache.

    ``model`` is a folder or hub name (loaded with :func:`~lean_plugins.pruning.modeling.load_model`,
    which also reads non-uniformly pruned checkpoints) or an already loaded model, in which case
    ``tokenizer`` is required.
    """

    def __init__(
        self,
        model: str | Path | Any,
        tokenizer: Any | None = None,
        *,
        device: str = "auto",
        dtype: Any = "auto",
        attention: str = "auto",
        model_name: str | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        prefix_cache_size: int = 8,
        record_usage: bool = True,
    ) -> None:
        torch = require("torch", "local")
        check_sampling(temperature, top_p)
        if isinstance(model, (str, Path)):
            self.model, self.tokenizer, self.attention_backend = load_model(
                model, device=device, dtype=dtype, attention=attention
            )
            self.model_name = model_name or Path(str(model)).name
        else:
            if tokenizer is None:
                raise ConfigurationError("Pass the tokenizer together with an already loaded model.")
            self.model, self.tokenizer = model, tokenizer
            dev = str(next(model.parameters()).device)
            wanted = resolve_attention(attention, dev)
            if attention != "auto" or getattr(model.config, "_attn_implementation", None) != wanted:
                try:
                    model.set_attn_implementation(wanted)
                except (ValueError, ImportError, AttributeError) as exc:
                    logger.warning("could not switch attention to %s: %s", wanted, exc)
            self.attention_backend = getattr(model.config, "_attn_implementation", None) or wanted
            self.model_name = model_name or getattr(model.config, "_name_or_path", "") or "local-model"
        self.model.eval()
        self.device = next(self.model.parameters()).device
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.record_usage = record_usage
        self.prefix_cache_size = prefix_cache_size
        self._generator = torch.Generator(device="cpu")
        if seed is not None:
            self._generator.manual_seed(seed)
        self._prefix_cache: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._lock = threading.RLock()
        self._cache_kwarg = forward_cache_kwarg(self.model)
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        self.eos_token_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else (min(self.eos_token_ids) if self.eos_token_ids else 0)
        logger.info(
            "LeanLocalLLM %s on %s, attention=%s", self.model_name, self.device, self.attention_backend
        )

    @classmethod
    def shared(
        cls, model: str | Path, *, device: str = "auto", dtype: Any = "auto", attention: str = "auto"
    ) -> LeanLocalLLM:
        """One loaded instance per (model, device, dtype, attention) in this process, so that
        framework wrappers created per request do not load the weights again."""
        key = (str(model), str(device), str(dtype), str(attention))
        with _SHARED_LOCK:
            if key not in _SHARED:
                _SHARED[key] = cls(model, device=device, dtype=dtype, attention=attention)
            return _SHARED[key]

    # -- facts -----------------------------------------------------------------------------
    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text, add_special_tokens=False))

    # -- chat formatting ---------------------------------------------------------------------
    def format_chat(
        self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True
    ) -> str:
        """Render ``[{"role", "content"}]`` with the tokenizer's chat template, or, when it has
        none, as ``Role: content`` lines ending with ``Assistant:``."""
        if self.has_chat_template:
            return self.tokenizer.apply_chat_template(
                [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
            )
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        if add_generation_prompt:
            lines.append("Assistant:")
        return "\n".join(lines)

    def chat_stop_sequences(self) -> list[str]:
        """Stops that end an assistant turn in the plain role-prefixed format."""
        return [] if self.has_chat_template else ["\nUser:", "\nSystem:"]

    def chat_prompt_ids(self, messages: Sequence[Mapping[str, str]]) -> tuple[list[int], str | None]:
        """Token ids of a chat prompt, and the text of its leading system turn(s) as a prefix."""
        text = self.format_chat(messages)
        ids = self.encode(text, add_special_tokens=not self.has_chat_template)
        n_system = 0
        while n_system < len(messages) and messages[n_system]["role"] == "system":
            n_system += 1
        prefix = None
        if 0 < n_system < len(messages):
            prefix = self.format_chat(messages[:n_system], add_generation_prompt=False)
        return ids, prefix

    # -- generation --------------------------------------------------------------------------
    def generate(
        self,
        prompt: str | Sequence[int],
        *,
        max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        stopping_criteria: Sequence[StoppingCriterion] | None = None,
        prefix: str | Sequence[int] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
    ) -> GenerationResult:
        """Generate a completion of one prompt (text, or token ids used as they are).

        ``prefix``: a leading part of the prompt shared across calls (system prompt, few-shot
        block) whose KV cache is kept and reused by later prompts that start with its tokens.
        """
        result = None
        for chunk in self.stream(
            prompt,
            max_new_tokens=max_new_tokens,
            stop=stop,
            stopping_criteria=stopping_criteria,
            prefix=prefix,
            temperature=temperature,
            top_p=top_p,
        ):
            result = chunk.result or result
        assert result is not None
        return result

    def stream(
        self,
        prompt: str | Sequence[int],
        *,
        max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        stopping_criteria: Sequence[StoppingCriterion] | None = None,
        prefix: str | Sequence[int] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
    ) -> Iterator[StreamChunk]:
        """Yield the completion as it is generated; the last chunk carries the result.

        Text that could be the start of a stop sequence is held back until it is known not to
        be one, so a stop sequence never appears in the stream.
        """
        ids = self._prompt_ids(prompt)
        prefix_ids = self._prompt_ids(prefix) if prefix is not None else None
        yield from self._run(
            [ids],
            max_new_tokens=max_new_tokens,
            stop=stop,
            stopping_criteria=stopping_criteria,
            prefix_ids=prefix_ids,
            temperature=temperature,
            top_p=top_p,
        )

    def generate_batch(
        self,
        prompts: Sequence[str | Sequence[int]],
        *,
        max_new_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        stopping_criteria: Sequence[StoppingCriterion] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
    ) -> list[GenerationResult]:
        """Generate completions of several prompts in one left-padded batch."""
        if not prompts:
            return []
        results: list[GenerationResult] = []
        for chunk in self._run(
            [self._prompt_ids(p) for p in prompts],
            max_new_tokens=max_new_tokens,
            stop=stop,
            stopping_criteria=stopping_criteria,
            prefix_ids=None,
            temperature=temperature,
            top_p=top_p,
        ):
            if chunk.result is not None:
                results.append(chunk.result)
        return results

    async def agenerate(self, prompt: str | Sequence[int], **kwargs: Any) -> GenerationResult:
        return await asyncio.to_thread(self.generate, prompt, **kwargs)

    async def astream(self, prompt: str | Sequence[int], **kwargs: Any) -> AsyncIterator[StreamChunk]:
        """Async :meth:`stream`: the model runs in a worker thread, chunks arrive as they come."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        done = object()

        def worker() -> None:
            try:
                for chunk in self.stream(prompt, **kwargs):
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except BaseException as exc:  # re-raised in the consumer
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            loop.call_soon_threadsafe(queue.put_nowait, done)

        thread = threading.Thread(target=worker, daemon=True)
        thread.start()
        while True:
            item = await queue.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item

    def cache_prefix(self, prefix: str | Sequence[int]) -> int:
        """Compute and keep the KV cache of ``prefix`` now; returns its token count."""
        ids = self._prompt_ids(prefix)
        with self._lock:
            self._prefill_prefix(ids)
        return len(ids)

    def clear_prefix_cache(self) -> None:
        with self._lock:
            self._prefix_cache.clear()

    # -- internals ---------------------------------------------------------------------------
    def _prompt_ids(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            return self.encode(check_text(prompt, "prompt"))
        if prompt is None:
            raise TypeError("prompt takes a str or a sequence of token ids, got None.")
        ids = [int(i) for i in prompt]
        if not ids:
            raise ConfigurationError("The prompt is empty; pass some text or token ids.")
        return ids

    def _forward(self, input_ids: Any, cache: Any, attention_mask: Any, position_ids: Any) -> Any:
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kwarg: cache},
        )
        return out.logits[:, -1, :].float()

    def _prefill_prefix(self, prefix_ids: list[int]) -> Any:
        """The KV cache of ``prefix_ids`` (from the LRU, or computed and stored)."""
        torch = require("torch", "local")
        key = tuple(prefix_ids)
        if key in self._prefix_cache:
            self._prefix_cache.move_to_end(key)
            return self._prefix_cache[key]
        cache = new_kv_cache(self.model)
        ids = torch.tensor([prefix_ids], device=self.device)
        with torch.inference_mode():
            self._forward(
                ids, cache, torch.ones_like(ids), torch.arange(len(prefix_ids), device=self.device)[None]
            )
        self._prefix_cache[key] = cache
        while len(self._prefix_cache) > self.prefix_cache_size:
            self._prefix_cache.popitem(last=False)
        return cache

    def _reusable_prefix(self, ids: list[int], prefix_ids: list[int] | None) -> tuple[int, Any]:
        """(length, cache) of the longest cached or requested prefix of ``ids`` (< len(ids))."""
        best_len, best = 0, None
        for key, cache in self._prefix_cache.items():
            if best_len < len(key) < len(ids) and tuple(ids[: len(key)]) == key:
                best_len, best = len(key), cache
        if prefix_ids:
            common = 0
            for a, b in zip(prefix_ids, ids, strict=False):
                if a != b:
                    break
                common += 1
            common = min(common, len(ids) - 1)
            if common > best_len:
                best_len, best = common, self._prefill_prefix(ids[:common])
        if best is not None:
            self._prefix_cache.move_to_end(tuple(ids[:best_len]))
        return best_len, best

    def _sample(self, logits: Any, temperature: float, top_p: float) -> Any:
        torch = require("torch", "local")
        if temperature <= 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits / temperature, dim=-1)
        if top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            keep = sorted_p.cumsum(-1) - sorted_p < top_p
            sorted_p = sorted_p * keep
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        return torch.multinomial(probs.cpu(), 1, generator=self._generator).squeeze(-1).to(logits.device)

    def _advance(
        self,
        seq: _Sequence,
        token: int,
        eos_probability: float | None,
        stops: Sequence[str],
        criteria: Sequence[StoppingCriterion],
    ) -> None:
        seq.steps += 1
        if token in self.eos_token_ids:
            seq.done, seq.finish_reason = True, "natural"
            return
        seq.ids.append(token)
        previous = len(seq.text)
        seq.text = self.tokenizer.decode(seq.ids, skip_special_tokens=True)
        if stops:
            start = max(0, previous - max(len(s) for s in stops))
            hits = [(seq.text.find(s, start), s) for s in stops]
            hits = [(pos, s) for pos, s in hits if pos >= 0]
            if hits:
                pos, stop = min(hits)
                seq.text = seq.text[:pos]
                seq.done, seq.finish_reason, seq.stop_sequence = True, "stop_sequence", stop
                return
        if criteria:
            step = GenerationStep(token_ids=tuple(seq.ids), text=seq.text, eos_probability=eos_probability)
            for criterion in criteria:
                if criterion(step):
                    seq.done = True
                    seq.finish_reason = getattr(criterion, "stop_reason", None) or "budget"
                    return
        if len(seq.ids) >= seq.max_new_tokens:
            seq.done, seq.finish_reason = True, "max_tokens"

    def _finish(self, seq: _Sequence) -> GenerationResult:
        result = seq.result()
        if self.record_usage:
            ledger.record(
                layer="local",
                kind="serve",
                input_before=result.prompt_tokens,
                input_after=0,
                output_before=result.completion_tokens,
                output_after=0,
                model=self.model_name,
                meta={
                    "attention": self.attention_backend,
                    "cached_prefix_tokens": result.cached_prefix_tokens,
                    "finish_reason": result.finish_reason,
                },
            )
        return result

    def _run(
        self,
        prompts: list[list[int]],
        *,
        max_new_tokens: int | None,
        stop: Sequence[str] | None,
        stopping_criteria: Sequence[StoppingCriterion] | None,
        prefix_ids: list[int] | None,
        temperature: float | None,
        top_p: float | None,
    ) -> Iterator[StreamChunk]:
        torch = require("torch", "local")
        budget = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if budget < 1:
            raise ConfigurationError(f"max_new_tokens must be at least 1, got {budget}.")
        stops = [s for s in (stop or []) if s]
        criteria = list(stopping_criteria or [])
        temp = self.temperature if temperature is None else temperature
        nucleus = self.top_p if top_p is None else top_p
        check_sampling(temp, nucleus)
        longest = max(len(p) for p in prompts)
        room = self.context_window - longest
        if room < 1:
            raise ConfigurationError(
                f"The prompt has {longest} tokens but {self.model_name} has a context window of "
                f"{self.context_window}; shorten the prompt (compress the context with LeanCompressor, "
                "retrieve fewer documents) or serve a model with a longer context window."
            )
        seqs = [_Sequence(prompt_tokens=len(p), max_new_tokens=min(budget, room)) for p in prompts]
        batch = len(prompts)
        with self._lock, torch.inference_mode():
            cached_len, cached = (0, None)
            if batch == 1:
                cached_len, cached = self._reusable_prefix(prompts[0], prefix_ids)
            if cached is not None:
                cache = copy.deepcopy(cached)
                seqs[0].cached_prefix_tokens = cached_len
                ids = torch.tensor([prompts[0][cached_len:]], device=self.device)
                mask = torch.ones(1, longest, dtype=torch.long, device=self.device)
                positions = torch.arange(cached_len, longest, device=self.device)[None]
            else:
                cache = new_kv_cache(self.model)
                rows = [[self.pad_token_id] * (longest - len(p)) + p for p in prompts]
                ids = torch.tensor(rows, device=self.device)
                mask = torch.tensor(
                    [[0] * (longest - len(p)) + [1] * len(p) for p in prompts], device=self.device
                )
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self._forward(ids, cache, mask, positions)
            eos_list = sorted(self.eos_token_ids)
            while True:
                tokens = self._sample(logits, temp, nucleus)
                eos_p = (
                    torch.softmax(logits, dim=-1)[:, eos_list].sum(-1).tolist()
                    if eos_list
                    else [None] * batch
                )
                for i, seq in enumerate(seqs):
                    if seq.done:
                        continue
                    self._advance(seq, int(tokens[i]), eos_p[i], stops, criteria)
                    delta = ""
                    if batch == 1:
                        end = len(seq.text) if seq.done else len(seq.text) - _held_back(seq.text, stops)
                        if end > seq.emitted:
                            delta, seq.emitted = seq.text[seq.emitted : end], end
                    if seq.done and batch == 1:
                        yield StreamChunk(delta, self._finish(seq))
                    elif delta:
                        yield StreamChunk(delta)
                if all(s.done for s in seqs):
                    if batch > 1:  # results in the prompts' order, not the order they finished in
                        for s in seqs:
                            yield StreamChunk("", self._finish(s))
                    return
                feed = torch.tensor(
                    [[self.pad_token_id if s.done else int(tokens[i])] for i, s in enumerate(seqs)],
                    device=self.device,
                )
                mask = torch.cat([mask, torch.ones(batch, 1, dtype=mask.dtype, device=self.device)], dim=-1)
                positions = positions[:, -1:] + 1
                logits = self._forward(feed, cache, mask, positions)
