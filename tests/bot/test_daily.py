"""The daily post on a fake clock: once at the guild's local time across a timezone boundary, never
twice a day (not even after a restart: a new bot on the same data dir), only subscribed members
mentioned, DMs when there is no digest channel, long posts split within Discord's limits."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import discord
import pytest

from bot.app import SingleShardCampfireBot
from bot.cogs.daily import pack
from campfire.app import App
from recsys.store import Item, Store
from tests.bot.harness import snowflake
from tests.bot.private_threads import answer_thread_members, open_private_thread

TEXTS = [
    "Our community garden needs volunteers this Saturday to plant tomatoes and build the new compost bins.",
    "The chess club meets on Thursday evenings at the library; beginners welcome, boards provided.",
    "Found a great hiking trail along the river with waterfalls, about 12 km round trip, dogs allowed.",
    "Photography walk next week: bring any camera, we will practise long exposures at the old bridge.",
    "Board game night recap: Wingspan was the crowd favourite, next time we try Terraforming Mars.",
    "Local bakery now sells sourdough on Sundays; the walnut loaf sells out before ten in the morning.",
]


@pytest.fixture
def bot_extensions():
    return ("bot.cogs.daily",)


class FakeClock:
    """An aware UTC datetime that tests move by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def next_utc_midnight() -> datetime:
    now = datetime.now(timezone.utc)
    return (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


async def seed(h, *, digest_channel: bool = True, tz: str = "Asia/Tokyo", at: str = "09:00") -> None:
    """Members 0 and 1 subscribe (each wrote one message: their profile); member 2 wrote the rest
    and does not subscribe."""
    g, ch = h.guild.id, h.channels[0]
    await h.store.upsert_channel(ch.id, g, ch.name, visibility={"public": True})
    await h.store.update_guild(g, digest_channel_id=ch.id if digest_channel else None, digest_time=at, timezone=tz)
    for m in h.members:
        await h.store.upsert_member(g, m.id, m.display_name, role_ids=[])
    now = time.time()
    items = [Item(id=snowflake(), guild_id=g, kind="message", channel_id=ch.id, author_id=h.members[2].id,
                  created_at=now - 600 * (k + 1), text=t) for k, t in enumerate(TEXTS)]
    own = [Item(id=snowflake(), guild_id=g, kind="message", channel_id=ch.id, author_id=m.id, created_at=now - 9000,
                text=t) for m, t in zip(h.members[:2], ("I love gardening and growing vegetables in the spring.",
                                                       "Chess and board games are my favourite evening hobby."))]
    await h.recommender.add_items(items + own)
    await h.recommender.record([{"guild_id": g, "member_id": it.author_id, "kind": "authored", "item_id": it.id}
                                for it in items + own])
    await h.store.set_subscribed(g, h.members[0].id, True)
    await h.store.set_subscribed(g, h.members[1].id, True)
    await h.recommender.flush()


def daily_cog(bot, clock: FakeClock):
    cog = bot.get_cog("Daily")
    cog.loop.cancel()  # the test drives the ticks itself
    cog.clock = clock
    return cog


async def start_another_bot(h, monkeypatch):
    """A 'restarted' Campfire: new store connection, recommender (indexes reloaded from disk) and bot
    on the same data dir, seeing the same Discord guild."""
    from recsys.service import Recommender

    store = await Store.open(h.settings.db_path)
    recommender = Recommender(store, h.recommender.embedder, h.settings)
    await recommender.start()
    app = App(settings=h.settings, store=store, recommender=recommender, generator=None,
                        counter=h.app.counter)
    bot2 = SingleShardCampfireBot(app, extensions=("bot.cogs.daily",), sync_commands=False)
    await bot2._async_setup_hook()
    await bot2.setup_hook()
    monkeypatch.setattr(bot2, "get_guild", lambda gid: h.guild if gid == h.guild.id else None)

    async def close():
        for name in list(bot2.extensions):
            await bot2.unload_extension(name)
        await recommender.aclose()
        await store.close()

    return bot2, close


async def test_posts_once_at_local_time_across_a_timezone_boundary_and_not_after_restart(bot, monkeypatch):
    h = bot
    await seed(h, tz="Asia/Tokyo", at="09:00")  # 09:00 in Tokyo is 00:00 UTC
    midnight = next_utc_midnight()
    local_date = midnight.astimezone(ZoneInfo("Asia/Tokyo")).date().isoformat()
    assert local_date == midnight.date().isoformat() != (midnight - timedelta(minutes=1)).date().isoformat()
    clock = FakeClock(midnight - timedelta(minutes=1))  # 08:59 in Tokyo on its new day; UTC still the day before
    cog = daily_cog(h.bot, clock)
    channel = h.channels[0]

    assert await cog.tick() == []
    assert h.sent.sends(channel.id) == []

    clock.now = midnight  # 09:00 in Tokyo
    await cog.loop()  # one iteration of the tasks.loop body, on the injected clock
    sends = h.sent.sends(channel.id)
    assert len(sends) == 1
    post = sends[0].payload
    content = post["content"]
    assert len(content) <= 2000
    m0, m1, m2 = (m.id for m in h.members)
    assert f"<@{m0}>" in content and f"<@{m1}>" in content and f"<@{m2}>" not in content
    allowed = post["allowed_mentions"]
    assert sorted(int(u) for u in allowed["users"]) == sorted([m0, m1])
    assert allowed["parse"] == [] and not allowed.get("roles")  # no @everyone/@here, no roles
    assert f"https://discord.com/channels/{h.guild.id}/{channel.id}/" in content
    sent_rows = await h.store.recommendations_on(h.guild.id, local_date)
    assert set(sent_rows) == {m0, m1} and all(sent_rows.values())
    assert (await h.store.get_guild(h.guild.id))["last_digest_date"] == local_date

    for minutes in (1, 30, 600):  # later the same local day: nothing more
        clock.now = midnight + timedelta(minutes=minutes)
        assert await cog.tick() == []
    assert len(h.sent.sends(channel.id)) == 1

    # a restarted bot on the same data dir does not post again that day …
    bot2, close = await start_another_bot(h, monkeypatch)
    try:
        cog2 = daily_cog(bot2, FakeClock(midnight + timedelta(hours=2)))
        assert await cog2.tick() == []
        assert len(h.sent.sends(channel.id)) == 1
        # … but does post the next local day, with new picks (never the same item twice)
        cog2.clock.now = midnight + timedelta(days=1)
        posts = await cog2.tick()
        assert [p.date for p in posts] == [(midnight + timedelta(days=1)).date().isoformat()]
        assert len(h.sent.sends(channel.id)) == 2
    finally:
        await close()


async def test_restart_later_the_same_day_catches_up(bot, monkeypatch):
    h = bot
    await seed(h, tz="America/New_York", at="18:00")
    cog = daily_cog(h.bot, FakeClock(datetime(2000, 1, 1, tzinfo=timezone.utc)))
    # the bot was down at 18:00 New York time; it comes back at 21:30 the same local day
    ny = ZoneInfo("America/New_York")
    local_now = datetime.now(ny).replace(hour=21, minute=30, second=0, microsecond=0) + timedelta(days=1)
    cog.clock = FakeClock(local_now.astimezone(timezone.utc))
    posts = await cog.tick()
    assert [(p.date, p.where, p.members) for p in posts] == [(local_now.date().isoformat(), "channel", 2)]
    assert await cog.tick() == []


async def test_falls_back_to_direct_messages_without_a_digest_channel(bot):
    h = bot
    await seed(h, digest_channel=False, tz="UTC", at="06:00")
    cog = daily_cog(h.bot, FakeClock(next_utc_midnight() + timedelta(hours=7)))
    posts = await cog.tick()
    assert [(p.where, p.members) for p in posts] == [("dm", 2)]
    assert h.sent.sends(h.channels[0].id) == []
    dm_targets = {int(s.channel_id) for s in h.sent.sends()}
    assert len(dm_targets) == 2
    for s in h.sent.sends():
        assert len(s.payload["content"]) <= 2000 and "Your picks from" in s.payload["content"]
        assert s.payload["allowed_mentions"]["parse"] == [] and not s.payload["allowed_mentions"].get("users")
    assert await cog.tick() == []


async def seed_long(h) -> None:
    """Thirty long-titled items: 25 picks per member no longer fit in one message."""
    g, ch = h.guild.id, h.channels[0]
    await seed(h, tz="UTC", at="00:00")
    now = time.time()
    long_items = [Item(id=snowflake(), guild_id=g, kind="message", channel_id=ch.id, author_id=h.members[2].id,
                       created_at=now - 30 * (k + 1), title=f"Garden and games note {k} " + "x" * 60,
                       text=f"Note {k} about gardening, vegetables, chess and board games. " * 4)
                  for k in range(30)]
    await h.recommender.add_items(long_items)
    await h.recommender.record([{"guild_id": g, "member_id": h.members[2].id, "kind": "authored", "item_id": it.id}
                                for it in long_items])
    await h.recommender.flush()


@pytest.mark.parametrize("bot_settings_overrides", [{"recsys": {"picks_per_member": 25}}], indirect=True)
async def test_a_long_post_goes_into_a_thread(bot, monkeypatch):
    h = bot
    ch = h.channels[0]
    await seed_long(h)
    threads = []

    async def start_thread_with_message(channel_id, message_id, *, name, auto_archive_duration, **kwargs):
        threads.append(h.make_thread(h.bot.get_channel(int(channel_id)), name=name))  # Discord creating it
        return {"id": str(threads[-1].id), "guild_id": str(h.guild.id), "parent_id": str(channel_id),
                "owner_id": str(h.bot.user.id), "name": name, "type": 11, "message_count": 0, "member_count": 1,
                "rate_limit_per_user": 0, "flags": 0,
                "thread_metadata": {"archived": False, "auto_archive_duration": auto_archive_duration, "locked": False,
                                    "archive_timestamp": "2026-01-01T00:00:00+00:00"}}

    monkeypatch.setattr(h.bot.http, "start_thread_with_message", start_thread_with_message)
    cog = daily_cog(h.bot, FakeClock(next_utc_midnight() + timedelta(hours=1)))
    [post] = await cog.tick()
    assert post.where == "thread" and post.members == 2
    header = h.sent.sends(ch.id)
    assert len(header) == 1 and "thread below" in header[0].payload["content"]
    assert not header[0].payload["allowed_mentions"].get("users")  # the header pings nobody
    in_thread = h.sent.sends(threads[0].id)
    assert len(in_thread) >= 2 and all(len(s.payload["content"]) <= 2000 for s in in_thread)
    text = "\n".join(s.payload["content"] for s in in_thread)
    assert all(f"<@{m.id}>" in text for m in h.members[:2]) and f"<@{h.members[2].id}>" not in text
    assert await cog.tick() == []


@pytest.mark.parametrize("bot_settings_overrides", [{"recsys": {"picks_per_member": 25}}], indirect=True)
async def test_without_thread_permission_a_long_post_is_split_in_the_channel(bot, monkeypatch):
    h = bot
    ch = h.channels[0]
    await seed_long(h)

    async def no_threads(*args, **kwargs):  # dpytest has no thread endpoint: Discord refusing one
        raise discord.Forbidden(type("R", (), {"status": 403, "reason": "Forbidden"})(), "Missing Permissions")

    monkeypatch.setattr(h.bot.http, "start_thread_with_message", no_threads)
    cog = daily_cog(h.bot, FakeClock(next_utc_midnight() + timedelta(hours=1)))
    posts = await cog.tick()
    assert len(posts) == 1 and posts[0].members == 2
    sends = h.sent.sends(ch.id)
    assert len(sends) >= 3  # a short header, then the picks in several messages
    assert all(len(s.payload["content"]) <= 2000 for s in sends)
    assert sends[0].payload["allowed_mentions"]["parse"] == [] and not sends[0].payload["allowed_mentions"].get("users")
    for s in sends[1:]:  # each message may ping only the members it mentions
        allowed = {int(u) for u in s.payload["allowed_mentions"].get("users", [])}
        assert allowed == {m.id for m in h.members[:2] if f"<@{m.id}>" in s.payload["content"]}
    assert await cog.tick() == []


@pytest.mark.parametrize("bot_settings_overrides", [{"recsys": {"picks_per_member": 25}}], indirect=True)
async def test_a_post_that_fails_half_way_is_not_posted_again_that_day(bot, monkeypatch):
    h = bot
    ch = h.channels[0]
    await seed_long(h)

    async def thread_fails(*args, **kwargs):  # the header is out, then Discord fails (a 500)
        raise discord.HTTPException(type("R", (), {"status": 500, "reason": "Server Error"})(), "boom")

    monkeypatch.setattr(h.bot.http, "start_thread_with_message", thread_fails)
    real_send = discord.TextChannel.send
    calls = {"n": 0}

    async def send_fails_after_header(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise discord.HTTPException(type("R", (), {"status": 500, "reason": "Server Error"})(), "boom")
        return await real_send(self, *args, **kwargs)

    monkeypatch.setattr(discord.TextChannel, "send", send_fails_after_header)
    clock = FakeClock(next_utc_midnight() + timedelta(hours=1))
    cog = daily_cog(h.bot, clock)
    assert await cog.tick() == []  # the failure is logged, not raised into the loop
    assert len(h.sent.sends(ch.id)) == 1  # only the header went out
    monkeypatch.setattr(discord.TextChannel, "send", real_send)
    clock.now += timedelta(minutes=1)
    assert await cog.tick() == []  # part of today's post is out: no second post today
    assert len(h.sent.sends(ch.id)) == 1


def test_pack_joins_sections_and_cuts_only_oversized_ones():
    sections = ["a" * 900, "b" * 900, "c" * 300, "word " * 900]
    pieces = pack(sections)
    assert all(len(p) <= 2000 for p in pieces)
    assert pieces[0] == "a" * 900 + "\n\n" + "b" * 900
    assert "".join(pieces).replace("\n", "").replace(" ", "") == ("a" * 900 + "b" * 900 + "c" * 300 + "word" * 900)


# ---- privacy of the daily post (issue 13, items 1 and 2) -------------------------------------------
SOURDOUGH = [
    "Bakery news: the sourdough loaf with a long cold proof now comes out at seven, crusty and open.",
    "Sourdough workshop on Saturday: bring your starter, we practise shaping and scoring loaves.",
    "The library extended its opening hours on weekends; the reading room is open until nine.",
]
SECRET = "PRIVATE note: my sourdough starter recipe, rye flour and honey, do not share it with anyone."


async def dm_text(h, member) -> str:
    dm = await h.dm(member)
    return "\n".join(s.payload["content"] for s in h.sent.sends(dm.id))


@pytest.mark.parametrize("bot_extensions", [("bot.cogs.events", "bot.cogs.daily")])
async def test_the_daily_dm_never_holds_a_private_thread_for_a_member_not_in_it(bot, monkeypatch):
    h = bot
    m0, m1, m2 = h.members
    answer_thread_members(h, monkeypatch, [m1, m2])  # m0 is not in the thread
    await h.bot.get_cog("Events").on_guild_available(h.guild)
    thread = await open_private_thread(h, h.channels[0], owner=m1)
    for text in SOURDOUGH[:2]:
        await h.post("Thread only: " + text, channel=thread, member=m1)
    await h.post(SOURDOUGH[2], member=m1)
    for m in (m0, m2):
        await h.post("I bake sourdough bread every weekend and love a crusty open crumb.", member=m)
        await h.store.set_subscribed(h.guild.id, m.id, True)
    await h.store.update_guild(h.guild.id, digest_channel_id=None, digest_time="00:00", timezone="UTC")
    await h.flush()
    cog = daily_cog(h.bot, FakeClock(next_utc_midnight() + timedelta(hours=1)))
    [post] = await cog.tick()
    assert post.where == "dm"
    assert f"/{thread.id}/" not in await dm_text(h, m0), "a private thread's message in a non-member's DM"
    assert f"/{thread.id}/" in await dm_text(h, m2)  # its member gets it: the thread was worth picking


async def test_a_channel_post_never_quotes_text_from_a_channel_its_readers_cannot_see(bot):
    """m0 wrote only in a channel nobody else can view: their pick's reason in the public post quotes
    nothing of it, and no pick comes from there; the same picks by DM may quote it (m0 alone reads)."""
    from campfire.features import digest

    h = bot
    g, public, private = h.guild.id, h.channels[0], h.channels[1]
    m0, _, m2 = h.members
    await seed(h, tz="UTC", at="00:00")  # m0 and m1 subscribed, #0 public and the digest channel
    await h.store.upsert_channel(private.id, g, private.name, visibility={"public": False, "members": [m0.id, m2.id]})
    now = time.time()
    mine = Item(id=snowflake(), guild_id=g, kind="message", channel_id=private.id, author_id=m0.id,
                created_at=now - 60, text=SECRET)
    hidden = Item(id=snowflake(), guild_id=g, kind="message", channel_id=private.id, author_id=m2.id,
                  created_at=now - 30, text="Only here: my sourdough starter smells of apples, is that normal?")
    public_items = [Item(id=snowflake(), guild_id=g, kind="message", channel_id=public.id, author_id=m2.id,
                         created_at=now - 90 - k, text=t) for k, t in enumerate(SOURDOUGH)]
    await h.recommender.add_items([mine, hidden, *public_items])
    await h.recommender.record([{"guild_id": g, "member_id": it.author_id, "kind": "authored", "item_id": it.id}
                                for it in (mine, hidden, *public_items)])
    await h.recommender.flush()
    alone = await digest.run(h.app, g, dry_run=True, audience=digest.Audience(None))  # as a DM would be
    m0_alone = next(mp for mp in alone.picks if mp.member_id == m0.id)
    assert any("PRIVATE note" in p.reason for p in m0_alone.picks)  # the quote a public post must not carry

    cog = daily_cog(h.bot, FakeClock(next_utc_midnight() + timedelta(hours=1)))
    [post] = await cog.tick()
    assert post.where == "channel"
    content = "\n".join(s.payload["content"] for s in h.sent.sends(public.id))
    assert f"<@{m0.id}>" in content  # m0 got picks, with reasons
    assert "PRIVATE note" not in content and "smells of apples" not in content
    assert f"/{private.id}/" not in content  # no pick from the channel the post's readers cannot all see
