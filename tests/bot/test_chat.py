"""The chat cog through dpytest: real bot, real GeneratorClient over loopback HTTP.

The controllable fake generator is used where output must be controlled (a reply pinging
@everyone, a 5,000-character reply, a generator failure, timing of edits and of the queue); the
journey itself also runs on the real SmolLM2 model (``real_bot``).
"""

from __future__ import annotations

import re

import discord.ext.test as dpytest
import pytest

from bot.cogs.chat import QUEUE_TEXT
from bot.messages import CURSOR, DISCORD_LIMIT
from tests.bot.test_messages import long_reply_with_code


@pytest.fixture
def bot_extensions():
    return ("bot.cogs.chat",)


def mention(h) -> str:
    return f"<@{h.bot.user.id}>"


def last_user_turn(request: dict) -> str:
    return [m["content"] for m in request["messages"] if m["role"] == "user"][-1]


def reply_sends(h, channel=None):
    return h.sent.sends(channel.id if channel else None)


async def test_mention_gets_a_streamed_reply(bot):
    bot.fake.reply = " ".join(f"Sentence {i} has a few words." for i in range(20))
    bot.fake.chunk_chars = 6
    bot.fake.token_delay_s = 0.01  # ≈ 0.75 s of streaming: several edits at 0.2 s
    question = await bot.post(f"{mention(bot)} tell me something long")
    sends = reply_sends(bot)
    assert len(sends) == 1
    first = sends[0]
    assert first.payload["message_reference"]["message_id"] == question.id  # a reply to the member
    edits = bot.sent.edits(first.message_id)
    assert len(edits) >= 2  # it streamed
    assert any(CURSOR in e.payload["content"] for e in edits[:-1])  # partial text shown while writing
    assert bot.sent.contents() == [bot.fake.reply]  # final text, no cursor
    # the model read the member's words, without the bot's mention and without a "name:" prefix
    assert last_user_turn(bot.fake.requests[-1]) == "tell me something long"
    assert bot.fake.requests[-1]["max_tokens"] == bot.settings.chat.max_reply_tokens


@pytest.mark.slow
async def test_mention_gets_a_reply_from_the_real_model(real_bot):
    await real_bot.post(f"{mention(real_bot)} Say hello to the campfire in one short sentence.")
    contents = real_bot.sent.contents()
    assert len(contents) == 1
    text = contents[0]
    assert text.strip() and CURSOR not in text and len(text) <= DISCORD_LIMIT
    assert "went wrong" not in text and "can't reach" not in text


async def test_reply_chain_gives_the_model_the_earlier_turns(bot):
    bot.fake.reply = "Nice to meet you, Ada!"
    first = await bot.post(f"{mention(bot)} My name is Ada and I brew cider.")
    bot_reply = bot.state._get_message(bot.sent.sends()[0].message_id)
    assert bot_reply is not None and bot_reply.author.id == bot.bot.user.id
    bot.fake.reply = "You are Ada."
    # a reply to the bot, without mentioning it, resolved by fetching (no referenced_message)
    await bot.post("What is my name?", reply_to=bot_reply, resolved=False)
    assert len(bot.fake.requests) == 2
    messages = bot.fake.requests[-1]["messages"]
    roles = [m["role"] for m in messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert "My name is Ada and I brew cider." in messages[1]["content"]
    assert messages[2]["content"] == "Nice to meet you, Ada!"
    assert messages[3]["content"].endswith("What is my name?")
    assert first.id != bot_reply.id


async def test_history_is_limited_to_history_messages(bot):
    bot.settings.chat.history_messages = 2
    bot.fake.reply = "ok"
    msg = await bot.post(f"{mention(bot)} turn 0")
    for i in range(1, 4):
        reply = bot.state._get_message(bot.sent.sends()[-1].message_id)
        await bot.post(f"turn {i}", reply_to=reply)
    turns = [m["content"] for m in bot.fake.requests[-1]["messages"] if m["role"] != "system"]
    assert 2 <= len(turns) <= 3  # at most 2 earlier messages + the new one
    assert turns[-1].endswith("turn 3")
    assert not any(t.endswith(("turn 0", "turn 1")) for t in turns)  # older ones are not read


async def test_model_mass_mentions_ping_nobody(bot):
    role = bot.guild.default_role
    other = bot.members[1]
    bot.fake.reply = f"Hey @everyone and @here, also <@&{role.id}> and <@{other.id}>!"
    await bot.post(f"{mention(bot)} ping everybody please")
    calls = bot.sent.calls
    assert calls and all(c.payload.get("allowed_mentions") for c in calls)
    for c in calls:
        allowed = c.payload["allowed_mentions"]
        assert allowed["parse"] == []  # no @everyone/@here, no roles, no arbitrary users
        assert allowed.get("roles", []) == []
        assert allowed["users"] == [bot.member.id]  # only the member being answered
    final = bot.sent.contents()[0]
    assert "@everyone" not in final and "@here" not in final  # also defanged in the text
    # the client default is no pings at all
    assert bot.bot.allowed_mentions.to_dict() == {"parse": []}


async def test_5000_character_reply_arrives_as_several_messages_with_code_intact(bot):
    text = long_reply_with_code(5000)
    bot.fake.reply = text
    bot.fake.chunk_chars = 200
    await bot.post(f"{mention(bot)} write me a long answer with code")
    contents = bot.sent.contents()
    assert len(contents) >= 3
    assert all(len(c) <= DISCORD_LIMIT for c in contents)
    assert all(c.count("```") % 2 == 0 for c in contents)
    for block in re.findall(r"```python\n.*?\n```", text, flags=re.S):
        assert sum(block in c for c in contents) == 1  # each code block whole, in one message
    assert "\n".join(contents).split() == text.split()  # nothing lost, no word cut
    assert all(len(c.payload.get("content", "")) <= DISCORD_LIMIT for c in bot.sent.calls)


async def test_bots_and_itself_are_ignored(bot):
    helper = bot.make_bot_member("HelperBot")
    await bot.post(f"{mention(bot)} hello from a bot", member=helper)
    await bot.post("no mention, nothing to answer")
    assert bot.sent.calls == []
    assert bot.fake.requests == []
    chat = bot.bot.get_cog("Chat")
    own = bot.state._get_message((await bot.channels[0].send(f"{mention(bot)} talking to myself")).id)
    assert not await chat.should_answer(own)


async def test_answers_in_dms_and_in_threads_it_started(bot):
    dm = await bot.dm()
    await bot.post("hi there, no mention needed", channel=dm)
    assert len(bot.sent.sends(dm.id)) == 1
    mine = bot.make_thread(bot.channels[0], "campfire thread")
    await bot.post("a message in my thread", channel=mine)
    assert len(bot.sent.sends(mine.id)) == 1
    theirs = bot.make_thread(bot.channels[0], "members' thread", owner=bot.members[1])
    await bot.post("a message in someone else's thread", channel=theirs)
    assert bot.sent.sends(theirs.id) == []


async def test_thread_history_is_the_memory(bot):
    thread = bot.make_thread(bot.channels[0], "campfire thread")
    bot.fake.reply = "Noted."
    await bot.post("The password for the brew shed is juniper.", channel=thread)
    await bot.post("What did I say the password was?", channel=thread)
    messages = bot.fake.requests[-1]["messages"]
    assert any("juniper" in m["content"] for m in messages if m["role"] == "user")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]


async def test_persona_per_channel_and_guild(bot):
    await bot.store.update_guild(bot.guild.id, persona="You are a pirate.")
    await bot.store.upsert_channel(bot.channels[1].id, bot.guild.id, "other")
    await bot.store.set_channel_persona(bot.channels[1].id, "You are a librarian.")
    await bot.post(f"{mention(bot)} hi")
    await bot.post(f"{mention(bot)} hi", channel=bot.channels[1])
    systems = [r["messages"][0]["content"] for r in bot.fake.requests]
    assert systems[0].startswith("You are a pirate.")
    assert systems[1].startswith("You are a librarian.")


@pytest.mark.parametrize("bot_settings_overrides", [{"generator": {"connect_retries": 0, "breaker_failures": 10}}],
                         indirect=True)
async def test_generator_down_gets_a_kind_message_and_no_crash(bot):
    bot.fake.status = 503
    await bot.post(f"{mention(bot)} are you there?")
    contents = bot.sent.contents()
    assert len(contents) == 1
    assert "writing engine" in contents[0] and "Traceback" not in contents[0]
    bot.fake.reset()
    await bot.post(f"{mention(bot)} and now?")
    assert bot.sent.contents()[-1] == bot.fake.reply  # still serving


@pytest.mark.parametrize("bot_settings_overrides", [{"generator": {"max_concurrency": 1}}], indirect=True)
async def test_queue_position_is_shown_when_the_generator_is_saturated(bot):
    bot.fake.reply = "slow answer"
    bot.fake.first_token_delay_s = 0.6
    await bot.post(f"{mention(bot)} first", wait=False)
    await bot.post(f"{mention(bot)} second", member=bot.members[1], wait=False)
    await dpytest.run_all_events()
    contents = bot.sent.contents()
    assert contents == ["slow answer", "slow answer"]
    shown = [c.payload["content"] for c in bot.sent.sends()]
    assert QUEUE_TEXT.format(position=1) in shown  # the second member saw their place in line


@pytest.mark.parametrize("bot_settings_overrides", [{"discord": {"cooldown_message_s": 60.0}}], indirect=True)
async def test_per_member_cooldown(bot):
    await bot.post(f"{mention(bot)} one")
    await bot.post(f"{mention(bot)} two")  # same member, same channel, within the cooldown: ignored
    await bot.post(f"{mention(bot)} three", member=bot.members[1])  # another member: answered
    assert len(bot.sent.sends()) == 2
    assert len(bot.fake.requests) == 2


async def test_typing_is_shown_while_waiting(bot, monkeypatch):
    typed: list[int] = []
    original = bot.bot.http.send_typing

    async def send_typing(channel_id):
        typed.append(int(channel_id))
        channel = bot.bot.get_channel(int(channel_id))  # noqa: F841  (dpytest reads the caller's ``channel``)
        return await original(channel_id)

    monkeypatch.setattr(bot.bot.http, "send_typing", send_typing)
    bot.fake.first_token_delay_s = 0.3
    await bot.post(f"{mention(bot)} think first")
    assert typed and typed[0] == bot.channels[0].id
    assert bot.sent.contents() == [bot.fake.reply]


# --- issue 14: memory where members expect it; no speaking as the member --------------------------


async def test_dm_turns_without_replies_are_the_memory(bot):
    """Five DM turns without Discord's reply feature: the fifth request carries the earlier four
    exchanges (it used to carry only the system prompt and the last message)."""
    dm = await bot.dm()
    said = ["my name is Ana", "I live by the sea", "I keep two cats", "I like tea", "what is my name?"]
    for i, text in enumerate(said):
        bot.fake.reply = f"Noted, reply {i}."
        await bot.post(text, channel=dm)
    messages = bot.fake.requests[-1]["messages"]
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 4 + ["user"]
    assert [m["content"] for m in messages if m["role"] == "user"] == said  # no "name:" prefixes
    assert messages[2]["content"] == "Noted, reply 0."


async def test_a_mention_in_a_channel_remembers_that_members_exchange_only(bot):
    ana, bob = bot.member, bot.members[1]
    bot.fake.reply = "Nice to meet you!"
    await bot.post(f"{mention(bot)} my name is Ana", member=ana)
    await bot.post("lunch, anyone? my name is Bob by the way", member=bob)
    await bot.post(f"{mention(bot)} I am Bob and I like soup", member=bob)
    bot.fake.reply = "You are Ana."
    await bot.post(f"{mention(bot)} what is my name?", member=ana)
    users = [m["content"] for m in bot.fake.requests[-1]["messages"] if m["role"] == "user"]
    assert users == ["my name is Ana", "what is my name?"]
    roles = [m["role"] for m in bot.fake.requests[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "user"]


async def test_a_reply_echoing_the_members_name_is_stripped(bot):
    name = bot.member.display_name
    bot.fake.reply = f"{name}:\n{name}: Hello! Glad you asked."
    await bot.post(f"{mention(bot)} hi")
    assert bot.sent.contents() == ["Hello! Glad you asked."]


@pytest.mark.parametrize("bot_settings_overrides", [{"generator": {"max_concurrency": 1}}], indirect=True)
async def test_chat_goes_before_a_waiting_story_and_shows_its_place(bot):
    import asyncio
    from contextlib import aclosing

    client = bot.app.generator
    bot.fake.first_token_delay_s = 0.5

    async def story(theme: str) -> None:
        async with aclosing(client.stream_chat([{"role": "user", "content": theme}], max_tokens=32)) as deltas:
            async for _ in deltas:
                pass

    running = asyncio.create_task(story("story one"))
    while client.in_flight == 0:
        await asyncio.sleep(0.01)
    waiting = asyncio.create_task(story("story two"))
    while client.queue_depth < 1:
        await asyncio.sleep(0.01)
    await bot.post(f"{mention(bot)} quick question")
    await asyncio.gather(running, waiting)
    assert [r["messages"][-1]["content"] for r in bot.fake.requests] == ["story one", "quick question", "story two"]
    shown = [c.payload["content"] for c in bot.sent.sends()]
    assert shown == [QUEUE_TEXT.format(position=1)]  # its place in line, then the answer in the same message
    assert bot.sent.contents() == [bot.fake.reply]
