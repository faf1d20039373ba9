"""/story through real discord.Interaction objects (tests/bot/conftest.py) — the Discord adapter:
defer first, streamed follow-up within Discord's limits, persistent buttons, ephemeral refusals,
cooldown, generator down, and one run on the real model. What a story save stores and the continue /
regenerate / rating rules are tested without a bot in tests/features/test_stories.py."""

from __future__ import annotations

import re

import pytest

from bot.render import EMBED_DESCRIPTION_MAX, EMBEDS_TOTAL_MAX, story_embeds

STORY = (
    "The Lantern Keeper\n"
    "Rain fell on the old harbour town while Mei lit the last lantern on the pier. "
    "A stranger with a broken umbrella asked her the way to the lighthouse. "
    "They walked together, sharing the lantern's small circle of light. "
    "At the top of the stairs he turned, smiled, and was gone."
)


@pytest.fixture
def bot_extensions():
    return ("bot.cogs.story",)


def buttons(message: dict) -> list[str]:
    return [c["custom_id"] for row in message.get("components") or [] for c in row["components"]]


def story_id(message: dict) -> int:
    ids = {int(m.group(1)) for cid in buttons(message) if (m := re.fullmatch(r"campfire:story:\w+:(\d+)", cid))}
    assert len(ids) == 1, buttons(message)
    return ids.pop()


async def interactions_on(h, item_id: int):
    return [i for i in await h.store.interactions(h.guild.id) if i.item_id == item_id]


async def tell(h, **options):
    h.fake.reply = STORY
    inv = await h.invoke("story", **{"theme": "a chance meeting on a rainy day", **options})
    assert inv.message is not None, inv.responses
    return inv


async def test_story_defers_before_generation_streams_and_saves(bot):
    h = bot
    h.fake.chunk_chars = 6
    h.fake.token_delay_s = 0.02  # ≈ 1.3 s of streaming: several edit windows of 0.2 s
    generation_started_at_defer: list[int] = []
    answer = h.interactions._answer

    def spy(route, **kwargs):
        if route.path.endswith("/callback"):
            generation_started_at_defer.append(h.fake.requests_started)
        return answer(route, **kwargs)

    h.interactions._answer = spy
    inv = await tell(h, genre="mystery")

    # acknowledged with a (public) deferred response before the generator saw any request
    assert inv.callback_type == 5 and not inv.ephemeral
    assert generation_started_at_defer == [0]
    assert h.fake.requests_started == 1

    # streamed: several edits of the follow-up, never closer together than chat.edit_interval_s
    edits = [r for r in inv.responses if r.kind == "edit_original"]
    assert len(edits) >= 3
    gaps = [b.at - a.at for a, b in zip(edits, edits[1:])]
    assert min(gaps) >= h.settings.chat.edit_interval_s - 0.02, gaps

    # final message: an embed titled by the story, crediting the requester, with the four buttons
    msg = inv.message
    embed = msg["embeds"][0]
    assert embed["title"] == "The Lantern Keeper"
    assert "he turned, smiled, and was gone." in embed["description"]
    assert h.member.display_name in embed["author"]["name"]
    sid = story_id(msg)
    assert buttons(msg) == [f"campfire:story:{a}:{sid}" for a in ("up", "down", "more", "again")]

    # saved through campfire.features.stories, pointing at the message that shows it
    item = await h.store.get_item(sid)
    assert item is not None and item.kind == "story" and item.title == "The Lantern Keeper"
    assert item.url and item.url.endswith(f"/{msg['id']}") and item.meta["message_id"] == int(msg["id"])
    assert item.channel_id == h.channels[0].id and item.author_id == h.member.id
    assert [(i.member_id, i.kind) for i in await interactions_on(h, sid)] == [(h.member.id, "requested")]


async def test_rating_buttons_are_acknowledged_ephemerally_and_recorded(bot):
    """👍 / 👎 answer at once (ephemeral) and hand over to ``stories.rate`` (replacement rules:
    tests/features/test_stories.py)."""
    h = bot
    inv = await tell(h)
    sid = story_id(inv.message)
    alice = h.members[0]
    up = await h.click(f"campfire:story:up:{sid}", inv.message, member=alice)
    assert up.ephemeral and up.defer_s is not None and "👍" in up.text
    down = await h.click(f"campfire:story:down:{sid}", inv.message, member=alice)
    assert down.ephemeral and "👎" in down.text
    assert [(i.member_id, i.kind) for i in await interactions_on(h, sid) if i.kind.startswith("rated")] == [
        (alice.id, "rated_down")]


async def test_buttons_of_a_deleted_story_answer_politely_and_record_nothing(bot):
    """👍 is acknowledged before the story is looked up; once the story is gone the member is told
    so, nothing is recorded, and Continue gets the same explanation (ephemeral)."""
    h = bot
    inv = await tell(h)
    sid = story_id(inv.message)
    assert await h.services.recommender.remove_item(sid)
    member = h.members[2]
    up = await h.click(f"campfire:story:up:{sid}", inv.message, member=member)
    assert up.ephemeral and up.defer_s is not None
    assert "no longer stored" in up.text
    more = await h.click(f"campfire:story:more:{sid}", inv.message, member=member)
    assert more.ephemeral and "no longer stored" in more.text
    assert [i for i in await h.store.interactions(h.guild.id, member.id) if i.item_id == sid] == []

async def test_buttons_work_after_the_cog_is_reloaded(bot):
    """Nothing about a story's buttons lives in memory: the custom id carries the story id."""
    h = bot
    inv = await tell(h)
    sid = story_id(inv.message)
    await h.bot.reload_extension("bot.cogs.story")
    await h.click(f"campfire:story:up:{sid}", inv.message, member=h.members[2])
    assert [(i.member_id, i.kind) for i in await interactions_on(h, sid) if i.kind == "rated_up"] == [
        (h.members[2].id, "rated_up")]


async def test_continue_writes_the_next_part_and_regenerate_is_the_requesters(bot):
    h = bot
    inv = await tell(h)
    sid = story_id(inv.message)

    h.fake.reply = ("Part Two\nThe next morning the lantern was lit again. Nobody knew who had lit it, and nobody "
                    "had seen anyone on the pier. Mei found a folded umbrella on the bottom step, dry despite the "
                    "storm, with a note inside that thanked her for the light.")
    more = await h.click(f"campfire:story:more:{sid}", inv.message, member=h.members[1])
    assert more.callback_type == 5
    part2 = more.message
    sid2 = story_id(part2)
    assert sid2 != sid and part2["embeds"][0]["title"] == "The Lantern Keeper (part 2)"
    assert h.members[1].display_name in part2["embeds"][0]["author"]["name"]  # credits who asked for it
    assert (await h.store.get_item(sid2)).parent_item_id == sid

    refused = await h.click(f"campfire:story:again:{sid}", inv.message, member=h.members[1])
    assert refused.ephemeral and "Only the member who asked" in refused.text
    assert h.fake.requests_started == 2

    h.fake.reply = ("Another Telling\nThe rain stopped just as they met under the station clock. They both laughed, "
                    "shook the water from their coats and shared the last bench on the platform. By the time the "
                    "train came they had traded names, umbrellas and a promise to meet again.")
    again = await h.click(f"campfire:story:again:{sid}", inv.message, member=h.members[0])
    assert story_id(again.message) not in (sid, sid2)
    assert again.message["embeds"][0]["title"] == "Another Telling"


async def test_a_story_failing_the_gate_twice_is_shown_with_its_notice_and_only_regenerate(bot):
    """Nothing is stored for it, so nothing recommends it; its Regenerate (keyed by the message id)
    tells it again for its requester."""
    h = bot
    h.fake.reply = "The Lantern Keeper\n" + "Likes: 1\n" * 40
    inv = await h.invoke("story", theme="a chance meeting on a rainy day")
    msg = inv.message
    assert h.fake.requests_started == 2  # written once more with stronger penalties
    assert msg["content"].startswith("⚠️ This story did not come out well") and "Regenerate" in msg["content"]
    assert "did not pass the quality check" in msg["embeds"][-1]["footer"]["text"]
    assert "Likes: 1\nLikes: 1" not in msg["embeds"][0]["description"]  # the loop is cut from what is shown
    assert buttons(msg) == [f"campfire:story:again:{msg['id']}"]
    assert await h.store.items(h.guild.id, kind="story") == []

    refused = await h.click(f"campfire:story:again:{msg['id']}", msg, member=h.members[1])
    assert refused.ephemeral and "Only the member who asked" in refused.text
    h.fake.reply = STORY
    again = await h.click(f"campfire:story:again:{msg['id']}", msg, member=h.member)
    item = await h.store.get_item(story_id(again.message))
    assert item.kind == "story" and item.title == "The Lantern Keeper" and item.meta["theme"] == "a chance meeting on a rainy day"


@pytest.mark.parametrize("bot_settings_overrides", [{"story": {"cooldown_s": 600}}], indirect=True)
async def test_chinese_for_an_english_only_model_is_declined_in_chinese_before_any_generation(bot):
    h = bot
    inv = await h.invoke("story", theme="雨天的一次偶遇")
    assert inv.callback_type == 4 and inv.ephemeral
    assert "写不好中文" in inv.text and "generator.languages" in inv.text
    assert h.fake.requests_started == 0 and await h.store.items(h.guild.id, kind="story") == []
    assert story_id((await tell(h)).message)  # no cooldown turn was used


@pytest.mark.parametrize("theme", ["   ", "x" * 301])
async def test_bad_theme_is_a_polite_ephemeral_error(bot, theme):
    h = bot
    inv = await h.invoke("story", theme=theme)
    assert inv.callback_type == 4 and inv.ephemeral
    assert "theme" in inv.text.lower()
    assert h.fake.requests_started == 0
    assert await h.store.items(h.guild.id, kind="story") == []


async def test_generator_down_gives_a_kind_message_and_saves_nothing(bot):
    h = bot
    h.fake.status = 503
    inv = await h.invoke("story", theme="a lighthouse in winter")
    assert inv.callback_type == 5
    text = inv.text
    assert "try again" in text.lower() and "Traceback" not in text
    assert inv.message["embeds"] == [] and buttons(inv.message) == []
    assert await h.store.items(h.guild.id, kind="story") == []
    # the member may try again at once (a failure does not use up the cooldown), and it works
    h.fake.reset()
    ok = await tell(h)
    assert story_id(ok.message)


@pytest.mark.parametrize("bot_settings_overrides", [{"story": {"cooldown_s": 600}}], indirect=True)
async def test_per_member_cooldown(bot):
    h = bot
    await tell(h)
    second = await h.invoke("story", theme="another theme")
    assert second.ephemeral and "another in" in second.text
    other = await tell(h, member=h.members[1])  # other members are not affected
    assert story_id(other.message)
    assert h.fake.requests_started == 2


async def test_an_opted_out_requester_sees_the_story_without_buttons(bot):
    h = bot
    await h.store.set_opted_out(h.member.id)
    inv = await tell(h)
    assert buttons(inv.message) == []
    assert "not saved (you opted out of recording)" in inv.message["embeds"][-1]["footer"]["text"]
    assert await h.store.items(h.guild.id, kind="story") == []


async def test_bot_and_console_story_share_the_one_save(bot, monkeypatch):
    """Both front ends' /story pass through ``campfire.features.stories.save`` (the only story save)
    and store the same shape of item; this fails if either writes a story its own way."""
    import io

    from campfire.console import ConsoleSession, PlainOutput
    from campfire.features import stories

    h = bot
    saved: list[str] = []
    save = stories.save

    async def spy(app, plan, result, **where):
        story = await save(app, plan, result, **where)
        saved.append("console" if where.get("source") == "console" else "bot")
        return story

    monkeypatch.setattr(stories, "save", spy)
    bot_item = await h.store.get_item(story_id((await tell(h)).message))
    session = ConsoleSession(h.app, PlainOutput(io.StringIO()))
    session.guild_id = h.guild.id
    await session.handle("/story a chance meeting on a rainy day")
    assert saved == ["bot", "console"] and session.failures == 0
    console_item = await h.store.get_item(session.last_story.item_id)
    for item in (bot_item, console_item):
        assert item.kind == "story" and item.title == "The Lantern Keeper" and item.meta["part"] == 1
        assert [i.kind for i in await interactions_on(h, item.id)] == ["requested"]
    assert set(bot_item.meta) == set(console_item.meta) - {"source"}


def test_story_embeds_stay_within_discord_limits(bot_user):
    text = ("A long sentence about the sea and the stars. " * 300).strip()  # 13,500 characters
    embeds = story_embeds("T" * 400, text, bot_user, footer="f" * 3000)
    total = sum(len(e.title or "") + len(e.description or "") + len(e.footer.text or "") + len(e.author.name or "")
                for e in embeds)
    assert total <= EMBEDS_TOTAL_MAX and len(embeds) <= 10
    assert all(len(e.description) <= EMBED_DESCRIPTION_MAX for e in embeds)
    assert len(embeds[0].title) <= 256 and len(embeds[-1].footer.text) <= 2048
    assert embeds[-1].description.endswith("…")


@pytest.fixture
def bot_user():
    class User:
        display_name = "Mei"

        class display_avatar:  # noqa: N801
            url = "https://cdn.discordapp.com/embed/avatars/0.png"

    return User()


@pytest.mark.slow
async def test_story_on_the_real_model(real_bot):
    h = real_bot
    # a short story, cut shorter still (96 tokens): this 2-core CPU is shared, and the session
    # server's client gives a whole generation generator.request_timeout_s (120 s)
    h.bot.get_cog("Story").max_tokens = 96
    inv = await h.invoke("story", theme="a chance meeting on a rainy day", length="short", timeout_s=300)
    assert inv.callback_type == 5
    msg = inv.message
    sid = story_id(msg)
    item = await h.store.get_item(sid)
    assert item is not None and item.kind == "story" and len(item.text.split()) >= 5
    assert item.text[:40] in msg["embeds"][0]["description"]
    assert msg["embeds"][0]["title"] == item.title and item.title.strip()
    assert [i.kind for i in await interactions_on(h, sid)] == ["requested"]
    up = await h.click(f"campfire:story:up:{sid}", msg)
    assert up.ephemeral
    assert "rated_up" in [i.kind for i in await interactions_on(h, sid)]
