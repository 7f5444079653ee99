"""``LeanCompressor``: LLMLingua-2 token-level compression that runs offline and keeps words intact.

The model is loaded by ``llmlingua.PromptCompressor(use_llmlingua2=True)`` (so any official
``microsoft/llmlingua-2-*`` name or folder works), but scoring and selection are done here:

* each word of the input (a run of non-space characters) gets the mean keep probability of
  its tokens, found through the tokenizer's character offsets, so the output is the
  original words with their original case and spacing, even with an uncased model;
* words are kept by probability until their cl100k token count meets the budget
  (``rate`` or ``target_tokens``), which puts the result within a few percent of the target;
  llmlingua's percentile threshold over re-tokenised words undershoots short inputs and
  its per-word tiktoken calls are the post-processing bottleneck of LLMLingua issue #175;
* protected spans (numbers, URLs, e-mails, code, ``force_tokens``, user regexes) are kept;
* with a ``query``, sentences are ranked by all-MiniLM-L6-v2 similarity and the relevant
  ones are filled first (LongLLMLingua's coarse-to-fine idea without a causal LM).
"""

from __future__ import annotations

import bisect
import logging
import math
import random
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from lean_plugins import ledger
from lean_plugins._optional import require, require_extra
from lean_plugins.compress.data import word_spans
from lean_plugins.compress.language import ENGLISH_STOPWORDS, fold, looks_english
from lean_plugins.compress.model import DEFAULT_MODEL_ALIASES, check_token_classifier, resolve_model
from lean_plugins.compress.relevance import RelevanceModel, shipped_relevance_model, stem, term_shares
from lean_plugins.compress.spans import (
    DEFAULT_PROTECTED_PATTERNS,
    NUMBER_PATTERN,
    compile_patterns,
    number_groups,
    protected_word_mask,
    sentence_spans,
)
from lean_plugins.devices import ENCODER_PRECISIONS, resolve_precision, weight_dtype
from lean_plugins.errors import ConfigurationError, ModelLoadError
from lean_plugins.tokens import Tokenizer, count_tokens, get_tokenizer, use_offline_tiktoken

logger = logging.getLogger("lean_plugins.compress")

NonEnglishPolicy = Literal["pass", "compress", "raise"]

# With a query, sentences embedded for relevance: all of a call with up to EMBED_ALL_UP_TO
# sentences, else the EMBED_SHARE of them sharing most of the question's words.
EMBED_ALL_UP_TO = 32
EMBED_SHARE = 0.25

# Without a query: added to the score of names and number words (``_answer_words``); the
# value the SQuAD development articles chose, each left out in turn (docs/compress.md).
ANSWER_WORD_BONUS = 0.15
# Without a query: subtracted from the score of a content word (not a stop word or number)
# whose stem already occurred earlier in the text, so the budget goes to words said once
# rather than to the paragraph's topic repeated. 0.05 of {0, 0.025, 0.05, 0.075, 0.1}, the
# choice on every 12 of the 13 SQuAD development articles (answer survival at 0.5 without a
# question, left out: 68.92% against 68.42%; validation keep-F1 0.8335 against 0.8334).
REPEATED_WORD_PENALTY = 0.05

# llmlingua picks its word-merging code from a substring of ``model_name`` and raises a bare
# NotImplementedError for any other name; these are the two names it knows, by tokenizer style.
_DISPATCH_WORDPIECE = "bert-base-multilingual-cased"
_DISPATCH_SENTENCEPIECE = "xlm-roberta-large"


@dataclass
class CompressionResult:
    """What :meth:`LeanCompressor.compress` returns.

    ``origin_tokens`` and ``compressed_tokens`` are counted with the compressor's tokenizer
    (cl100k_base by default). ``skipped`` names why the text was passed through unchanged
    (``"empty"``, ``"non-english"``, ``"rate>=1"``), or is None.
    """

    text: str
    origin_tokens: int
    compressed_tokens: int
    texts: list[str] = field(default_factory=list)
    skipped: str | None = None
    kept_words: int = 0
    total_words: int = 0

    @property
    def rate(self) -> float:
        """Compressed tokens / original tokens (1.0 for an empty input)."""
        return self.compressed_tokens / self.origin_tokens if self.origin_tokens else 1.0

    @property
    def saved_tokens(self) -> int:
        return self.origin_tokens - self.compressed_tokens

    def stats(self) -> dict[str, Any]:
        """Compression facts for a document's metadata (what the adapters attach)."""
        return {
            "origin_tokens": self.origin_tokens,
            "compressed_tokens": self.compressed_tokens,
            "rate": round(self.rate, 4),
            "skipped": self.skipped,
        }

    def __str__(self) -> str:
        return self.text


def _check_rate(rate: float | None, target_tokens: int | None) -> None:
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
            raise ConfigurationError(
                f"rate must be a number in (0, 1], the share of tokens to keep (0.5 keeps about half); "
                f"got {rate!r}. To ask for '3x' compression pass rate=1/3."
            )
    if target_tokens is not None:
        if isinstance(target_tokens, bool) or not isinstance(target_tokens, int) or target_tokens <= 0:
            raise ConfigurationError(f"target_tokens must be a positive int, got {target_tokens!r}.")


#: Above this many model windows (of ``max_seq_len`` tokens) a text is long: about 1 s of CPU
#: per 8 kB; with ``progress`` a bar shows the windows scored (1 MB takes about 2 minutes).
LONG_INPUT_WINDOWS = 64


class LeanCompressor:
    """Drop low-information words from prompts and retrieved documents.

    Args:
        model: a LLMLingua-2 token classifier (hub name such as
            ``"microsoft/llmlingua-2-xlm-roberta-large-meetingbank"`` or a local folder);
            None (default) uses the embedded all-MiniLM-L6-v2 model, offline.
        device: torch device, e.g. ``"cpu"`` or ``"cuda"``.
        rate: default share of tokens to keep, in (0, 1].
        force_tokens: strings whose words are never dropped (LLMLingua's ``force_tokens``).
        protected_patterns: regexes whose matching words are never dropped, added to the
            defaults (URLs, e-mails, code spans, and numbers with ``protect_numbers``) unless
            ``protect_defaults=False``.
        protect_numbers: never drop a word holding a digit. By default (False) a number is
            ranked high but kept or dropped as one group with its unit words and the word that
            says what it measures (``spans.number_groups``), so a tight budget drops the
            figures of irrelevant sentences instead of turning them into bare figure lists;
            with True every number is kept, and its group with it.
        protect_units: put the unit and magnitude words of a number in its group
            ("4.6 billion years", "July 8, 1905"; ``spans.NUMBER_UNIT_WORDS``).
        tokenizer: how ``origin_tokens``/``compressed_tokens`` and the budget are counted.
        relevance_weight: with a query, how strongly sentence relevance outranks the keep
            probability (0 ignores the query; 1 fills the most relevant sentences first).
        relevance_model: how sentences are ranked against a query; None (default) uses the
            shipped logistic weights (``compress.relevance``), fitted on SQuAD development
            articles.
        answer_word_bonus: without a query, added to the keep probability of names and number
            words (what questions usually ask about; the classifier is uncased and cannot see
            names). Chosen on SQuAD development articles, each left out in turn.
        on_non_english: ``"pass"`` returns non-English text unchanged (default for the
            English-only embedded model), ``"compress"`` compresses anyway (default for other
            models), ``"raise"`` raises ConfigurationError.
        record_ledger: record tokens before/after in the ledger (layer ``"compress"``).
        batch_size: windows of ``max_seq_len`` tokens per forward pass.
        encoder_model: sentence encoder for query relevance (default all-MiniLM-L6-v2).
        dtype: weights' dtype for the classifier and the relevance encoder: ``"auto"``
            (default) is bfloat16 on a GPU and on CPUs with bfloat16 in hardware
            (AVX512-BF16 or AMX; keep scores agree with float32 to a correlation of 0.9999 and
            compression runs 1.6-1.8x faster), float32 elsewhere; or ``"float32"``,
            ``"bfloat16"``, ``"float16"``, or ``"int8"`` (CPU only: linear layers quantised to
            int8, faster but less faithful to float32; docs/compress.md).
    """

    def __init__(
        self,
        model: str | None = None,
        device: str = "cpu",
        *,
        rate: float = 0.5,
        force_tokens: Sequence[str] = (),
        protected_patterns: Sequence[str | re.Pattern[str]] = (),
        protect_defaults: bool = True,
        protect_numbers: bool = False,
        protect_units: bool = True,
        tokenizer: str | Tokenizer = "cl100k_base",
        relevance_weight: float = 1.0,
        relevance_model: RelevanceModel | None = None,
        answer_word_bonus: float = ANSWER_WORD_BONUS,
        on_non_english: NonEnglishPolicy | None = None,
        record_ledger: bool = True,
        batch_size: int = 8,
        max_seq_len: int = 512,
        encoder_model: str | None = None,
        dtype: str = "auto",
    ) -> None:
        require_extra("compress")  # fail here, where the user wrote it, not at the first call
        _check_rate(rate, None)
        if dtype not in ENCODER_PRECISIONS:
            raise ConfigurationError(
                f"dtype must be one of {ENCODER_PRECISIONS}, got {dtype!r}; 'auto' picks the fastest "
                "that keeps float32's quality on this device."
            )
        resolve_precision(dtype, device)  # int8 on a GPU fails here, not at the first call
        if on_non_english not in (None, "pass", "compress", "raise"):
            raise ConfigurationError(
                f"on_non_english must be 'pass', 'compress' or 'raise', got {on_non_english!r}"
            )
        if max_seq_len < 8:
            raise ConfigurationError(f"max_seq_len must be at least 8, got {max_seq_len}")
        self.model = model
        self.device = device
        self.rate = rate
        self.force_tokens = list(force_tokens)
        patterns = list(DEFAULT_PROTECTED_PATTERNS) if protect_defaults else []
        if not protect_numbers:
            patterns = [p for p in patterns if p != NUMBER_PATTERN]
        self._patterns = compile_patterns([*patterns, *protected_patterns], self.force_tokens)
        self.protect_units = protect_units
        self.protect_numbers = protect_numbers and protect_defaults
        self.number_bonus = NUMBER_BONUS if protect_defaults else 0.0
        self.tokenizer = tokenizer
        self.relevance_weight = float(relevance_weight)
        self.relevance_model = relevance_model
        self.answer_word_bonus = float(answer_word_bonus)
        self.is_embedded = model is None or str(model) in DEFAULT_MODEL_ALIASES
        self.on_non_english: NonEnglishPolicy = on_non_english or ("pass" if self.is_embedded else "compress")
        self.record_ledger = record_ledger
        self.batch_size = batch_size
        self.max_seq_len = max_seq_len
        self.encoder_model = encoder_model
        self.dtype = dtype
        self._prompt_compressor: Any = None
        self._model_name: str | None = None
        self._lock = threading.RLock()
        self._cost_cache: dict[str, int] = {}

    # ----------------------------------------------------------------- loading
    @property
    def model_name(self) -> str:
        """The model in use (``lean-plugins/compressor-minilm`` for the embedded one)."""
        if self._model_name is None:
            return "lean-plugins/compressor-minilm" if self.is_embedded else str(self.model)
        return self._model_name

    @property
    def prompt_compressor(self) -> Any:
        """The underlying ``llmlingua.PromptCompressor`` (loaded on first use)."""
        with self._lock:
            if self._prompt_compressor is None:
                self._prompt_compressor = self._load()
            return self._prompt_compressor

    def _load(self) -> Any:
        require("torch", "compress")
        require("transformers", "compress")
        llmlingua = require("llmlingua", "compress")
        path, display = resolve_model(self.model)
        check_token_classifier(path)
        use_offline_tiktoken()  # llmlingua fetches cl100k at construction otherwise
        # init_llmlingua2 reseeds the global RNGs; give the caller theirs back.
        import torch
        from transformers.utils import logging as hf_logging

        states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        # llmlingua adds its "[NEW<i>]" marker tokens and resizes the embeddings, which makes
        # transformers log a warning about new embeddings on every load; they only stand in for
        # llmlingua's own force_tokens, which this class does not use (spans are kept here).
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        from lean_plugins.model_source import transformers_progress

        try:
            with transformers_progress(show=False):  # library use: no "Loading weights" bar
                compressor = llmlingua.PromptCompressor(
                    model_name=path,
                    device_map=self.device,
                    model_config={},  # a fresh dict: llmlingua mutates its default argument
                    use_llmlingua2=True,
                )
        except Exception as exc:
            raise ModelLoadError(
                f"llmlingua could not load the compressor {display!r} from {path!r} "
                f"({type(exc).__name__}: {exc})."
            ) from exc
        finally:
            hf_logging.set_verbosity(verbosity)
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])
        if not getattr(compressor.tokenizer, "is_fast", False):
            raise ModelLoadError(
                f"{display!r} has no fast tokenizer; LeanCompressor needs character offsets "
                "(install `tokenizers` and give the folder a tokenizer.json)."
            )
        precision = self.resolved_dtype
        dtype = weight_dtype(precision, extra="compress")
        compressor.model.to(dtype=dtype).eval()
        if precision == "int8":
            from lean_plugins.quantize import calibration_texts, quantize_int8

            tok = compressor.tokenizer
            calibration = tok(" ".join(calibration_texts()), truncation=True, max_length=self.max_seq_len, return_tensors="pt")
            quantize_int8(compressor.model, [dict(calibration)], skip=("classifier",))
        if dtype != torch.float32:
            # Logits leave the model in float32: llmlingua's own compress_prompt calls .numpy()
            # on them, which has no bfloat16.
            compressor.model.register_forward_hook(_float_logits)
        # So that compressor.compress_prompt(...) works too: give llmlingua a name it dispatches on.
        style = _DISPATCH_SENTENCEPIECE if _uses_sentencepiece(compressor.tokenizer) else _DISPATCH_WORDPIECE
        if style not in compressor.model_name:
            compressor.model_name = f"{path} (llmlingua dispatch: {style})"
        self._model_name = display
        logger.info("loaded compressor %s on %s", display, self.device)
        return compressor

    @property
    def resolved_dtype(self) -> str:
        """The precision the classifier and the relevance encoder run in here (``"auto"``
        resolved for this device and CPU): ``"bfloat16"``, ``"float32"``, ``"float16"`` or
        ``"int8"``."""
        return resolve_precision(self.dtype, self.device)

    # ----------------------------------------------------------------- public API
    #: Show a progress bar (stderr) while a long text (over ``LONG_INPUT_WINDOWS`` model
    #: windows) is scored; ``lean-plugins compress`` turns it on.
    progress: bool = False

    def compress(
        self,
        text: str | Sequence[str],
        *,
        rate: float | None = None,
        target_tokens: int | None = None,
        query: str | None = None,
    ) -> CompressionResult:
        """Compress ``text`` (or several contexts, joined by a blank line) to ``rate`` or
        ``target_tokens`` (which wins when both are given). With ``query``, relevant sentences
        are kept first. Empty, whitespace-only and (by default) non-English text is returned
        unchanged with ``skipped`` set.
        """
        if not isinstance(text, (str, list, tuple)):
            raise TypeError(
                f"LeanCompressor.compress takes a str (or a list of str), got {type(text).__name__}."
            )
        texts = [text] if isinstance(text, str) else list(text)
        parts = self.compress_documents(texts, rate=rate, target_tokens=target_tokens, query=query)
        if isinstance(text, str):
            return parts[0]
        joined = "\n\n".join(p.text for p in parts if p.text)
        skipped = {p.skipped for p in parts}
        return CompressionResult(
            text=joined,
            origin_tokens=sum(p.origin_tokens for p in parts),
            compressed_tokens=self.count(joined),
            texts=[p.text for p in parts],
            skipped=skipped.pop() if len(skipped) == 1 else None,
            kept_words=sum(p.kept_words for p in parts),
            total_words=sum(p.total_words for p in parts),
        )

    def compress_documents(
        self,
        texts: Sequence[str],
        *,
        rate: float | None = None,
        target_tokens: int | None = None,
        query: str | None = None,
        per_document: bool = False,
    ) -> list[CompressionResult]:
        """Compress several documents; one result per document, in order.

        By default they share one budget: with a ``query`` it goes to the most relevant
        sentences across all documents first, so an irrelevant document can come back empty.
        ``per_document=True`` gives each document its own ``rate`` (or ``target_tokens``).
        """
        from lean_plugins.checks import check_text

        if isinstance(texts, str):
            raise TypeError("compress_documents takes a list of str; for one text call compress(text).")
        for i, t in enumerate(texts):
            check_text(t, "text" if len(texts) == 1 else f"texts[{i}]")
        if query is not None:
            check_text(query, "query")
        _check_rate(rate, target_tokens)
        rate = self.rate if rate is None else rate
        origin = [self.count(t) for t in texts]
        results: list[CompressionResult | None] = [None] * len(texts)
        active: list[int] = []
        for i, t in enumerate(texts):
            reason = self._skip_reason(t)
            if reason is not None:
                results[i] = CompressionResult(t, origin[i], origin[i], [t], reason, 0, len(word_spans(t)))
            else:
                active.append(i)
        if per_document:
            groups = [[i] for i in active]
        else:
            groups = [active] if active else []
        todo: list[int] = []
        budgets: list[float] = []
        for group in groups:
            total = sum(origin[i] for i in group)
            budget = target_tokens if target_tokens is not None else rate * total
            if budget >= total:
                for i in group:
                    n = len(word_spans(texts[i]))
                    results[i] = CompressionResult(
                        texts[i], origin[i], origin[i], [texts[i]], "rate>=1", n, n
                    )
            else:
                todo.extend(group)
                budgets.append(budget)
        if todo:
            compressed = self._compress_active(
                [texts[i] for i in todo], budgets, query, shared=not per_document
            )
            for i, result in zip(todo, compressed, strict=False):
                results[i] = result
        final = [r for r in results if r is not None]
        if self.record_ledger and sum(r.origin_tokens for r in final):
            ledger.record(
                layer="compress",
                kind="compress",
                input_before=sum(r.origin_tokens for r in final),
                input_after=sum(r.compressed_tokens for r in final),
                model=self.model_name,
                meta={
                    "documents": len(final),
                    "query": query is not None,
                    "rate": rate,
                    "target_tokens": target_tokens,
                },
            )
        return final

    def word_keep_probabilities(self, text: str) -> np.ndarray:
        """The model's keep probability for each word (``data.word_spans``) of ``text``."""
        return self._score([text])[0]

    def count(self, text: str) -> int:
        """Tokens of ``text`` under the compressor's counting tokenizer."""
        return count_tokens(text, self.tokenizer)

    # ----------------------------------------------------------------- internals
    def _skip_reason(self, text: str) -> str | None:
        if not text.strip():
            return "empty"
        if self.on_non_english != "compress" and not looks_english(text):
            if self.on_non_english == "raise":
                raise ConfigurationError(
                    "The text does not look like English and the compressor model is English-only. "
                    "Pass an official multilingual model (model='microsoft/llmlingua-2-xlm-roberta-large-"
                    "meetingbank') or on_non_english='pass' to return such text unchanged."
                )
            logger.info("passing through text that does not look English (%d chars)", len(text))
            return "non-english"
        return None

    def _word_costs(self, words: list[str]) -> np.ndarray:
        """Tokens of each word with its leading space (how it mostly appears in the output)."""
        cache = self._cost_cache
        missing = [w for w in dict.fromkeys(words) if w not in cache]
        if missing:
            tok = get_tokenizer(self.tokenizer)
            batch = getattr(tok, "encode_ordinary_batch", None)
            spaced = [" " + w for w in missing]
            counts = [len(ids) for ids in batch(spaced)] if batch else [len(tok.encode(s)) for s in spaced]
            if len(cache) > 500_000:
                cache.clear()
            cache.update(zip(missing, counts, strict=False))
        return np.fromiter((cache[w] for w in words), dtype=np.int64, count=len(words))

    def _score(self, texts: list[str]) -> list[np.ndarray]:
        """Mean token keep-probability per word, for each text (windows of max_seq_len)."""
        import torch

        compressor = self.prompt_compressor
        tok, model = compressor.tokenizer, compressor.model
        window = self.max_seq_len - 2
        spans_of = [word_spans(t) for t in texts]
        pieces: list[tuple[int, list[int], np.ndarray]] = []  # (text index, ids, word of each id)
        with self._lock:
            encodings = tok(list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        for ti, spans in enumerate(spans_of):
            ids = encodings["input_ids"][ti]
            word_of = _token_words(encodings["offset_mapping"][ti], spans)
            start = 0
            while start < len(ids):
                end = min(start + window, len(ids))
                if end < len(ids):  # do not cut a word in two
                    cut = end
                    while cut > start + 1 and word_of[cut] == word_of[cut - 1] and word_of[cut] >= 0:
                        cut -= 1
                    end = cut if cut > start + 1 else end
                pieces.append((ti, ids[start:end], word_of[start:end]))
                start = end
        sums = [np.zeros(len(s)) for s in spans_of]
        counts = [np.zeros(len(s)) for s in spans_of]
        order = sorted(range(len(pieces)), key=lambda k: len(pieces[k][1]))
        device = next(model.parameters()).device
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        # [CLS] ... [SEP] for BERT, <s> ... </s> for XLM-RoBERTa (both set cls/sep tokens)
        first = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        last = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        batches = range(0, len(order), self.batch_size)
        if self.progress and len(order) > LONG_INPUT_WINDOWS:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="compress", unit="batch", leave=False)
        with self._lock, torch.inference_mode():
            for b in batches:
                chunk = [pieces[k] for k in order[b : b + self.batch_size]]
                rows = [[first, *ids, last] for _, ids, _ in chunk]
                width = max(len(r) for r in rows)
                input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, row in enumerate(rows):
                    input_ids[r, : len(row)] = torch.tensor(row)
                    mask[r, : len(row)] = 1
                logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
                keep = logits.float().softmax(-1)[..., 1].cpu().numpy()
                for r, (ti, ids, word_of) in enumerate(chunk):
                    # special tokens add one leading position ([CLS] / <s>)
                    probs = keep[r, 1 : 1 + len(ids)]
                    valid = word_of >= 0
                    np.add.at(sums[ti], word_of[valid], probs[valid])
                    np.add.at(counts[ti], word_of[valid], 1)
        out = []
        for s, c in zip(sums, counts, strict=False):
            # a word the tokenizer dropped entirely (control characters) gets a neutral score
            out.append(np.where(c > 0, s / np.maximum(c, 1), 0.5))
        return out

    def _relevance(self, texts: list[str], query: str) -> list[np.ndarray]:
        """Per word: its sentence's similarity to ``query``, min-max scaled over all sentences."""
        from lean_plugins.embeddings import get_encoder

        sentence_lists = [sentence_spans(t) for t in texts]
        flat = [t[a:b] for t, spans in zip(texts, sentence_lists, strict=False) for a, b in spans]
        if not flat or not query.strip():
            return [np.zeros(len(word_spans(t))) for t in texts]
        encoder = get_encoder(self.encoder_model, device=self.device, dtype=self.resolved_dtype)
        # Embedding every sentence of a long input costs more than the classifier pass; only
        # the sentences that share the most of the question's words (IDF-weighted) are
        # embedded, the rest get the lowest similarity found among those.
        n_embed = max(EMBED_ALL_UP_TO, math.ceil(EMBED_SHARE * len(flat)))
        shares = term_shares(query, flat)  # the ranking's features need them too: computed once
        if len(flat) <= n_embed:
            chosen = np.arange(len(flat))
        else:
            chosen = np.sort(np.argsort(-shares[1], kind="stable")[:n_embed])
        # the question and the chosen sentences in one encode call: batched by length together
        vectors = encoder.encode([query, *[flat[i] for i in chosen]])
        cosine = np.full(len(flat), float((vectors[1:] @ vectors[0]).min()))
        cosine[chosen] = vectors[1:] @ vectors[0]
        model = self.relevance_model or shipped_relevance_model()
        sims = model.score(query, flat, cosine, shares)
        low, high = float(sims.min()), float(sims.max())
        scaled = (sims - low) / (high - low) if high > low else np.ones_like(sims)
        out, k = [], 0
        for t, spans in zip(texts, sentence_lists, strict=False):
            words = word_spans(t)
            starts = [a for a, _ in spans]
            rel = np.zeros(len(words))
            for w, (a, _) in enumerate(words):
                j = bisect.bisect_right(starts, a) - 1
                rel[w] = scaled[k + j] if j >= 0 else 0.0
            out.append(rel)
            k += len(spans)
        return out

    def _forced_mask(self, text: str, spans: list[tuple[int, int]], groups: list[list[int]]) -> np.ndarray:
        """Protected words; with ``protect_numbers`` every number group too."""
        protected = np.array(protected_word_mask(text, spans, self._patterns), dtype=bool)
        if self.protect_numbers:
            for members in groups:
                protected[members] = True
        return protected

    def _compress_active(
        self, texts: list[str], budgets: list[float], query: str | None, shared: bool
    ) -> list[CompressionResult]:
        """Compress ``texts``; ``shared``: one budget (``budgets[0]``) over all, else one each."""
        spans_of = [word_spans(t) for t in texts]
        scores = self._score(texts)
        if query and self.relevance_weight:
            for s, rel, t, sp in zip(scores, self._relevance(texts, query), texts, spans_of, strict=False):
                s += self.relevance_weight * (rel + _focus_bonus(t, sp, rel, query))
        else:
            for s, t, sp in zip(scores, texts, spans_of, strict=False):
                if self.answer_word_bonus:
                    s += self.answer_word_bonus * _answer_words(t, sp)
                if REPEATED_WORD_PENALTY:
                    s -= REPEATED_WORD_PENALTY * _repeated_words(t, sp)
        groups = [list(range(len(texts)))] if shared else [[i] for i in range(len(texts))]
        outputs: list[str] = [""] * len(texts)
        kept: list[int] = [0] * len(texts)
        for group, budget in zip(groups, budgets, strict=False):
            group_texts = [texts[i] for i in group]
            group_spans = [spans_of[i] for i in group]
            figures = [
                number_groups(t, sp, units=self.protect_units)
                for t, sp in zip(group_texts, group_spans, strict=False)
            ]
            forced = np.concatenate(
                [self._forced_mask(t, sp, g) for t, sp, g in zip(group_texts, group_spans, figures, strict=False)]
            )
            offsets = np.cumsum([0, *[len(sp) for sp in group_spans]])
            flat_groups = [
                [m + int(off) for m in members] for off, g in zip(offsets, figures, strict=False) for members in g
            ]
            costs = np.concatenate(
                [
                    self._word_costs([t[a:b] for a, b in sp])
                    for t, sp in zip(group_texts, group_spans, strict=False)
                ]
            )
            flat_scores = np.concatenate([scores[i] for i in group])
            flat_words = [t[a:b] for t, sp in zip(group_texts, group_spans, strict=False) for a, b in sp]
            digit = np.array([any(ch.isdigit() for ch in w) for w in flat_words], dtype=bool)
            flat_scores = flat_scores + self.number_bonus * digit
            group_of = {m: members for members in flat_groups for m in members if digit[m]}
            origin_total = sum(self.count(t) for t in group_texts)
            # The budget is in real tokens; word costs sum a little differently from the text's count.
            target = budget * float(costs.sum()) / max(origin_total, 1)
            for _ in range(3):
                keep = _select(flat_scores, costs, forced, target, group_of)
                pieces, pos = [], 0
                for t, sp in zip(group_texts, group_spans, strict=False):
                    pieces.append(
                        (_join_kept(t, sp, keep[pos : pos + len(sp)]), int(keep[pos : pos + len(sp)].sum()))
                    )
                    pos += len(sp)
                got = sum(self.count(piece) for piece, _ in pieces)
                if got <= budget * 1.05 + 1 or got == 0:
                    break
                target *= budget / got  # the joined text tokenised longer than the word sum
            for i, (piece, n_kept) in zip(group, pieces, strict=False):
                outputs[i], kept[i] = piece, n_kept
        return [
            CompressionResult(out, self.count(t), self.count(out), [out], None, k, len(sp))
            for t, sp, out, k in zip(texts, spans_of, outputs, kept, strict=False)
        ]

    def __repr__(self) -> str:
        return (
            f"LeanCompressor(model={self.model_name!r}, device={self.device!r}, dtype={self.dtype!r}, "
            f"rate={self.rate})"
        )


# With a query: the best sentence's words outrank every other word (it is kept whole when the
# budget allows), sentences near the top come next, and names and number words in relevant sentences (capitalised words and
# "two", the usual answers to who/where/how-many questions) outrank the words around them.
TOP_SENTENCE_BONUS = 1.0
# Added to a number's score (it and its group then rank with the best words). 0.25 of
# {0, 0.25, 0.5}: keep-F1 on the validation pairs 0.837 / 0.834 / 0.826, answer survival at
# 0.5 without a question over the 13 SQuAD articles 63.1% / 67.7% / 68.0%.
NUMBER_BONUS = 0.25
NAME_BONUS = 0.5
NEAR_TOP = 0.6
NEAR_TOP_BONUS = 1.0
# In the top sentence, a word that is not one of the question's words gets up to
# PROXIMITY_BONUS, falling linearly to 0 at PROXIMITY_WORDS words from the nearest question
# word: when the top sentence is too long to keep whole, it is thinned away from the answer
# (which sits next to the words the question repeats) rather than at its end. Chosen from
# {0, 0.3, 0.5, 0.8} x {5, 10, 15, 20} words on the SQuAD development articles, each left out
# in turn (survival at 0.5 + 0.33 with the question; docs/compressor-model.md). A word before
# the question word counts PROXIMITY_BEFORE times as far (answers mostly follow the words the
# question repeats: "allowed cardholders to revolve a balance"); from {1, 1.5, 2, 3} the same
# way, 3 for 11 of the 13 left-out articles (left out: 95.07% / 89.55% against 94.98% / 89.55%
# with 1, on 2,172 questions).
PROXIMITY_BONUS = 0.8
PROXIMITY_WORDS = 15
PROXIMITY_BEFORE = 3.0
_QUERY_WORD = re.compile(r"\w+")
_NUMBER_WORDS = frozenset(
    """one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
    sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety
    hundred thousand million billion first second third fourth fifth sixth seventh eighth ninth
    tenth dozen half""".split()
)
_NAME_PARTICLES = frozenset("de del della di da du des la le van von der den of al el bin ibn & and".split())


def _focus_bonus(text: str, spans: list[tuple[int, int]], rel: np.ndarray, query: str) -> np.ndarray:
    """Extra score per word: the top sentence (relevance 1), sentences near it, names and
    number words in relevant sentences (relevance >= 0.5), and in the top sentence the words
    near the question's own words (``PROXIMITY_BONUS``).

    A word that is in the query is not boosted as a name: the reader has it already.
    """
    query_terms = set(_QUERY_WORD.findall(fold(query)))
    top = rel >= 1.0 - 1e-9
    bonus = np.where(top, TOP_SENTENCE_BONUS, np.where(rel >= NEAR_TOP, NEAR_TOP_BONUS, 0.0))
    for i in np.flatnonzero(_answer_words(text, spans) & (rel >= 0.5)):
        core = _QUERY_WORD.findall(fold(text[spans[i][0] : spans[i][1]]))
        if not (core and core[0] in query_terms):
            bonus[i] += NAME_BONUS * rel[i]
    if PROXIMITY_BONUS:
        stems = {stem(w) for w in query_terms if w not in ENGLISH_STOPWORDS}
        in_top = np.flatnonzero(top)
        asked = np.zeros(len(in_top), dtype=bool)
        for k, i in enumerate(in_top):
            core = _QUERY_WORD.findall(fold(text[spans[i][0] : spans[i][1]]))
            asked[k] = bool(core) and core[0] not in ENGLISH_STOPWORDS and stem(core[0]) in stems
        if asked.any() and not asked.all():
            others, at = in_top[~asked], in_top[asked]
            offset = others[:, None] - at[None, :]  # > 0: after the question word
            distance = np.where(offset > 0, offset, -offset * PROXIMITY_BEFORE).min(axis=1)
            bonus[others] += PROXIMITY_BONUS * np.clip(1.0 - distance / PROXIMITY_WORDS, 0.0, None)
    return bonus


def _answer_words(text: str, spans: list[tuple[int, int]]) -> np.ndarray:
    """Words that usually answer who/where/how-many questions: names (capitalised words that
    are not stop words, and particles between two of them: "Pérez de Guzmán", "Roger of
    Montgomery", "Light & Power", "Huggins and Janet Rowley") and number words ("two",
    "third"). The classifier is uncased, so it cannot see names by itself."""
    words = [text[a:b].strip("\"'([{“‘") for a, b in spans]
    bare = [w.lower().rstrip(".,;:!?)]}\"'”’") for w in words]
    capital = [w[:1].isupper() and b not in ENGLISH_STOPWORDS for w, b in zip(words, bare, strict=False)]
    out = np.zeros(len(words), dtype=bool)
    for i, b in enumerate(bare):
        particle = b in _NAME_PARTICLES and 0 < i < len(words) - 1 and capital[i - 1] and capital[i + 1]
        out[i] = capital[i] or particle or b in _NUMBER_WORDS
    return out


def _repeated_words(text: str, spans: list[tuple[int, int]]) -> np.ndarray:
    """Content words (not stop words, not numbers) whose stem occurred earlier in ``text``."""
    out = np.zeros(len(spans), dtype=bool)
    seen: set[str] = set()
    for i, (a, b) in enumerate(spans):
        core = _QUERY_WORD.findall(fold(text[a:b]))
        if not core or core[0] in ENGLISH_STOPWORDS or core[0].isdigit():
            continue
        key = stem(core[0])
        out[i] = key in seen
        seen.add(key)
    return out


def _float_logits(module: Any, inputs: Any, output: Any) -> Any:
    output.logits = output.logits.float()
    return output


def _uses_sentencepiece(tokenizer: Any) -> bool:
    pieces = tokenizer.tokenize("compression works")
    return any(p.startswith("\u2581") for p in pieces)


def _token_words(offsets: Iterable[tuple[int, int]], spans: list[tuple[int, int]]) -> np.ndarray:
    """Index of the word holding each token (by the token's last character), -1 for none."""
    starts = [a for a, _ in spans]
    out = []
    for a, b in offsets:
        if b <= a:
            out.append(-1)
            continue
        j = bisect.bisect_right(starts, b - 1) - 1
        out.append(j if j >= 0 and spans[j][1] > b - 1 else -1)
    return np.array(out, dtype=np.int64)


def _select(
    scores: np.ndarray,
    costs: np.ndarray,
    forced: np.ndarray,
    budget: float,
    group_of: Mapping[int, Sequence[int]] | None = None,
) -> np.ndarray:
    """Forced words, then words by descending score until the budget is reached.

    A word in ``group_of`` (a number) is taken at its own score together with the rest of
    its group (its unit words and the word it measures). The word or group that
    crosses the budget is kept when that lands closer to it. Lower-scored short words are
    not used to fill the remainder: that would trade a good word for filler and move the
    choice away from the model's ranking.
    """
    keep = forced.copy()
    used = float(costs[forced].sum())
    group_of = group_of or {}
    for i in np.argsort(-scores, kind="stable"):
        if used >= budget:
            break
        if keep[i]:
            continue
        members = group_of.get(int(i))
        take = [m for m in members if not keep[m]] if members is not None else [int(i)]
        c = float(costs[take].sum())
        if used + c > budget:
            if used + c - budget < budget - used:
                keep[take] = True
            break
        keep[take] = True
        used += c
    return keep


def _join_kept(text: str, spans: list[tuple[int, int]], keep: np.ndarray) -> str:
    """Kept words with the original spacing; across dropped words the widest line break wins."""
    kept = np.flatnonzero(keep)
    if len(kept) == 0:
        return ""
    parts = [text[: spans[0][0]]]  # the text's own leading whitespace
    prev = None
    for i in kept:
        a, b = spans[i]
        if prev is not None:
            if i == prev + 1:
                parts.append(text[spans[prev][1] : a])
            else:
                gap = text[spans[prev][1] : a]
                newlines = gap.count("\n")
                parts.append(
                    "\n\n" if newlines >= 2 else "\n" if newlines == 1 else text[spans[i - 1][1] : a]
                )
        parts.append(text[a:b])
        prev = i
    parts.append(text[spans[-1][1] :])  # and its trailing whitespace
    return "".join(parts)
