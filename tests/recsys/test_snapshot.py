"""The per-guild snapshot cache of /recommend (recsys.snapshot): reused while the database is
unchanged, re-read after any write — by this connection (forget a member, delete a message, a message
joining a conversation, an opt-out) or by another one — so a stale snapshot is never served.

Real SQLite, FAISS and all-MiniLM-L6-v2 on real Beer Stack Exchange questions (se_beer, CC BY-SA 3.0,
via tests/recsys/test_recommend.py's guild)."""

from __future__ import annotations

import sqlite3

from recsys import snapshot
from recsys.batch import shared_candidates
from recsys.pipeline import guild_candidates, load_stats
from recsys.service import Recommender
from tests.recsys.test_recommend import DAY, GUILD, NOW, engage, make_items, rec, se_beer  # noqa: F401 (fixture)


async def _guild(rec: Recommender):
    hops = make_items(se_beer("hops", 10), start_id=10_000)
    other = make_items(se_beer("history", 6, exclude=("hops",)), start_id=20_000)
    await rec.add_items(hops + other)
    await engage(rec, 1, hops[:3])
    await engage(rec, 2, hops[3:5])
    await rec.flush()
    return hops


async def _fresh(rec: Recommender, member: int) -> list[tuple[int, float, str]]:
    """/recommend for ``member`` from a snapshot read now (the cache emptied first)."""
    snapshot.clear(rec.store)
    return [(p.item.id, p.score, p.reason) for p in await rec.recommend(GUILD, member, k=5, now=NOW)]


async def _cached(rec: Recommender, member: int) -> list[tuple[int, float, str]]:
    return [(p.item.id, p.score, p.reason) for p in await rec.recommend(GUILD, member, k=5, now=NOW)]


async def test_snapshot_is_reused_until_a_write(rec: Recommender, store):
    await _guild(rec)
    first = await _cached(rec, 1)
    before = snapshot.loads()
    assert [await _cached(rec, m) for m in (1, 1, 3)][:2] == [first, first]
    after = snapshot.loads()
    assert after["loads"] == before["loads"]  # three calls, nothing written: no re-read
    assert after["hits"] == before["hits"] + 3
    await store.set_subscribed(GUILD, 3, True)  # any row written by this connection
    await _cached(rec, 1)
    assert snapshot.loads()["loads"] == after["loads"] + 1


async def test_writes_invalidate_the_snapshot(rec: Recommender, store):
    await _guild(rec)
    picks = await _cached(rec, 1)
    assert picks
    # a message that just joined a conversation is no candidate any more (the conversation stands for it)
    joined, opener = picks[0][0], picks[1][0]
    await store.write_conversation_links({}, {joined: opener, opener: opener}, {})
    now_picks = await _cached(rec, 1)
    assert joined not in [i for i, _, _ in now_picks]
    assert now_picks == await _fresh(rec, 1)
    # a deleted message
    gone = now_picks[0][0]
    await rec.remove_item(gone)
    now_picks = await _cached(rec, 1)
    assert gone not in [i for i, _, _ in now_picks]
    assert now_picks == await _fresh(rec, 1)
    # a member taking part in an item (item_members) no longer gets it
    part = now_picks[0][0]
    await store.write_conversation_links({}, {}, {(GUILD, part): [(1, "participant")]})
    now_picks = await _cached(rec, 1)
    assert part not in [i for i, _, _ in now_picks]
    assert now_picks == await _fresh(rec, 1)
    # a forgotten member: their history is gone, so are picks and reasons built on it
    await _cached(rec, 2)
    await rec.forget_user(2)
    assert await _cached(rec, 2) == await _fresh(rec, 2)
    assert not any("because" in reason for _, _, reason in await _cached(rec, 2))


async def test_a_write_by_another_connection_invalidates_the_snapshot(rec: Recommender, store):
    await _guild(rec)
    picks = await _cached(rec, 1)
    author_gone = picks[0][0]
    with sqlite3.connect(store.path) as other:  # e.g. `campfire forget` from another process
        other.execute("UPDATE members SET opted_out = 1 WHERE user_id = "
                      "(SELECT author_id FROM items WHERE id = ?)", (author_gone,))
        if not other.total_changes:  # the author is no member row yet: add one, opted out
            other.execute("INSERT INTO members (guild_id, user_id, display_name, opted_out) "
                          "SELECT guild_id, author_id, 'author', 1 FROM items WHERE id = ?", (author_gone,))
    now_picks = await _cached(rec, 1)
    assert author_gone not in [i for i, _, _ in now_picks]
    assert now_picks == await _fresh(rec, 1)


async def test_shared_candidates_from_the_snapshot_equal_the_store_query(rec: Recommender, store, monkeypatch):
    for module in ("recsys.pipeline", "recsys.batch"):  # a limit the small guild reaches
        monkeypatch.setattr(f"{module}.FRESH_CANDIDATES", 5)
    monkeypatch.setattr("recsys.pipeline.POPULAR_CANDIDATES", 2)  # read by stats_candidates, for both
    hops = await _guild(rec)
    later = make_items(se_beer("glassware", 4, exclude=("hops",)), start_id=30_000, age_days=-1.0)  # after NOW
    same_time = make_items(se_beer("history", 3, exclude=("hops",)), start_id=40_000, age_days=0.5)
    for it in same_time:
        it.created_at = NOW - 0.5 * DAY  # equal times: the higher id first, as the query orders them
    await rec.add_items(later + same_time)
    await engage(rec, 3, hops[5:8], days_ago=0.2)
    stats = await load_stats(store, GUILD, NOW)
    snap = await snapshot.guild_snapshot(store, GUILD)
    for now in (NOW, NOW - 2 * DAY, NOW + 2 * DAY):
        from_store = await guild_candidates(store, stats, GUILD, now)
        assert shared_candidates(snap.table, snap.derived, stats, now) == from_store
