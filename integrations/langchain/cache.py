"""LangChain ``BaseCache`` on :class:`lean_plugins.cache.LeanCache`.

Use it globally (``set_llm_cache(LeanCache())``) or per model (``ChatOpenAI(cache=LeanCache())``).
Generations are stored whole (``Generation`` / ``ChatGeneration`` with their messages) as
LangChain's JSON serialisation (``langchain_core.load.dumps``), read back with
``langchain_core.load.loads`` restricted to LangChain core classes: never pickle.
Each ``llm_string`` (model name and parameters) gets its own namespace, a hash of it and of
the optional tenant.
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

from lean_plugins.cache import LeanCache as CoreLeanCache
from lean_plugins.cache import namespace_for
from lean_plugins.tokens import count_tokens

logger = logging.getLogger("lean_plugins.cache")

_MODEL_FIELD = re.compile(r"""["'](?:model_name|model|model_id)["']\s*[:,]\s*["']([^"']+)["']""")


def prompt_text(prompt: str) -> str:
    """The text a chat prompt is about.

    A chat model's cache prompt is the JSON serialisation of its messages; matching on the
    JSON would compare markup, so the messages become ``"role: content"`` lines. Plain LLM
    prompts are returned unchanged.
    """
    if not prompt.startswith("[{"):
        return prompt
    try:
        messages = json.loads(prompt)
        lines = []
        for message in messages:
            kwargs = message["kwargs"]
            content = kwargs["content"]
            if not isinstance(content, str):
                content = json.dumps(content, sort_keys=True)
            lines.append(f"{kwargs.get('type', message['id'][-1])}: {content}")
        return "\n".join(lines)
    except (ValueError, KeyError, TypeError, IndexError):
        return prompt


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

    @staticmethod
    def _decode(value: str) -> RETURN_VAL_TYPE | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # loads() is marked beta
                generations = loads(value, allowed_objects="core")
        except Exception as exc:  # an unreadable entry is a miss
            logger.warning("Dropping an unreadable cached LangChain entry (%s).", exc)
            return None
        return generations if isinstance(generations, list) else None

    @staticmethod
    def _encode(return_val: Sequence[Any]) -> tuple[str, int]:
        return dumps(list(return_val)), sum(count_tokens(getattr(g, "text", "")) for g in return_val)

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Cached generations for ``prompt`` under ``llm_string``, or ``None``."""
        hit = self.cache.lookup(
            prompt_text(prompt),
            namespace=self._namespace(llm_string),
            model=model_from_llm_string(llm_string),
            tenant=self.tenant,
        )
        return None if hit is None else self._decode(hit.response)

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Cache ``return_val`` for ``prompt`` under ``llm_string``."""
        value, output_tokens = self._encode(return_val)
        self.cache.put(
            prompt_text(prompt), value, namespace=self._namespace(llm_string), output_tokens=output_tokens
        )

    def clear(self, **kwargs: Any) -> None:
        """Clear everything, or only one model's entries with ``clear(llm_string=...)``."""
        llm_string = kwargs.get("llm_string")
        self.cache.clear(None if llm_string is None else self._namespace(llm_string))

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        hit = await self.cache.alookup(
            prompt_text(prompt),
            namespace=self._namespace(llm_string),
            model=model_from_llm_string(llm_string),
            tenant=self.tenant,
        )
        return None if hit is None else self._decode(hit.response)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        value, output_tokens = self._encode(return_val)
        await self.cache.aput(
            prompt_text(prompt), value, namespace=self._namespace(llm_string), output_tokens=output_tokens
        )

    async def aclear(self, **kwargs: Any) -> None:
        import asyncio

        await asyncio.to_thread(lambda: self.clear(**kwargs))

    def __repr__(self) -> str:
        return f"LeanCache(cache={self.cache!r}, tenant={self.tenant!r})"
