"""Fixtures shared by the recommender's tests."""

from __future__ import annotations

import pytest_asyncio

from recsys.service import Recommender
from recsys.store import Store


@pytest_asyncio.fixture(loop_scope="function")  # the facade's embedding task runs on the test's loop
async def rec(store: Store, settings, embedder):
    """A started :class:`Recommender` over the test's SQLite store, closed after the test. Modules that
    also need guilds and channels define their own ``rec``."""
    r = Recommender(store, embedder, settings)
    await r.start()
    try:
        yield r
    finally:
        await r.aclose()
