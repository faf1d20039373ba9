"""``campfire.features.digest`` without a bot, on a real App (SQLite, embedder, FAISS) in a temporary
data dir: which guilds are due across timezones, dry and real runs, the retry policy of a post, and
one daily post reading its guild row once."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from campfire.app import App
from campfire.features import digest
from campfire.features.types import DigestDue, DigestRun, GuildSettings
from recsys.store import Item

G, CH = 10, 100
SUBSCRIBERS = (1, 2)
AUTHOR = 3
TEXTS = [
    "Our community garden needs volunteers this Saturday to plant tomatoes and build the new compost bins.",
    "The chess club meets on Thursday evenings at the library; beginners welcome, boards provided.",
    "Found a great hiking trail along the river with waterfalls, about 12 km round trip, dogs allowed.",
    "Photography walk next week: bring any camera, we will practise long exposures at the old bridge.",
    "Board game night recap: Wingspan was the crowd favourite, next time we try Terraforming Mars.",
    "Local bakery now sells sourdough on Sundays; the walnut loaf sells out before ten in the morning.",
]


@pytest.fixture
def app_settings_overrides():
    return {"digest": {"default_time": "18:00", "default_timezone": "UTC"}}


async def seed(app: App, *, tz: str = "UTC", at: str = "06:00") -> None:
    """Members 1 and 2 subscribe (each wrote one message: their profile); member 3 wrote the rest."""
    store, rec = app.store, app.recommender
    await store.upsert_channel(CH, G, "general", visibility={"public": True})
    await store.update_guild(G, name="garden", digest_channel_id=CH, digest_time=at, timezone=tz)
    for m in (*SUBSCRIBERS, AUTHOR):
        await store.upsert_member(G, m, f"member{m}", role_ids=[])
    now = time.time()
    items = [Item(id=100 + k, guild_id=G, kind="message", channel_id=CH, author_id=AUTHOR, created_at=now - 600 * (k + 1),
                  text=t) for k, t in enumerate(TEXTS)]
    items += [Item(id=200 + m, guild_id=G, kind="message", channel_id=CH, author_id=m, created_at=now - 9000, text=t)
              for m, t in zip(SUBSCRIBERS, ("I love gardening and growing vegetables in the spring.",
                                            "Chess and board games are my favourite evening hobby."))]
    await rec.add_items(items)
    await rec.record([{"guild_id": G, "member_id": it.author_id, "kind": "authored", "item_id": it.id} for it in items])
    for m in SUBSCRIBERS:
        await store.set_subscribed(G, m, True)
    await rec.flush()


def at(h: int, m: int = 0, day: int = 15) -> datetime:
    return datetime(2026, 1, day, h, m, tzinfo=timezone.utc)


def next_midnight(hours: float = 0.0) -> datetime:
    """The next 00:00 UTC plus ``hours``: a local date whose picks may use everything written now."""
    now = datetime.now(timezone.utc)
    return (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(hours=hours)


async def test_due_follows_local_time_across_midnight(app: App):
    store = app.store
    await store.upsert_guild(1, "shanghai")
    await store.update_guild(1, timezone="Asia/Shanghai", digest_time="09:00")  # UTC+8
    await store.upsert_guild(2, "los angeles")
    await store.update_guild(2, timezone="America/Los_Angeles", digest_time="18:00")  # UTC-8 in winter
    await store.upsert_guild(3, "defaults")  # 18:00 UTC
    await store.set_opted_out(77)  # creates the opt-out placeholder guild 0, never due

    async def due(now: datetime) -> list[tuple[int, str]]:
        return [(d.guild.id, d.date) for d in await digest.due(app, now)]

    assert await due(at(0, 59)) == []  # 08:59 in Shanghai
    assert await due(at(1, 0)) == [(1, "2026-01-15")]
    await digest.mark_posted(app, 1, "2026-01-15")
    assert await due(at(1, 1)) == []  # never twice a day
    assert await due(at(18, 0)) == [(3, "2026-01-15")]
    # 02:00 UTC on the 16th is 18:00 on the 15th in Los Angeles; a restart later catches up once
    assert await due(at(2, 0, day=16)) == [(1, "2026-01-16"), (2, "2026-01-15")]
    await digest.mark_posted(app, 2, "2026-01-15")
    assert await due(at(2, 30, day=16)) == [(1, "2026-01-16")]
    assert await due(at(18, 0, day=16)) == [(3, "2026-01-16")]  # 02:00 on the 17th in Shanghai
    [d] = await digest.due(app, at(18, 0, day=16))
    assert isinstance(d.guild, GuildSettings) and d.guild.name == "defaults"
    with pytest.raises(ValueError):
        await digest.mark_posted(app, 1, "tomorrow")


async def test_a_bad_stored_time_or_zone_falls_back_to_the_defaults(app: App):
    await app.store.upsert_guild(5, "odd")
    await app.store.update_guild(5, digest_time="25:99", timezone="Mars/Olympus")
    assert await digest.due(app, at(17, 59)) == []
    assert [(d.guild.id, d.date) for d in await digest.due(app, at(18, 0))] == [(5, "2026-01-15")]


async def test_dry_run_and_real_run(app: App):
    await seed(app)
    before = await app.store.count("recommendations_sent")
    today = datetime.now(timezone.utc).date().isoformat()  # the items were written just now
    dry = await digest.run(app, G, dry_run=True)  # today, in the guild's timezone
    assert dry.date == today
    assert dry.dry_run and {mp.member_id for mp in dry.picks} == set(SUBSCRIBERS)
    assert await app.store.count("recommendations_sent") == before
    real = await digest.run(app, G, today, dry_run=False)
    assert [[p.item_id for p in mp.picks] for mp in real.picks] == [[p.item_id for p in mp.picks] for mp in dry.picks]
    assert await app.store.count("recommendations_sent") == real.pick_count > 0
    again = await digest.run(app, G, today, dry_run=False)  # the same date: the same picks back
    assert again.picks == real.picks
    assert await app.store.count("recommendations_sent") == real.pick_count
    for mp in real.picks:
        assert mp.member == f"member{mp.member_id}"
        assert all(p.item_id != 200 + mp.member_id and p.reason for p in mp.picks)
    doc = json.loads(json.dumps([mp.to_json() for mp in real.picks]))  # ``campfire digest --json``
    assert set(doc[0]) == {"guild_id", "member_id", "member", "picks"}
    assert set(doc[0]["picks"][0]) == {"item_id", "title", "reason", "score", "kind", "participants", "message_ids"}
    for pick in (p for mp in doc for p in mp["picks"]):  # single messages here: each covers itself
        assert pick["kind"] == "message" and pick["message_ids"] == [pick["item_id"]] and pick["participants"] == 0
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).date().isoformat()
    everyone = await digest.run(app, G, tomorrow, dry_run=True, all_members=True, k=1)
    assert all(len(mp.picks) == 1 for mp in everyone.picks)
    left = await digest.run(app, G, tomorrow, dry_run=True, present=lambda m: m != SUBSCRIBERS[0])
    assert [mp.member_id for mp in left.picks] == [SUBSCRIBERS[1]]


async def test_bad_arguments(app: App):
    await seed(app)
    with pytest.raises(ValueError, match="unknown guild"):
        await digest.run(app, 42, "2026-03-01", dry_run=True)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        await digest.run(app, G, "1/3/2026", dry_run=True)
    with pytest.raises(ValueError, match="only allowed with --dry-run"):
        await digest.run(app, G, "2026-03-01", dry_run=False, all_members=True)


async def test_post_marks_posted_and_reads_the_guild_row_once(app: App):
    await seed(app, tz="Asia/Tokyo", at="09:00")
    reads: list[str] = []

    def trace(sql: str) -> None:
        if "FROM guilds" in sql and sql.lstrip().upper().startswith("SELECT *"):
            reads.append(sql)

    await app.store._db.set_trace_callback(trace)  # every statement on the store's connection
    try:
        [due] = await digest.due(app, next_midnight())  # 09:00 in Tokyo
        got: list[DigestRun] = []

        async def deliver(run: DigestRun) -> str:
            got.append(run)
            return "channel"

        result = await digest.post(app, due, deliver, sent=[])
    finally:
        await app.store._db.set_trace_callback(None)
    assert len(reads) == 1, reads  # one daily post reads its guild row once
    assert result.where == "channel" and got[0].guild.digest_channel_id == CH
    assert {mp.member_id for mp in result.picks} == set(SUBSCRIBERS)
    assert (await app.store.get_guild(G))["last_digest_date"] == due.date == next_midnight().date().isoformat()
    assert await digest.due(app, next_midnight(0.5)) == []


async def test_retry_policy(app: App):
    await seed(app)
    [due] = await digest.due(app, next_midnight(6))

    async def fails(run: DigestRun) -> str:
        raise RuntimeError("Discord is down")

    with pytest.raises(RuntimeError):  # nothing went out: still due, the next tick retries
        await digest.post(app, due, fails, sent=[])
    assert [d.date for d in await digest.due(app, next_midnight(6.1))] == [due.date]

    sent: list[str] = []

    async def fails_half_way(run: DigestRun) -> str:
        sent.append("the header")
        raise RuntimeError("Discord failed after the first message")

    with pytest.raises(RuntimeError):  # part of the post is out: never a second post today
        await digest.post(app, due, fails_half_way, sent=sent)
    assert await digest.due(app, next_midnight(6.2)) == []


async def test_a_post_with_no_picks_sends_nothing_and_is_marked(app: App):
    await app.store.upsert_guild(G, "quiet")
    due = DigestDue(GuildSettings.from_row(await app.store.get_guild(G), app.settings.digest), "2026-01-15")

    async def deliver(run: DigestRun) -> str:
        raise AssertionError("nothing to send")

    result = await digest.post(app, due, deliver, sent=[])
    assert result.where == "none" and result.picks == ()
    assert (await app.store.get_guild(G))["last_digest_date"] == "2026-01-15"
