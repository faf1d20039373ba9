"""``campfire.features.picks`` without a bot, on a real App (SQLite, embedder, FAISS) in a temporary
data dir: picks only from channels the member can see (stored snapshot and live predicate), feedback
replacing earlier feedback with SQL and FAISS kept equal, subscribe / unsubscribe."""

from __future__ import annotations

import time

import pytest

from campfire.app import App
from campfire.features import picks
from campfire.features.types import Member, MemberRecord, Pick
from recsys.store import Item

G, PUBLIC_CH, HIDDEN_CH, MOD_ROLE = 10, 100, 101, 555
ME, AUTHOR = 1, 2
PUBLIC = [
    "My sourdough starter finally doubled overnight; a long cold proof gave the loaf an open, glossy crumb.",
    "Tried rye flour in a sourdough loaf this weekend: dense but very tasty, next time more water.",
    "The 42 bus now leaves ten minutes earlier on weekdays, the new timetable is on the town website.",
    "Looking for a quiet mechanical keyboard for programming at night, any switch recommendations?",
]
HIDDEN = [
    "Moderators only: planning the sourdough bread baking contest, judges and prizes for the best loaf.",
    "Moderators only: sourdough hydration ratios for an open crumb, notes for the contest rules.",
]


async def seed(app: App) -> dict[str, list[int]]:
    """#100 public, #101 visible only to MOD_ROLE. AUTHOR wrote everything; ME wrote about sourdough."""
    store, rec = app.store, app.recommender
    await store.upsert_channel(PUBLIC_CH, G, "general", visibility={"public": True})
    await store.upsert_channel(HIDDEN_CH, G, "mods", visibility={"public": False, "roles": [MOD_ROLE]})
    for m, name in ((ME, "me"), (AUTHOR, "author")):
        await store.upsert_member(G, m, name, role_ids=[])
    now = time.time()
    ids: dict[str, list[int]] = {"public": [], "hidden": []}
    items = []
    for where, texts, ch in (("public", PUBLIC, PUBLIC_CH), ("hidden", HIDDEN, HIDDEN_CH)):
        for k, text in enumerate(texts):
            iid = 1000 + len(items)
            ids[where].append(iid)
            items.append(Item(id=iid, guild_id=G, kind="message", text=text, created_at=now - 3600 * (k + 1),
                              channel_id=ch, author_id=AUTHOR))
    items.append(Item(id=2000, guild_id=G, kind="message", channel_id=PUBLIC_CH, author_id=ME, created_at=now - 7200,
                      text="I bake sourdough bread every weekend and love a crusty, open-crumb loaf."))
    await rec.add_items(items)
    await rec.record([{"guild_id": G, "member_id": AUTHOR, "kind": "authored", "item_id": i}
                      for i in ids["public"] + ids["hidden"]])
    await rec.record([{"guild_id": G, "member_id": ME, "kind": "authored", "item_id": 2000}])
    await rec.flush()
    return ids


async def test_now_picks_only_from_channels_the_member_can_see(app: App):
    ids = await seed(app)
    found = await picks.now(app, Member(G, ME))
    assert found and all(isinstance(p, Pick) for p in found)
    got = [p.item_id for p in found]
    assert set(got) <= set(ids["public"]) and 2000 not in got  # never their own message
    assert ids["public"][0] in got or ids["public"][1] in got  # sourdough first
    for p in found:
        assert p.link == f"https://discord.com/channels/{G}/{PUBLIC_CH}/{p.item_id}"
        assert p.title and p.reason and p.kind == "message" and 0.0 <= p.score <= 1.0
    # the live predicate drops what the front end says the member cannot view now
    assert await picks.now(app, Member(G, ME), can_view=lambda ch: ch != PUBLIC_CH) == []
    # a MemberRecord is stored first: with the moderators' role, the hidden channel's picks come
    with_role = await picks.now(app, MemberRecord(G, ME, "me", role_ids=(MOD_ROLE,)))
    assert set(p.item_id for p in with_role) & set(ids["hidden"])
    assert (await app.store.get_member(G, ME))["role_ids"] == [MOD_ROLE]


async def test_no_history_no_picks(app: App):
    assert await picks.now(app, Member(G, 42)) == []


async def faiss_equals_sql(app: App) -> None:
    rec = app.recommender
    await rec.flush()
    stored = await app.store.embedding_count("interaction", G, rec.embedder.key)
    assert len(rec.indexes.get(G, "interaction")) == stored


async def test_feedback_replaces_earlier_feedback_and_keeps_faiss_equal_to_sql(app: App):
    ids = await seed(app)
    first, second = ids["public"][0], ids["public"][1]
    assert await picks.feedback(app, G, ME, first, "dismissed") == "kept"
    assert await picks.feedback(app, G, ME, second, "rated_up") == "kept"
    await faiss_equals_sql(app)
    assert await picks.feedback(app, G, ME, second, "rated_down") == "kept"  # replaces the 👍
    assert await picks.feedback(app, G, ME, second, "rated_down") == "kept"  # the same again: no change
    mine = [(i.item_id, i.kind) for i in await app.store.interactions(G, ME) if i.item_id in (first, second)]
    assert sorted(mine) == sorted([(first, "dismissed"), (second, "rated_down")])
    assert (await app.store.get_item(second)).rating == -1.0  # +1, then -1 replacing it
    await faiss_equals_sql(app)  # the removed 👍 left the FAISS index too
    # dismissed and down-rated items are not recommended again
    assert not {first, second} & {p.item_id for p in await picks.now(app, Member(G, ME))}


async def test_feedback_on_a_missing_item_or_by_an_opted_out_member(app: App):
    ids = await seed(app)
    assert await picks.feedback(app, G, ME, 999_999, "rated_up") == "gone"
    assert await picks.feedback(app, G + 1, ME, ids["public"][0], "rated_up") == "gone"  # another guild's item
    await app.store.set_opted_out(ME, True)
    assert await picks.feedback(app, G, ME, ids["public"][0], "rated_up") == "opted_out"
    assert not [i for i in await app.store.interactions(G, ME) if i.kind == "rated_up"]
    with pytest.raises(ValueError):
        await picks.feedback(app, G, ME, ids["public"][0], "loved")


async def test_subscribe_and_unsubscribe(app: App):
    await app.store.upsert_guild(G, "g")
    await app.store.update_guild(G, digest_time="08:30", timezone="Asia/Shanghai", digest_channel_id=PUBLIC_CH)
    guild = await picks.subscribe(app, MemberRecord(G, ME, "me", role_ids=()))
    assert guild is not None and (guild.digest_time, guild.timezone, guild.digest_channel_id) == (
        "08:30", "Asia/Shanghai", PUBLIC_CH)
    assert [m["user_id"] for m in await app.store.subscribed_members(G)] == [ME]
    await picks.unsubscribe(app, G, ME)
    assert await app.store.subscribed_members(G) == []


async def test_an_opted_out_member_cannot_subscribe(app: App):
    await app.store.set_opted_out(ME, True)
    assert await picks.subscribe(app, Member(G, ME, "me")) is None
    assert await app.store.subscribed_members(G) == []
