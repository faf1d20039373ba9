"""``campfire.features.chat`` without any bot: which persona speaks where, and the streamed reply
(fake generator; the real-model chat journey runs in tests/bot/test_chat.py and the console tests)."""

from __future__ import annotations

import dataclasses
from contextlib import aclosing

import pytest

from campfire.features import chat
from model.errors import GeneratorUnavailable
from model.prompts import Turn

GUILD, CHANNEL, OTHER, THREAD = 8001, 81, 82, 83


async def test_persona_channel_then_thread_parent_then_guild_then_default(app):
    default = app.settings.chat.persona
    store = app.store
    await store.upsert_guild(GUILD, "g")
    assert await chat.persona(app, guild_id=GUILD, channel_id=CHANNEL) == default
    await store.update_guild(GUILD, persona="You are a pirate.")
    assert await chat.persona(app, guild_id=GUILD, channel_id=CHANNEL) == "You are a pirate."
    await store.upsert_channel(CHANNEL, GUILD, "library")
    await store.set_channel_persona(CHANNEL, "You are a librarian.")
    assert await chat.persona(app, guild_id=GUILD, channel_id=CHANNEL) == "You are a librarian."
    # a thread without a persona of its own speaks as its parent channel
    assert await chat.persona(app, guild_id=GUILD, channel_id=THREAD, parent_id=CHANNEL) == "You are a librarian."
    await store.upsert_channel(THREAD, GUILD, "thread")
    await store.set_channel_persona(THREAD, "You are a poet.")
    assert await chat.persona(app, guild_id=GUILD, channel_id=THREAD, parent_id=CHANNEL) == "You are a poet."
    # another channel of the guild: the guild's; a DM: always the default
    assert await chat.persona(app, guild_id=GUILD, channel_id=OTHER) == "You are a pirate."
    assert await chat.persona(app, guild_id=None, channel_id=CHANNEL) == default


async def test_reply_streams_with_the_apps_chat_settings(app, app_fake):
    app_fake.reply = "Hello, Ada! Nice to meet you."
    turns = [Turn(role="user", content="Hi, I am Ada.", name="Ada")]
    async with aclosing(chat.reply(app, "You are a pirate.", turns, member_id=12)) as deltas:
        text = "".join([d async for d in deltas])
    assert text == app_fake.reply
    request = app_fake.requests[-1]
    assert request["messages"][0]["role"] == "system" and request["messages"][0]["content"].startswith("You are a pirate.")
    assert request["messages"][-1]["content"].endswith("Hi, I am Ada.")
    assert request["max_tokens"] == app.settings.chat.max_reply_tokens and request["user"] == "12"


async def test_reply_without_a_generator_or_turns_raises(app):
    with pytest.raises(GeneratorUnavailable):
        async for _ in chat.reply(dataclasses.replace(app, generator=None), "p", [Turn(role="user", content="hi")]):
            pass
    with pytest.raises(ValueError):
        async for _ in chat.reply(app, "p", []):
            pass
