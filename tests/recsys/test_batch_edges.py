"""Edge cases of the digest's batched ranking (``recsys.batch.recommend_many``) against the
single-member path (``recsys.recommend.recommend``), on real SQLite, real FAISS and the real
all-MiniLM-L6-v2. Item texts: Beer Stack Exchange (../shared/data/recsys/se_beer, CC BY-SA 3.0).
"""

from __future__ import annotations

import asyncio
import threading

from recsys import batch
from recsys.digest import daily_picks
from recsys.embed import embedding_text
from recsys.service import Recommender
from tests.recsys import test_recommend as base
from tests.recsys.test_recommend import (
    DAY,
    GUILD,
    NOW,
    NSFW_CH,
    PRIVATE,
    engage,
    make_items,
    se_beer,
)

rec = base.rec  # the guild fixture of test_recommend (channels public / mods-only / NSFW, members 1-4)


async def _mismatches(rec: Recommender, members: list[int], k: int, **kw) -> list[tuple]:
    """Members whose batched (item, reason) list differs from recommend()'s."""
    many = await rec.recommend_many(GUILD, members, k=k, now=NOW, **kw)
    bad = []
    for m in dict.fromkeys(members):
        one = await rec.recommend(GUILD, m, k=k, now=NOW, exclude_sent=kw.get("exclude_sent", False))
        got = [(p.item.id, p.reason) for p in many.get(m, [])]
        want = [(p.item.id, p.reason) for p in one]
        if got != want:
            bad.append((m, got, want))
    return bad


async def test_batched_equals_single_on_odd_members_and_filters(rec: Recommender, store):
    """Multi-interest, only down-ratings, only authored text, history only in a hidden channel, a
    member allowed by name, a thread under a hidden parent, NSFW off/on, an opted-out author, items
    from the future, exclude_sent, duplicate member ids and k above the MMR pool: same picks, same order."""
    rows = se_beer("brewing", 56)
    seed = make_items(rows[:14], start_id=1000)
    public = make_items(rows[14:30], start_id=2000)
    private = make_items(rows[30:36], start_id=3000, channel=PRIVATE)
    nsfw = make_items(rows[36:40], start_id=4000, channel=NSFW_CH)
    await store.upsert_channel(40, GUILD, "thread", kind="thread", parent_id=PRIVATE)
    await store.upsert_channel(41, GUILD, "by-name", visibility={"public": False, "members": [2]})
    thread = make_items(rows[40:44], start_id=5000, channel=40)
    by_name = make_items(rows[44:48], start_id=6000, channel=41)
    future = make_items(rows[48:52], start_id=7000, age_days=-1)
    opted = make_items(rows[52:56], start_id=8000)
    for it in opted:
        it.author_id = 900
    await rec.add_items(seed + public + private + nsfw + thread + by_name + future + opted)
    await store.upsert_member(GUILD, 900, "leaver")
    await engage(rec, 1, seed[:12])  # enough for several interests
    await engage(rec, 2, seed[:3])
    await rec.record([{"guild_id": GUILD, "member_id": 2, "kind": "rated_down", "item_id": seed[5].id,
                       "created_at": NOW - DAY}])
    await rec.record([{"guild_id": GUILD, "member_id": 3, "kind": "rated_down", "item_id": it.id,
                       "created_at": NOW - DAY} for it in seed[:3]])  # only down-ratings
    await rec.record([{"guild_id": GUILD, "member_id": 5, "kind": "authored", "created_at": NOW - DAY,
                       "text": "Which yeast strains ferment best at low temperature for lagers?"}])  # no item
    await engage(rec, 6, private[:3])  # history only in a channel member 6 cannot view
    await engage(rec, 4, seed[3:6])
    await rec.flush()
    await store.set_opted_out(900)
    members = [1, 2, 3, 4, 5, 6, 7]  # 5, 6, 7 are not in the members table; 7 has no history
    assert not await _mismatches(rec, members, k=8)
    await store.update_guild(GUILD, nsfw_allowed=True)
    await store.record_recommendations(GUILD, 1, [(public[0].id, 0.5, "x")], "2023-11-13")
    assert not await _mismatches(rec, members, k=8, exclude_sent=True)
    assert not await _mismatches(rec, [4, 1, 4, 2], k=60)


async def test_batched_guild_without_items_gives_no_picks(rec: Recommender, store):
    """A guild with members (and a subscriber) but no items yet: recommend() gives nothing, and so
    must the batch and the daily digest (it raised IndexError on the empty item table)."""
    await store.set_subscribed(GUILD, 1, True)
    assert await rec.recommend(GUILD, 1, k=3, now=NOW) == []
    assert await rec.recommend_many(GUILD, [1, 2, 3], k=3, now=NOW) == {}
    assert await daily_picks(rec, GUILD, "2023-11-14", dry_run=False) == []


async def test_reasons_use_current_display_names_after_a_rename(rec: Recommender, store):
    """A member renamed (same member count): /recommend and the digest must quote alike, without the
    addressee's current name (the name cache was keyed by member count only, so /recommend and new
    embeddings kept the old names while the batch read the new ones)."""
    await rec.add_items(make_items(se_beer("hops", 8), start_id=100))
    await store.upsert_member(GUILD, 7, "zed")
    await rec.flush()
    await rec.recommend(GUILD, 1, k=3, now=NOW)  # the facade has read the guild's names
    await store.upsert_member(GUILD, 7, "brewer")
    wrote = "which hop varieties give an IPA that strong citrus and pine aroma?"
    await rec.record([{"guild_id": GUILD, "member_id": 1, "kind": "authored", "text": f"brewer: {wrote}",
                       "created_at": NOW - DAY}])
    await rec.flush()
    one = [p.reason for p in await rec.recommend(GUILD, 1, k=3, now=NOW)]
    many = [p.reason for p in (await rec.recommend_many(GUILD, [1], k=3, now=NOW))[1]]
    assert f"because you wrote about: {wrote}" in many
    assert one == many


async def test_member_forgotten_during_a_digest_leaves_nothing_behind(rec: Recommender, store, monkeypatch):
    """/privacy forget lands while the digest is ranking (worker thread): nothing about the forgotten
    member may be recorded afterwards — no picks sent to them, no reason quoting their messages."""
    rows = se_beer("hops", 12)
    theirs = make_items(rows[:4], start_id=200)
    for it in theirs:
        it.author_id = 66
    others = make_items(rows[4:12], start_id=300)
    await rec.add_items(theirs + others)
    await store.upsert_member(GUILD, 66, "xavier")
    await engage(rec, 1, theirs)  # member 1 reacted to the soon-forgotten member's posts
    await engage(rec, 66, others[:3])
    await rec.flush()
    for m in (1, 66):
        await store.set_subscribed(GUILD, m, True)
    ranked, go = threading.Event(), threading.Event()
    rank_many = batch._rank_many

    def rank_then_wait(*args, **kwargs):
        out = rank_many(*args, **kwargs)  # the real ranking, then hold the digest here
        ranked.set()
        go.wait(60)
        return out

    monkeypatch.setattr(batch, "_rank_many", rank_then_wait)
    digest = asyncio.create_task(daily_picks(rec, GUILD, "2023-11-14", dry_run=False))
    try:
        assert await asyncio.to_thread(ranked.wait, 60)
        forgot = asyncio.create_task(rec.forget_user(66))
        await asyncio.wait([forgot], timeout=2)  # a fix may make forget wait for the digest
    finally:
        go.set()
    await digest
    await forgot
    assert await store.get_member(GUILD, 66) is None
    assert not (await store.export_user(66))["recommendations_sent"]


async def test_forget_removes_reasons_that_quote_the_member(rec: Recommender, store):
    """After /privacy forget, no stored digest reason may still quote the forgotten member's messages
    (their items and everyone's interactions on them are deleted, but a reason sent to another member,
    "because you reacted to: <their post>", stayed in recommendations_sent and is served again when
    the digest of that date is re-run)."""
    rows = se_beer("hops", 12)
    theirs = make_items(rows[:4], start_id=200)
    for it in theirs:
        it.author_id = 66
    await rec.add_items(theirs + make_items(rows[4:12], start_id=300))
    await store.upsert_member(GUILD, 66, "xavier")
    await engage(rec, 1, theirs)
    await rec.flush()
    await store.set_subscribed(GUILD, 1, True)
    titles = [it.title[:30] for it in theirs]
    sent = await daily_picks(rec, GUILD, "2023-11-14", dry_run=False)
    assert any(t in p.reason for mp in sent for p in mp.picks for t in titles)  # the premise
    await rec.forget_user(66)
    stored = await store.recommendations_on(GUILD, "2023-11-14")
    assert not [r for picks in stored.values() for _, _, r in picks if any(t in r for t in titles)]
    again = await daily_picks(rec, GUILD, "2023-11-14", dry_run=False)
    assert not [p.reason for mp in again for p in mp.picks if any(t in p.reason for t in titles)]


def test_embedding_text_drops_multi_word_display_names():
    """Discord display names often have spaces: ``john smith: …`` addresses member "John Smith"."""
    names = {"john smith", "zoë"}
    assert embedding_text("John Smith: which hops for a hazy IPA?", names) == "which hops for a hazy IPA?"
    assert embedding_text("Zoë, which hops for a hazy IPA?", names) == "which hops for a hazy IPA?"
    assert embedding_text("<@12> <#3>", names) == "<@12> <#3>"  # nothing else: unchanged


def test_cold_start_prefers_well_received_recent_conversations():
    """A member with no profile gets the guild's well-received recent conversations first: engagement,
    rating and being a conversation count; age before the guild's newest item decays them; items nobody
    engaged with are ordered newest first. Ties are broken the same way all day for a member."""
    import numpy as np

    from recsys.batch_rank import cold_start_scores, tiebreak_keys

    day, newest = 86400.0, 1_700_000_000.0
    #             engaged conv, fresh lone line, old engaged conv, fresh rated-down line, unengaged conv
    popularity = np.array([4.0, 0.0, 4.0, 0.0, 0.0])
    rating = np.array([0.0, 0.0, 0.0, -3.0, 0.0])
    created = np.array([newest - 2 * day, newest, newest - 90 * day, newest, newest - day])
    conversation = np.array([True, False, True, False, True])
    s = cold_start_scores(popularity, rating, created, conversation, newest)
    assert np.argsort(-s).tolist() == [0, 4, 2, 1, 3]  # three months old but answered: still above silence
    keys = tiebreak_keys(np.array([[7]]), np.array([[1, 2, 3]]), 19_700)
    assert keys.tolist() == tiebreak_keys(np.array([[7]]), np.array([[1, 2, 3]]), 19_700).tolist()
    assert keys.tolist() != tiebreak_keys(np.array([[8]]), np.array([[1, 2, 3]]), 19_700).tolist()
