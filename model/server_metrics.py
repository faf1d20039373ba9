"""Prometheus ``GET /metrics`` for the generator server (``campfire serve``, either engine), observed from
the outside of the handlers (transformers' or the llama.cpp front's): an HTTP middleware reads the responses of the generation endpoints as they
stream past (it never changes them).

Metrics (in the app's own registry, so several apps can live in one process — tests do):

- ``campfire_server_requests_total{endpoint, status}`` — generation requests answered (``endpoint``:
  ``chat`` | ``completions`` | ``responses``; ``status``: the HTTP status code);
- ``campfire_server_requests_in_progress`` — generation requests being served now;
- ``campfire_server_queue_depth`` — requests accepted but not yet scheduled by the continuous-batching
  worker (the ``queue_depth`` callable given to :func:`add_metrics`; 0 without one);
- ``campfire_server_ttft_seconds`` — streamed requests: request received → first content delta;
- ``campfire_server_tokens_per_second`` — streamed requests: completion tokens ÷ seconds from the first
  delta to the end of the stream (decode speed of that request);
- ``campfire_server_completion_tokens_total`` — completion tokens served (the server's ``usage`` when
  it reports one, else the number of content deltas);
- ``campfire_server_request_duration_seconds`` — request received → last byte sent;
- plus the process collector (``process_resident_memory_bytes``, CPU seconds, …).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/responses": "responses"}
MAX_JSON_BODY = 1 << 20  # bytes of a non-streamed answer read for its usage


class ServerMetrics:
    """The server's metric objects, registered in ``registry`` (a new one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None, queue_depth: Callable[[], int] | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.requests = Counter("campfire_server_requests_total", "Generation requests answered", ["endpoint", "status"], registry=r)
        self.in_progress = Gauge("campfire_server_requests_in_progress", "Generation requests being served now", registry=r)
        self.queue_depth = Gauge("campfire_server_queue_depth", "Requests waiting for the batching scheduler", registry=r)
        self.queue_depth.set_function(lambda: _safe_count(queue_depth))
        self.ttft = Histogram(
            "campfire_server_ttft_seconds", "Request received to first content delta (seconds)", registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
        )
        self.tokens_per_s = Histogram(
            "campfire_server_tokens_per_second", "Decode speed of one streamed request (tokens/s)", registry=r,
            buckets=(0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.tokens = Counter("campfire_server_completion_tokens_total", "Completion tokens served", registry=r)
        self.duration = Histogram(
            "campfire_server_request_duration_seconds", "Request received to last byte (seconds)", registry=r,
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of :attr:`registry`."""
        return generate_latest(self.registry)


def _safe_count(fn: Callable[[], int] | None) -> float:
    if fn is None:
        return 0.0
    try:
        return float(fn())
    except Exception:  # read from another thread's state: never break a scrape
        return 0.0


class _Observation:
    """What one response carried: content deltas, the server's completion-token count, timings."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.first: float | None = None
        self.deltas = 0
        self.usage_tokens: int | None = None
        self._buffer = b""

    def feed_sse(self, data: bytes) -> None:
        """Account for a piece of an SSE body (events may be split across pieces)."""
        self._buffer += data
        *events, self._buffer = self._buffer.replace(b"\r\n", b"\n").split(b"\n\n")
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                    self._chunk(line[5:])

    def _chunk(self, payload: bytes) -> None:
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        choices = obj.get("choices") or []
        delta = choices[0].get("delta") if choices and isinstance(choices[0], dict) else None
        if isinstance(delta, dict) and delta.get("content"):
            self.deltas += 1
            if self.first is None:
                self.first = time.perf_counter()
        self._usage(obj)

    def _usage(self, obj: dict[str, Any]) -> None:
        usage = obj.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            self.usage_tokens = usage["completion_tokens"]

    @property
    def tokens(self) -> int:
        return self.usage_tokens if self.usage_tokens is not None else self.deltas


async def _observed(body: AsyncIterator[bytes], obs: _Observation, streamed: bool, metrics: ServerMetrics) -> AsyncIterator[bytes]:
    """Pass ``body`` through unchanged while accounting for it; records the metrics at its end."""
    kept = b""
    try:
        async for piece in body:
            data = piece.encode() if isinstance(piece, str) else piece
            if streamed:
                obs.feed_sse(data)
            elif len(kept) < MAX_JSON_BODY:
                kept += data
            yield piece
    finally:
        end = time.perf_counter()
        metrics.in_progress.dec()
        metrics.duration.observe(end - obs.started)
        if not streamed:
            try:
                obs._usage(json.loads(kept))
            except (ValueError, TypeError):
                pass
        metrics.tokens.inc(obs.tokens)
        if obs.first is not None:
            metrics.ttft.observe(obs.first - obs.started)
            if obs.tokens and end > obs.first:
                metrics.tokens_per_s.observe(obs.tokens / (end - obs.first))


def add_metrics(app: Any, *, queue_depth: Callable[[], int] | None = None, registry: CollectorRegistry | None = None) -> ServerMetrics:
    """Add ``GET /metrics`` and the observing middleware to the FastAPI ``app``; returns its metrics.

    ``queue_depth``: a callable giving the number of requests waiting to be scheduled (called at each
    scrape, from the event loop; errors read as 0).
    """
    from fastapi import Request
    from fastapi.responses import Response

    metrics = ServerMetrics(registry, queue_depth)

    @app.get("/metrics", include_in_schema=False)
    async def _metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.middleware("http")
    async def _observe(request: Request, call_next):
        endpoint = ENDPOINTS.get(request.url.path.rstrip("/"))
        if endpoint is None or request.method != "POST":
            return await call_next(request)
        obs = _Observation(time.perf_counter())
        metrics.in_progress.inc()
        try:
            response = await call_next(request)
        except BaseException:
            metrics.in_progress.dec()
            metrics.requests.labels(endpoint, "500").inc()
            raise
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        streamed = response.headers.get("content-type", "").startswith("text/event-stream")
        response.body_iterator = _observed(response.body_iterator, obs, streamed, metrics)
        return response

    return metrics
