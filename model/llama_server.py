"""The llama.cpp engine of ``campfire serve``: llama.cpp's own ``llama-server`` on a private loopback port,
behind a thin FastAPI front that keeps Campfire's API identical on both engines.

The front (this module) owns the ``llama-server`` child (:func:`model.engine.llama_server_command`;
it dies with the front: ``PR_SET_PDEATHSIG``) and adds what the transformers engine has
(:mod:`model.server`) and llama-server answers differently:

- ``repetition_penalty`` (vLLM's name, which the client sends) → llama.cpp's ``repeat_penalty``, with
  ``repeat_last_n`` = the context window (the whole context, as vLLM and :mod:`model.penalties` count the prompt too);
  the three penalties checked first (HTTP 400 ``{"detail": reason}``, :mod:`model.penalty_check`);
- a prompt over the window: llama-server's ``exceed_context_size_error`` → HTTP 400 in OpenAI's words
  ("This model's maximum context length is N tokens; the prompt has P."), as on the other engine;
- streamed replies carry ``usage`` in their last chunk (``stream_options.include_usage`` defaults to
  true) and end with ``data: [DONE]`` (llama-server sends it);
- ``GET /health``: 200 when llama-server is up, 503 ``llama_server_dead`` when it has exited (the
  supervisor, :mod:`model.supervisor`, then restarts the whole front);
- threads that follow the cores actually free (:mod:`model.threads_follow`, when the binary carries
  Campfire's patch and no count is pinned): a task of the front tells llama-server how many to decode
  with;
- ``GET /metrics``: Campfire's Prometheus metrics (:class:`model.server_metrics.ServerMetrics`; queue
  depth = requests in progress beyond the ``--parallel`` slots, which llama-server defers; plus
  ``campfire_server_decode_threads``, the threads decoding now), recorded
  by the relay itself (:class:`Tally`: byte scans of whole SSE events, no JSON parsing and no HTTP
  middleware between llama-server's bytes and the client); llama-server's own ``/metrics`` stays
  reachable on its private port.

Everything else (temperature, top_p, stop strings, max_tokens, the chat template from the GGUF) is
llama-server's. The front does no tokenisation and never imports torch. Its cost, measured with
``bench/generator.py`` at 4 and 8 concurrent streams on 2 cores: 0.31–0.46 ms of CPU per streamed token
(0.43–0.74 ms with the former JSON-parsing metrics middleware), ≈ 2 % of the tree's CPU (README
"Generator engines").
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from campfire.config import Settings
from model.supervisor import stop_process

log = logging.getLogger(__name__)

CONTEXT_ERROR = "exceed_context_size_error"
PASSED = ("/v1/chat/completions", "/v1/completions")


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """In the llama-server child before exec: SIGKILL when the front process dies (Linux prctl)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def upstream_body(body: dict[str, Any], penalties: Any, window: int) -> dict[str, Any]:
    """The request ``body`` (penalty fields already popped into ``penalties``, a
    :class:`model.penalty_check.Penalties`) as llama-server takes it: its penalty names, counted over
    the last ``window`` tokens (the whole context), and usage in the last streamed chunk unless the
    client said otherwise."""
    out = dict(body)
    if penalties.frequency:
        out["frequency_penalty"] = penalties.frequency
    if penalties.presence:
        out["presence_penalty"] = penalties.presence
    if penalties.repetition != 1.0:
        out["repeat_penalty"] = penalties.repetition
    if penalties.active:
        out["repeat_last_n"] = window  # llama-server refuses -1 ("whole context") in a request
    if out.get("stream"):
        out.setdefault("stream_options", {"include_usage": True})
    return out


def context_error(status: int, payload: bytes, context_tokens: int) -> dict[str, Any] | None:
    """OpenAI's context-length error body for llama-server's ``exceed_context_size_error`` answer
    (``payload``), else None. ``context_tokens``: the window named in the message."""
    if status != 400:
        return None
    try:
        error = json.loads(payload).get("error") or {}
    except (ValueError, AttributeError):
        return None
    if not isinstance(error, dict) or error.get("type") != CONTEXT_ERROR:
        return None
    prompt = error.get("n_prompt_tokens")
    message = f"This model's maximum context length is {context_tokens} tokens; the prompt has {prompt}."
    return {"detail": message, "error": {"message": message, "type": "invalid_request_error", "code": "context_length_exceeded"}}


CONTENT_DELTA = re.compile(rb'"content":\s*"(?!")')  # a non-empty content string ("reasoning_content" has no quote before it)
COMPLETION_TOKENS = re.compile(rb'"completion_tokens":\s*(\d+)')
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}


class Tally:
    """What one relayed reply carried, for :class:`model.server_metrics.ServerMetrics`, without parsing its
    JSON: content deltas and the first one's time (TTFT), and the server's ``usage.completion_tokens``
    when it sends one (else the number of deltas). :meth:`feed` takes the streamed bytes in any pieces
    (only whole events, up to a blank line, are scanned); :meth:`done` records the metrics once."""

    def __init__(self, metrics: Any, endpoint: str) -> None:
        self.metrics, self.endpoint = metrics, endpoint
        self.started = time.perf_counter()
        self.first: float | None = None
        self.deltas = 0
        self.usage_tokens: int | None = None
        self._rest = b""
        metrics.in_progress.inc()

    def feed(self, piece: bytes) -> None:
        """Account for ``piece`` of an SSE body (events may be split across pieces)."""
        data = self._rest + piece
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self._rest = data
            return
        whole, self._rest = data[:cut], data[cut + 2:]
        self.count(whole)

    def count(self, whole: bytes) -> None:
        """Account for complete events."""
        deltas = len(CONTENT_DELTA.findall(whole))
        if deltas and self.first is None:
            self.first = time.perf_counter()
        self.deltas += deltas
        self.usage(whole)

    def usage(self, payload: bytes) -> None:
        """Take the last ``completion_tokens`` in ``payload`` (events, or a whole non-streamed answer:
        no TTFT then, as on the transformers engine)."""
        for match in COMPLETION_TOKENS.finditer(payload):
            self.usage_tokens = int(match[1])

    def done(self, status: int) -> None:
        """Record the request (HTTP ``status``), its duration, tokens, TTFT and decode speed."""
        m, end = self.metrics, time.perf_counter()
        tokens = self.usage_tokens if self.usage_tokens is not None else self.deltas
        m.in_progress.dec()
        m.requests.labels(self.endpoint, str(status)).inc()
        m.duration.observe(end - self.started)
        m.tokens.inc(tokens)
        if self.first is not None:
            m.ttft.observe(self.first - self.started)
            if tokens and end > self.first:
                m.tokens_per_s.observe(tokens / (end - self.first))


def child_env(threads_file: Path | None = None) -> dict[str, str]:
    """llama-server's environment: this process's, plus

    - with ``threads_file`` (threads that follow the free cores, :mod:`model.threads_follow`):
      ``CAMPFIRE_THREADS_FILE`` naming it, and OpenMP's own wait policy (threads spin briefly at a barrier:
      fastest while the cores are free, and the front drops threads as soon as they are not);
    - without (a fixed count): ``OMP_WAIT_POLICY=passive`` unless set, so threads sleep at a barrier
      instead of spinning and a core taken by another process does not stall the step: measured with one
      CPU-bound process beside it, 8 concurrent chats, 2 batch threads: 45.0 tok/s passive, 28.5
      spinning (1 thread: 47.5)."""
    if threads_file is not None:
        return {**os.environ, "CAMPFIRE_THREADS_FILE": str(threads_file)}
    return {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "passive")}


class LlamaChild:
    """The ``llama-server`` process: :meth:`start` (waits for its ``/health``), :attr:`alive`, :meth:`stop`."""

    def __init__(self, command: list[str], port: int, startup_timeout_s: float, threads_file: Path | None = None) -> None:
        self.command = command
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.threads_file = threads_file  # set: its threads follow the free cores (child_env)
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, http: Any) -> None:
        """Spawn it (output to this process's stdout/stderr: the generator log) and wait until its
        ``/health`` answers 200. Raises RuntimeError when it exits or is not ready in time."""
        t0 = time.perf_counter()
        self.proc = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.DEVNULL, preexec_fn=_die_with_parent, env=child_env(self.threads_file))
        log.info("llama-server starting (pid %d): %s", self.proc.pid, " ".join(self.command))
        while time.perf_counter() - t0 < self.startup_timeout_s:
            if self.proc.returncode is not None:
                raise RuntimeError(f"llama-server exited at start (code {self.proc.returncode})")
            with contextlib.suppress(Exception):
                if (await http.get(self.base + "/health")).status_code == 200:
                    log.info("llama-server ready in %.1f s", time.perf_counter() - t0)
                    return
            await asyncio.sleep(0.1)
        await self.stop()
        raise RuntimeError(f"llama-server not ready within {self.startup_timeout_s:.0f} s")

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        await stop_process(self.proc)


async def send_once_more(http: Any, request: Any) -> Any:
    """``http.send(request, stream=True)``, sent once more on a new connection when the pooled keep-alive
    connection it went out on was closed by llama-server as it was sent (its HTTP library closes idle and
    long-used connections; ``httpx.RemoteProtocolError``: "Server disconnected without sending a
    response", seen once in a 10-minute benchmark) — nothing of the request was answered, so a member's
    reply is not lost to it. Raises what the second try raises."""
    import httpx

    try:
        return await http.send(request, stream=True)
    except httpx.RemoteProtocolError:
        log.debug("llama-server closed a pooled connection as a request went out: sending it again")
        return await http.send(request, stream=True)


async def report_exit(child: LlamaChild) -> None:
    """Wait for ``child`` to exit and say so in one line (the front stays up: ``/health`` answers 503 and
    generation requests 503, until the bot's supervisor restarts ``campfire serve`` — or the admin, when
    it runs on its own)."""
    if child.proc is None:
        return
    code = await child.proc.wait()
    log.error("llama-server exited (code %s): generation answers 503 until campfire serve is restarted "
              "(the bot's supervisor does it through /health)", code)


def threads_folder() -> Path:
    """A new private folder for the threads file (``campfire-threads-<pid>-…`` in the temp dir), after
    removing those of front processes that no longer run (killed with SIGKILL, they could not)."""
    for old in Path(tempfile.gettempdir()).glob("campfire-threads-*-*"):
        pid = old.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"campfire-threads-{os.getpid()}-"))


def generation_handler(child: LlamaChild, http: Any, context_tokens: int, metrics: Any, active: dict[str, int]):
    """The front's handler of ``/v1/chat/completions`` and ``/v1/completions`` (a Starlette endpoint taking
    the raw request): checks and maps the request (:func:`upstream_body`), forwards it to ``child``
    through ``http`` (an ``httpx.AsyncClient``), relays a stream byte for byte as llama-server sends it
    (counted by a :class:`Tally` into ``metrics``; ``active["n"]``: requests in progress), and maps a
    context-length error (:func:`context_error`, ``context_tokens`` the window)."""
    import httpx
    from fastapi import Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    from model.penalty_check import check_request, pop_penalties

    async def relay(upstream: httpx.Response, tally: Tally):
        try:
            async for piece in upstream.aiter_raw():
                tally.feed(piece)
                yield piece
        finally:
            active["n"] -= 1
            tally.done(200)  # the status sent; a client that left early is counted as the middleware does
            await upstream.aclose()

    async def generate(request: Request) -> Response:
        tally = Tally(metrics, ENDPOINTS.get(request.url.path, "chat"))
        try:
            body = await request.json()
            check_request(body)
            penalties = pop_penalties(body)
        except (ValueError, TypeError) as err:
            tally.done(400)
            return JSONResponse({"detail": str(err)}, status_code=400)
        if not child.alive:
            tally.done(503)
            return JSONResponse({"detail": "the generator's llama-server has stopped; try again shortly"}, status_code=503)
        sent = http.build_request("POST", child.base + request.url.path, json=upstream_body(body, penalties, context_tokens))
        try:
            upstream = await send_once_more(http, sent)
        except httpx.TransportError:  # it died or stopped listening as the request went out
            tally.done(503)
            return JSONResponse({"detail": "the generator's llama-server is not answering; try again shortly"}, status_code=503)
        except BaseException:
            tally.done(500)
            raise
        active["n"] += 1
        if upstream.status_code != 200 or not body.get("stream"):
            try:
                payload = await upstream.aread()
            finally:
                active["n"] -= 1
                await upstream.aclose()
            tally.usage(payload)
            mapped = context_error(upstream.status_code, payload, context_tokens)
            tally.done(400 if mapped is not None else upstream.status_code)
            if mapped is not None:
                return JSONResponse(mapped, status_code=400)
            return Response(payload, status_code=upstream.status_code, media_type=upstream.headers.get("content-type"))
        return StreamingResponse(relay(upstream, tally), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return generate


def build_llama_app(settings: Settings, binary: Path, gguf: Path, model_name: str):
    """The FastAPI front serving ``gguf`` through ``llama-server`` at ``binary``; ``/v1/models`` lists
    ``model_name``. The child starts in the app's lifespan (before the port opens) and stops with it.
    Returns the app."""
    import httpx
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response

    from prometheus_client import Gauge

    from model.engine import fixed_threads_reason, llama_server_command
    from model.server import free_port
    from model.server_metrics import CONTENT_TYPE_LATEST, ServerMetrics
    from model.threads_follow import Follower

    gen = settings.generator
    port = free_port()
    fixed = fixed_threads_reason(gen, binary)
    child = LlamaChild(llama_server_command(binary, gguf, port, gen, model_name, fixed is None), port, gen.startup_timeout_s)
    http = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0), limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
    active = {"n": 0}
    metrics = ServerMetrics(queue_depth=lambda: max(0, active["n"] - gen.max_concurrency))
    threads_gauge = Gauge("campfire_server_decode_threads", "llama.cpp engine: threads llama-server decodes with (from its next step)",
                          registry=metrics.registry)
    started_threads = int(child.command[child.command.index("--threads") + 1])
    threads_gauge.set(started_threads)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        folder = threads_folder() if fixed is None else None
        child.threads_file = folder / "threads" if folder else None
        tasks: list[asyncio.Task] = []
        try:
            await child.start(http)
            log.info("generator ready: %s on llama.cpp (%s)", gguf, " ".join(child.command[5:]))
            tasks.append(asyncio.create_task(report_exit(child)))
            if child.threads_file is not None and child.proc is not None:
                follower = Follower(child.proc.pid, [os.getpid()], child.threads_file, started_threads,
                                    on_change=threads_gauge.set, alive=lambda: child.alive)
                tasks.append(asyncio.create_task(follower.run()))
                log.info("llama-server's threads follow the free cores: 1-%d (model.threads_follow)", follower.most)
            else:
                log.info("llama-server's threads are fixed at %d: %s", started_threads, fixed)
            yield
        finally:
            for task in tasks:
                task.cancel()
            for ended in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(ended, Exception):
                    log.warning("a task of the front had stopped on an error: %r", ended)
            await child.stop()
            await http.aclose()
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health() -> Response:
        if not child.alive:
            return JSONResponse({"status": "llama_server_dead"}, status_code=503)
        try:
            upstream = await http.get(child.base + "/health", timeout=5.0)
        except httpx.HTTPError:
            return JSONResponse({"status": "llama_server_unreachable"}, status_code=503)
        return JSONResponse({"status": "ok" if upstream.status_code == 200 else "loading"}, status_code=upstream.status_code)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "campfire", "created": 0}]}

    generate = generation_handler(child, http, gen.context_tokens, metrics, active)
    for path in PASSED:  # a plain Starlette route: the handler takes the raw request
        app.add_route(path, generate, methods=["POST"])

    @app.get("/metrics", include_in_schema=False)
    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
