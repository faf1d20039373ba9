"""Eligibility before ranking (``recsys.eligibility``, applied by the one ranking pass of ``/recommend``
and the digest): every rule on one small guild, real SQLite, FAISS and all-MiniLM-L6-v2.

Texts are real Beer Stack Exchange questions (../shared/data/recsys/se_beer, CC BY-SA 3.0,
beer.stackexchange.com). The guild is small enough that ``k`` covers every eligible item, so each
member's picks must be exactly the items the rules leave them.
"""

from __future__ import annotations

import numpy as np

from recsys.eligibility import candidate_mask, excluded_keys, rejected_stories
from recsys.service import Recommender
from recsys.store import Item
from tests.recsys.test_recommend import DAY, GUILD, NOW, PUBLIC, engage, make_items, rec, se_beer  # noqa: F401

K = 25
CONV, INSIDE_1, INSIDE_2 = 50_000, 50_001, 50_002
THANKS, DOOMED = 60_000, 60_001
DOWNVOTED, NEGATIVE, STORY = 70_000, 70_001, 70_002
READER, OPENER, REPLIER, ADDRESSED, REACTOR = 1, 2, 3, 4, 5


async def guild(rec: Recommender, store) -> list[int]:
    """Six question items by outsiders, one conversation (opened by OPENER, answered by REPLIER,
    addressing ADDRESSED) with its two inner messages, a "thanks" line, an item that gets deleted and
    three stories; returns the question ids."""
    for m, name in ((REPLIER, "replier"), (REACTOR, "reactor")):
        await store.upsert_member(GUILD, m, name)
    rows = se_beer("hops", 9)
    questions = make_items(rows[:6], start_id=40_000, author=100)
    opener, answer, follow_up = make_items(rows[6:9], start_id=CONV, author=OPENER, age_days=2.0)
    answer.author_id = follow_up.author_id = REPLIER
    conv = Item(id=CONV, guild_id=GUILD, kind="message", title=opener.title,
                text=f"{opener.text}\n{answer.text[:300]}", created_at=opener.created_at, channel_id=PUBLIC,
                author_id=OPENER, meta={"conversation": True, "participants": 2, "size": 3})
    thanks = Item(id=THANKS, guild_id=GUILD, kind="message", text="thanks!! 🙏", created_at=NOW - DAY,
                  channel_id=PUBLIC, author_id=100)
    doomed = make_items(se_beer("history", 1), start_id=DOOMED, author=100)[0]
    stories = [Item(id=i, guild_id=GUILD, kind="story", title=r["title"], text=r["body_text"][:600],
                    created_at=NOW - 0.5 * DAY, channel_id=PUBLIC, author_id=OPENER, rating=rating)
               for i, r, rating in zip((DOWNVOTED, NEGATIVE, STORY), se_beer("brewing", 3), (0.0, -1.0, 0.0),
                                       strict=True)]
    await rec.add_items([*questions, conv, answer, follow_up, thanks, doomed, *stories])
    await store.write_conversation_links({}, {CONV: CONV, INSIDE_1: CONV, INSIDE_2: CONV}, {
        (GUILD, CONV): [(OPENER, "participant"), (REPLIER, "participant"), (ADDRESSED, "addressed")]})
    await engage(rec, READER, questions[:3])
    await rec.record([
        {"guild_id": GUILD, "member_id": OPENER, "kind": "requested", "item_id": s.id, "created_at": NOW - DAY}
        for s in stories] + [
        {"guild_id": GUILD, "member_id": REPLIER, "kind": "rated_down", "item_id": DOWNVOTED, "created_at": NOW - 1},
        {"guild_id": GUILD, "member_id": REACTOR, "kind": "reacted", "item_id": INSIDE_1, "created_at": NOW - 1},
    ])
    await rec.remove_item(DOOMED)
    await rec.flush()
    return [q.id for q in questions]


async def test_every_rule_leaves_each_member_exactly_their_eligible_items(rec: Recommender, store):
    questions = await guild(rec, store)

    async def picked(member: int) -> list[int]:
        picks = await rec.recommend(GUILD, member, k=K, now=NOW)
        scores = [p.score for p in picks]
        assert scores == sorted(scores, reverse=True), scores  # shown best first
        return [p.item.id for p in picks]

    # the reader: not the questions they reacted to; the conversation (never its inner messages),
    # not the "thanks", not the deleted item, not the stories somebody rated down or rated below 0
    assert set(await picked(READER)) == {*questions[3:], CONV, STORY}
    # the opener authored the conversation and requested every story
    assert set(await picked(OPENER)) == set(questions)
    # the replier took part; and rated a story down (it is gone for everyone anyway)
    assert set(await picked(REPLIER)) == {*questions, STORY}
    # addressed in the conversation without writing: they saw it
    assert set(await picked(ADDRESSED)) == {*questions, STORY}
    # reacted to a message inside the conversation: the conversation counts as seen
    assert set(await picked(REACTOR)) == {*questions, STORY}
    # /recommend and a batch of every member agree, member by member
    many = await rec.recommend_many(GUILD, [READER, OPENER, REPLIER, ADDRESSED, REACTOR], k=K, now=NOW)
    for member, picks in many.items():
        assert [p.item.id for p in picks] == await picked(member)


def test_eligibility_arrays():
    ids = np.array([10, 11, 12, 20, 30], np.int64)
    conv = np.array([10, 10, 10, -1, 30], np.int64)  # 10 holds 11 and 12; 20 stands alone; 30 is a thread
    assert candidate_mask(ids, conv).tolist() == [True, False, False, True, True]
    # member 7 reacted to 12 (inside 10); member 8 is addressed by 20 (item_member_pairs); 9 was sent 30
    keys = excluded_keys(ids, conv, [7, 8, 9], [{12}, set(), {30, 999}],
                         (np.array([8, 8], np.int64), np.array([20, 31], np.int64)))
    n = len(ids)
    assert sorted((int(k) // n, int(ids[k % n])) for k in keys) == [(0, 10), (0, 12), (1, 20), (2, 30)]
    rating = np.array([0, 0, 0, -2, 0], np.float64)
    assert rejected_stories({20, 30}, {30}, ids, rating).tolist() == [False, False, False, True, True]
    assert rejected_stories({30}, set(), ids, rating).tolist() == [False] * 5


def test_a_conversation_is_judged_by_its_title():
    """Low-substance conversations (recsys.substance): judged by their best line, so greetings
    answered by thanks are dropped, and a spam line inside a real exchange does not sink it."""
    from recsys.substance import _judge

    meta = {"conversation": True, "participants": 2}
    items = {
        1: Item(id=1, guild_id=GUILD, kind="message", title="thanks a lot!", text="thanks a lot!\nnp :)",
                created_at=NOW, meta=meta),
        2: Item(id=2, guild_id=GUILD, kind="message", title="How do I get sound back after the alsa upgrade?",
                text="How do I get sound back after the alsa upgrade?\nFree nitro giveaway! https://discord.gift/x",
                created_at=NOW, meta=meta),
        3: Item(id=3, guild_id=GUILD, kind="message", text="hello everyone", created_at=NOW),
    }
    assert sorted(_judge(items)) == [1, 3]
