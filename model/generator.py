"""``open_generator``: the one entry point front ends use to get a :class:`GeneratorClient`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from campfire.config import Secrets, Settings
from model.client import GeneratorClient
from model.supervisor import EmbeddedServer


@asynccontextmanager
async def open_generator(settings: Settings, secrets: Secrets) -> AsyncIterator[GeneratorClient]:
    """Yield a client of the configured generator; close everything on exit.

    ``generator.url`` set: a client of that server (``secrets.generator_api_key`` as bearer token; the
    model is resolved lazily, so Campfire starts even while the server is down). Empty: the embedded
    server (:class:`EmbeddedServer`) is started on a free loopback port and waited for (at most
    ``generator.startup_timeout_s``), supervised while in use and stopped on exit.
    Raises :class:`model.errors.GeneratorUnavailable` when the embedded server cannot start.
    """
    gen = settings.generator
    if gen.url:
        client = GeneratorClient(gen.url, api_key=secrets.generator_api_key, model=gen.model, settings=gen)
        try:
            yield client
        finally:
            await client.aclose()
        return
    server = EmbeddedServer(settings)
    await server.start()
    try:
        client = GeneratorClient(server.url, api_key=None, model=gen.model or server.model_name, settings=gen)
        try:
            yield client
        finally:
            await client.aclose()
    finally:
        await server.stop()
