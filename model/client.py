"""The one way Campfire talks to a generator: an OpenAI-compatible HTTP API, streamed.

Works against ``campfire serve`` (transformers serve), vLLM, llama.cpp's server or Ollama — any
``/v1/chat/completions`` with ``stream: true``. Plain ``httpx`` for the HTTP, :mod:`model.sse` for
reading the stream, with Campfire's policy on top:

- a concurrency limit (``generator.max_concurrency``) with a visible FIFO queue (:mod:`model.slots`):
  ``on_queued(position)`` is called (1 = next) while a request waits, again whenever it changes;
- connect retries with exponential backoff (tenacity) *before the first token only* — a reply is never
  restarted after text has been shown;
- a circuit breaker (:mod:`model.breaker`): after ``breaker_failures`` consecutive failures it fails
  fast with :class:`GeneratorUnavailable` (``retry_after_s`` = time left of ``breaker_reset_s``), asks
  ``/health`` at most once a second meanwhile and lets one probe through as soon as it answers;
- a per-request timeout (``request_timeout_s``) → :class:`GeneratorTimeout`;
- HTTP 400 about the context length → :class:`ContextTooLong`;
- a stream that ends without ``finish_reason`` and without ``data: [DONE]``, or is cut →
  :class:`StreamInterrupted`; malformed SSE JSON or an SSE ``{"error": …}`` event →
  :class:`GeneratorProtocolError` (both :class:`GeneratorUnavailable`, both tell the breaker);
- cancellation (the caller's task cancelled, or ``aclose()`` on the iterator) closes the HTTP stream,
  which stops generation on the server;
- ``user`` forwarded (servers use it for cache affinity / abuse tracking).

Metrics (prometheus-client, default registry): ``campfire_generator_requests_total{outcome}``,
``campfire_generator_ttft_seconds``, ``campfire_generator_stream_chunks_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from prometheus_client import Counter, Histogram
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from campfire.config import GeneratorSettings
from model.breaker import CircuitBreaker
from model.errors import (
    ContextTooLong,
    GeneratorError,
    GeneratorProtocolError,
    GeneratorTimeout,
    GeneratorUnavailable,
    StreamInterrupted,
)
from model.slots import PRIORITY_STORY, QueueCallback, Slots, invoke_callback
from model.sse import Chunk, ChunkReader
from model.stops import StopFilter

__all__ = ["GeneratorClient", "QueueCallback", "invoke_callback"]

log = logging.getLogger(__name__)

REQUESTS = Counter("campfire_generator_requests_total", "Generator requests by outcome", ["outcome"])
TTFT = Histogram(
    "campfire_generator_ttft_seconds", "Time to first token (seconds), queueing excluded",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
CHUNKS = Counter("campfire_generator_stream_chunks_total", "Streamed text deltas received (≈ tokens)")

MAX_ERROR_BODY = 65536  # bytes of an error answer read for its message


class _HTTPStatus(Exception):
    """A non-200 answer to the chat request (internal: mapped to a :class:`GeneratorError`)."""

    def __init__(self, status: int, text: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.text, self.retry_after = status, text, retry_after


def _retryable(err: BaseException) -> bool:
    """Before the first token: retry refused/reset/cut connections and 502/503/504 (a server restarting)."""
    if isinstance(err, httpx.TimeoutException):
        return False
    if isinstance(err, (httpx.TransportError, StreamInterrupted)):
        return True
    return isinstance(err, _HTTPStatus) and err.status in (502, 503, 504)


def _is_context_error(status: int | None, text: str) -> bool:
    text = text.lower()
    about_context = "context length" in text or "context_length" in text or "too long" in text
    return about_context and status in (400, None)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None


def _fill_usage(chunk: Chunk, usage: dict | None) -> None:
    if usage is not None and (chunk.prompt_tokens is not None or chunk.completion_tokens is not None):
        usage["prompt_tokens"] = chunk.prompt_tokens or 0
        usage["completion_tokens"] = chunk.completion_tokens or 0


class GeneratorClient:
    """Streaming client of an OpenAI-compatible generator (see the module docstring for its policy).

    ``base_url`` ends in ``/v1``; ``api_key`` comes from :func:`campfire.config.secrets_from_env`
    (``None`` for a local server); ``model`` empty = the server's first model (:meth:`resolve_model`).
    One instance is shared by every front end task; it is safe to use from one event loop at a time.
    """

    def __init__(self, base_url: str, *, api_key: str | None, model: str, settings: GeneratorSettings) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.settings = settings
        self._headers = {"Authorization": f"Bearer {api_key or 'not-needed'}", "Accept": "text/event-stream"}
        self._timeout = httpx.Timeout(settings.request_timeout_s, connect=min(5.0, settings.request_timeout_s))
        self._http = httpx.AsyncClient(timeout=5.0)
        self._slots = Slots(settings.max_concurrency)
        self._breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s, health=self.health)

    # --- state -----------------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        """Requests waiting for a concurrency slot now."""
        return len(self._slots.waiters)

    @property
    def in_flight(self) -> int:
        """Requests holding a concurrency slot now (sent to the server or about to be)."""
        return self._slots.in_flight

    @property
    def breaker_open(self) -> bool:
        return self._breaker.is_open

    @property
    def root_url(self) -> str:
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    async def health(self) -> bool:
        """``True`` when the server answers ``GET /health`` with 200 (or, for servers without it such as
        Ollama, ``GET /v1/models``). Never raises."""
        try:
            r = await self._http.get(self.root_url + "/health")
            if r.status_code == 404:
                r = await self._http.get(self.base_url + "/models", headers=self._headers)
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    async def resolve_model(self) -> str:
        """Set :attr:`model` to the server's first model when it is empty; returns it.
        Raises :class:`GeneratorUnavailable` when the server cannot be reached or answers with an error,
        :class:`GeneratorError` when it serves no model."""
        if not self.model:
            try:
                r = await self._http.get(self.base_url + "/models", headers=self._headers)
                r.raise_for_status()
                data = r.json().get("data") or []
                ids = [m["id"] for m in data if isinstance(m, dict) and m.get("id")]
            except (httpx.HTTPError, ValueError, AttributeError) as err:
                raise GeneratorUnavailable(f"cannot list the generator's models: {type(err).__name__}", retry_after_s=1.0) from None
            if not ids:
                raise GeneratorError("the generator serves no model")
            self.model = ids[0]
        return self.model

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- streaming -------------------------------------------------------------------------------
    async def stream_chat(
        self,
        messages: list[dict],
        *,
        max_tokens: int,
        temperature: float = 0.7,
        top_p: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        repetition_penalty: float = 1.0,
        stop: list[str] | None = None,
        user: str | None = None,
        on_queued: QueueCallback | None = None,
        usage: dict | None = None,
        timeout_s: float | None = None,
        priority: int = PRIORITY_STORY,
    ) -> AsyncIterator[str]:
        """Stream a chat completion; yields text deltas (``str``, never empty).

        ``messages``: OpenAI chat messages (``{"role", "content"}``). ``max_tokens``: completion limit
        (tokens). ``frequency_penalty`` / ``presence_penalty`` (OpenAI, −2–2) and ``repetition_penalty``
        (> 0; an extra body field vLLM, llama.cpp and ``campfire serve`` honour) are sent only when not
        neutral (0, 0, 1). ``stop``: strings that end the reply (applied here too, since not every server
        honours them; the stop string itself is not yielded). ``usage``: when given, filled with
        ``prompt_tokens``/``completion_tokens`` (the server's count, else the number of deltas) and
        ``ttft_s`` (seconds from sending to the first delta, queueing excluded). ``timeout_s``
        overrides ``generator.request_timeout_s`` for the whole generation. ``priority``: its place in
        the queue for a slot (:data:`model.slots.PRIORITY_CHAT` is served before the default
        :data:`model.slots.PRIORITY_STORY`; FIFO within a priority).

        Raises :class:`GeneratorUnavailable` (unreachable, 5xx, breaker open) and its subclasses
        :class:`StreamInterrupted` (stream cut, or ended without ``finish_reason``/``[DONE]``) and
        :class:`GeneratorProtocolError` (malformed SSE JSON, SSE error event);
        :class:`GeneratorTimeout`, :class:`ContextTooLong` (HTTP 400 about the context),
        :class:`GeneratorError` (other refusals). Use ``contextlib.aclosing`` when you may stop
        iterating early, so the stream is closed at once.
        """
        try:
            probe = await self._breaker.admit()
        except GeneratorUnavailable:
            REQUESTS.labels("breaker_open").inc()
            raise
        try:
            await self._slots.acquire(on_queued, priority)
        except BaseException:
            if probe:
                self._breaker.end_probe()
            raise
        try:
            if not self.model:
                await self.resolve_model()
            params = self._params(messages, max_tokens, temperature, top_p, stop, user,
                                  (frequency_penalty, presence_penalty, repetition_penalty))
            timeout = timeout_s or self.settings.request_timeout_s
            deadline = asyncio.get_running_loop().time() + timeout
            try:
                async for delta in self._stream(params, stop or [], usage, deadline):
                    yield delta
            except TimeoutError:
                self._breaker.failure()
                REQUESTS.labels("timeout").inc()
                raise GeneratorTimeout(f"The generator took longer than {timeout:.0f} s.") from None
        finally:
            self._slots.release()
            if probe:
                self._breaker.end_probe()

    def _params(self, messages, max_tokens, temperature, top_p, stop, user, penalties) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
            "top_p": top_p, "stream": True, "stream_options": {"include_usage": True},
        }
        frequency_penalty, presence_penalty, repetition_penalty = penalties
        if frequency_penalty:
            params["frequency_penalty"] = frequency_penalty
        if presence_penalty:
            params["presence_penalty"] = presence_penalty
        if repetition_penalty != 1.0:  # not OpenAI's: an extra field vLLM, llama.cpp and campfire serve take
            params["repetition_penalty"] = repetition_penalty
        if stop:
            params["stop"] = stop
        if user:
            params["user"] = user
        return params

    async def _open_once(self, params: dict[str, Any], usage: dict | None, stack: contextlib.AsyncExitStack) -> tuple[ChunkReader, Chunk | None]:
        """POST the request and read up to its first text chunk. Returns (reader, first chunk with text
        or ``None`` when the reply is empty). Raises :class:`_HTTPStatus`, httpx errors and the reader's."""
        response = await stack.enter_async_context(
            self._http.stream("POST", self.base_url + "/chat/completions", json=params, headers=self._headers, timeout=self._timeout)
        )
        if response.status_code != 200:
            body = b""
            async for part in response.aiter_bytes():
                body += part
                if len(body) >= MAX_ERROR_BODY:
                    break
            raise _HTTPStatus(response.status_code, body.decode("utf-8", "replace"), _retry_after(response))
        reader = ChunkReader(response.aiter_lines())
        stack.push_async_callback(reader.aclose)
        async for chunk in reader:
            _fill_usage(chunk, usage)
            if chunk.text:
                return reader, chunk
        return reader, None

    async def _open(self, params: dict[str, Any], usage: dict | None, stack: contextlib.AsyncExitStack) -> tuple[ChunkReader, Chunk | None, float]:
        """:meth:`_open_once` with retries (tenacity, exponential backoff) of connection failures, cuts
        and 502/503/504 before the first text. Returns (reader, first text chunk or ``None``, time sent)."""
        attempts = AsyncRetrying(
            stop=stop_after_attempt(self.settings.connect_retries + 1),
            wait=wait_exponential(multiplier=0.25, max=4.0),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        async for attempt in attempts:
            with attempt:
                sent = time.perf_counter()
                inner = contextlib.AsyncExitStack()
                try:
                    reader, first = await self._open_once(params, usage, inner)
                except BaseException:
                    await inner.aclose()
                    raise
                stack.push_async_callback(inner.aclose)
                return reader, first, sent
        raise AssertionError("unreachable")  # pragma: no cover

    async def _start(self, params: dict[str, Any], usage: dict | None, deadline: float, stack: contextlib.AsyncExitStack) -> tuple[ChunkReader, Chunk | None]:
        """Open the stream (see :meth:`_open`) within ``deadline``, mapping every failure to a
        :class:`GeneratorError` (or ``TimeoutError``), and record TTFT. Returns (reader, first or ``None``)."""
        try:
            async with asyncio.timeout_at(deadline):
                reader, first, sent = await self._open(params, usage, stack)
        except _HTTPStatus as err:
            raise self._status_error(err.status, err.text, err.retry_after) from None
        except httpx.TimeoutException:
            raise TimeoutError from None
        except (httpx.HTTPError, StreamInterrupted) as err:
            self._breaker.failure()
            REQUESTS.labels("unavailable").inc()
            raise GeneratorUnavailable(
                "The generator cannot be reached right now; please try again shortly.",
                retry_after_s=self._breaker.reset_s if self._breaker.is_open else 1.0,
            ) from err
        except GeneratorProtocolError as err:
            raise self._protocol_error(err) from None
        self._breaker.success()
        ttft = time.perf_counter() - sent
        if usage is not None:
            usage.setdefault("prompt_tokens", 0)
            usage.update(ttft_s=ttft if first is not None else None)
        if first is not None:
            TTFT.observe(ttft)
        return reader, first

    async def _stream(self, params: dict[str, Any], stop: list[str], usage: dict | None, deadline: float) -> AsyncIterator[str]:
        async with contextlib.AsyncExitStack() as stack:
            reader, chunk = await self._start(params, usage, deadline, stack)
            if chunk is None:
                REQUESTS.labels("empty").inc()
                return
            deltas = 0
            held = StopFilter(stop)
            try:
                while chunk is not None:
                    _fill_usage(chunk, usage)
                    if chunk.text:
                        deltas += 1
                        CHUNKS.inc()
                        out = held.feed(chunk.text)
                        if out:
                            yield out
                        if held.stopped:
                            break
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(reader, None)
                if not held.stopped and held.held:
                    yield held.flush()
            except httpx.TimeoutException:
                raise TimeoutError from None
            except (httpx.HTTPError, StreamInterrupted) as err:
                # the stream broke after text was shown: never retried (the member saw a partial reply)
                self._breaker.failure()
                REQUESTS.labels("dropped").inc()
                raise StreamInterrupted() from err
            except GeneratorProtocolError as err:
                raise self._protocol_error(err) from None
            finally:
                if usage is not None and not usage.get("completion_tokens"):
                    usage["completion_tokens"] = deltas
            REQUESTS.labels("ok").inc()

    def _protocol_error(self, err: GeneratorProtocolError) -> GeneratorError:
        """An unreadable stream or an SSE error event: a context error when it says so, else a failure."""
        if _is_context_error(None, err.detail):
            self._breaker.success()
            REQUESTS.labels("context_too_long").inc()
            return ContextTooLong("The conversation is too long for the model, even after trimming.")
        log.warning("generator sent an unreadable stream: %s", err.detail)
        self._breaker.failure()
        REQUESTS.labels("protocol_error").inc()
        return err

    def _status_error(self, status: int, text: str, retry_after: float | None) -> GeneratorError:
        if _is_context_error(status, text):
            self._breaker.success()
            REQUESTS.labels("context_too_long").inc()
            return ContextTooLong("The conversation is too long for the model, even after trimming.")
        if status >= 500 or status == 429:
            self._breaker.failure()
            REQUESTS.labels("unavailable").inc()
            return GeneratorUnavailable(
                f"The generator is unavailable right now (HTTP {status}); please try again shortly.",
                retry_after_s=retry_after if retry_after is not None else 1.0,
            )
        self._breaker.success()  # the server answered: it is up
        REQUESTS.labels("refused").inc()
        return GeneratorError(f"The generator refused the request (HTTP {status}).")
