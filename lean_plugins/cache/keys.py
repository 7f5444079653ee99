"""Cache keys: what a cached answer is keyed on, and when a paraphrase may be served.

Everything that can change an answer is in the key. For an LLM-level cache (LangChain's
``set_llm_cache``, LlamaIndex's ``CachedLLM``) both adapters turn a request into plain message
dicts and call :func:`request_key`, which returns

- ``text``: the final user message's text (what is matched, exactly or by meaning), or the
  canonical serialisation of the final message when it is not a plain user text;
- ``scope``: a hash of everything else, i.e. every earlier message (role, name, content parts,
  tool calls with their arguments and ids), the final message's other fields and the request
  parameters. An entry is served only to a request with the same scope;
- ``semantic``: whether ``text`` may be matched by meaning at all (only a final user text).

The cache itself (:class:`~lean_plugins.cache.LeanCache`, for adapters and direct callers
alike) then applies one rule set to the text (:func:`split_prompt`, rules in
``lean_plugins/data/cache_context_rules.json``): a plain question is matched whole; a prompt
that carries retrieved or pasted context is matched by meaning on its question only, within
identical context (the context joins the scope, :func:`match_key`); a prompt whose question
cannot be told apart from its material is served on exact repeats only. A paraphrase match
compares a question with a question, never a prompt whose context outweighs the question.

The model identity and parameters also go into the namespace (:func:`namespace_for`), which is
a hash: model identities and tenant ids are never used raw as file, table or key names.

Exact matching forgives only Unicode form (NFC) and whitespace (:func:`normalize_prompt`):
case, digits, signs, symbols and punctuation all change the key, since each can change the
answer (``12 + 5`` / ``12 - 5``, ``C++`` / ``C#``, ``IN`` / ``in`` in SQL).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import os
import re
import unicodedata
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_CRLF = re.compile(r"\r\n?")
_INNER_SPACES = re.compile(r"(?<=\S)[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_SURROGATE = re.compile("[\ud800-\udfff]")

#: Roles that mark a message as the user's (LangChain's ``human``, LlamaIndex's ``user``).
USER_ROLES = frozenset({"user", "human"})
CONTEXT_RULES_FILE = "cache_context_rules.json"


def normalize_prompt(text: str) -> str:
    """The exact-match form of ``text``: Unicode NFC, and runs of whitespace made one.

    Line endings become ``\\n``; runs of spaces and tabs inside a line become one space, while a
    line's leading indentation is kept (it is meaning in code and YAML); trailing spaces go and
    more than one blank line becomes one. Case, digits, signs, symbols and punctuation are
    kept: ``"What is 12 + 5?"`` and ``"What is 12 - 5?"`` have different forms.
    """
    text = _CRLF.sub("\n", unicodedata.normalize("NFC", text))
    lines = [_INNER_SPACES.sub(" ", line).rstrip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def has_lone_surrogate(text: str) -> bool:
    """True when ``text`` holds a lone UTF-16 surrogate, which no store can encode as UTF-8."""
    return _SURROGATE.search(text) is not None


def key_hash(prompt: str, scope: str = "") -> str:
    """The exact-match key of ``prompt`` under ``scope``: sha256 of both, ``prompt`` normalised."""
    raw = normalize_prompt(prompt) if not scope else f"{scope}\x00{normalize_prompt(prompt)}"
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def namespace_for(model: str | None = None, tenant: str | None = None) -> str:
    """Namespace of a model identity and an optional tenant: ``"ns-"`` + a sha256 prefix.

    Different (model, tenant) pairs give different namespaces; the raw strings do not appear.
    """
    raw = f"model={model or ''}\x00tenant={tenant or ''}"
    return "ns-" + hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def storage_id(namespace: str) -> str:
    """A short, safe storage name for any namespace string (file, table and key prefix)."""
    return hashlib.sha256(namespace.encode("utf-8")).hexdigest()[:24]


# -- model identity -----------------------------------------------------------------------------
_SMALL_FILE = 4 * 1024 * 1024
_fingerprints: Any = None  # weakref.WeakKeyDictionary, made on first use


def folder_fingerprint(model: str | os.PathLike[str]) -> str | None:
    """A short hash of a local model folder, or ``None`` when ``model`` is not a folder (a hub name).

    Small files (configs with their pruning metadata, tokenizer files and chat template) are
    hashed by content; weight files by name, size and modification time, so a folder pruned
    again in place gets a new identity without reading gigabytes per call.
    """
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return None
    files = tuple(
        (p.name, st.st_size, st.st_mtime_ns)
        for p in sorted(folder.iterdir())
        if p.is_file() and (st := p.stat())
    )
    return _folder_digest(str(folder.resolve()), files)


@functools.lru_cache(maxsize=64)
def _folder_digest(folder: str, files: tuple[tuple[str, int, int], ...]) -> str:
    """Content hash of a folder's files; cached per (name, size, mtime) listing."""
    digest = hashlib.sha256()
    for name, size, mtime_ns in files:
        digest.update(name.encode("utf-8", "surrogatepass") + b"\x00")
        if size <= _SMALL_FILE:
            digest.update(Path(folder, name).read_bytes())
        else:
            digest.update(f"{size}:{mtime_ns}".encode())
    return digest.hexdigest()[:16]


def loaded_model_fingerprint(model: Any, tokenizer: Any = None) -> str:
    """A short hash of an already loaded model (config, each weight's name, shape and a strided
    sample of its values) and of its tokenizer's chat template.

    Two models with one config but other weights (a dense and a pruned copy, two fine-tunes)
    get different identities. Computed once per model object and config: a model pruned in
    place (its config changes) gets a new identity; one whose weights are trained in place keeps
    its old one, so clear the cache after that.
    """
    global _fingerprints
    if _fingerprints is None:
        _fingerprints = weakref.WeakKeyDictionary()
    config = getattr(model, "config", None)
    to_json = getattr(config, "to_json_string", None)
    config_text = to_json() if callable(to_json) else repr(config)
    try:
        seen_config, value = _fingerprints[model]
        if seen_config == config_text:
            return value
    except (KeyError, TypeError):
        pass
    digest = hashlib.sha256(config_text.encode("utf-8", "surrogatepass"))
    named = getattr(model, "named_parameters", None)
    for name, param in named() if callable(named) else ():
        flat = param.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 64)][:64].double()
        summary = f"{name}:{tuple(param.shape)}:{float(sample.sum()):.9e}:{float(sample.abs().sum()):.9e}"
        digest.update(summary.encode())
    digest.update(str(getattr(tokenizer, "chat_template", None)).encode("utf-8", "surrogatepass"))
    value = digest.hexdigest()[:16]
    try:
        _fingerprints[model] = (config_text, value)
    except TypeError:  # not weak-referenceable: recomputed next time
        pass
    return value


# -- canonical serialisation --------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """``value`` as JSON-ready data: mappings with str keys, lists, str (normalised), numbers."""
    if isinstance(value, str):
        return normalize_prompt(value)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else repr(value)
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True, default=str))
    if isinstance(value, (bytes, bytearray)):
        return {"sha256": hashlib.sha256(bytes(value)).hexdigest()}
    if hasattr(value, "model_dump"):  # pydantic models (tool schemas, response formats, blocks)
        return {"__class__": type(value).__name__, **_plain(value.model_dump(mode="json"))}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__class__": type(value).__name__, **_plain(dataclasses.asdict(value))}
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)


def canonical_json(value: Any) -> str:
    """One deterministic JSON text for ``value`` (sorted keys, normalised strings).

    Equal requests give equal texts; any difference in a message, a tool call's arguments, a
    bound tool or a parameter gives a different text.
    """
    return json.dumps(_plain(value), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _clean_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message dict without empty fields (``name=None`` and no name are the same request)."""
    return {k: v for k, v in message.items() if v is not None and v != "" and v != [] and v != {}}


def message_text(content: Any) -> str | None:
    """The text of a message's content: a string, or a list of only text parts; else ``None``."""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)) and content:
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and part.get("type") == "text" and set(part) <= {"type", "text"}:
                texts.append(str(part.get("text", "")))
            else:
                return None
        return "".join(texts)
    return None


# -- context detection --------------------------------------------------------------------------
@dataclass(frozen=True)
class ContextRules:
    """The rules of :func:`context_reason` and :func:`split_prompt`
    (``lean_plugins/data/cache_context_rules.json``)."""

    max_words: int
    max_lines: int
    patterns: tuple[tuple[str, re.Pattern[str]], ...]
    question_patterns: tuple[tuple[str, re.Pattern[str]], ...] = ()

    @classmethod
    def load(cls, path: str | None = None) -> ContextRules:
        """Read the rules (default: the file shipped in ``lean_plugins/data``)."""
        if path is None:
            from lean_plugins.paths import package_data

            path = str(package_data(CONTEXT_RULES_FILE))
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        flags = re.IGNORECASE | re.MULTILINE

        def compiled(key: str) -> tuple[tuple[str, re.Pattern[str]], ...]:
            return tuple((rule["name"], re.compile(rule["pattern"], flags)) for rule in data.get(key, ()))

        return cls(
            max_words=int(data["max_words"]),
            max_lines=int(data["max_lines"]),
            patterns=compiled("patterns"),
            question_patterns=compiled("question_patterns"),
        )


@functools.lru_cache(maxsize=1)
def default_context_rules() -> ContextRules:
    return ContextRules.load()


def context_reason(text: str, rules: ContextRules | None = None) -> str | None:
    """Why the prompt ``text`` carries retrieved or pasted context, or ``None``.

    The answer is the name of the first rule that fires: ``"long"`` (more than ``max_words``
    words), ``"lines"`` (more than ``max_lines`` non-empty lines), or a pattern of the rule file
    (a blank line, a ``Context:`` or ``Query:`` label, LlamaIndex's and LangChain's RAG template
    wording, a ruled separator line, a ``<context>`` tag, a code fence, "the following ...", an
    instruction followed by a colon and a block of text). A plain question gets ``None``. The
    rules err on the side of context: a false alarm only costs a paraphrase hit.
    """
    return _context_reason(normalize_prompt(text), rules or default_context_rules())


def _context_reason(text: str, rules: ContextRules) -> str | None:
    """:func:`context_reason` of an already normalised ``text``."""
    if len(text.split()) > rules.max_words:
        return "long"
    if sum(1 for line in text.split("\n") if line.strip()) > rules.max_lines:
        return "lines"
    for name, pattern in rules.patterns:
        if pattern.search(text):
            return name
    return None


#: Marks where the question stood in a prompt's context (the context is part of the scope);
#: it names the question's offset, so no other prompt gives the same question and context.
_QUESTION_MARK = "\x00question@{}\x00"


@dataclass(frozen=True)
class PromptParts:
    """A prompt as the cache matches it (:func:`split_prompt`)."""

    question: str
    """What is matched, exactly or by meaning: the question, or the whole prompt when no
    question can be told apart from its context."""
    context: str
    """The rest of the prompt with the question's place marked; empty for a plain question.
    It joins the scope: only a prompt with exactly this context finds the entry."""
    semantic: bool
    """Whether a paraphrase of ``question`` may be served."""
    reason: str = ""
    """Why paraphrase matching is off (empty when it is on)."""


def split_prompt(text: str, rules: ContextRules | None = None) -> PromptParts:
    """The question of the prompt ``text`` and its context: the one rule set of the cache.

    - A plain question (no rule of :func:`context_reason` fires) is matched whole, exactly or
      by meaning.
    - A prompt that carries context is matched by meaning on its question only, within
      identical context: the question is the last match of a question pattern of the rule
      file (a ``Question:`` / ``Query:`` label; a last line that asks, set apart by a blank
      line, a ruled line or a closing tag), and it must itself be a plain question (at most
      ``max_words`` words, no rule firing). The rest of the prompt is the ``context``.
    - Any other prompt (pasted text with an instruction, a long prompt whose question cannot
      be told apart) is served on exact repeats only: such prompts can share hundreds of words
      and differ in the one that matters, which an embedding of the whole cannot see.
    """
    rules = rules or default_context_rules()
    text = normalize_prompt(text)
    reason = _context_reason(text, rules)
    if reason is None:
        return PromptParts(text, "", True)
    for _, pattern in rules.question_patterns:
        matches = list(pattern.finditer(text))
        if not matches:
            continue
        found = matches[-1]  # the last one: a template's question follows its examples
        question = found.group("question").strip()
        start, end = found.span("question")
        if not question or context_reason(question, rules) is not None:
            break  # the question found is not plain: exact repeats only
        context = text[:start] + _QUESTION_MARK.format(start) + text[end:]
        return PromptParts(question, context, True)
    return PromptParts(text, "", False, f"the prompt carries context ({reason}) and no plain question apart from it")


def match_key(text: str, scope: str = "", semantic: bool = True) -> tuple[str, str, bool]:
    """``(question, scope, semantic)`` under which the cache stores and finds ``text``:
    :func:`split_prompt`'s question, the scope extended by its context, and whether a
    paraphrase may be served (``semantic`` and the prompt's own rule)."""
    parts = split_prompt(text)
    if parts.context:
        raw = f"{scope}\x00context\x00{parts.context}"
        scope = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
    return parts.question, scope, semantic and parts.semantic


#: Model configuration fields that never change an answer and may hold secrets, by whole name
#: (``api_key``, ``access_token``, ``headers``), not by part: ``max_tokens`` is a setting. Both
#: adapters leave them out of cache keys.
SECRET_FIELD = re.compile(
    r"^(?:.*_)?(?:api_?key|key|secret|password|passwd|token|credentials?|auth|authorization|headers?)$",
    re.IGNORECASE,
)


# -- request keys -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RequestKey:
    """How an LLM-level cache matches one request (see the module docstring)."""

    text: str
    """The final user message's text, or the final message's canonical serialisation."""
    scope: str
    """sha256 of everything but ``text``: earlier messages, the final message's other fields, params."""
    semantic: bool
    """Whether ``text`` may be matched by meaning at all: a final user text may (the cache then
    applies :func:`split_prompt`'s rules to it); any other final message is matched exactly."""
    reason: str = ""
    """Why paraphrase matching is off (empty when it is on)."""


def request_key(messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any] | None = None) -> RequestKey:
    """The cache key of a chat or completion request.

    ``messages`` are plain dicts with ``role`` and ``content`` (a string or a list of parts)
    plus any other field that reaches the model: ``name``, ``tool_calls`` (name, arguments,
    id), ``tool_call_id``, provider extras. ``params`` holds everything else that changes the
    answer and is not already in the namespace (per-call arguments, bound tools, response
    format). A completion prompt is one ``{"role": "user", "content": prompt}`` message.
    """
    cleaned = [_clean_message(m) for m in messages]
    params = dict(params or {})
    if not cleaned:
        return RequestKey(canonical_json({"messages": []}), _scope([], {}, params), False, "no messages")
    *earlier, final = cleaned
    text = message_text(final.get("content"))
    meta = {k: v for k, v in final.items() if k != "content"}
    if str(final.get("role", "")).lower() not in USER_ROLES or text is None:
        reason = "the final message is not a user's text"
        return RequestKey(canonical_json(final), _scope(earlier, {"final": "whole"}, params), False, reason)
    # The final user text goes to the cache whole: the cache itself finds its question and
    # context (split_prompt), for adapters and direct callers alike.
    return RequestKey(text, _scope(earlier, meta, params), True)


def completion_key(prompt: str, params: Mapping[str, Any] | None = None) -> RequestKey:
    """The cache key of a text-completion prompt (one user message)."""
    return request_key([{"role": "user", "content": prompt}], params)


def _scope(earlier: list[dict[str, Any]], final_meta: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    raw = canonical_json({"earlier": earlier, "final": final_meta, "params": params})
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
