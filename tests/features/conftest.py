"""Fixtures for the application core's tests: a real :class:`campfire.app.App` without any bot.

``app`` (function scope, the test's own loop): an ``App`` on the test's temporary data dir — a real
SQLite store, the real embedder (session fixture ``embedder``) and FAISS indexes — whose generator
is a ``GeneratorClient`` over loopback HTTP to the controllable fake (``fake_openai``; the fake is
``app_fake``). ``real_app``: the same on the session's real SmolLM2 server (``real_generator``).
Override ``app_settings_overrides`` (a dict of ``Settings`` overrides) in a module to change settings.
Everything opened is closed after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_asyncio

from campfire.app import App


@pytest.fixture
def app_settings_overrides() -> dict[str, Any]:
    """``Settings`` overrides for ``app`` / ``real_app`` (default: none). Override per module."""
    return {}


@asynccontextmanager
async def open_test_app(settings: Any, embedder: Any, counter: Any, url: str | None, model: str) -> AsyncIterator[App]:
    """An :class:`App` on ``settings`` (its data dir) with ``embedder`` and, when ``url`` is given, a
    generator client to it; closed on exit."""
    from model.client import GeneratorClient
    from recsys.service import Recommender
    from recsys.store import Store

    client = GeneratorClient(url, api_key=None, model=model, settings=settings.generator) if url else None
    store = await Store.open(settings.db_path)
    recommender = Recommender(store, embedder, settings)
    try:
        await recommender.start()
        yield App(settings=settings, store=store, recommender=recommender, generator=client, counter=counter)
    finally:
        await recommender.aclose()
        await store.close()
        if client is not None:
            await client.aclose()


@pytest.fixture
def app_fake(fake_openai):
    """The fake generator behind ``app`` (set ``reply``, ``status``… on it)."""
    return fake_openai


@pytest_asyncio.fixture(loop_scope="function")
async def app(make_settings, embedder, prepared_model, app_fake, app_settings_overrides) -> AsyncIterator[App]:
    """An :class:`App` on a temporary data dir with the fake generator."""
    from model.tokens import TokenCounter

    overrides = dict(app_settings_overrides)
    overrides["generator"] = {"url": app_fake.url, **overrides.get("generator", {})}
    settings = make_settings(**overrides)
    async with open_test_app(settings, embedder, TokenCounter(prepared_model), app_fake.url, app_fake.model) as opened:
        yield opened


@pytest_asyncio.fixture(loop_scope="function")
async def real_app(make_settings, embedder, real_generator, app_settings_overrides) -> AsyncIterator[App]:
    """An :class:`App` on a temporary data dir with the session's real SmolLM2 generator."""
    overrides = dict(app_settings_overrides)
    overrides["generator"] = {"url": real_generator.url, **overrides.get("generator", {})}
    settings = make_settings(**overrides)
    async with open_test_app(settings, embedder, real_generator.counter, real_generator.url,
                             real_generator.server.model_name) as opened:
        yield opened


@pytest_asyncio.fixture(loop_scope="function")
async def offline_app(make_settings, embedder, app_settings_overrides) -> AsyncIterator[App]:
    """An :class:`App` on a temporary data dir without a generator (``generator`` None, no token
    counter): for features that never generate (recording, privacy, guild settings) — quicker to build."""
    async with open_test_app(make_settings(**app_settings_overrides), embedder, None, None, "") as opened:
        yield opened
