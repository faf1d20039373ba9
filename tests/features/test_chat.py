"""``campfire.features.chat`` without any bot: which persona speaks where, and the streamed reply
(fake generator; the real-model chat journey runs in tests/bot/test_chat.py and the console tests)."""

from __future__ import annotations

import dataclasses
from contextlib import aclosing

import pytest

from campfire.features import chat
from campfire.features.types import ChatLine
from model.errors import GeneratorUnavailable
from model.prompts import Turn, detect_language

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


# --- issue 14 --------------------------------------------------------------------------------------


async def _reply(app, turns, **kwargs) -> tuple[str, dict]:
    stats: dict = {}
    async with aclosing(chat.reply(app, "You are Campfire.", turns, stats=stats, **kwargs)) as deltas:
        text = "".join([d async for d in deltas])
    return text, stats


async def test_a_reply_cut_by_the_token_cap_ends_on_its_last_complete_sentence(app, app_fake):
    app_fake.reply = "You can run lsb_release -a. It prints the release. Or read /etc/os-release, which also"
    app_fake.finish_reason = "length"  # the server stopped at max_tokens …
    capped = dataclasses.replace(app, settings=app.settings.model_copy(
        update={"chat": app.settings.chat.model_copy(update={"max_reply_tokens": 16})}))  # … of 16 (22 deltas sent)
    text, stats = await _reply(capped, [Turn(role="user", content="How do I see my Ubuntu version?")])
    assert text == "You can run lsb_release -a. It prints the release."
    assert stats["finish_reason"] == "length" and stats["trimmed"]
    assert app_fake.requests[-1]["max_tokens"] == 16
    app_fake.finish_reason = "stop"  # the same text as the model's own end, within the budget, is shown whole
    text, stats = await _reply(app, [Turn(role="user", content="How do I see my Ubuntu version?")])
    assert text == app_fake.reply and stats["finish_reason"] == "stop" and not stats["trimmed"]


async def test_a_reply_that_only_loops_or_never_ends_a_sentence_is_an_apology(app, app_fake):
    from model.chat import UNFINISHED_APOLOGY

    app_fake.reply = "Likes: 1\n" * 30
    text, stats = await _reply(app, [Turn(role="user", content="what do you like")])
    assert text == UNFINISHED_APOLOGY and stats["finish_reason"] == "loop"


async def test_history_has_no_name_prefixes_and_a_name_echo_is_stripped(app, app_fake):
    app_fake.reply = "Eager_vole779:\nEager_vole779: Hi! Glad you're here."
    turns = [Turn(role="user", content="hello", name="Eager_vole779"), Turn(role="assistant", content="Hello!"),
             Turn(role="user", content="how are you?", name="Eager_vole779")]
    text, _ = await _reply(app, turns)
    assert text == "Hi! Glad you're here."
    sent = app_fake.requests[-1]["messages"]
    assert [m["content"] for m in sent[1:]] == ["hello", "Hello!", "how are you?"]
    assert "Eager_vole779" not in sent[0]["content"]


@pytest.mark.parametrize("app_settings_overrides", [{"generator": {"max_concurrency": 1}}])
async def test_chat_is_served_before_waiting_stories(app, app_fake):
    """A slow story holds the only slot and another story waits; a chat turn queued after both is
    served before the waiting story, and is told its place in line."""
    import asyncio

    app_fake.first_token_delay_s = 0.4
    client = app.generator

    async def story(name: str) -> None:
        messages = [{"role": "user", "content": name}]
        async with aclosing(client.stream_chat(messages, max_tokens=64)) as deltas:
            async for _ in deltas:
                pass

    first = asyncio.create_task(story("story one"))
    while client.in_flight == 0:
        await asyncio.sleep(0.01)
    second = asyncio.create_task(story("story two"))
    while client.queue_depth < 1:
        await asyncio.sleep(0.01)
    positions: list[int] = []
    text, _ = await _reply(app, [Turn(role="user", content="a quick chat question")], on_queued=positions.append)
    await asyncio.gather(first, second)
    served = [r["messages"][-1]["content"] for r in app_fake.requests]
    assert served == ["story one", "a quick chat question", "story two"]
    assert positions == [1] and text == app_fake.reply


async def test_a_chinese_question_to_an_english_only_model_is_declined_honestly(app, app_fake):
    turns = [Turn(role="user", content="怎么查看 Ubuntu 的版本号？")]
    assert chat.languages(app) == ["en"]  # the packaged SmolLM2 default
    text, stats = await _reply(app, turns)
    assert text == chat.DECLINES["zh"] and stats["finish_reason"] == "declined"
    assert "generator.languages" in text and detect_language(text) == "zh"
    assert app_fake.requests == []  # the generator was not asked
    # a model that writes Chinese answers
    generator = app.settings.generator.model_copy(update={"languages": ["en", "zh"]})
    zh_app = dataclasses.replace(app, settings=app.settings.model_copy(update={"generator": generator}))
    app_fake.reply = "运行 lsb_release -a 就可以看到版本号。"
    text, stats = await _reply(zh_app, turns)
    assert text == app_fake.reply and len(app_fake.requests) == 1
    assert chat.decline(app, [Turn(role="user", content="How do I see my Ubuntu version?")]) is None


def _line(i: int, author: int, text: str, **kw) -> ChatLine:
    return ChatLine(id=i, author_id=author, text=text, author_name=f"m{author}", **kw)


def test_conversation_in_a_channel_is_the_members_exchange_with_campfire():
    ANA, BOB, BOT = 1, 2, 99
    lines = [
        _line(10, ANA, "my name is Ana", addressed=True),
        _line(11, BOT, "Nice to meet you, Ana!", from_bot=True, reply_to_id=10),
        _line(12, BOT, "(second part of that reply)", from_bot=True),
        _line(13, BOB, "lunch anyone?"),
        _line(14, BOB, "hey bot, I am Bob", addressed=True),
        _line(15, BOT, "Hi Bob!", from_bot=True, reply_to_id=14),
        _line(16, ANA, "unrelated chatter with Bob"),
        _line(17, ANA, "what is my name?", addressed=True),
    ]
    turns = chat.conversation(lines, member_id=ANA, scope="channel", limit=20)
    assert [(t.role, t.content) for t in turns] == [
        ("user", "my name is Ana"), ("assistant", "Nice to meet you, Ana!\n(second part of that reply)"),
        ("user", "what is my name?")]
    # in a DM, a thread or a reply chain every earlier line counts, up to the limit
    every = chat.conversation(lines, member_id=ANA, scope="dm", limit=3)
    assert [t.content for t in every] == ["hey bot, I am Bob", "Hi Bob!", "unrelated chatter with Bob", "what is my name?"]
    assert chat.conversation([_line(1, ANA, "")], member_id=ANA, scope="dm", limit=5)[-1].content == "Hello!"


@pytest.mark.slow
async def test_real_model_replies_end_on_a_complete_sentence(real_app):
    """The real SmolLM2 under a small cap: what is shown ends on a sentence (or is the model's own
    end), never mid-sentence, and never in the member's voice."""
    from model.chat import EMPTY_REPLY_APOLOGY, UNFINISHED_APOLOGY
    from model.loops import ends_on_sentence, find_loop

    app = dataclasses.replace(real_app, settings=real_app.settings.model_copy(
        update={"chat": real_app.settings.chat.model_copy(update={"max_reply_tokens": 48})}))
    for question in ("How do I check which version of Ubuntu I am running?", "Tell me about your favourite season."):
        text, stats = await _reply(app, [Turn(role="user", content=question, name="Eager_vole779")], member_id=7)
        assert text.strip() and find_loop(text) is None and not text.lower().startswith("eager_vole779")
        if stats["finish_reason"] == "length":
            assert ends_on_sentence(text) or text in (UNFINISHED_APOLOGY, EMPTY_REPLY_APOLOGY), (text, stats)
        assert 0 < stats["completion_tokens"] <= 48
