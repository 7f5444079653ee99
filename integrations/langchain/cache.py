"""LangChain ``BaseCache`` on :class:`lean_plugins.cache.LeanCache`.

Use it globally (``set_llm_cache(LeanCache())``) or per model (``ChatOpenAI(cache=LeanCache())``).
Generations are stored whole (``Generation`` / ``ChatGeneration`` with their messages) as
LangChain's JSON serialisation (``langchain_core.load.dumps``), read back with
``langchain_core.load.loads`` restricted to LangChain core classes: never pickle.

Keys: each ``llm_string`` (the model's identifying parameters plus the call's arguments, bound
tools included) gets its own namespace, a hash of it and of the optional tenant. Within it, a
request is keyed by :func:`lean_plugins.cache.keys.request_key` on the messages LangChain
serialised (roles, names, content parts, tool calls with arguments and ids): an exact match
needs the whole request equal, and a paraphrase is served only when every earlier message is
identical; the core cache applies its context rules to the final user text
(:func:`lean_plugins.cache.keys.split_prompt`: a prompt with context is matched on its question
within identical context, long prompts and pasted text on exact repeats only). A request with
tools bound, and any reply that calls a tool, is served on an exact repeat of every character
only (:func:`lean_plugins.agents.exact_request_key`): a tool call's arguments may copy the
request's case and punctuation, and a served tool call acts.

A hit is exactly the stored generations (``BaseCache``'s contract); the core books it in the
ledger, and LangChain marks a served chat message itself (:func:`served_from_cache`).
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Sequence
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.load import dumps, loads
from langchain_core.outputs import Generation

from lean_plugins.agents import exact_request_key
from lean_plugins.cache import LeanCache as CoreLeanCache
from lean_plugins.cache import namespace_for
from lean_plugins.cache.keys import RequestKey, completion_key, message_text, request_key
from lean_plugins.tokens import count_tokens

logger = logging.getLogger("lean_plugins.cache")

#: Tools (or legacy functions) bound to the call: ``_get_llm_string`` ends with the sorted call
#: parameters, ``('tools', [...])`` among them.
_TOOLS_BOUND = re.compile(r"""\(["'](?:tools|functions)["'],\s*\[(?!\])""")
_MODEL_FIELD = re.compile(r"""["'](?:model_name|model|model_id)["']\s*[:,]\s*["']([^"']+)["']""")
#: Message fields LangChain keeps for bookkeeping that never reach the model.
_NOT_SENT = frozenset({"type", "id", "response_metadata", "usage_metadata"})
_ROLE_OF_CLASS = {
    "HumanMessage": "human",
    "AIMessage": "ai",
    "SystemMessage": "system",
    "ToolMessage": "tool",
    "FunctionMessage": "function",
    "ChatMessage": "chat",
}


def prompt_messages(prompt: str) -> list[dict[str, Any]] | None:
    """The messages of a chat model's cache prompt (``langchain_core.load.dumps`` of its
    message list) as plain dicts, every field that reaches the model kept; ``None`` for a plain
    text-completion prompt."""
    if not prompt.startswith("[{"):
        return None
    try:
        serialised = json.loads(prompt)
        messages = []
        for item in serialised:
            kwargs = item["kwargs"]
            role = kwargs.get("type") or _ROLE_OF_CLASS.get(item["id"][-1], item["id"][-1])
            if role == "chat":  # ChatMessage carries its own role
                role = f"chat:{kwargs.get('role', '')}"
            message = {"role": role, **{k: v for k, v in kwargs.items() if k not in _NOT_SENT}}
            messages.append(message)
        return messages
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


def tools_bound(llm_string: str) -> bool:
    """True when the call behind ``llm_string`` has tools (or functions) bound."""
    return bool(_TOOLS_BOUND.search(llm_string))


def calls_a_tool(generations: Sequence[Any]) -> bool:
    """True when a generation's message calls a tool (or a legacy function)."""
    for generation in generations:
        message = getattr(generation, "message", None)
        extra = getattr(message, "additional_kwargs", None) or {}
        if getattr(message, "tool_calls", None) or getattr(message, "invalid_tool_calls", None):
            return True
        if extra.get("tool_calls") or extra.get("function_call"):
            return True
    return False


def prompt_keys(prompt: str) -> tuple[RequestKey, RequestKey, int]:
    """The keys of a LangChain cache prompt, parsed once: its exact key (for a request whose
    answer is, or may be, a tool call: exact repeats of every character only,
    :func:`lean_plugins.agents.exact_request_key`), its usual request key, and its input tokens
    (for the ledger)."""
    if not isinstance(prompt, str):
        raise TypeError(f"LeanCache: prompt must be a str, got {type(prompt).__name__}.")
    messages = prompt_messages(prompt)
    if messages is None:
        exact = exact_request_key([{"role": "prompt", "content": prompt}])
        return exact, completion_key(prompt), count_tokens(prompt)
    texts = (message_text(m.get("content")) or json.dumps(m.get("content")) for m in messages)
    tokens = sum(count_tokens(text) for text in texts)
    return exact_request_key(messages), request_key(messages), tokens


def served_from_cache(message: Any) -> bool:
    """True when LangChain served the AI ``message`` (or a ``ChatGeneration``'s) from an LLM
    cache, whichever ``BaseCache`` it was.

    A hit returns exactly what was stored; LangChain (langchain-core >= 0.3.73) then sets
    ``usage_metadata["total_cost"] = 0`` on the chat message it serves, a field no model
    response carries, so callbacks (the output budget's accounting) can tell a hit from a call.
    Text-completion hits never reach callbacks at all.
    """
    message = getattr(message, "message", message)
    usage = getattr(message, "usage_metadata", None) or {}
    return "total_cost" in usage and usage["total_cost"] == 0


def model_from_llm_string(llm_string: str) -> str | None:
    """The model name in an ``llm_string`` (for the ledger's prices), if it names one."""
    match = _MODEL_FIELD.search(llm_string)
    return match.group(1) if match else None


class LeanCache(BaseCache):
    """Exact + semantic LangChain cache with per-model namespaces, TTL and a semantic guard.

    Args:
        cache: the core :class:`lean_plugins.cache.LeanCache` to use; when ``None`` one is
            built from ``**kwargs`` (``path``, ``mode``, ``threshold``, ``ttl``,
            ``max_entries``, ``backend``, ``url``, ...).
        tenant: tenant id mixed into every namespace, so tenants never see each other's entries.
    """

    def __init__(
        self, cache: CoreLeanCache | None = None, *, tenant: str | None = None, **kwargs: Any
    ) -> None:
        if cache is not None and kwargs:
            raise TypeError("Pass either a core LeanCache as `cache` or its settings as keywords, not both.")
        core = cache if cache is not None else CoreLeanCache(**kwargs)
        # The tenant's entries are stored apart, so clear() removes only this tenant's.
        self.cache = core if tenant is None else core.for_tenant(tenant)
        self.tenant = tenant

    def _namespace(self, llm_string: str) -> str:
        return namespace_for(llm_string, self.tenant)

    def _update_args(
        self, prompt: str, llm_string: str, return_val: Sequence[Any]
    ) -> tuple[str, str, dict[str, Any]]:
        exact, usual, _ = prompt_keys(prompt)
        key = exact if tools_bound(llm_string) or calls_a_tool(return_val) else usual
        value = dumps(list(return_val))
        output_tokens = sum(count_tokens(getattr(g, "text", "") or "") for g in return_val)
        return key.text, value, {
            "namespace": self._namespace(llm_string),
            "output_tokens": output_tokens,
            "scope": key.scope,
            "semantic": key.semantic,
        }

    @staticmethod
    def _hit(hit: Any) -> RETURN_VAL_TYPE | None:
        """The generations of a core cache hit; a miss (``None``) for an entry LangChain could not use."""
        if hit is None:
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # loads() is marked beta
                generations = loads(hit.response, allowed_objects="core")
        except Exception as exc:  # an unreadable entry is a miss
            logger.warning("Ignoring an unreadable cached LangChain entry (%s); calling the model.", exc)
            return None
        if not isinstance(generations, list) or not generations or not all(
            isinstance(g, Generation) for g in generations
        ):
            logger.warning(
                "Ignoring a cached LangChain entry that is not a non-empty list of generations (got %s); "
                "calling the model, whose answer replaces it.",
                f"{len(generations)} items" if isinstance(generations, list) else type(generations).__name__,
            )
            return None
        # Served exactly as stored (BaseCache's contract, langchain-tests' cache suites). The
        # core booked the hit in the ledger; LangChain itself marks a chat hit for callbacks
        # (served_from_cache).
        return generations

    def _keys(self, prompt: str, llm_string: str) -> list[tuple[str, dict[str, Any]]]:
        """The lookups that may answer ``prompt`` (text and keywords of the core lookup), in
        order. A request with tools bound is served on an exact repeat only. Otherwise a reply
        that called a tool (tools given some way the ``llm_string`` does not show) is looked up
        by its exact key first, then the request is matched as usual; a served tool call is
        never matched by meaning."""
        exact, usual, tokens = prompt_keys(prompt)
        common = {
            "namespace": self._namespace(llm_string),
            "model": model_from_llm_string(llm_string),
            "tenant": self.tenant,
            "input_tokens": tokens,
        }
        keys = [exact] if tools_bound(llm_string) else [exact, usual]
        return [(key.text, {**common, "scope": key.scope, "semantic": key.semantic}) for key in keys]

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Cached generations for ``prompt`` under ``llm_string``, or ``None``."""
        for text, kwargs in self._keys(prompt, llm_string):
            hit = self.cache.lookup(text, **kwargs)
            if hit is not None:
                return self._hit(hit)
        return None

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Cache ``return_val`` for ``prompt`` under ``llm_string``."""
        text, value, kwargs = self._update_args(prompt, llm_string, return_val)
        self.cache.put(text, value, **kwargs)

    def clear(self, **kwargs: Any) -> None:
        """Clear everything, or only one model's entries with ``clear(llm_string=...)``."""
        llm_string = kwargs.get("llm_string")
        self.cache.clear(None if llm_string is None else self._namespace(llm_string))

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        for text, kwargs in self._keys(prompt, llm_string):
            hit = await self.cache.alookup(text, **kwargs)
            if hit is not None:
                return self._hit(hit)
        return None

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        text, value, kwargs = self._update_args(prompt, llm_string, return_val)
        await self.cache.aput(text, value, **kwargs)

    async def aclear(self, **kwargs: Any) -> None:
        import asyncio

        await asyncio.to_thread(lambda: self.clear(**kwargs))

    def __repr__(self) -> str:
        return f"LeanCache(cache={self.cache!r}, tenant={self.tenant!r})"
