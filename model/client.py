"""The one way Campfire talks to a generator: an OpenAI-compatible HTTP API, streamed.

Works against ``campfire serve`` (transformers serve), vLLM, llama.cpp's server or Ollama — any
``/v1/chat/completions`` with ``stream: true``. Built on ``openai.AsyncOpenAI`` (SSE parsing, typed
HTTP errors) with Campfire's own policy on top:

- a concurrency limit (``generator.max_concurrency``) with a visible FIFO queue: ``on_queued(position)``
  is called (1 = next) while a request waits, again whenever its position changes;
- connect retries with exponential backoff (tenacity) *before the first token only* — a reply is never
  restarted after text has been shown;
- a circuit breaker: after ``breaker_failures`` consecutive failures it fails fast with
  :class:`GeneratorUnavailable` (``retry_after_s`` = time left) for ``breaker_reset_s``, then lets one probe through;
- a per-request timeout (``request_timeout_s``) → :class:`GeneratorTimeout`;
- HTTP 400 about the context length → :class:`ContextTooLong`;
- cancellation (the caller's task cancelled, or ``aclose()`` on the iterator) closes the HTTP stream,
  which stops generation on the server;
- ``user`` forwarded (servers use it for cache affinity / abuse tracking).

Metrics (prometheus-client, default registry): ``campfire_generator_requests_total{outcome}``,
``campfire_generator_ttft_seconds``, ``campfire_generator_stream_chunks_total``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import openai
from prometheus_client import Counter, Histogram
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from campfire.config import GeneratorSettings
from model.errors import ContextTooLong, GeneratorError, GeneratorTimeout, GeneratorUnavailable

log = logging.getLogger(__name__)

QueueCallback = Callable[[int], Awaitable[None] | None]

REQUESTS = Counter("campfire_generator_requests_total", "Generator requests by outcome", ["outcome"])
TTFT = Histogram(
    "campfire_generator_ttft_seconds", "Time to first token (seconds), queueing excluded",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
CHUNKS = Counter("campfire_generator_stream_chunks_total", "Streamed text deltas received (≈ tokens)")


async def invoke_callback(callback: Callable[..., Any] | None, *args: Any) -> None:
    """Call a sync or async callback; its errors are logged, never raised into the generation."""
    if callback is None:
        return
    try:
        result = callback(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:  # a front end's progress hook must not break a reply
        log.exception("generator callback failed")


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.granted = False


class _Slots:
    """A FIFO concurrency limit whose waiters know their position (1 = next)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.waiters: collections.deque[_Waiter] = collections.deque()

    async def acquire(self, on_queued: QueueCallback | None) -> None:
        if self.in_flight < self.limit and not self.waiters:
            self.in_flight += 1
            return
        waiter = _Waiter()
        self.waiters.append(waiter)
        position = len(self.waiters)
        try:
            await invoke_callback(on_queued, position)
            while not waiter.granted:
                waiter.event.clear()
                await waiter.event.wait()
                if not waiter.granted and waiter in self.waiters:
                    new_position = self.waiters.index(waiter) + 1
                    if new_position != position:
                        position = new_position
                        await invoke_callback(on_queued, position)
        except BaseException:
            if waiter.granted:
                self.release()  # granted while being cancelled: pass the slot on
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
                self._notify()
            raise

    def release(self) -> None:
        if self.waiters:
            waiter = self.waiters.popleft()
            waiter.granted = True  # the slot passes straight to the next waiter; in_flight unchanged
            waiter.event.set()
            self._notify()
        else:
            self.in_flight -= 1

    def _notify(self) -> None:
        for other in self.waiters:
            other.event.set()


class _Breaker:
    """Consecutive-failure circuit breaker: closed → open (fail fast) → half-open (one probe)."""

    def __init__(self, failures: int, reset_s: float) -> None:
        self.threshold = failures
        self.reset_s = reset_s
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False

    def check(self) -> bool:
        """Raise :class:`GeneratorUnavailable` while open; in half-open state let one probe through
        (returns ``True`` for that probe)."""
        if self.opened_at is None:
            return False
        left = self.opened_at + self.reset_s - time.monotonic()
        if left > 0 or self.probing:
            REQUESTS.labels("breaker_open").inc()
            raise GeneratorUnavailable(
                "The generator is unavailable right now; please try again shortly.", retry_after_s=max(left, 1.0)
            )
        self.probing = True
        return True

    def end_probe(self) -> None:
        """The probe ended without a verdict (cancelled): let the next request probe."""
        self.probing = False

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probing = False

    def failure(self) -> None:
        self.failures += 1
        self.probing = False
        if self.failures >= self.threshold:
            if self.opened_at is None:
                log.warning("generator circuit breaker open for %.0f s after %d failures", self.reset_s, self.failures)
            self.opened_at = time.monotonic()

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None and time.monotonic() < self.opened_at + self.reset_s


def _retryable(err: BaseException) -> bool:
    """Before the first token: retry refused/reset connections and 502/503/504 (a server restarting)."""
    if isinstance(err, openai.APITimeoutError):
        return False
    if isinstance(err, openai.APIConnectionError):
        return True
    return isinstance(err, openai.APIStatusError) and err.status_code in (502, 503, 504)


def _is_context_error(err: openai.APIStatusError) -> bool:
    text = f"{err} {err.body}".lower()  # streamed requests carry the server's message in .body only
    return err.status_code == 400 and ("context length" in text or "context_length" in text or "too long" in text)


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
        self._openai = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=api_key or "not-needed",
            max_retries=0,  # retries are ours (tenacity), before the first token only
            timeout=httpx.Timeout(settings.request_timeout_s, connect=min(5.0, settings.request_timeout_s)),
        )
        self._http = httpx.AsyncClient(timeout=5.0)
        self._slots = _Slots(settings.max_concurrency)
        self._breaker = _Breaker(settings.breaker_failures, settings.breaker_reset_s)

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
                r = await self._http.get(self.base_url + "/models")
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    async def resolve_model(self) -> str:
        """Set :attr:`model` to the server's first model when it is empty; returns it.
        Raises :class:`GeneratorUnavailable` when the server cannot be reached."""
        if not self.model:
            try:
                page = await self._openai.models.list()
            except openai.APIError as err:
                raise GeneratorUnavailable(f"cannot list the generator's models: {type(err).__name__}", retry_after_s=1.0) from None
            if not page.data:
                raise GeneratorError("the generator serves no model")
            self.model = page.data[0].id
        return self.model

    async def aclose(self) -> None:
        await self._openai.close()
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
        stop: list[str] | None = None,
        user: str | None = None,
        on_queued: QueueCallback | None = None,
        usage: dict | None = None,
        timeout_s: float | None = None,
    ) -> AsyncIterator[str]:
        """Stream a chat completion; yields text deltas (``str``, never empty).

        ``messages``: OpenAI chat messages (``{"role", "content"}``). ``max_tokens``: completion limit
        (tokens). ``stop``: strings that end the reply (applied here too, since not every server
        honours them; the stop string itself is not yielded). ``usage``: when given, filled with
        ``prompt_tokens``/``completion_tokens`` (the server's count, else the number of deltas) and
        ``ttft_s`` (seconds from sending to the first delta, queueing excluded). ``timeout_s``
        overrides ``generator.request_timeout_s`` for the whole generation.

        Raises :class:`GeneratorUnavailable` (unreachable, 5xx, breaker open, stream cut),
        :class:`GeneratorTimeout`, :class:`ContextTooLong` (HTTP 400 about the context),
        :class:`GeneratorError` (other refusals). Use ``contextlib.aclosing`` when you may stop
        iterating early, so the stream is closed at once.
        """
        probe = self._breaker.check()
        try:
            await self._slots.acquire(on_queued)
        except BaseException:
            if probe:
                self._breaker.end_probe()
            raise
        try:
            if not self.model:
                await self.resolve_model()
            params: dict[str, Any] = {
                "model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                "top_p": top_p, "stream": True, "stream_options": {"include_usage": True},
            }
            if frequency_penalty:
                params["frequency_penalty"] = frequency_penalty
            if stop:
                params["stop"] = stop
            if user:
                params["user"] = user
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

    async def _open(self, params: dict[str, Any], usage: dict | None) -> tuple[Any, Any, Any, float]:
        """Open the stream and read up to its first text delta, retrying connection failures and
        502/503/504 (tenacity, exponential backoff). Returns (stream, chunk iterator, first chunk with
        text or ``None`` when the reply is empty, time sent)."""
        attempts = AsyncRetrying(
            stop=stop_after_attempt(self.settings.connect_retries + 1),
            wait=wait_exponential(multiplier=0.25, max=4.0),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        async for attempt in attempts:
            with attempt:
                sent = time.perf_counter()
                stream = await self._openai.chat.completions.create(**params)
                try:
                    chunks = aiter(stream)
                    async for chunk in chunks:
                        if _text(chunk):
                            return stream, chunks, chunk, sent
                        _fill_usage(chunk, usage)
                    return stream, chunks, None, sent
                except BaseException:
                    await stream.close()
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _stream(self, params: dict[str, Any], stop: list[str], usage: dict | None, deadline: float) -> AsyncIterator[str]:
        stream = None
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    stream, chunks, first, sent = await self._open(params, usage)
            except openai.APIStatusError as err:
                raise self._status_error(err) from None
            except openai.APITimeoutError:
                raise TimeoutError from None
            except openai.APIConnectionError as err:
                self._breaker.failure()
                REQUESTS.labels("unavailable").inc()
                raise GeneratorUnavailable(
                    "The generator cannot be reached right now; please try again shortly.",
                    retry_after_s=self._breaker.reset_s if self._breaker.is_open else 1.0,
                ) from err
            self._breaker.success()
            ttft = time.perf_counter() - sent
            if usage is not None:
                usage.setdefault("prompt_tokens", 0)
                usage.update(ttft_s=ttft if first is not None else None)
            if first is None:
                REQUESTS.labels("empty").inc()
                return
            TTFT.observe(ttft)
            deltas = 0
            held = ""  # text held back while it could be the start of a stop string
            chunk = first
            try:
                while chunk is not None:
                    _fill_usage(chunk, usage)
                    text = _text(chunk)
                    if text:
                        deltas += 1
                        CHUNKS.inc()
                        held += text
                        cut = _find_stop(held, stop)
                        if cut is not None:
                            if held[:cut]:
                                yield held[:cut]
                            held = ""
                            break
                        keep = _partial_stop(held, stop)
                        out, held = held[: len(held) - keep], held[len(held) - keep :]
                        if out:
                            yield out
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(chunks, None)
                if held:
                    yield held
            except openai.APIStatusError as err:
                raise self._status_error(err) from None
            except openai.APITimeoutError:
                raise TimeoutError from None
            except (openai.APIError, httpx.HTTPError) as err:
                # the stream broke after text was shown: never retried (the member saw a partial reply)
                self._breaker.failure()
                REQUESTS.labels("dropped").inc()
                raise GeneratorUnavailable("The generator stopped in the middle of the reply.", retry_after_s=1.0) from err
            finally:
                if usage is not None and not usage.get("completion_tokens"):
                    usage["completion_tokens"] = deltas
            REQUESTS.labels("ok").inc()
        finally:
            if stream is not None:
                await stream.close()

    def _status_error(self, err: openai.APIStatusError) -> GeneratorError:
        if _is_context_error(err):
            self._breaker.success()
            REQUESTS.labels("context_too_long").inc()
            return ContextTooLong("The conversation is too long for the model, even after trimming.")
        if err.status_code >= 500 or err.status_code == 429:
            self._breaker.failure()
            REQUESTS.labels("unavailable").inc()
            retry = _retry_after(err.response) if err.response is not None else None
            return GeneratorUnavailable(
                f"The generator is unavailable right now (HTTP {err.status_code}); please try again shortly.",
                retry_after_s=retry if retry is not None else 1.0,
            )
        self._breaker.success()  # the server answered: it is up
        REQUESTS.labels("refused").inc()
        return GeneratorError(f"The generator refused the request (HTTP {err.status_code}).")


def _text(chunk: Any) -> str:
    if not chunk.choices:
        return ""
    return chunk.choices[0].delta.content or ""


def _fill_usage(chunk: Any, usage: dict | None) -> None:
    if usage is not None and getattr(chunk, "usage", None) is not None:
        usage["prompt_tokens"] = chunk.usage.prompt_tokens or 0
        usage["completion_tokens"] = chunk.usage.completion_tokens or 0


def _find_stop(text: str, stop: list[str]) -> int | None:
    hits = [i for s in stop if s and (i := text.find(s)) >= 0]
    return min(hits) if hits else None


def _partial_stop(text: str, stop: list[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    best = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                best = max(best, n)
                break
    return best


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
