"""Typed errors of the generator client. Front ends catch :class:`GeneratorError` and show a
polite sentence; ``str(err)`` is always such a sentence (no prompt text, no secrets).

Hierarchy::

    GeneratorError
    ├── GeneratorUnavailable(retry_after_s)      unreachable, 5xx/429, breaker open
    │   ├── StreamInterrupted                    stream cut / ended without finish_reason or [DONE]
    │   └── GeneratorProtocolError(detail)       malformed SSE JSON, SSE {"error": …} event
    ├── GeneratorTimeout
    ├── ContextTooLong
    └── EmptyOutput
"""

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


class StreamInterrupted(GeneratorUnavailable):
    """The reply stream stopped before the reply was complete: the connection was cut, or the body
    ended without a ``finish_reason`` and without ``data: [DONE]`` (e.g. a proxy closing cleanly after
    the generator died). Text already yielded is partial — front ends must not present it as finished.
    ``retry_after_s`` is 1 s. Counts as a failure for the circuit breaker."""

    def __init__(self, message: str = "The generator stopped in the middle of the reply.", *, retry_after_s: float = 1.0):
        super().__init__(message, retry_after_s=retry_after_s)


class GeneratorProtocolError(GeneratorUnavailable):
    """The generator sent something that is not a streamed chat completion: malformed SSE JSON, an SSE
    ``{"error": …}`` event, or a chunk of the wrong shape. ``str()`` is a kind sentence; ``detail`` holds
    what the server sent (for logs only — never show it to members). ``retry_after_s`` is 1 s. Counts as
    a failure for the circuit breaker."""

    def __init__(self, detail: str, message: str = "The generator sent a reply that could not be read; please try again shortly."):
        super().__init__(message, retry_after_s=1.0)
        self.detail = detail[:500]
