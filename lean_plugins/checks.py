"""Checks of caller input that several layers share: one home, one wording."""

from __future__ import annotations

import re
from typing import Any

from lean_plugins.errors import InputTextError

_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate_at(text: str) -> int | None:
    """Index of the first lone UTF-16 surrogate in ``text`` (not valid Unicode), or ``None``."""
    match = _SURROGATE.search(text)
    return match.start() if match else None


def check_text(value: Any, name: str) -> str:
    """``value`` if it is a ``str`` that can be encoded as UTF-8; else a clear error.

    ``None`` or another type is a ``TypeError`` saying what ``name`` takes; a lone surrogate
    (what ``surrogateescape`` decoding or a cut emoji leaves) is an :class:`InputTextError`
    naming its position, so the caller can find and fix the character.
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} takes a str, got {type(value).__name__}.")
    at = lone_surrogate_at(value)
    if at is not None:
        raise InputTextError(
            f"{name} holds a lone UTF-16 surrogate {value[at]!r} at character {at} "
            f"(context: {value[max(0, at - 20) : at]!r}), which is not valid Unicode text. "
            "Decode the input as UTF-8 with errors='replace', or remove that character."
        )
    return value
