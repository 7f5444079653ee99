"""A real reader for quality measurements: answers chat prompts greedily, in batches, and
scores a gold answer's log-likelihood given the prompt (one forward pass).

Used by ``lean-plugins bench quality``; the reader is a local causal LM (by default
``smollm2-135m-instruct``, see :mod:`lean_plugins.packaged_models`) through
:class:`~lean_plugins.pruning.runtime.LeanLocalLLM`, or any LangChain chat model named the
``init_chat_model`` way (``openai:gpt-4o-mini``), which answers but has no log-likelihood.

Also the answer metrics the benchmark reports, as SQuAD's official script computes them
(lower case, punctuation and articles removed, whitespace collapsed).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lean_plugins.errors import ConfigurationError

Messages = Sequence[Mapping[str, str]]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def contains_gold(response: str, golds: Sequence[str]) -> bool:
    """Some gold answer appears in the response (both normalised)."""
    reply = f" {normalize_answer(response)} "
    return any(f" {normalize_answer(g)} " in reply for g in golds if normalize_answer(g))


def token_f1(response: str, golds: Sequence[str]) -> float:
    """SQuAD token F1 of the response against the best-matching gold answer."""
    best = 0.0
    predicted = normalize_answer(response).split()
    for gold in golds:
        truth = normalize_answer(gold).split()
        common = Counter(predicted) & Counter(truth)
        same = sum(common.values())
        if same == 0:
            continue
        precision, recall = same / len(predicted), same / len(truth)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str | None = None


class LocalReader:
    """A local causal LM as a reader: greedy batched answers and gold log-likelihoods."""

    def __init__(self, model: str | Path = "smollm2-135m-instruct", *, dtype: str = "auto", batch_size: int = 8) -> None:
        from lean_plugins.pruning.runtime import LeanLocalLLM

        self.llm = LeanLocalLLM(model, device="cpu", dtype=dtype, temperature=0.0, record_usage=False)
        self.name = self.llm.model_name
        self.batch_size = batch_size
        self.has_loglik = True

    def prompt_ids(self, messages: Messages) -> list[int]:
        return self.llm.chat_prompt_ids(messages)[0]

    def answer(self, prompts: Sequence[Messages], *, max_new_tokens: int) -> list[Answer]:
        """Greedy answers, ``batch_size`` prompts at a time (similar lengths batched together)."""
        ids = [self.prompt_ids(m) for m in prompts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[Answer | None] = [None] * len(ids)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            results = self.llm.generate_batch([ids[i] for i in chunk], max_new_tokens=max_new_tokens)
            for i, result in zip(chunk, results, strict=True):
                out[i] = Answer(result.text.strip(), result.finish_reason)
        return [a for a in out if a is not None]

    def answer_scored(
        self, prompts: Sequence[Messages], golds: Sequence[str], *, max_new_tokens: int
    ) -> list[tuple[Answer, float]]:
        """Greedy answers and gold log-likelihoods (as :meth:`gold_loglik`) in one pass.

        Each batch is prefilled once with every prompt followed by its gold answer (prompts
        left-padded to one length, golds right-padded after them): the logits over the gold
        give its log-likelihood, the logits at the prompt's end the first answer token; the
        KV cache is then cut back to the prompts and greedy decoding goes on from there. The
        answers are those of :meth:`answer` up to floating-point rounding (tests check it), at
        about the cost of the answers alone."""
        ids = [self.prompt_ids(m) for m in prompts]
        gold_ids = [self.llm.encode(g, add_special_tokens=False) for g in golds]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[tuple[Answer, float] | None] = [None] * len(ids)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            results = self._answer_scored_batch([ids[i] for i in chunk], [gold_ids[i] for i in chunk], max_new_tokens)
            for i, result in zip(chunk, results, strict=True):
                out[i] = result
        return [r for r in out if r is not None]

    def _answer_scored_batch(
        self, prompts: list[list[int]], golds: list[list[int]], max_new_tokens: int
    ) -> list[tuple[Answer, float]]:
        import torch

        from lean_plugins.pruning.modeling import forward_cache_kwarg, new_kv_cache

        llm = self.llm
        pad, eos = llm.pad_token_id, llm.eos_token_ids
        longest, gold_len = max(map(len, prompts)), max(1, max(map(len, golds)))
        rows, mask = [], []
        for p, g in zip(prompts, golds, strict=True):
            lead, trail = longest - len(p), gold_len - len(g)
            rows.append([pad] * lead + p + g + [pad] * trail)
            mask.append([0] * lead + [1] * (len(p) + len(g)) + [0] * trail)
        input_ids, attention = torch.tensor(rows), torch.tensor(mask)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        cache = new_kv_cache(llm.model)
        cache_arg = {forward_cache_kwarg(llm.model): cache}
        with torch.inference_mode():
            logits = llm.model(
                input_ids=input_ids,
                attention_mask=attention,
                position_ids=positions,
                **cache_arg,
                use_cache=True,
                logits_to_keep=gold_len + 1,
            ).logits.float()
            # kept columns: longest-1 (after the prompt) .. the last; column j predicts gold token j
            logp = torch.log_softmax(logits[:, :gold_len], dim=-1)
            scores = [
                float(logp[i, torch.arange(len(g)), torch.tensor(g)].mean()) if g else math.nan
                for i, g in enumerate(golds)
            ]
            cache.crop(-gold_len)  # back to the prompts: the answers start there
            attention, positions = attention[:, :longest], positions[:, longest - 1 : longest]
            next_logits = logits[:, 0]
            generated: list[list[int]] = [[] for _ in prompts]
            done = [False] * len(prompts)
            finish = ["max_tokens"] * len(prompts)
            for step in range(max_new_tokens):
                tokens = next_logits.argmax(-1).tolist()
                for i, token in enumerate(tokens):
                    if done[i]:
                        continue
                    if token in eos:
                        done[i], finish[i] = True, "natural"
                    else:
                        generated[i].append(token)
                if all(done) or step == max_new_tokens - 1:
                    break
                feed = torch.tensor([[pad if d else t] for t, d in zip(tokens, done, strict=True)])
                attention = torch.cat([attention, torch.ones(len(prompts), 1, dtype=attention.dtype)], dim=-1)
                positions = positions + 1
                next_logits = llm._forward(feed, cache, attention, positions)  # the runtime's decode step
        texts = [llm.tokenizer.decode(g, skip_special_tokens=True).strip() for g in generated]
        return [(Answer(t, f), s) for t, f, s in zip(texts, finish, scores, strict=True)]

    def answer_one(self, messages: Messages, *, max_new_tokens: int, stopping_criteria: Sequence[Any] = ()) -> Answer:
        result = self.llm.generate(
            self.prompt_ids(messages), max_new_tokens=max_new_tokens, stopping_criteria=list(stopping_criteria)
        )
        return Answer(result.text.strip(), result.finish_reason)

    def gold_loglik(self, messages: Messages, gold: str) -> float:
        """Mean log-probability per token of ``gold`` as the assistant's reply to ``messages``."""
        import torch

        prompt = self.prompt_ids(messages)
        gold_ids = self.llm.encode(gold, add_special_tokens=False)
        if not gold_ids:
            return math.nan
        ids = torch.tensor([prompt + gold_ids])
        with torch.inference_mode():
            logits = self.llm.model(input_ids=ids, logits_to_keep=len(gold_ids) + 1).logits[0].float()
        logp = torch.log_softmax(logits[:-1], dim=-1)
        target = torch.tensor(gold_ids)
        return float(logp[torch.arange(len(gold_ids)), target].mean())


class ChatModelReader:
    """Any LangChain chat model (``init_chat_model`` spec such as ``openai:gpt-4o-mini``)."""

    def __init__(self, spec: str, *, batch_size: int = 8) -> None:
        try:
            from langchain.chat_models import init_chat_model
        except ImportError as exc:
            from lean_plugins.errors import MissingDependencyError

            raise MissingDependencyError(
                f"--llm {spec} needs LangChain's init_chat_model: pip install langchain and the "
                "provider's package (e.g. langchain-openai)."
            ) from exc
        self.model = init_chat_model(spec, temperature=0)
        self.name = spec
        self.batch_size = batch_size
        self.has_loglik = False

    def answer(self, prompts: Sequence[Messages], *, max_new_tokens: int) -> list[Answer]:
        calls = [[(m["role"], m["content"]) for m in messages] for messages in prompts]
        replies = self.model.batch(calls, config={"max_concurrency": self.batch_size}, max_tokens=max_new_tokens)
        return [Answer(str(r.content).strip(), (r.response_metadata or {}).get("finish_reason")) for r in replies]

    def answer_one(self, messages: Messages, *, max_new_tokens: int, stopping_criteria: Sequence[Any] = ()) -> Answer:
        return self.answer([messages], max_new_tokens=max_new_tokens)[0]

    def gold_loglik(self, messages: Messages, gold: str) -> float:
        return math.nan

    def answer_scored(
        self, prompts: Sequence[Messages], golds: Sequence[str], *, max_new_tokens: int
    ) -> list[tuple[Answer, float]]:
        """Answers; a provider's model gives no log-likelihood (NaN)."""
        return [(a, math.nan) for a in self.answer(prompts, max_new_tokens=max_new_tokens)]


def make_reader(spec: str, *, dtype: str = "auto", batch_size: int = 8) -> LocalReader | ChatModelReader:
    """A reader from ``--llm``: a packaged model name, a local folder, or ``provider:model``."""
    from lean_plugins.packaged_models import packaged_model

    text = spec.strip()
    if not text:
        raise ConfigurationError("--llm is empty; pass smollm2-135m-instruct, a model folder or provider:model.")
    if packaged_model(text) is not None or Path(text).expanduser().exists() or text.startswith("local:"):
        return LocalReader(text.removeprefix("local:"), dtype=dtype, batch_size=batch_size)
    if ":" in text:
        return ChatModelReader(text, batch_size=batch_size)
    return LocalReader(text, dtype=dtype, batch_size=batch_size)  # a hub id: resolved like any model
