"""Who may read what a pick shows, without a bot, on a real App (SQLite, embedder, FAISS): private
threads reach only their members (or, while their members are unknown, their participants), and a
daily post in a channel shows — titles, links, quoted reasons — only what every reader of that
channel can see, while a DM may quote what its member can see (issue 13, items 1 and 2)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from campfire.app import App
from campfire.features import digest, picks
from campfire.features.digest import Audience
from campfire.features.types import Member
from recsys.audience import shared_channels
from recsys.reasons import NEUTRAL_REASON
from recsys.store import Item

G, GENERAL, THREAD, SECRET_CH, MODS_CH = 10, 100, 101, 102, 103
OUTSIDER, AUTHOR, REPLIER, INSIDER = 1, 2, 3, 4
MOD_ROLE = 555
THREAD_TEXTS = [
    "Thread talk: our sourdough starter recipe for the bakery contest, rye flour and a long cold proof.",
    "Thread talk: sourdough crumb notes, a higher hydration gave the loaf a glossy open crumb.",
]
GENERAL_TEXTS = [
    "The 42 bus now leaves ten minutes earlier on weekdays, the new timetable is on the town website.",
    "Looking for a quiet mechanical keyboard for programming at night, any switch recommendations?",
    "Bakery news: the sourdough loaf with a long cold proof now comes out at seven, crusty and open.",
]
PROFILE = "I bake sourdough bread every weekend and love a crusty, open-crumb loaf with rye."
SECRET = "PRIVATE note: my sourdough starter recipe is rye flour and honey, please never share it."


def today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


async def add(app: App, items: list[Item]) -> None:
    await app.recommender.add_items(items)
    await app.recommender.record([{"guild_id": G, "member_id": it.author_id, "kind": "authored", "item_id": it.id}
                                  for it in items])


async def seed_thread(app: App, visibility: dict | None) -> list[int]:
    """#100 public; #101 a private thread in it (stored as the importer stores one when
    ``visibility`` is None). AUTHOR wrote in both, REPLIER replied in the thread, everyone else wrote
    their sourdough profile in #100. Returns the thread's item ids."""
    store, now = app.store, time.time()
    await store.upsert_channel(GENERAL, G, "general", visibility={"public": True})
    await store.upsert_channel(THREAD, G, "secret plans", "private_thread", parent_id=GENERAL, visibility=visibility)
    for m in (OUTSIDER, AUTHOR, REPLIER, INSIDER):
        await store.upsert_member(G, m, f"member{m}", role_ids=[])
    thread = [Item(id=1000 + k, guild_id=G, kind="message", channel_id=THREAD, author_id=AUTHOR,
                   created_at=now - 600 - k, text=t) for k, t in enumerate(THREAD_TEXTS)]
    general = [Item(id=1100 + k, guild_id=G, kind="message", channel_id=GENERAL, author_id=AUTHOR,
                    created_at=now - 900 - k, text=t) for k, t in enumerate(GENERAL_TEXTS)]
    own = [Item(id=1200 + m, guild_id=G, kind="message", channel_id=GENERAL, author_id=m, created_at=now - 3000,
                text=PROFILE) for m in (OUTSIDER, REPLIER, INSIDER)]
    await add(app, thread + general + own)
    await app.recommender.record([{"guild_id": G, "member_id": REPLIER, "kind": "replied", "item_id": 1000,
                                   "source_id": 1300}])
    for m in (OUTSIDER, REPLIER, INSIDER):
        await store.set_subscribed(G, m, True)
    await app.recommender.flush()
    return [it.id for it in thread]


async def picked(app: App, member: int) -> set[int]:
    return {p.item_id for p in await picks.now(app, Member(G, member), k=10)}


async def test_a_private_thread_of_unknown_membership_reaches_only_its_participants(app: App):
    """Imported (``GuildPrivateThread``): no snapshot of its members, so only its author and replier —
    not the parent channel's readers — get its messages: in /recommend, the dry run and the real digest."""
    secret = set(await seed_thread(app, None))
    assert await picked(app, OUTSIDER) and not await picked(app, OUTSIDER) & secret
    assert await picked(app, REPLIER) & secret  # a participant: the thread is worth picking
    dry = await digest.run(app, G, dry_run=True, audience=Audience(None), k=10)
    real = await digest.run(app, G, today(), dry_run=False, audience=Audience(None), k=10)  # DMs
    for run in (dry, real):
        got = {mp.member_id: {p.item_id for p in mp.picks} for mp in run.picks}
        assert not got.get(OUTSIDER, set()) & secret and not got.get(INSIDER, set()) & secret
        assert got[REPLIER] & secret


async def test_a_private_thread_of_known_membership_reaches_only_its_members(app: App):
    """The bot's snapshot lists the members: a member sees it, a participant who left does not."""
    secret = set(await seed_thread(app, {"public": False, "thread": "private", "roles": [],
                                         "members": [AUTHOR, INSIDER], "members_known": True}))
    assert await picked(app, INSIDER) & secret
    assert not await picked(app, REPLIER) & secret and not await picked(app, OUTSIDER) & secret
    await app.store.upsert_member(G, OUTSIDER, "member1", role_ids=[MOD_ROLE])  # a thread manager
    await app.store.upsert_channel(THREAD, G, "secret plans", "private_thread", parent_id=GENERAL, visibility={
        "public": False, "thread": "private", "roles": [MOD_ROLE], "members": [AUTHOR, INSIDER], "members_known": True})
    assert await picked(app, OUTSIDER) & secret


async def seed_secret(app: App) -> tuple[int, int]:
    """#100 public (the digest channel); #102 only OUTSIDER and AUTHOR may view. OUTSIDER's one
    message is there (their profile: what a reason would quote); AUTHOR wrote about the same in both."""
    store, now = app.store, time.time()
    await store.upsert_channel(GENERAL, G, "general", visibility={"public": True})
    await store.upsert_channel(SECRET_CH, G, "secret", visibility={"public": False, "members": [OUTSIDER, AUTHOR]})
    await store.update_guild(G, digest_channel_id=GENERAL)
    for m in (OUTSIDER, AUTHOR, REPLIER):
        await store.upsert_member(G, m, f"member{m}", role_ids=[])
    hidden = Item(id=1400, guild_id=G, kind="message", channel_id=SECRET_CH, author_id=AUTHOR, created_at=now - 60,
                  text="Only here: my sourdough starter smells of apples and rye, is that normal for a starter?")
    mine = Item(id=1401, guild_id=G, kind="message", channel_id=SECRET_CH, author_id=OUTSIDER, created_at=now - 120,
                text=SECRET)
    general = [Item(id=1100 + k, guild_id=G, kind="message", channel_id=GENERAL, author_id=AUTHOR,
                    created_at=now - 900 - k, text=t) for k, t in enumerate(GENERAL_TEXTS)]
    await add(app, [hidden, mine, *general])
    await store.set_subscribed(G, OUTSIDER, True)
    await app.recommender.flush()
    return hidden.id, mine.id


def leaks(run, hidden: int) -> list[str]:
    """What of SECRET_CH a run shows: its text in a reason or title, or a pick from it."""
    return [f"{p.item_id}: {p.title} — {p.reason}" for mp in run.picks for p in mp.picks
            if "PRIVATE" in p.reason or "apples" in p.reason or "apples" in p.title or p.item_id == hidden
            or f"/{SECRET_CH}/" in (p.link or "")]


async def test_a_channel_post_shows_only_what_all_its_readers_can_see_and_a_dm_may_quote_more(app: App):
    hidden, _ = await seed_secret(app)
    dm = await digest.run(app, G, dry_run=True, audience=Audience(None))
    [mine] = dm.picks
    assert any(p.reason.startswith("because you wrote about: PRIVATE note") for p in mine.picks)
    assert hidden in {p.item_id for p in mine.picks}  # OUTSIDER may see it: fine by DM
    post = await digest.run(app, G, dry_run=True)  # the guild's post: in #100, read by everyone there
    assert post.picks and not leaks(post, hidden), leaks(post, hidden)
    assert any(p.reason == NEUTRAL_REASON for p in post.picks[0].picks)  # explained, without quoting


async def test_picks_sent_by_dm_are_screened_when_the_same_day_goes_to_a_channel(app: App):
    """A digest re-run on the same date returns what was recorded: by DM it quoted the private note;
    posted in the channel instead (e.g. a retry once the channel is writable) it must not."""
    hidden, _ = await seed_secret(app)
    first = await digest.run(app, G, today(), dry_run=False, audience=Audience(None))
    assert leaks(first, hidden)
    again = await digest.run(app, G, today(), dry_run=False, audience=Audience(None))
    assert again.picks == first.picks  # the same audience: the same picks back
    public = await digest.run(app, G, today(), dry_run=True, audience=Audience(GENERAL))
    assert public.picks and not leaks(public, hidden), leaks(public, hidden)


@pytest.mark.parametrize("audience, expected", [
    (GENERAL, {GENERAL}),  # read by everyone: not the mods' channel, not the one a member is denied
    (MODS_CH, {GENERAL, MODS_CH}),  # read by the mods only (and the member named on it)
])
def test_shared_channels_are_those_every_reader_can_view(audience: int, expected: set[int]):
    channels = [
        {"id": GENERAL, "kind": "text", "parent_id": None, "visibility": {"public": True}},
        {"id": MODS_CH, "kind": "text", "parent_id": None,
         "visibility": {"public": False, "roles": [MOD_ROLE], "members": [INSIDER]}},
        {"id": SECRET_CH, "kind": "text", "parent_id": None, "visibility": {"public": True, "denied_members": [AUTHOR]}},
        {"id": THREAD, "kind": "private_thread", "parent_id": GENERAL,
         "visibility": {"public": True, "members": [INSIDER]}},
    ]
    members = {OUTSIDER: {"role_ids": [MOD_ROLE]}, AUTHOR: {"role_ids": [MOD_ROLE]}, INSIDER: {"role_ids": []},
               REPLIER: {"role_ids": []}}
    assert shared_channels(G, members, channels, audience) == expected
