"""Fixtures for the Discord bot's tests: a real Campfire bot on dpytest, plus real interactions.

The machinery (and its full description) is in :mod:`tests.bot.harness`; this module only wires it
into pytest fixtures.

Fixtures (all function scope, running in the test's own event loop — ``loop_scope="function"``,
since the project's default fixture loop is the session's and the bot must live in the test's):

``bot``
    A :class:`~tests.bot.harness.BotHarness` on the fake generator (``fake_openai``), every
    extension of ``bot_extensions`` loaded.
``real_bot``
    The same on the real model (session server; replies ≤ 48 tokens).
``bot_extensions``
    Which extensions to load (default: all of ``bot.app.EXTENSIONS`` that exist). Override it in a
    test module to isolate your cogs::

        @pytest.fixture
        def bot_extensions():
            return ("bot.cogs.story",)
``bot_settings_overrides``
    ``Settings`` overrides (default :data:`BOT_TEST_SETTINGS`: ``chat.edit_interval_s`` 0.2,
    cooldowns 0), merged with ``request.param`` under indirect parametrization::

        @pytest.mark.parametrize("bot_settings_overrides", [{"story": {"cooldown_s": 60}}], indirect=True)
        async def test_cooldown(bot): ...

Each test's bot is made of a real SQLite store (temp dir), the real ``Recommender`` (real embedder,
FAISS), a ``GeneratorClient`` over loopback HTTP; only Discord's HTTP API is answered by fakes.
Interaction helpers: ``await bot.invoke("story", theme="…")``, ``await bot.click(custom_id, message)``
→ :class:`~tests.bot.harness.Invocation` (``defer_s``, ``callback_type``, ``ephemeral``,
``messages``, ``text``, ``responses``). Message helpers: ``await bot.post(...)``, ``edit``,
``delete``, ``react``, ``set_permissions``, ``dm``, ``make_thread``, ``make_bot_member``, ``flush``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from bot.app import EXTENSIONS
from recsys.store import Store
from tests.bot.harness import BotHarness, Invocation, InteractionRecorder, Sent, SentLog, merge_settings, start_bot

__all__ = ["BotHarness", "Invocation", "InteractionRecorder", "Sent", "SentLog"]


@pytest.fixture
def bot_extensions() -> tuple[str, ...]:
    """Extensions the ``bot`` fixtures load (default: all). Override per test module."""
    return EXTENSIONS


BOT_TEST_SETTINGS: dict[str, Any] = {
    "chat": {"edit_interval_s": 0.2},
    "discord": {"cooldown_message_s": 0.0},
    "story": {"cooldown_s": 0.0},
}


@pytest.fixture
def bot_settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """``Settings`` overrides for the bot fixtures: :data:`BOT_TEST_SETTINGS`, merged with
    ``request.param`` when parametrized indirectly; or override the fixture per test module."""
    return merge_settings(BOT_TEST_SETTINGS, getattr(request, "param", {}))


@pytest_asyncio.fixture(loop_scope="function")  # the bot's loop must be the test's loop
async def bot(make_settings, bot_settings_overrides, bot_extensions, data_dir, embedder, fake_openai, prepared_model,
              monkeypatch) -> AsyncIterator[BotHarness]:
    """A started Campfire bot on dpytest, its generator the controllable ``fake_openai``."""
    from model.client import GeneratorClient
    from model.tokens import TokenCounter

    settings = make_settings(**merge_settings({"generator": {"url": fake_openai.url}}, bot_settings_overrides))
    store = await Store.open(data_dir / "campfire.db")
    client = GeneratorClient(fake_openai.url, api_key=None, model=fake_openai.model, settings=settings.generator)
    try:
        async for harness in start_bot(settings, store, embedder, client, TokenCounter(prepared_model), bot_extensions,
                                        fake_openai, monkeypatch):
            yield harness
    finally:
        await client.aclose()
        await store.close()


@pytest_asyncio.fixture(loop_scope="function")
async def real_bot(make_settings, bot_settings_overrides, bot_extensions, data_dir, embedder, real_generator,
                   monkeypatch) -> AsyncIterator[BotHarness]:
    """A started Campfire bot on dpytest, its generator the real SmolLM2 server (replies ≤ 48 tokens).
    The bot gets its own ``GeneratorClient`` on the session server's URL, opened and closed in the
    test's loop (the session's client must not hold connections of a loop that ends)."""
    from model.client import GeneratorClient

    overrides = merge_settings({"generator": {"url": real_generator.url}, "chat": {"max_reply_tokens": 48}}, bot_settings_overrides)
    settings = make_settings(**overrides)
    store = await Store.open(data_dir / "campfire.db")
    client = GeneratorClient(real_generator.url, api_key=None, model=real_generator.server.model_name,
                             settings=settings.generator)
    try:
        async for harness in start_bot(settings, store, embedder, client, real_generator.counter,
                                        bot_extensions, None, monkeypatch):
            yield harness
    finally:
        await client.aclose()
        await store.close()
