"""Shared generator fixtures.

``fake_openai`` (function scope): a started :class:`campfire.testing.openai_fake.FakeOpenAI` — a small
OpenAI-compatible server on loopback whose reply text, per-chunk delay, HTTP error status, hang and
mid-stream drop are set by attributes, and which records the JSON bodies it received in
``.requests``. ``.url`` ends in ``/v1``. Use it only where a test needs controlled output (errors,
timing, ``@everyone``, a 5,000-character reply); see the fake's module docstring for every knob.

``real_generator`` (session scope): the embedded ``campfire serve`` on the real prepared SmolLM2
(fixture ``prepared_model``) with ``generator.engine = auto`` — what Campfire runs on this machine:
llama.cpp's ``llama-server`` when ``make install`` built it, else transformers serve with continuous
batching (:mod:`model.engine`) — started once per test session on a free loopback port.

``engine_generator`` (session scope, parametrised ``transformers`` | ``llama.cpp``): the same, on each
engine in turn, for the API suite both engines must pass (tests/model/test_engines.py); the
``llama.cpp`` case is skipped with the reason when llama-server is not built. A server is started
once per engine and shared with ``real_generator`` when ``auto`` picks the same engine. Yields a :class:`RealGenerator` with ``.url`` (ending in
``/v1``), ``.client`` (a :class:`model.client.GeneratorClient` bound to the running event loop —
one per loop, so it works from function- and session-loop tests alike), ``.counter`` (a :class:`model.tokens.TokenCounter` on the model's tokenizer),
``.settings`` (the :class:`campfire.config.Settings` it was started with) and ``.server`` (the
:class:`model.supervisor.EmbeddedServer`). Keep ``max_tokens`` small (16–64) in tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from campfire.testing.openai_fake import FakeOpenAI


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A started fake OpenAI-compatible server (stopped after the test)."""
    with FakeOpenAI() as fake:
        yield fake


class RealGenerator:
    """The session's real generator server. ``client`` gives a :class:`GeneratorClient` bound to the
    *running* event loop (one per loop, created on first use), so tests in any loop scope can use it."""

    def __init__(self, server: Any, counter: Any, settings: Any) -> None:
        self.server = server
        self.counter = counter
        self.settings = settings
        self._clients: dict[asyncio.AbstractEventLoop, Any] = {}

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def client(self) -> Any:
        from model.client import GeneratorClient

        loop = asyncio.get_running_loop()
        if loop not in self._clients:
            self._clients[loop] = GeneratorClient(
                self.server.url, api_key=None, model=self.server.model_name, settings=self.settings.generator
            )
        return self._clients[loop]


class _Generators:
    """The session's started generator servers, one per concrete engine, started on first use."""

    def __init__(self, prepared_model: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.prepared_model = prepared_model
        self.tmp_path_factory = tmp_path_factory
        self.started: dict[str, RealGenerator] = {}

    async def get(self, engine: str) -> RealGenerator:
        """The server on ``engine`` (``auto`` resolves first, so it shares the concrete engine's server)."""
        from campfire.config import Settings
        from model.engine import resolve_engine
        from model.supervisor import EmbeddedServer
        from model.tokens import TokenCounter

        settings = Settings(
            data_dir=self.tmp_path_factory.mktemp(f"real-generator-{engine}"),
            generator={"model_path": str(self.prepared_model), "device": "cpu", "max_concurrency": 8,
                       "request_timeout_s": 240, "engine": engine},
        )
        concrete, _ = resolve_engine(settings.generator, self.prepared_model)
        if concrete not in self.started:
            settings = settings.model_copy(update={"generator": settings.generator.model_copy(update={"engine": concrete})})
            server = EmbeddedServer(settings)
            await server.start()
            self.started[concrete] = RealGenerator(server, TokenCounter(self.prepared_model), settings)
        return self.started[concrete]

    async def stop(self) -> None:
        for real in self.started.values():
            await real.server.stop()


@pytest.fixture(scope="session")
async def _generators(prepared_model: Path, tmp_path_factory: pytest.TempPathFactory):
    pool = _Generators(prepared_model, tmp_path_factory)
    try:
        yield pool
    finally:
        await pool.stop()


@pytest.fixture(scope="session")
async def real_generator(_generators: _Generators):
    """One real generator server per test session on the ``auto`` engine (llama.cpp: < 1 s to start;
    transformers: ≈ 10–15 s on this CPU); stopped at the end."""
    return await _generators.get("auto")


@pytest.fixture(scope="session", params=["transformers", "llama.cpp"])
async def engine_generator(request: pytest.FixtureRequest, _generators: _Generators):
    """The real generator on each engine (see the module docstring)."""
    if request.param == "llama.cpp":
        from model.build_llama import server_binary

        if server_binary() is None:
            pytest.skip("llama-server is not built on this machine (make install runs python -m model.build_llama; "
                        "its one-line failure reason is in its output)")
    return await _generators.get(request.param)
