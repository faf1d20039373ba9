"""``stop`` strings on the transformers engine's server (``campfire serve --engine transformers``):
transformers' continuous batching ignores them, so the front applies them to what it sends, for any
OpenAI client — the reply ends just before the earliest stop string, with ``finish_reason`` "stop"
(OpenAI's semantics; the llama.cpp engine does the same natively). Streams are filtered chunk by
chunk with :class:`model.stops.StopFilter` (text that may start a stop string is held back), and the
generation is closed once a stop string is found."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from model.stops import StopFilter, find_stop


def pop_stops(body: dict) -> list[str]:
    """Remove ``stop`` (a string or a list of strings, already checked by
    :func:`model.penalty_check.check_request`) from ``body`` and return it as a list."""
    stop = body.pop("stop", None)
    return [stop] if isinstance(stop, str) else list(stop or [])


def _event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


async def filter_stream(chunks: Any, stops: list[str]) -> AsyncIterator[bytes]:
    """The SSE ``chunks`` of a streamed chat completion with ``stops`` applied: each chunk's
    ``delta.content`` replaced by what may be shown; at the first stop string one last chunk with
    ``finish_reason`` "stop", then the upstream generator is closed (the request ends)."""
    gate = StopFilter(stops)
    try:
        async for raw in chunks:
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            for line in text.split("\n"):
                if not line.startswith("data: ") or line.strip() == "data: [DONE]":
                    continue
                payload = json.loads(line[6:])
                choices = payload.get("choices") or []
                if not choices:
                    yield _event(payload)  # the usage chunk
                    continue
                choice = choices[0]
                delta = choice.setdefault("delta", {})
                content = gate.feed(delta.get("content") or "")
                if gate.stopped:
                    delta["content"] = content
                    choice["finish_reason"] = "stop"
                    yield _event(payload)
                    return
                if choice.get("finish_reason"):
                    content += gate.flush()
                if content or choice.get("finish_reason") or delta.get("role"):
                    delta["content"] = content
                    yield _event(payload)
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


def cut_reply(payload: dict[str, Any], stops: list[str]) -> dict[str, Any]:
    """A non-streamed chat completion with ``stops`` applied to its first choice's content."""
    for choice in payload.get("choices") or []:
        message = choice.get("message") or {}
        at = find_stop(message.get("content") or "", stops)
        if at is not None:
            message["content"] = message["content"][:at]
            choice["finish_reason"] = "stop"
    return payload
