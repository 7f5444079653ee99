"""Benchmark of layer 1 (input compression): quality, answer survival, figures, rate, speed.

* Keep-F1: on the held-out test split of the sentence-compression pairs (never trained on),
  each original goes through the public ``LeanCompressor.compress(text, rate=r)`` with ``r``
  the reference's word keep ratio; the kept words are scored against the reference's. The
  baselines keep the same number of words: random, the first words, and a stop-word /
  frequency heuristic (drop stop words, then the words most frequent in the training split).
* Answer survival: the 13 SQuAD development articles (*Normans* + 12), answerable questions;
  the share whose answer text is still verbatim in the compressed paragraph, per article and
  over all, with the question (relevance weights refitted with that article left out) and
  without (the answer-word bonus chosen on the other articles).
* Figures with their nouns: of the numbers kept in those compressed paragraphs, the share
  whose sentence keeps at least one content word besides units.
* Rate control: actual/asked token rate for inputs of 50 to 50,000 tokens.
* Speed: cl100k tokens per second end to end at 2k and 20k tokens, with and without a
  question, and ``llmlingua.PromptCompressor`` (its own ``compress_prompt``) with a randomly
  initialised BertForTokenClassification of the size of ``llmlingua-2-bert-base-multilingual-cased``
  (same architecture, hence the same speed as the real model). Same inputs, same run.

    python scripts/bench_compress.py [--quick] [--markdown-out PATH]
"""

from __future__ import annotations

import argparse
import bisect
import collections
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lean_plugins.compress import LeanCompressor
from lean_plugins.compress.data import (
    PAIRS_FILE,
    SQUAD_FILES,
    keep_f1,
    load_pairs,
    load_squad_articles,
    split_pairs,
    words,
)
from lean_plugins.compress.language import ENGLISH_STOPWORDS
from lean_plugins.compress.relevance import (
    caching_encoder,
    fit_relevance,
    shipped_relevance_model,
    training_rows,
)
from lean_plugins.compress.spans import is_content_word, sentence_spans
from lean_plugins.devices import CPU_AUTO_WITHOUT_BFLOAT16, cpu_summary
from lean_plugins.paths import shared_data_dir
from lean_plugins.tokens import count_tokens, use_offline_tiktoken

TARGET_F1 = 0.82
OURS = "LeanCompressor (embedded MiniLM)"
TOKEN_BUDGET_ROW = "same, target_tokens = the reference's cl100k tokens"
ALL_NUMBERS_ROW = "same, protect_numbers=True (every number kept, with its group)"
TARGET_SURVIVAL = {(0.5, True): 0.95, (0.33, True): 0.85, (0.5, False): 0.75}
TARGET_TPS = {True: 3000, False: 5000}
FREE_BONUS_GRID = (0.0, 0.1, 0.15, 0.25, 0.5)


def kept_mask(original_words: list[str], output_words: list[str]) -> list[bool]:
    """Which original words the output kept (the output is a subsequence of them)."""
    mask = [False] * len(original_words)
    j = 0
    for i, w in enumerate(original_words):
        if j < len(output_words) and output_words[j] == w:
            mask[i] = True
            j += 1
    return mask


def variant(compressor: LeanCompressor, **options: bool) -> LeanCompressor:
    """A compressor with other ``options`` on the same loaded model (no second load)."""
    other = LeanCompressor(record_ledger=False, **options)
    other._prompt_compressor = compressor.prompt_compressor
    return other


#: Precisions whose keep-F1 is measured beside the default's (``auto``): float32, what ``auto``
#: runs on a CPU without bfloat16 in hardware, and int8.
QUALITY_DTYPES = ("float32", "int8")


def dtype_row(dtype: str) -> str:
    return f"same, dtype {dtype} (forced)"


def quality(compressor: LeanCompressor, train, test, seed: int = 0) -> dict[str, float]:
    rng = random.Random(seed)
    memo = compressor._memo
    variants = {
        ALL_NUMBERS_ROW: MemoCompressor(memo, protect_numbers=True),
        "same, protect_defaults=False (no number bonus)": MemoCompressor(memo, protect_defaults=False),
        # each precision with its own model and scores: keep-F1 beside the default's in one run
        **{dtype_row(d): MemoCompressor({}, dtype=d) for d in QUALITY_DTYPES},
    }
    freq = collections.Counter(w.lower() for p in train for w in words(p.original))
    scores: dict[str, list[float]] = collections.defaultdict(list)
    for pair in test:
        ws = words(pair.original)
        ref = pair.labels
        k = sum(ref)
        rate = k / len(ws)
        out = compressor.compress(pair.original, rate=rate).text
        scores[OURS].append(keep_f1(kept_mask(ws, words(out)), ref))
        # The same budget in the compressor's own unit: the reference's kept words in cl100k tokens.
        ref_text = " ".join(w for w, keep in zip(ws, ref, strict=False) if keep)
        out = compressor.compress(pair.original, target_tokens=max(1, count_tokens(ref_text))).text
        scores[TOKEN_BUDGET_ROW].append(keep_f1(kept_mask(ws, words(out)), ref))
        for name, other in variants.items():
            out = other.compress(pair.original, rate=rate).text
            scores[name].append(keep_f1(kept_mask(ws, words(out)), ref))
        probs = compressor.word_keep_probabilities(pair.original)
        top_k = set(np.argsort(-probs, kind="stable")[:k].tolist())
        scores["same model, top-k words (k = reference's count), no protection"].append(
            keep_f1([i in top_k for i in range(len(ws))], ref)
        )
        chosen = set(rng.sample(range(len(ws)), k))
        scores["random drop"].append(keep_f1([i in chosen for i in range(len(ws))], ref))
        scores["first words"].append(keep_f1([i < k for i in range(len(ws))], ref))
        rank = sorted(
            range(len(ws)),
            key=lambda i: (ws[i].lower().strip(".,;:!?\"'()") in ENGLISH_STOPWORDS, freq[ws[i].lower()], i),
        )
        top = set(rank[:k])
        scores["stop-word/frequency"].append(keep_f1([i in top for i in range(len(ws))], ref))
    return {name: float(np.mean(v)) for name, v in scores.items()}


class MemoCompressor(LeanCompressor):
    """The public compressor with its per-word model scores computed once per text.

    Answer survival compresses each paragraph once per question; the classifier's scores do
    not depend on the question, so the benchmark computes them once (selection, relevance
    and everything after still run per call).
    """

    def __init__(self, memo: dict, **options) -> None:
        super().__init__(record_ledger=False, **options)
        self._memo = memo

    def _score(self, texts: list[str]) -> list[np.ndarray]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if missing:
            self._memo.update(zip(missing, super()._score(missing), strict=False))
        return [self._memo[t].copy() for t in texts]


SURVIVAL_SETTINGS = [(0.5, True), (0.33, True), (0.5, False), (0.33, False)]


def setting_name(rate: float, with_question: bool) -> str:
    return f"rate {rate}, {'question given' if with_question else 'no question'}"


def survived(compressor: LeanCompressor, items, rate: float, with_question: bool, figures: list) -> int:
    """Questions whose answer is verbatim in the compressed paragraph; figures collects
    (kept numbers, of them with a content word in their sentence) per call."""
    hits, done = 0, {}
    for item in items:
        query = item.question if with_question else None
        key = (item.context, query)
        if key not in done:
            text = compressor.compress(item.context, rate=rate, query=query).text
            done[key] = text
            figures.append(figure_context(item.context, text))
        hits += any(a in done[key] for a in item.answers)
    return hits


def figure_context(original: str, output: str) -> tuple[int, int]:
    """(kept numbers, kept numbers whose sentence keeps a content word besides units)."""
    ws = words(original)
    mask = kept_mask(ws, words(output))
    offsets = [m.start() for m in re.finditer(r"\S+", original)]
    sentence_of = [bisect.bisect_right([a for a, _ in sentence_spans(original)], o) - 1 for o in offsets]
    has_content = collections.defaultdict(bool)
    for w, kept, s in zip(ws, mask, sentence_of, strict=False):
        if kept and is_content_word(w):
            has_content[s] = True
    kept_numbers = [s for w, kept, s in zip(ws, mask, sentence_of, strict=False) if kept and re.search(r"\d", w)]
    return len(kept_numbers), sum(has_content[s] for s in kept_numbers)


def reference_rate_f1(compressor: LeanCompressor, pairs) -> float:
    """Mean keep-F1 of ``compress(text, rate=r)`` over ``pairs``, r = the reference's word keep ratio."""
    scores = []
    for pair in pairs:
        ws = words(pair.original)
        out = compressor.compress(pair.original, rate=sum(pair.labels) / len(ws)).text
        scores.append(keep_f1(kept_mask(ws, words(out)), pair.labels))
    return float(np.mean(scores))


def validation_f1(memo: dict, val, bonus: float) -> float:
    """Keep-F1 on the validation pairs (not the test split) with ``answer_word_bonus=bonus``."""
    return reference_rate_f1(MemoCompressor(memo, answer_word_bonus=bonus), val)


def answer_survival(data: Path, quick: bool, val):
    """Per article and setting: answers kept, with the relevance weights fitted on the other
    articles (question given) and the query-free answer-word bonus chosen on them, among the
    bonuses that do not lower keep-F1 on the validation pairs (against no bonus)."""
    articles = load_squad_articles([data / f for f in SQUAD_FILES])
    if quick:
        articles = [(title, items[:25]) for title, items in articles[:4]]
    memo: dict = {}
    shipped = shipped_relevance_model()
    encode = caching_encoder()
    names = [setting_name(rate, q) for rate, q in SURVIVAL_SETTINGS]
    rows = [training_rows(items, encode, shipped) for _, items in articles]
    figures: dict[str, list] = collections.defaultdict(list)
    table: dict[str, dict[str, int]] = {title: {} for title, _ in articles}
    for k, (title, items) in enumerate(articles):
        others = [r for j, rs in enumerate(rows) if j != k for r in rs]
        left_out = MemoCompressor(memo, relevance_model=fit_relevance(others, shipped.question_types))
        for rate, with_question in SURVIVAL_SETTINGS[:2]:
            name = setting_name(rate, with_question)
            table[title][name] = survived(left_out, items, rate, with_question, figures[name])
    # Query free: the answer-word bonus is chosen on the other articles, per left-out article.
    free: dict[float, dict[str, dict[str, int]]] = {}
    for bonus in FREE_BONUS_GRID:
        compressor = MemoCompressor(memo, answer_word_bonus=bonus)
        free[bonus] = {
            title: {
                setting_name(rate, False): survived(compressor, items, rate, False, figures[f"free {bonus} {rate}"])
                for rate, _ in SURVIVAL_SETTINGS[2:]
            }
            for title, items in articles
        }
    val_f1 = {b: validation_f1(memo, val, b) for b in FREE_BONUS_GRID}
    # "without losing keep-F1": a bonus may not lower keep-F1 on the validation pairs
    eligible = [b for b in FREE_BONUS_GRID if val_f1[b] >= val_f1[0.0]]
    chosen = {}
    for title, _ in articles:
        score = {b: sum(free[b][t][setting_name(0.5, False)] for t, _ in articles if t != title) for b in eligible}
        chosen[title] = max(eligible, key=lambda b: (score[b], -b))
        table[title].update(free[chosen[title]][title])
    shipped_bonus = MemoCompressor(memo).answer_word_bonus
    for rate, _ in SURVIVAL_SETTINGS[2:]:
        figures[setting_name(rate, False)] = figures[f"free {shipped_bonus} {rate}"]
    counts = {title: len(items) for title, items in articles}
    no_bonus = {name: sum(free[0.0][t][name] for t in counts) for name in names[2:]}
    # The shipped weights (fitted on all 13 articles), for comparison with the left-out figures.
    in_sample = MemoCompressor(memo)
    fitted = {
        name: sum(survived(in_sample, items, rate, True, []) for _, items in articles)
        for (rate, _), name in zip(SURVIVAL_SETTINGS[:2], names, strict=False)
    }
    return table, counts, figures, chosen, no_bonus, fitted, val_f1, free


def retrieval_survival(data: Path, quick: bool) -> dict[str, dict[float, tuple[int, int]]]:
    """RAG-style: each sampled question's paragraph among 9 other paragraphs of its article,
    compressed as one call with the question, with the embedding cap and embedding every
    sentence. Per setting and rate: (answers kept, questions)."""
    from lean_plugins.compress import compressor as core

    rng = random.Random(0)
    cases = []
    for _, items in load_squad_articles([data / f for f in SQUAD_FILES]):
        paragraphs = sorted({item.context for item in items})
        for item in rng.sample(items, min(len(items), 5 if quick else 25)):
            docs = [*rng.sample([p for p in paragraphs if p != item.context], min(9, len(paragraphs) - 1)), item.context]
            rng.shuffle(docs)
            cases.append((docs, item))
    memo: dict = {}
    out: dict[str, dict[float, tuple[int, int]]] = {}
    cap = core.EMBED_ALL_UP_TO
    for name, limit in ((f"embed {cap} sentences or a quarter (default)", cap), ("embed every sentence", 10**9)):
        core.EMBED_ALL_UP_TO = limit
        try:
            compressor = MemoCompressor(memo)
            out[name] = {
                rate: (
                    sum(
                        any(a in compressor.compress(docs, rate=rate, query=item.question).text for a in item.answers)
                        for docs, item in cases
                    ),
                    len(cases),
                )
                for rate in (0.5, 0.33)
            }
        finally:
            core.EMBED_ALL_UP_TO = cap
    return out


def make_long_text(test, n_tokens: int) -> str:
    sentences = [p.original for p in test]
    parts, total, i = [], 0, 0
    while total < n_tokens:
        s = sentences[i % len(sentences)]
        parts.append(s)
        total += count_tokens(s) + 1
        i += 1
        if i % 6 == 0:
            parts.append("\n\n")
    return " ".join(parts).replace(" \n\n ", "\n\n")


def rate_control(compressor: LeanCompressor, test, sizes: list[int]) -> list[tuple[int, float, float, float]]:
    rows = []
    for n in sizes:
        text = make_long_text(test, n)
        for rate in (0.5, 0.33):
            result = compressor.compress(text, rate=rate)
            rows.append((result.origin_tokens, rate, result.rate, abs(result.rate - rate) / rate))
    return rows


def random_mbert_folder(tokenizer_source: str) -> str:
    """A randomly initialised BertForTokenClassification of llmlingua-2-bert-base-multilingual-cased size.

    The folder name holds ``bert-base-multilingual-cased`` because llmlingua picks its
    word-merging code from the model name. The tokenizer is MiniLM's (a BERT WordPiece one),
    since the multilingual vocabulary is not available offline; the model keeps mBERT's
    119,547-row embedding, which does not change the speed of a forward pass.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=119547,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        type_vocab_size=2,
        num_labels=2,
        architectures=["BertForTokenClassification"],
    )
    folder = Path(tempfile.mkdtemp()) / "llmlingua-2-bert-base-multilingual-cased-random"
    BertForTokenClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(folder)
    return str(folder)


def tokens_per_second(fn, text: str, repeats: int) -> float:
    fn(text[:2000])  # warm-up
    n = count_tokens(text)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - start)
    return n / best


QUESTION = "Which company did the minister say would build the new bridge and when?"
#: Precisions timed side by side: the default, and the float32-only path forced (what ``auto``
#: is on a CPU without bfloat16 in hardware) and the opt-in int8 one.
SPEED_DTYPES = ("auto", "float32", "int8")
MBERT_ROW = "PromptCompressor.compress_prompt, mBERT-size (random)"


def speed_row(dtype: str, resolved: str, with_question: bool) -> str:
    forced = "" if dtype == "auto" else ", forced"
    return f"{OURS}, dtype {dtype}{' = ' + resolved if dtype == 'auto' else forced}, {'question given' if with_question else 'no question'}"


def interleaved(cases: dict[str, object], text: str, repeats: int) -> dict[str, tuple[float, float]]:
    """Per case: (tokens per second, median of ``repeats`` wall times; tokens per CPU-second,
    median too), the cases run in turn within each repeat so that load changes hit them alike."""
    n = count_tokens(text)
    walls: dict[str, list[float]] = collections.defaultdict(list)
    cpus: dict[str, list[float]] = collections.defaultdict(list)
    for fn in cases.values():
        fn(text[:2000])  # warm-up (loads the model)
    for _ in range(repeats):
        for name, fn in cases.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn(text)
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)
    return {name: (n / float(np.median(walls[name])), n / float(np.median(cpus[name]))) for name in cases}


def speed(test, sizes: list[int], repeats: int) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]]]:
    """Tokens per second and per CPU-second (medians of interleaved repeats) per compressor and
    input size: ours in each of ``SPEED_DTYPES`` with and without the question, and at the
    smallest size llmlingua's own pipeline with our model and with the mBERT-size one."""
    from llmlingua import PromptCompressor

    use_offline_tiktoken()
    ours = {dtype: LeanCompressor(record_ledger=False, dtype=dtype) for dtype in SPEED_DTYPES}
    ours_in_llmlingua = ours["float32"].prompt_compressor
    folder = random_mbert_folder(ours_in_llmlingua.model.config._name_or_path or str(ours["float32"].model))
    baseline = PromptCompressor(model_name=folder, device_map="cpu", model_config={}, use_llmlingua2=True)
    wall: dict[str, dict[int, float]] = collections.defaultdict(dict)
    cpu: dict[str, dict[int, float]] = collections.defaultdict(dict)
    for n in sizes:
        cases = {}
        for dtype, c in ours.items():
            cases[speed_row(dtype, c.resolved_dtype, False)] = lambda t, c=c: c.compress(t, rate=0.5)
            cases[speed_row(dtype, c.resolved_dtype, True)] = lambda t, c=c: c.compress(t, rate=0.5, query=QUESTION)
        if n == min(sizes):  # llmlingua's own pipeline: at the smallest size only (slow)
            cases["PromptCompressor.compress_prompt, our MiniLM model (float32)"] = (
                lambda t: ours_in_llmlingua.compress_prompt([t], rate=0.5)
            )
            cases[MBERT_ROW] = lambda t: baseline.compress_prompt([t], rate=0.5)
        for name, (tps, tpc) in interleaved(cases, make_long_text(test, n), repeats).items():
            wall[name][n], cpu[name][n] = tps, tpc
    return wall, cpu


def query_embedding_ms(questions: list[str], repeats: int = 3) -> dict[str, dict[str, float]]:
    """The cache's query embedding: one question per call through the shared encoder (float32,
    the cache's) and its opt-in int8 variant, interleaved. Per precision: p50 and p90 wall ms,
    and CPU ms per query."""
    from lean_plugins.embeddings import SentenceEncoder

    encoders = {"float32 (shared encoder, the cache's)": SentenceEncoder(), "int8 (opt-in)": SentenceEncoder(dtype="int8")}
    walls: dict[str, list[float]] = collections.defaultdict(list)
    cpu: dict[str, float] = collections.defaultdict(float)
    for encoder in encoders.values():
        encoder.encode(questions[:8])
    for _ in range(repeats):
        for question in questions:
            for name, encoder in encoders.items():
                wall, start = time.perf_counter(), time.process_time()
                encoder.encode(question)
                walls[name].append((time.perf_counter() - wall) * 1e3)
                cpu[name] += (time.process_time() - start) * 1e3
    return {
        name: {"p50": float(np.percentile(w, 50)), "p90": float(np.percentile(w, 90)), "cpu": cpu[name] / len(w)}
        for name, w in walls.items()
    }


#: Runs torch as on a CPU with AVX2 and FMA but no AVX-512, VNNI or bfloat16 (most laptops,
#: AMD Zen 2/3, many cloud x86 machines): ATen, MKL, oneDNN and fbgemm kernels capped at AVX2;
#: ``devices.cpu_has_native_bfloat16`` reads the oneDNN cap, so ``auto`` sees no bfloat16.
AVX2_ONLY_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
}


def speed_avx2_only(sizes: list[int], threads: int, quick: bool) -> dict:
    """:func:`speed` and :func:`query_embedding_ms` in a child process under :data:`AVX2_ONLY_ENV`
    (the caps must be set before torch loads)."""
    import json
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speed.json"
        cmd = [sys.executable, __file__, "--speed-json", str(out), "--threads", str(threads),
               "--speed-sizes", ",".join(map(str, sizes))] + (["--quick"] if quick else [])
        subprocess.run(cmd, env={**os.environ, **AVX2_ONLY_ENV}, check=True)
        result = json.loads(out.read_text())
    to_int = lambda table: {name: {int(n): v for n, v in by.items()} for name, by in table.items()}  # noqa: E731
    return {"wall": to_int(result["wall"]), "cpu": to_int(result["cpu"]), "embed": result["embed"],
            "capability": result["capability"]}


def speed_json(path: Path, sizes: list[int], quick: bool) -> int:
    """The child of :func:`speed_avx2_only`: timings as JSON."""
    import json

    import torch

    data = shared_data_dir()
    _, _, test = split_pairs(load_pairs(data / PAIRS_FILE))
    wall, cpu = speed(test, sizes, 3)
    embed = query_embedding_ms(sample_questions(data, 50 if quick else 200))
    path.write_text(json.dumps({"wall": wall, "cpu": cpu, "embed": embed,
                                "capability": torch.backends.cpu.get_cpu_capability()}))
    return 0


def sample_questions(data: Path, n: int) -> list[str]:
    questions = [item.question for _, items in load_squad_articles([data / f for f in SQUAD_FILES]) for item in items]
    return random.Random(0).sample(questions, n)


def speed_dtype() -> str:
    """What ``dtype="auto"`` (the compressor's default, used by the speed runs) is on this CPU."""
    return LeanCompressor(record_ledger=False).resolved_dtype


def speed_markdown(title: str, wall: dict, cpu: dict, embed: dict, sizes: list[int]) -> list[str]:
    """One CPU's speed table, each of our rows against the mBERT-size baseline, and the query
    embedding table."""
    small = sizes[0]
    base, base_cpu = wall[MBERT_ROW][small], cpu[MBERT_ROW][small]
    return [
        title,
        "",
        "| Compressor | " + " | ".join(f"{n:,} tokens: tok/s | per CPU-s" for n in sizes) + " |",
        "|---|" + "---:|---:|" * len(sizes),
        *[
            f"| {name} | " + " | ".join(f"{by[n]:,.0f} | {cpu[name][n]:,.0f}" if n in by else " | " for n in sizes) + " |"
            for name, by in wall.items()
        ],
        "",
        f"At {small:,} tokens, against the mBERT-size PromptCompressor (wall time; per CPU-second):",
        "",
        *[
            f"* {name.removeprefix(OURS + ', ')}: {by[small] / base:.1f}x; {cpu[name][small] / base_cpu:.1f}x"
            for name, by in wall.items()
            if name.startswith(OURS)
        ],
        "",
        "The cache's query embedding, one SQuAD question per call (the semantic lookup's other steps are in "
        "the cache benchmark):",
        "",
        "| Encoder | p50 ms | p90 ms | CPU ms per query |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {ms['p50']:.1f} | {ms['p90']:.1f} | {ms['cpu']:.1f} |" for name, ms in embed.items()],
        "",
    ]


#: The quality int8 must keep to be what ``auto`` runs on a CPU without bfloat16 (issue 29):
#: keep-F1 within this of float32's on the held-out pairs, answer survival within SURVIVAL_SLACK.
F1_SLACK = 0.005
SURVIVAL_SLACK = 0.005


def precision_survival(data: Path) -> dict:
    """Answer survival of the compressor (and its relevance encoder) in float32 and in int8 (the
    shipped ``quantize.FLOAT32_LINEARS``) on all 13 development articles, each compressed with
    relevance weights fitted on the other 12, and the validation keep-F1 of both: the
    ``scripts/quantize_lab.py`` measurement (word scores and vectors cached per recipe)."""
    import quantize_lab  # scripts/, beside this file
    import survival_lab

    import lean_plugins.embeddings as embeddings
    from lean_plugins import quantize

    articles = load_squad_articles([data / f for f in SQUAD_FILES])
    _, val, _ = split_pairs(load_pairs(data / PAIRS_FILE))
    real = embeddings.get_encoder
    try:
        results = [
            quantize_lab.measure("float32", None, articles, val, embeddings),
            quantize_lab.measure("int8", quantize.FLOAT32_LINEARS, articles, val, embeddings),
        ]
    finally:
        embeddings.get_encoder = real
        embeddings._encoders.clear()
    n = sum(len(items) for _, items in articles)
    rows = {
        setting_name(*setting): tuple(
            sum(h for t, _ in articles for h in r["table"][t][setting]) / n for r in results
        )
        for setting in survival_lab.SETTINGS
    }
    return {"rows": rows, "questions": n, "val_f1": tuple(r["val_f1"] for r in results),
            "float32_linears": list(quantize.FLOAT32_LINEARS)}


def precision_markdown(q: dict, n_quality: int, precision: dict, seconds: float) -> list[str]:
    """The int8 path's quality beside float32's, from the same run as the speeds above."""
    f32, i8 = q[dtype_row("float32")], q[dtype_row("int8")]
    worst = min(b - a for a, b in precision["rows"].values())
    kept = ", ".join(precision["float32_linears"]) or "none"
    ok = i8 >= f32 - F1_SLACK and worst >= -SURVIVAL_SLACK
    return [
        "Quality of the int8 path beside float32 (what `auto` chooses between on a CPU without bfloat16), same run. "
        f"int8: every linear layer but the head and {kept} (kept in float32; `quantize.FLOAT32_LINEARS`, chosen "
        "by `scripts/quantize_lab.py` with each article left out). Answer survival on all "
        f"{precision['questions']:,} questions of the 13 development articles, the compressor and its relevance "
        "encoder in each precision, relevance weights fitted with the article left out:",
        "",
        "| Check | float32 | int8 | int8 - float32 | allowed |",
        "|---|---:|---:|---:|---:|",
        f"| keep-F1, {n_quality} held-out pairs | {f32:.4f} | {i8:.4f} | {i8 - f32:+.4f} | >= -{F1_SLACK} |",
        f"| keep-F1, 425 validation pairs | {precision['val_f1'][0]:.4f} | {precision['val_f1'][1]:.4f} | "
        f"{precision['val_f1'][1] - precision['val_f1'][0]:+.4f} | |",
        *[
            f"| survival, {name} | {a:.2%} | {b:.2%} | {(b - a) * 100:+.2f} pt | >= -{SURVIVAL_SLACK * 100:.1f} pt |"
            for name, (a, b) in precision["rows"].items()
        ],
        "",
        f"Within the limits on all 13 articles: {'yes' if ok else 'no'} (the float32 layers were chosen on "
        "these articles, so these figures are in-sample for that choice; `scripts/quantize_lab.py` prints them "
        "with each article left out, which decides `auto`). `auto` on a CPU without bfloat16: "
        f"`{CPU_AUTO_WITHOUT_BFLOAT16}` (`devices.CPU_AUTO_WITHOUT_BFLOAT16`; {seconds:.0f}s for this check).",
        "",
    ]


def omp_settings() -> str:
    """The OpenMP variables set for the run, as ``" (OMP_NUM_THREADS=2, ...)"``, or ``""``."""
    names = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")
    found = [f"{n}={os.environ[n]}" for n in names if n in os.environ]
    return f" ({', '.join(found)})" if found else ""


def pct(hits: int, n: int) -> str:
    return f"{hits / n:.1%}" if n else "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer pairs, questions and smaller inputs")
    parser.add_argument("--markdown-out", type=Path, default=None)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: OMP_NUM_THREADS when set; else 1 when the load average exceeds the "
        "core count, as OpenMP threads on an oversubscribed machine spin against each other; else torch's default)",
    )
    parser.add_argument("--speed-json", type=Path, default=None, help=argparse.SUPPRESS)  # AVX2-only child
    parser.add_argument("--speed-sizes", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    data = shared_data_dir()
    if data is None:
        print("evaluation data not found (../shared/data or LEAN_PLUGINS_DATA)", file=sys.stderr)
        return 2
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    elif "OMP_NUM_THREADS" not in os.environ and os.getloadavg()[0] > (os.cpu_count() or 1):
        torch.set_num_threads(1)  # OMP_NUM_THREADS set: torch already follows it
    threads = torch.get_num_threads()
    if args.speed_json:
        return speed_json(args.speed_json, [int(n) for n in args.speed_sizes.split(",")], args.quick)
    train, val, test = split_pairs(load_pairs(data / PAIRS_FILE))
    n_quality = 200 if args.quick else len(test)
    compressor = MemoCompressor({})

    started = time.time()
    q = quality(compressor, train, test[:n_quality])
    t_quality = time.time() - started
    print(f"\nKeep-F1 on {n_quality} held-out pairs (rate = reference keep ratio)")
    for name, value in q.items():
        print(f"  {name:40s} {value:.3f}")

    started = time.time()
    table, counts, figures, chosen, no_bonus, fitted, val_f1, free = answer_survival(data, args.quick, val)
    t_survival = time.time() - started
    names = [setting_name(rate, qq) for rate, qq in SURVIVAL_SETTINGS]
    total = sum(counts.values())
    overall = {name: sum(table[t][name] for t in table) for name in names}
    print("\nSQuAD answer survival (answerable questions; left-out articles)")
    for title in table:
        cells = "  ".join(pct(table[title][name], counts[title]) for name in names)
        print(f"  {title[:40]:40s} {counts[title]:4d}  {cells}")
    print(f"  {'all':40s} {total:4d}  " + "  ".join(pct(overall[n], total) for n in names))
    coherence = {name: (sum(k for k, _ in figures[name]), sum(c for _, c in figures[name])) for name in names}
    for name, (kept, with_noun) in coherence.items():
        print(f"  figures kept with a content word, {name}: {pct(with_noun, kept)} of {kept}")

    retrieval = retrieval_survival(data, args.quick)
    print("\nRAG-style: the answer paragraph among 9 others of its article, one call with the question")
    for name, by_rate in retrieval.items():
        print(f"  {name:45s} " + "  ".join(f"rate {r}: {pct(h, n)} of {n}" for r, (h, n) in by_rate.items()))

    sizes = [50, 500, 5000] if args.quick else [50, 500, 5000, 50000]
    rates = rate_control(compressor, test, sizes)
    print("\nRate control")
    for n, asked, got, err in rates:
        print(f"  {n:6d} tokens  asked {asked:.2f}  got {got:.3f}  error {err:.1%}")

    speed_sizes = [2000] if args.quick else [2000, 20000]
    speed_start = os.getloadavg()[0]
    sp, sp_cpu = speed(test, speed_sizes, 3)
    embed_ms = query_embedding_ms(sample_questions(data, 50 if args.quick else 200))
    avx2 = speed_avx2_only(speed_sizes, threads, args.quick)
    load_end = os.getloadavg()[0]
    started = time.time()
    precision = precision_survival(data)
    t_precision = time.time() - started
    print("\nint8 against float32 (the float32-only CPU paths), answer survival on all 13 development articles "
          "(relevance refitted with each left out)")
    for name, row in precision["rows"].items():
        print(f"  {name:28s} float32 {row[0]:.2%}  int8 {row[1]:.2%}  ({(row[1] - row[0]) * 100:+.2f} pt)")
    print(f"\nSpeed, torch threads {threads}{omp_settings()}, load average {speed_start:.1f} -> {load_end:.1f}; {cpu_summary()}")
    for label, (wall, cpu, embed) in {
        "this CPU": (sp, sp_cpu, embed_ms),
        f"AVX2 only (emulated, torch capability {avx2['capability']})": (avx2["wall"], avx2["cpu"], avx2["embed"]),
    }.items():
        print(f"  {label}")
        for name, by_size in wall.items():
            print(f"    {name:75s} " + "  ".join(
                f"{n}: {tps:7.0f} tok/s ({cpu[name][n]:7.0f} per CPU-s)" for n, tps in by_size.items()
            ))
        for name, ms in embed.items():
            print(f"    query embedding, {name:40s} p50 {ms['p50']:.1f} ms  p90 {ms['p90']:.1f} ms  CPU {ms['cpu']:.1f} ms")

    if args.markdown_out:
        args.markdown_out.write_text(
            markdown(q, n_quality, t_quality, table, counts, coherence, chosen, no_bonus, fitted, rates, (sp, sp_cpu),
                     speed_sizes, threads, (speed_start, load_end), t_survival, val_f1, free, retrieval, embed_ms,
                     avx2, (precision, t_precision))
        )
    return 0


def markdown(q, n_quality, t_quality, table, counts, coherence, chosen, no_bonus, fitted, rates, sp, speed_sizes,
             threads, load, t_survival, val_f1, free, retrieval, embed_ms, avx2, precision) -> str:
    f1 = q[OURS]
    names = [setting_name(rate, qq) for rate, qq in SURVIVAL_SETTINGS]
    total = sum(counts.values())
    overall = {name: sum(table[t][name] for t in table) for name in names}
    worst_rate = max(r[3] for r in rates)
    sp, sp_cpu = sp
    short_names = ["0.5, question", "0.33, question", "0.5, no question", "0.33, no question"]
    target_lines = []
    for (rate, with_q), name in zip(SURVIVAL_SETTINGS, names, strict=False):
        target = TARGET_SURVIVAL.get((rate, with_q))
        if target is not None:
            got = overall[name] / total
            worst = min(table, key=lambda t: table[t][name] / counts[t])
            target_lines.append(
                f"* {name}: {got:.1%} over all {total} questions against a target of {target:.0%} "
                f"({'met' if got >= target else f'short by {target - got:.1%}'}); lowest article "
                f"{worst.replace('_', ' ')} {table[worst][name] / counts[worst]:.1%}."
            )
    bonus_counts = collections.Counter(chosen.values())
    lines = [
        "### Quality: word keep-F1 on held-out sentence-compression pairs",
        "",
        f"{n_quality} held-out pairs (10% seeded test split of `compression/google_sentence_compression_pairs.csv`, "
        "never trained on), each compressed with `compress(text, rate=r)`, r = the reference's word keep ratio; "
        "baselines keep the same number of words. `rate` counts cl100k tokens, so at the word ratio the "
        "compressor keeps fewer words than the reference (kept content words and numbers cost more tokens "
        "than dropped function words); the `target_tokens` row gives the compressor the reference's length in "
        "its own unit.",
        "",
        "| Method | Keep-F1 |",
        "|---|---:|",
        *[f"| {name} | {value:.3f} |" for name, value in q.items()],
        "",
        f"Target >= {TARGET_F1}: at the word ratio {'met' if f1 >= TARGET_F1 else f'short by {TARGET_F1 - f1:.3f}'}; "
        f"with the reference's token count {q[TOKEN_BUDGET_ROW]:.3f} "
        f"({'met' if q[TOKEN_BUDGET_ROW] >= TARGET_F1 else 'short'}).",
        "",
        "### Answer survival on 13 SQuAD development articles (answerable questions)",
        "",
        "The share of questions whose answer is verbatim in the compressed paragraph. With the question, "
        "each article is compressed with sentence-relevance weights fitted on the other 12 "
        "(`scripts/train_relevance.py` features); without it, with the answer-word bonus chosen on the other "
        f"12 from {list(FREE_BONUS_GRID)}. The stem table and the top-sentence proximity bonus were chosen the "
        "same way (`scripts/survival_lab.py`; each left-out article chose the shipped values on the other 12, "
        "docs/compressor-model.md). Every figure is on an article left out of tuning.",
        "",
        "| Article | Questions | " + " | ".join(short_names) + " |",
        "|---|---:|" + "---:|" * len(names),
        *[
            f"| {t.replace('_', ' ')} | {counts[t]} | " + " | ".join(pct(table[t][n], counts[t]) for n in names) + " |"
            for t in table
        ],
        f"| **all 13** | **{total}** | " + " | ".join(f"**{pct(overall[n], total)}**" for n in names) + " |",
        "",
        *target_lines,
        "",
        f"For comparison: the shipped relevance weights, fitted on all 13 articles (in-sample), keep "
        f"{pct(fitted[names[0]], total)} at 0.5 and {pct(fitted[names[1]], total)} at 0.33 with the question. "
        f"Without a question and no answer-word bonus: {pct(no_bonus[names[2]], total)} at 0.5, "
        f"{pct(no_bonus[names[3]], total)} at 0.33; the left-out choices of the bonus were "
        + ", ".join(f"{b} ({n} articles)" for b, n in sorted(bonus_counts.items()))
        + ".",
        "",
        "Query-free answer-word bonus (names and number words), all 13 articles, and keep-F1 on the 425 "
        "validation pairs (a bonus may be chosen only if it does not lower keep-F1 there):",
        "",
        "| Bonus | Survival at 0.5, no question | at 0.33 | Validation keep-F1 |",
        "|---:|---:|---:|---:|",
        *[
            f"| {b} | {pct(sum(free[b][t][names[2]] for t in counts), total)} | "
            f"{pct(sum(free[b][t][names[3]] for t in counts), total)} | {val_f1[b]:.3f} |"
            for b in FREE_BONUS_GRID
        ],
        "",
        "RAG-style: each of 25 sampled questions per article, its paragraph shuffled among 9 other paragraphs "
        "of the same article (about 50 sentences), compressed in one call with the question:",
        "",
        "| Sentences embedded for relevance | Answers kept at 0.5 | at 0.33 |",
        "|---|---:|---:|",
        *[f"| {name} | {pct(*by[0.5])} | {pct(*by[0.33])} |" for name, by in retrieval.items()],
        "",
        "### Figures with their nouns",
        "",
        "Of the numbers kept in the compressed paragraphs above, the share whose sentence keeps at least one "
        "content word besides units (`spans.is_content_word`).",
        "",
        "| Setting | Kept numbers | With a content word |",
        "|---|---:|---:|",
        *[f"| {name} | {kept:,} | {pct(c, kept)} |" for name, (kept, c) in coherence.items()],
        "",
        "### Rate control (cl100k tokens)",
        "",
        "| Input tokens | Asked rate | Actual rate | Error |",
        "|---:|---:|---:|---:|",
        *[f"| {n:,} | {asked:.2f} | {got:.3f} | {err:.1%} |" for n, asked, got, err in rates],
        "",
        f"Worst error {worst_rate:.1%} (target: within 2%).",
        "",
        f"### Speed (end to end, rate 0.5, CPU, torch threads {threads}{omp_settings()}, load average {load[0]:.1f} at the start "
        f"and {load[1]:.1f} at the end of the speed pass)",
        "",
        f"Tokens per second (median of 3 repeats, the rows run in turn within each repeat) and tokens per "
        f"CPU-second. Targets: >= {TARGET_TPS[False]:,} without a question, >= {TARGET_TPS[True]:,} with one, "
        ">= 8x the mBERT-size PromptCompressor. The machine is shared with other jobs, so absolute speeds vary "
        "with the load above; ratios in the same run hold better. The mBERT-size model is randomly initialised "
        "with the official model's architecture and size (same speed), with MiniLM's WordPiece tokenizer. "
        "The `float32, forced` rows are what `auto` runs on a CPU without bfloat16 in hardware.",
        "",
        *speed_markdown(f"This CPU: {cpu_summary()}; `dtype auto` is {speed_dtype()} here.",
                        sp, sp_cpu, embed_ms, speed_sizes),
        *speed_markdown(
            "The same CPU run as an AVX2-only one (no AVX-512, VNNI or bfloat16, like most laptops and AMD Zen 2/3; "
            f"emulated with {', '.join(f'{k}={v}' for k, v in AVX2_ONLY_ENV.items())}, torch capability "
            f"{avx2['capability']}), in a child process right after:",
            avx2["wall"], avx2["cpu"], avx2["embed"], speed_sizes,
        ),
        *precision_markdown(q, n_quality, *precision),
        f"Keep-F1 pass took {t_quality:.0f}s; answer survival {t_survival:.0f}s; the int8 check {precision[1]:.0f}s.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
