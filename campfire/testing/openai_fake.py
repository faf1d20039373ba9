"""A small OpenAI-compatible stand-in on loopback, for tests and benchmarks that need *controlled*
generator output (error paths, timing, a reply containing ``@everyone``, a 5,000-character reply).
Journeys are tested on the real model (fixture ``real_generator``); use this only where the real
model cannot be made to misbehave on demand. (Formerly ``tests/fakes/openai_server.py``, which
re-exports it, so ``bench/`` need not import ``tests``.)

Real HTTP: FastAPI + uvicorn on ``127.0.0.1`` on a free port, in a background thread with its own
event loop, so it works from sync and async code alike.

Usage (the ``fake_openai`` fixture in ``tests/plugins/generator.py`` gives a started instance)::

    def test_x(fake_openai):
        fake_openai.reply = "Hello @everyone " + "x" * 5000   # text streamed back
        fake_openai.chunk_chars = 8        # characters per SSE chunk (default 4)
        fake_openai.token_delay_s = 0.01   # sleep before each chunk (seconds)
        fake_openai.first_token_delay_s = 0.5  # extra sleep before the first chunk
        fake_openai.status = 503           # answer every request with this HTTP error …
        fake_openai.fail_times = 2         # … but only for the next 2 requests (None = always)
        fake_openai.error_message = "..."  # message of that error (400 + "maximum context length" = ContextTooLong)
        fake_openai.hang = True            # accept the request, never answer (until stop())
        fake_openai.drop_after = 3         # send 3 chunks, then cut the connection (no [DONE])
        fake_openai.end_after = 3          # send 3 chunks, then end the body normally (finish/[DONE] per below)
        fake_openai.finish_reason = None   # no chunk carries a finish_reason (default "stop")
        fake_openai.send_done = False      # no ``data: [DONE]`` at the end (default True)
        fake_openai.inject_after = 2       # after 2 chunks send ``data: <inject>`` and end the body …
        fake_openai.inject = "{oops"       # … e.g. malformed JSON or '{"error": {"message": "boom"}}'
        fake_openai.health_status = 503    # what GET /health answers (default 200)
        client = GeneratorClient(fake_openai.url, ...)   # url ends in /v1
        ...
        body = fake_openai.requests[-1]    # JSON bodies received, in order (dicts)
        fake_openai.health_checks          # GET /health requests received
        fake_openai.reset()                # back to the defaults, requests cleared

Endpoints: ``POST /v1/chat/completions`` (``stream`` true → SSE ending in ``data: [DONE]``, false →
one JSON completion), ``GET /v1/models`` (one model, :attr:`FakeOpenAI.model`), ``GET /health``
(200, or :attr:`health_status`). ``requests_started`` counts chat requests, even hung ones.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

DEFAULT_REPLY = "Hello from the fake generator. It streams this sentence in small pieces."


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (bind to 0 and read it back)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeOpenAI:
    """Controllable OpenAI-compatible server; see the module docstring for the knobs."""

    model = "fake-model"

    def __init__(self, extend: Callable[[FastAPI], Any] | None = None) -> None:
        """``extend(app)``, when given, is called on the FastAPI app before it serves (e.g. to add the
        generator server's ``/metrics`` middleware and route in a test)."""
        self.extend = extend
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.requests_started = 0
        self.health_checks = 0
        self._stop = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    # --- knobs -----------------------------------------------------------------------------------
    def reset(self) -> None:
        """Defaults: the short DEFAULT_REPLY, 4 chars per chunk, no delay, no errors; requests cleared."""
        self.reply: str = DEFAULT_REPLY
        self.chunk_chars: int = 4
        self.token_delay_s: float = 0.0
        self.first_token_delay_s: float = 0.0
        self.status: int | None = None
        self.fail_times: int | None = None
        self.error_message: str = "fake generator error"
        self.hang: bool = False
        self.drop_after: int | None = None
        self.end_after: int | None = None
        self.finish_reason: str | None = "stop"
        self.send_done: bool = True
        self.inject_after: int | None = None
        self.inject: str = "{not json"
        self.health_status: int = 200
        self.requests.clear()
        self.headers.clear()
        self.requests_started = 0
        self.health_checks = 0

    @property
    def url(self) -> str:
        """Base URL for an OpenAI client, ending in ``/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> FakeOpenAI:
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="critical", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-openai", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving; hung requests are released and their connections closed."""
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the app ---------------------------------------------------------------------------------
    def _error(self) -> JSONResponse | None:
        if self.status is None:
            return None
        if self.fail_times is not None:
            if self.fail_times <= 0:
                return None
            self.fail_times -= 1
        code = "context_length_exceeded" if "context length" in self.error_message else None
        body = {"error": {"message": self.error_message, "type": "invalid_request_error" if self.status < 500 else "server_error", "code": code}}
        return JSONResponse(body, status_code=self.status)

    async def _wait_forever(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(0.05)

    async def _sse(self, cid: str, model: str, pieces: list[str]) -> AsyncIterator[str]:
        """The streamed answer, shaped by the knobs (drop, end, inject, finish_reason, [DONE])."""

        def event(delta: dict, finish: str | None = None) -> str:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(chunk)}\n\n"

        yield event({"role": "assistant", "content": ""})
        if self.first_token_delay_s:
            await asyncio.sleep(self.first_token_delay_s)
        for n, piece in enumerate(pieces):
            if self.drop_after is not None and n >= self.drop_after:
                raise ConnectionAbortedError("fake generator dropped the stream")  # uvicorn cuts the connection
            if self.inject_after is not None and n >= self.inject_after:
                yield f"data: {self.inject}\n\n"
                return
            if self.end_after is not None and n >= self.end_after:
                break
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            if self._stop.is_set():
                return
            yield event({"content": piece})
        if self.finish_reason is not None:
            yield event({}, self.finish_reason)
        if self.send_done:
            yield "data: [DONE]\n\n"

    def _app(self) -> FastAPI:
        app = FastAPI()
        fake = self

        @app.get("/health")
        async def health() -> JSONResponse:
            fake.health_checks += 1
            return JSONResponse({"status": "ok" if fake.health_status == 200 else "error"}, status_code=fake.health_status)

        @app.get("/v1/models")
        async def models() -> dict:
            return {"object": "list", "data": [{"id": fake.model, "object": "model", "created": 0, "owned_by": "fake"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            fake.requests.append(body)
            fake.headers.append(dict(request.headers))
            fake.requests_started += 1
            if fake.hang:
                await fake._wait_forever()
                return JSONResponse({"error": {"message": "stopped"}}, status_code=503)
            error = fake._error()
            if error is not None:
                return error
            cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
            model = body.get("model") or fake.model
            text = fake.reply
            step = max(1, fake.chunk_chars)
            pieces = [text[i : i + step] for i in range(0, len(text), step)]
            if not body.get("stream"):
                await asyncio.sleep(fake.first_token_delay_s + fake.token_delay_s * len(pieces))
                return {
                    "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": len(pieces), "total_tokens": 10 + len(pieces)},
                }
            return StreamingResponse(fake._sse(cid, model, pieces), media_type="text/event-stream")

        if self.extend is not None:
            self.extend(app)
        return app
