"""Typed errors of the generator client. Front ends catch :class:`GeneratorError` and show a
polite sentence; ``str(err)`` is always such a sentence (no prompt text, no secrets)."""

from __future__ import annotations


class GeneratorError(Exception):
    """Base class of every generator failure."""


class GeneratorUnavailable(GeneratorError):
    """The generator cannot be reached (connection refused, 5xx, circuit breaker open).

    ``retry_after_s`` (seconds, ≥ 0) is how long the caller should wait before trying again:
    the breaker's remaining open time, or the server's ``Retry-After``.
    """

    def __init__(self, message: str = "The story engine is unavailable right now.", *, retry_after_s: float = 0.0):
        super().__init__(message)
        self.retry_after_s = max(0.0, float(retry_after_s))


class GeneratorTimeout(GeneratorError):
    """A generation took longer than ``generator.request_timeout_s`` (or no token arrived in time)."""


class ContextTooLong(GeneratorError):
    """The prompt does not fit the model's context window even after trimming (HTTP 400 from the server)."""


class EmptyOutput(GeneratorError):
    """The model returned no usable text twice in a row; ``str()`` is an apology a member can read."""
