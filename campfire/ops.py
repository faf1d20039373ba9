"""Operators' view of a running Campfire: ``/health`` and Prometheus ``/metrics``.

The bot process serves both when ``[ops] metrics_port`` is set (0, the default, is off), on
``[ops] metrics_host`` (loopback by default), from a small aiohttp app on the bot's own event loop
(aiohttp comes with discord.py; nothing blocks: rendering the metrics takes well under a millisecond).

What is measured, and who reports it — code anywhere calls these plain functions, which never raise
and cost a few microseconds (the metrics are process-wide, like Python's logging):

- :func:`count_interaction` — one slash command / button / console command, by name
  (``campfire_interactions_total{command}``);
- :func:`observe_generation` — one chat reply or story: outcome, time to first token, tokens/s,
  completion tokens (``campfire_generations_total{kind,outcome}``,
  ``campfire_generation_ttft_seconds{kind}``, ``campfire_generation_tokens_per_second{kind}``,
  ``campfire_generation_completion_tokens_total{kind}``);
- :func:`observe_digest` — one daily-picks run for a guild (``campfire_digest_runs_total{outcome}``,
  ``campfire_digest_duration_seconds``, ``campfire_digest_members_total``, ``campfire_digest_picks_total``);
- :func:`count_import` — what an import (or live capture) stored
  (``campfire_import_runs_total{kind}``, ``campfire_imported_total{kind,what}``);
- read at each scrape from the generator client handed to :class:`OpsServer`:
  ``campfire_generator_queue_depth``, ``campfire_generator_in_flight``, ``campfire_generator_breaker_open``;
- measured by :class:`LoopLagMonitor` while the server runs: ``campfire_event_loop_lag_seconds``
  (histogram of how late a periodic sleep wakes up) and ``campfire_event_loop_lag_last_seconds``;
- ``campfire_build_info{version}``, and the process / GC / platform collectors of prometheus-client.

``/health`` answers 200 ``{"status": "ok", …}`` once ``ready()`` (the bot connected to Discord) and
503 ``{"status": "starting"}`` before; the body carries the uptime, the last event-loop lag and the
generator's queue depth, in-flight requests and breaker state ("degraded" while the breaker is open).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from campfire.config import ConfigError

if TYPE_CHECKING:
    from aiohttp import web

    from campfire.config import Settings

log = logging.getLogger(__name__)

#: The registry ``/metrics`` renders (not prometheus-client's global one, so nothing else leaks in).
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

_MAX_LABEL = 64

INTERACTIONS = Counter("campfire_interactions", "Slash commands, buttons and console commands handled, by command", ["command"], registry=REGISTRY)
GENERATIONS = Counter("campfire_generations", "Chat replies and stories generated, by kind and outcome", ["kind", "outcome"], registry=REGISTRY)
TTFT = Histogram(
    "campfire_generation_ttft_seconds", "Seconds from request to the first token", ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120), registry=REGISTRY,
)
TOKENS_PER_S = Histogram(
    "campfire_generation_tokens_per_second", "Decode speed of a generation (completion tokens / seconds after the first)",
    ["kind"], buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), registry=REGISTRY,
)
COMPLETION_TOKENS = Counter("campfire_generation_completion_tokens", "Completion tokens generated", ["kind"], registry=REGISTRY)
DIGEST_RUNS = Counter("campfire_digest_runs", "Daily-picks runs (one guild each), by outcome", ["outcome"], registry=REGISTRY)
DIGEST_SECONDS = Histogram(
    "campfire_digest_duration_seconds", "Seconds one guild's daily-picks run took",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600), registry=REGISTRY,
)
DIGEST_MEMBERS = Counter("campfire_digest_members", "Members picked for by daily-picks runs", registry=REGISTRY)
DIGEST_PICKS = Counter("campfire_digest_picks", "Picks made by daily-picks runs", registry=REGISTRY)
IMPORT_RUNS = Counter("campfire_import_runs", "Import runs, by kind (exports, items, live)", ["kind"], registry=REGISTRY)
IMPORTED = Counter("campfire_imported", "What imports stored, by kind and what (items, interactions, errors, skipped)", ["kind", "what"], registry=REGISTRY)
LOOP_LAG = Histogram(
    "campfire_event_loop_lag_seconds", "How late a periodic sleep on the event loop woke up",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY,
)
LOOP_LAG_LAST = Gauge("campfire_event_loop_lag_last_seconds", "The last event-loop lag measured", registry=REGISTRY)
BUILD = Info("campfire_build", "Campfire's version", registry=REGISTRY)


def _label(value: Any) -> str:
    return (str(value) or "unknown")[:_MAX_LABEL]


def count_interaction(command: str) -> None:
    """One interaction handled: ``command`` is its qualified name (``story``, ``campfire settings``,
    ``button:rate``…) — a fixed name, never member text (each name is a time series)."""
    try:
        INTERACTIONS.labels(command=_label(command)).inc()
    except Exception:  # metrics never break a feature
        log.debug("count_interaction failed", exc_info=True)


def outcome_of(err: BaseException) -> str:
    """The ``outcome`` word for a generation that raised ``err``: ``interrupted``, ``timeout``,
    ``unavailable``, ``cancelled`` or ``error`` (by the :mod:`model.errors` class name, so this module
    needs no import of ``model``)."""
    names = {cls.__name__ for cls in type(err).__mro__}
    for name, word in (("StreamInterrupted", "interrupted"), ("GeneratorTimeout", "timeout"),
                       ("GeneratorUnavailable", "unavailable"), ("CancelledError", "cancelled")):
        if name in names:
            return word
    return "error"


def observe_generation(
    kind: str,
    *,
    outcome: str = "ok",
    ttft_s: float | None = None,
    total_s: float | None = None,
    completion_tokens: int = 0,
) -> None:
    """One generation ended. ``kind``: ``chat`` | ``story`` | …; ``outcome``: ``ok``, ``interrupted``,
    ``timeout``, ``unavailable``, ``error``… (a fixed word). Times in seconds, as in
    :class:`model.story.StoryResult` / the client's ``usage`` dict (``ttft_s``); tokens/s is
    ``completion_tokens / (total_s - ttft_s)`` when both are known."""
    try:
        kind = _label(kind)
        GENERATIONS.labels(kind=kind, outcome=_label(outcome)).inc()
        if ttft_s is not None and ttft_s >= 0:
            TTFT.labels(kind=kind).observe(ttft_s)
        if completion_tokens > 0:
            COMPLETION_TOKENS.labels(kind=kind).inc(completion_tokens)
            if total_s is not None and ttft_s is not None and total_s - ttft_s > 0:
                TOKENS_PER_S.labels(kind=kind).observe(completion_tokens / (total_s - ttft_s))
    except Exception:
        log.debug("observe_generation failed", exc_info=True)


def observe_digest(*, seconds: float, members: int = 0, picks: int = 0, outcome: str = "ok") -> None:
    """One guild's daily-picks run ended (``outcome``: ``ok``, ``dry_run``, ``error``, ``skipped``…)."""
    try:
        DIGEST_RUNS.labels(outcome=_label(outcome)).inc()
        if seconds >= 0:
            DIGEST_SECONDS.observe(seconds)
        if members > 0:
            DIGEST_MEMBERS.inc(members)
        if picks > 0:
            DIGEST_PICKS.inc(picks)
    except Exception:
        log.debug("observe_digest failed", exc_info=True)


def count_import(*, kind: str = "exports", items: int = 0, interactions: int = 0, errors: int = 0, skipped: int = 0) -> None:
    """One import run (``kind``: ``exports``, ``items``, ``live`` for messages captured by the bot)
    stored ``items`` and ``interactions``, and lost ``errors`` / ``skipped`` records."""
    try:
        kind = _label(kind)
        IMPORT_RUNS.labels(kind=kind).inc()
        for what, n in (("items", items), ("interactions", interactions), ("errors", errors), ("skipped", skipped)):
            if n > 0:
                IMPORTED.labels(kind=kind, what=what).inc(n)
    except Exception:
        log.debug("count_import failed", exc_info=True)


class _GeneratorCollector(Collector):
    """Reads the generator client's live state at each scrape (``queue_depth``, ``in_flight``,
    ``breaker_open`` — properties of :class:`model.client.GeneratorClient`)."""

    def __init__(self) -> None:
        self.client: Any = None

    def state(self) -> dict[str, float] | None:
        client = self.client
        if client is None:
            return None
        out: dict[str, float] = {}
        for name in ("queue_depth", "in_flight", "breaker_open"):
            try:
                value = getattr(client, name)
            except Exception:
                continue
            if isinstance(value, (bool, int, float)):
                out[name] = float(value)
        return out

    def collect(self) -> Iterable[GaugeMetricFamily]:
        state = self.state() or {}
        docs = {
            "queue_depth": "Generation requests waiting for a concurrency slot",
            "in_flight": "Generation requests being served",
            "breaker_open": "1 while the generator's circuit breaker refuses requests",
        }
        for name, doc in docs.items():
            if name in state:
                yield GaugeMetricFamily(f"campfire_generator_{name}", doc, value=state[name])


_GENERATOR = _GeneratorCollector()
REGISTRY.register(_GENERATOR)


def watch_generator(client: Any | None) -> None:
    """Report ``client``'s queue depth, in-flight requests and breaker state at each scrape (None: stop)."""
    _GENERATOR.client = client


class LoopLagMonitor:
    """Measures event-loop lag: a task sleeps ``interval_s`` again and again and records how much
    later than asked it woke up (a blocked loop shows here first)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.last_lag_s = 0.0
        self.max_lag_s = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="campfire-loop-lag")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, loop.time() - t0 - self.interval_s)
            self.last_lag_s = lag
            self.max_lag_s = max(self.max_lag_s, lag)
            LOOP_LAG.observe(lag)
            LOOP_LAG_LAST.set(lag)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class OpsServerError(ConfigError):
    """The ops endpoint cannot listen (port taken, bad host); ``str()`` is one line (exit 2)."""


class OpsServer:
    """``/health`` and ``/metrics`` over HTTP on the running event loop.

    ``OpsServer(host="127.0.0.1", port=0, *, generator=None, ready=None, lag_interval_s=0.5)``;
    ``port=0`` picks a free port (tests). ``await start()`` returns the bound port (raises
    :class:`OpsServerError`); ``await stop()``; ``url``; also ``async with``. ``ready()`` (e.g. the
    bot's ``is_ready``) decides 200 vs 503 on ``/health``; ``generator`` is watched as by
    :func:`watch_generator`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        generator: Any | None = None,
        ready: Callable[[], bool] | None = None,
        lag_interval_s: float = 0.5,
    ) -> None:
        self.host = host
        self.port = port
        self.generator = generator
        self.ready = ready
        self.lag = LoopLagMonitor(lag_interval_s)
        self._runner: web.AppRunner | None = None
        self._started = time.monotonic()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> int:
        from aiohttp import web

        from campfire.cli import version

        BUILD.info({"version": version()})
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as err:
            await runner.cleanup()
            raise OpsServerError(
                f"cannot serve /metrics on {self.host}:{self.port}: {err.strerror or err} — change [ops] metrics_port "
                f"(or CAMPFIRE_OPS__METRICS_PORT; 0 = off)"
            ) from None
        self._runner = runner
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._started = time.monotonic()
        watch_generator(self.generator)
        self.lag.start()
        log.info("ops endpoint: %s/health and %s/metrics", self.url, self.url)
        return self.port

    async def stop(self) -> None:
        await self.lag.stop()
        if self.generator is not None and _GENERATOR.client is self.generator:
            watch_generator(None)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> OpsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def health(self) -> tuple[int, dict[str, Any]]:
        """(status code, body) of ``/health``."""
        try:
            ready = True if self.ready is None else bool(self.ready())
        except Exception:
            ready = False
        generator = _GENERATOR.state() if _GENERATOR.client is not None else None
        if generator is not None:
            generator = {k: (bool(v) if k == "breaker_open" else int(v)) for k, v in generator.items()}
        status = "starting" if not ready else ("degraded" if generator and generator.get("breaker_open") else "ok")
        body = {
            "status": status,
            "uptime_s": round(time.monotonic() - self._started, 3),
            "event_loop_lag_s": round(self.lag.last_lag_s, 4),
            "generator": generator,
        }
        return (200 if ready else 503), body

    async def _health(self, request: web.Request) -> web.Response:
        from aiohttp import web

        code, body = self.health()
        return web.Response(status=code, text=json.dumps(body), content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


@asynccontextmanager
async def serve_ops(
    settings: Settings, *, generator: Any | None = None, ready: Callable[[], bool] | None = None
) -> AsyncIterator[OpsServer | None]:
    """The :class:`OpsServer` of ``settings.ops`` while the block runs; yields None when
    ``ops.metrics_port`` is 0 (off). Raises :class:`OpsServerError` when the port cannot be bound."""
    if not settings.ops.metrics_port:
        yield None
        return
    server = OpsServer(settings.ops.metrics_host, settings.ops.metrics_port, generator=generator, ready=ready)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
