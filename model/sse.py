"""Reading an OpenAI-style streamed chat completion: SSE lines → :class:`Chunk` records.

Transport-agnostic: :class:`ChunkReader` takes an async iterator of text lines (``httpx.Response.
aiter_lines()``) and yields one :class:`Chunk` per ``data:`` event. It decides whether a stream is
*complete*: a stream is complete when it carried ``data: [DONE]`` or a choice with a
``finish_reason``; a body that ends before either is :class:`StreamInterrupted` (what a proxy sends
when the generator behind it died), never a finished reply.

Errors raised while iterating (transport errors of the line iterator pass through unchanged):

- :class:`model.errors.StreamInterrupted` — the body ended before the stream was complete;
- :class:`model.errors.GeneratorProtocolError` — malformed JSON in a ``data:`` event, an
  ``{"error": …}`` event (or ``event: error``), or a chunk that is not an object with a ``choices``
  list (``detail`` = the server's text, for logs).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from model.errors import GeneratorProtocolError, StreamInterrupted

DONE = "[DONE]"


@dataclass(frozen=True, slots=True)
class Chunk:
    """One streamed chunk. ``text``: the first choice's content delta (``""`` when none);
    ``finish_reason``: set on the last choice chunk (``"stop"``, ``"length"``, …); ``prompt_tokens`` /
    ``completion_tokens``: the server's ``usage`` (usually the final chunk only), else ``None``."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """SSE framing (WHATWG): yields ``(event, data)`` per event — ``event`` ``""`` when unnamed, ``data``
    the event's ``data:`` lines joined with ``\\n``. Comments (``:``), ``id:`` and ``retry:`` are skipped;
    an event without data is dropped; a last event not followed by a blank line is still yielded."""
    event, data = "", []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if data:
        yield event, "\n".join(data)


def _error_detail(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def parse_chunk(event: str, data: str) -> Chunk:
    """One ``data:`` payload (not ``[DONE]``) → :class:`Chunk`. Raises :class:`GeneratorProtocolError`
    for malformed JSON, an error event or a payload of the wrong shape."""
    try:
        obj = json.loads(data)
    except ValueError:
        raise GeneratorProtocolError(f"malformed SSE JSON: {data[:200]!r}") from None
    if event == "error" or (isinstance(obj, dict) and obj.get("error")):
        raise GeneratorProtocolError(_error_detail(obj.get("error", obj) if isinstance(obj, dict) else obj))
    if not isinstance(obj, dict) or not isinstance(obj.get("choices", []), list):
        raise GeneratorProtocolError(f"unexpected chunk: {data[:200]!r}")
    text, finish = "", None
    choices = obj.get("choices") or []
    if choices:
        choice = choices[0]
        delta = choice.get("delta") if isinstance(choice, dict) else None
        content = delta.get("content") if isinstance(delta, dict) else None
        if not isinstance(choice, dict) or not isinstance(content, (str, type(None))):
            raise GeneratorProtocolError(f"unexpected choice: {data[:200]!r}")
        text = content or ""
        finish = choice.get("finish_reason") or None
    usage = obj.get("usage")
    prompt = completion = None
    if isinstance(usage, dict):
        prompt = _count(usage.get("prompt_tokens"))
        completion = _count(usage.get("completion_tokens"))
    return Chunk(text=text, finish_reason=finish, prompt_tokens=prompt, completion_tokens=completion)


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class ChunkReader:
    """Async iterator of :class:`Chunk` over SSE ``lines``; stops at ``[DONE]`` (the rest of the body is
    not read) or at the end of the body. See the module docstring for what it raises.

    ``complete``: ``[DONE]`` or a ``finish_reason`` was seen. ``finish_reason``: the last one seen.
    """

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._events = sse_events(lines)
        self.done = False
        self.finish_reason: str | None = None

    @property
    def complete(self) -> bool:
        return self.done or self.finish_reason is not None

    def __aiter__(self) -> ChunkReader:
        return self

    async def __anext__(self) -> Chunk:
        if self.done:
            raise StopAsyncIteration
        try:
            event, data = await anext(self._events)
        except StopAsyncIteration:
            if self.complete:
                raise
            raise StreamInterrupted() from None
        if data.strip() == DONE:
            self.done = True
            raise StopAsyncIteration
        chunk = parse_chunk(event, data)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        return chunk

    async def aclose(self) -> None:
        await self._events.aclose()
