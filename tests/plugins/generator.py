"""Shared generator fixtures.

``fake_openai`` (function scope): a started :class:`campfire.testing.openai_fake.FakeOpenAI` — a small
OpenAI-compatible server on loopback whose reply text, per-chunk delay, HTTP error status, hang and
mid-stream drop are set by attributes, and which records the JSON bodies it received in
``.requests``. ``.url`` ends in ``/v1``. Use it only where a test needs controlled output (errors,
timing, ``@everyone``, a 5,000-character reply); see the fake's module docstring for every knob.

``real_generator`` (session scope): the embedded ``campfire serve`` (transformers serve with
continuous batching) on the real prepared SmolLM2 (fixture ``prepared_model``), started once per
test session on a free loopback port. Yields a :class:`RealGenerator` with ``.url`` (ending in
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


@pytest.fixture(scope="session")
async def real_generator(prepared_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """One real generator server per test session (≈ 10–15 s to start on this CPU); stopped at the end."""
    from campfire.config import Settings
    from model.supervisor import EmbeddedServer
    from model.tokens import TokenCounter

    settings = Settings(
        data_dir=tmp_path_factory.mktemp("real-generator"),
        generator={"model_path": str(prepared_model), "device": "cpu", "max_concurrency": 8, "request_timeout_s": 240},
    )
    server = EmbeddedServer(settings)
    await server.start()
    real = RealGenerator(server, TokenCounter(prepared_model), settings)
    try:
        yield real
    finally:
        await server.stop()
