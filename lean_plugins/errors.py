"""Exception classes. Every message says what was wrong and what to do about it."""

from __future__ import annotations


class LeanPluginsError(Exception):
    """Base class of every error this package raises on purpose."""


class MissingDependencyError(LeanPluginsError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class ConfigurationError(LeanPluginsError, ValueError):
    """A constructor argument or setting is invalid."""


class InputTextError(LeanPluginsError, ValueError):
    """An input text cannot be processed as it is (e.g. it holds a lone UTF-16 surrogate)."""


class ModelLoadError(LeanPluginsError, OSError):
    """A model or tokenizer could not be found or is not of the expected kind."""


class TokenizerError(LeanPluginsError, ValueError):
    """A tokenizer name or file is unknown, missing or corrupt."""


class MissingVariableError(LeanPluginsError, KeyError):
    """A prompt template was rendered without one of its input variables."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the sentence instead
        return str(self.args[0]) if self.args else ""


class CacheError(LeanPluginsError, RuntimeError):
    """A cache backend failed. Callers degrade to "no cache"; this is raised only when asked."""


class BudgetExceededError(LeanPluginsError, RuntimeError):
    """An output budget stopped generation and the caller asked for an exception.

    ``partial_text`` holds everything generated before the stop, so nothing is lost.
    """

    def __init__(self, message: str, *, partial_text: str = "", tokens_used: int = 0) -> None:
        super().__init__(message)
        self.partial_text = partial_text
        self.tokens_used = tokens_used
