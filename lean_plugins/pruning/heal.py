"""Healing a pruned model: knowledge distillation from the dense model it was cut from.

Structured pruning removes whole heads, channels and layers; what is left still computes, but
the pieces no longer fit each other. Every strong pruning method recovers afterwards
(LLM-Pruner tunes LoRA on the language-model loss, Minitron and Sheared-LLaMA distil from the
dense model). :func:`heal` does both at once: the loss is

    kd_weight * T^2 * KL(teacher_T || student_T)  +  (1 - kd_weight) * cross-entropy

on windows of the healing text, where ``_T`` are the next-token distributions at temperature
``T``. The dense teacher gives a full distribution per token (far more signal per step than the
one-hot next token), which is why a few hundred steps recover most of the damage.

Two ways to update the student:

- ``mode="full"``: every weight trains (small models: cheap, and the best recovery).
- ``mode="lora"``: rank-``lora_rank`` adapters on every linear layer of the decoder, merged into
  the weights at the end, so the healed model has exactly the pruned shapes and loads with
  plain ``from_pretrained`` (uniform) or :func:`lean_plugins.pruning.load_model` (non-uniform).
  Needs far less optimiser memory on large models.

``mode="auto"`` picks ``full`` under :data:`FULL_FINETUNE_MAX_PARAMS` parameters.

Runs are seeded: the same inputs, seed and thread count give identical weights.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lean_plugins._optional import require
from lean_plugins.errors import ConfigurationError
from lean_plugins.pruning.evaluate import Document, document_ids, is_conversation

#: ``mode="auto"`` fine-tunes every weight of models below this many parameters, LoRA above.
FULL_FINETUNE_MAX_PARAMS = 300_000_000

#: Decoder linear layers that get LoRA adapters (Llama / Mistral / Qwen2 names).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

MODES = ("auto", "full", "lora")

#: Compute dtypes of :func:`heal`: ``bfloat16`` runs the forward passes (student and teacher) under
#: ``torch.autocast``; the trained weights and the optimiser state stay float32.
COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclass
class HealReport:
    """What :func:`heal` did."""

    mode: str
    steps: int
    batch_size: int
    seq_len: int
    tokens_seen: int
    seconds: float
    trainable_parameters: int
    kd_weight: float
    temperature: float
    learning_rate: float
    seed: int
    #: Process CPU seconds of the training loop (all threads; steadier than ``seconds`` on a
    #: shared machine).
    cpu_seconds: float = 0.0
    #: Steps asked for; ``steps`` is fewer when ``max_cpu_seconds`` or ``should_stop`` ended the run.
    planned_steps: int = 0
    compute_dtype: str = "float32"
    embeddings_trained: bool = True
    #: Mean training loss over the first and the last tenth of the steps.
    loss_start: float = float("nan")
    loss_end: float = float("nan")
    losses: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("losses")
        return out


def token_stream(tokenizer: Any, texts: Sequence[Document]) -> list[int]:
    """The healing documents as one token stream. Texts start with BOS and end with EOS where the
    tokenizer has them, so windows that cross a boundary see a real document break; conversations
    are rendered with the chat template, which marks every turn's start and end itself."""
    eos = getattr(tokenizer, "eos_token_id", None)
    stream: list[int] = []
    for text in texts:
        ids = document_ids(tokenizer, text)
        stream.extend(ids)
        if not is_conversation(text) and eos is not None and (not ids or ids[-1] != eos):
            stream.append(int(eos))
    return stream


def teacher_conversations(
    teacher: Any,
    tokenizer: Any,
    prompts: Sequence[Document],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 8,
) -> list[list[dict[str, str]]]:
    """Chat healing data: each prompt (a user message, or a conversation ending with one) with the
    ``teacher``'s greedy answer appended as the assistant turn. Healing a pruned model on these
    teaches it the dense model's answers to prompts like the ones it will serve (instructions, not
    only text). Generated through :class:`~lean_plugins.pruning.runtime.LeanLocalLLM` (the chat
    template the wrappers use), in batches of prompts of similar length."""
    from lean_plugins.pruning.runtime import LeanLocalLLM

    if not getattr(tokenizer, "chat_template", None):
        raise ConfigurationError(
            "Chat healing data needs a tokenizer with a chat template; heal on plain texts instead."
        )
    llm = LeanLocalLLM(teacher, tokenizer, record_usage=False)
    conversations = [
        [{"role": "user", "content": p}] if isinstance(p, str) else [dict(m) for m in p] for p in prompts
    ]
    ids = [llm.chat_prompt_ids(c)[0] for c in conversations]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        results = llm.generate_batch([ids[i] for i in chunk], max_new_tokens=max_new_tokens)
        for i, result in zip(chunk, results, strict=True):
            conversations[i].append({"role": "assistant", "content": result.text.strip()})
    return conversations


def _add_lora(model: Any, rank: int, alpha: float, generator: Any) -> list[tuple[Any, str, Any]]:
    """Wrap every LoRA target of the decoder; returns (parent, name, wrapper) for merging."""
    torch = require("torch", "local")
    nn = torch.nn

    class LoRALinear(nn.Module):
        def __init__(self, base: Any) -> None:
            super().__init__()
            self.base = base
            r = min(rank, base.in_features, base.out_features)
            self.scale = alpha / r
            # Kaiming-uniform like nn.Linear, drawn from the run's own generator (reproducible);
            # drawn on the CPU, where the generator lives, then moved: the same start on any device.
            bound = 1.0 / math.sqrt(base.in_features)
            a = torch.empty(r, base.in_features).uniform_(-bound, bound, generator=generator)
            a = a.to(dtype=base.weight.dtype, device=base.weight.device)
            self.lora_a = nn.Parameter(a)
            self.lora_b = nn.Parameter(torch.zeros(base.out_features, r, dtype=a.dtype, device=a.device))

        def forward(self, x: Any) -> Any:
            return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

        def merge(self) -> Any:
            with torch.no_grad():
                self.base.weight += (self.lora_b @ self.lora_a) * self.scale
            return self.base

    wrapped = []
    for _name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in LORA_TARGETS and isinstance(child, nn.Linear):
                wrapper = LoRALinear(child)
                setattr(module, child_name, wrapper)
                wrapped.append((module, child_name, wrapper))
    if not wrapped:
        raise ConfigurationError(
            f"No decoder linear layer named {', '.join(LORA_TARGETS)} found for LoRA; "
            "heal this model with mode='full'."
        )
    return wrapped


def _find_lora(model: Any) -> list[tuple[Any, str]]:
    """(parent, name) of every LoRA wrapper :func:`_add_lora` put in ``model`` (or in a copy of it)."""
    found = []
    for module in model.modules():
        for child_name, child in module.named_children():
            if hasattr(child, "lora_a") and hasattr(child, "merge"):
                found.append((module, child_name))
    return found


def heal(
    model: Any,
    tokenizer: Any,
    texts: Sequence[Document],
    *,
    teacher: Any | None = None,
    steps: int = 200,
    batch_size: int = 16,
    seq_len: int = 256,
    learning_rate: float | None = None,
    kd_weight: float = 0.5,
    temperature: float = 1.0,
    mode: str = "auto",
    lora_rank: int = 16,
    seed: int = 0,
    compute_dtype: str = "float32",
    train_embeddings: bool = True,
    max_cpu_seconds: float | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[Any, int, list[float]], None] | None = None,
    progress: bool = False,
) -> HealReport:
    """Train the pruned ``model`` in place to recover from pruning; returns a :class:`HealReport`.

    ``teacher`` is the dense model it was pruned from (same tokenizer); without one, healing is
    plain language-model fine-tuning (``kd_weight`` is then ignored). ``texts`` is the healing
    text, never the text you evaluate on: plain texts, or conversations (lists of ``{"role",
    "content"}`` messages, e.g. the dense model's own answers to prompts like the model's use),
    rendered with the tokenizer's chat template, which heals the model for instructions. Windows of ``seq_len`` tokens are drawn from the texts'
    token stream with a generator seeded by ``seed``; ``learning_rate`` defaults to 1e-3 for
    ``full`` and 2e-3 for ``lora``, with a linear warm-up over the first 5% of the steps and a
    cosine decay to a tenth. The model is left in eval mode.

    Cost on a CPU (``docs/pruning.md``): ``compute_dtype="bfloat16"`` runs both forward passes
    under ``torch.autocast`` (about 2x faster on CPUs with AVX512-BF16 / AMX; the weights and the
    optimiser stay float32); ``train_embeddings=False`` freezes the token embedding (and the
    output head tied to it), which pruning never cuts, saving its gradient and optimiser state.
    A bounded run: ``max_cpu_seconds`` stops after the step that passes that much process CPU
    time (the schedule stays the one planned for ``steps``; the report says how many ran), and
    every ``checkpoint_every`` steps (and at the end) ``on_checkpoint(model, steps_done, losses)``
    gets the model as it would be saved (a merged copy in LoRA mode), so a run stopped from
    outside still leaves a usable checkpoint.
    """
    torch = require("torch", "local")
    if mode not in MODES:
        raise ConfigurationError(f"mode must be one of {', '.join(MODES)}, got {mode!r}.")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigurationError(f"steps must be a positive int, got {steps!r}.")
    if not isinstance(batch_size, int) or batch_size < 1 or not isinstance(seq_len, int) or seq_len < 2:
        raise ConfigurationError("batch_size must be >= 1 and seq_len >= 2.")
    if not 0.0 <= kd_weight <= 1.0:
        raise ConfigurationError(f"kd_weight must be between 0 and 1, got {kd_weight!r}.")
    if temperature <= 0:
        raise ConfigurationError(f"temperature must be > 0, got {temperature!r}.")
    if compute_dtype not in COMPUTE_DTYPES:
        raise ConfigurationError(
            f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {compute_dtype!r}."
        )
    if max_cpu_seconds is not None and max_cpu_seconds <= 0:
        raise ConfigurationError(
            f"max_cpu_seconds must be > 0 (or None for no limit), got {max_cpu_seconds!r}."
        )
    if checkpoint_every < 0 or (checkpoint_every and on_checkpoint is None):
        raise ConfigurationError(
            "checkpoint_every needs on_checkpoint (a callable given the model) and must be >= 0."
        )
    if isinstance(texts, str):
        raise ConfigurationError("texts must be a list of documents, not one string; wrap it in a list.")
    window = min(seq_len, int(getattr(model.config, "max_position_embeddings", seq_len) or seq_len))
    stream = token_stream(tokenizer, texts)
    if len(stream) < window + 1:
        raise ConfigurationError(
            f"The healing texts hold {len(stream)} tokens, fewer than one window of {window + 1}; "
            "pass more text or a smaller seq_len."
        )
    if teacher is not None and teacher.config.vocab_size != model.config.vocab_size:
        raise ConfigurationError("The teacher's vocabulary differs from the model's; distil from the dense "
                                 "model this one was pruned from.")  # fmt: skip
    from lean_plugins.pruning.pruner import count_parameters

    if mode == "auto":
        mode = "full" if count_parameters(model) <= FULL_FINETUNE_MAX_PARAMS else "lora"
    lr = learning_rate if learning_rate is not None else (1e-3 if mode == "full" else 2e-3)
    use_teacher = teacher is not None and kd_weight > 0
    weight = kd_weight if use_teacher else 0.0

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    data = torch.tensor(stream, dtype=torch.long)

    wrapped: list = []
    if mode == "lora":
        for p in model.parameters():
            p.requires_grad_(False)
        wrapped = _add_lora(model, lora_rank, alpha=2.0 * lora_rank, generator=generator)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    embedding = model.get_input_embeddings()
    if not train_embeddings and embedding is not None:
        # The output head is the same tensor when tied, so this freezes both.
        embedding.weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    # Weight decay would pull the surviving weights towards zero, away from the dense model.
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        progress_frac = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_frac)))

    if teacher is not None:
        teacher.eval()
    model.train()
    losses: list[float] = []
    iterator: Any = range(steps)
    if progress:
        from tqdm.auto import tqdm

        # tqdm's bar shows the time left, from the measured time per step.
        iterator = tqdm(iterator, desc=f"heal ({mode})", unit="step")
    autocast_dtype = torch.bfloat16 if compute_dtype == "bfloat16" else None

    def forward(net: Any, inputs: Any) -> Any:
        if autocast_dtype is None:
            return net(input_ids=inputs, use_cache=False).logits.float()
        with torch.autocast(device_type=device.type, dtype=autocast_dtype):
            return net(input_ids=inputs, use_cache=False).logits.float()

    def snapshot() -> Any:
        if not wrapped:
            return model
        # LoRA: a merged copy, so the checkpoint has the pruned shapes; training goes on unmerged.
        merged = copy.deepcopy(model)
        for parent, name in _find_lora(merged):
            setattr(parent, name, getattr(parent, name).merge())
        return merged

    def checkpoint(done: int) -> None:
        was_training = model.training
        model.eval()
        on_checkpoint(snapshot(), done, list(losses))  # type: ignore[misc]
        model.train(was_training)

    start = time.perf_counter()
    cpu_start = time.process_time()
    for step in iterator:
        starts = torch.randint(0, len(data) - window, (batch_size,), generator=generator)
        batch = torch.stack([data[s : s + window + 1] for s in starts.tolist()]).to(device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = forward(model, inputs)
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        loss = (1.0 - weight) * ce
        if use_teacher:
            with torch.no_grad():
                teacher_logits = forward(teacher, inputs)
            t = temperature
            kl = torch.nn.functional.kl_div(
                torch.log_softmax(logits / t, dim=-1).reshape(-1, logits.size(-1)),
                torch.log_softmax(teacher_logits / t, dim=-1).reshape(-1, logits.size(-1)),
                log_target=True,
                reduction="batchmean",
            )
            loss = loss + weight * t * t * kl
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
        if progress and hasattr(iterator, "set_postfix"):
            iterator.set_postfix(loss=f"{losses[-1]:.3f}")
        out_of_time = max_cpu_seconds is not None and time.process_time() - cpu_start >= max_cpu_seconds
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps and not out_of_time:
            checkpoint(step + 1)
        if out_of_time:
            break
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    done = len(losses)

    for parent, name, wrapper in wrapped:
        setattr(parent, name, wrapper.merge())
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    tenth = max(1, done // 10)
    report = HealReport(
        mode=mode, steps=done, batch_size=batch_size, seq_len=window, tokens_seen=done * batch_size * window,
        seconds=seconds, trainable_parameters=trainable, kd_weight=weight, temperature=temperature,
        learning_rate=lr, seed=seed, cpu_seconds=cpu_seconds, planned_steps=steps, compute_dtype=compute_dtype,
        embeddings_trained=train_embeddings, loss_start=sum(losses[:tenth]) / tenth,
        loss_end=sum(losses[-tenth:]) / tenth, losses=losses,
    )  # fmt: skip
    _record_in_config(model, report)
    if on_checkpoint is not None:
        on_checkpoint(model, done, list(losses))
    return report


def _record_in_config(model: Any, report: HealReport) -> None:
    """Note the healing under ``lean_pruning.heal`` in the config (saved with the checkpoint)."""
    from lean_plugins.pruning.pruner import PRUNING_KEY

    info = dict(model.config.__dict__.get(PRUNING_KEY) or {})
    info["heal"] = report.to_dict()
    model.config.__dict__[PRUNING_KEY] = info
