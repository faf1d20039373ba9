"""Rows = stored vectors = FAISS ids after every removal path, and one /story save = one transaction.

Real SQLite file, real FAISS indexes and the real all-MiniLM-L6-v2 (``embedder`` fixture); item texts
are real Beer Stack Exchange questions (../shared/data/recsys/se_beer, CC BY-SA 3.0).
"""

from __future__ import annotations

import time

import pytest

from recsys.service import Recommender
from recsys.store import Item, new_id
from tests.recsys.test_recommend import GUILD, NOW, OTHER_GUILD, PUBLIC, make_items, se_beer

FEEDBACK = ("rated_up", "rated_down", "dismissed")


@pytest.fixture
async def rec(store, settings, embedder):
    r = Recommender(store, embedder, settings)
    await r.start()
    for gid, ch in ((GUILD, PUBLIC), (OTHER_GUILD, 21)):
        await store.upsert_guild(gid, f"g{gid}")
        await store.upsert_channel(ch, gid, "general")
    try:
        yield r
    finally:
        await r.aclose()


async def assert_consistent(rec: Recommender) -> None:
    """For each guild and index: FAISS size = stored vectors = rows that are embedded (items with
    text; interactions with text that are not ``recommended``)."""
    await rec.flush()
    store = rec.store
    for gid in (GUILD, OTHER_GUILD):
        items = await store.items(gid)
        inters = [i for i in await store.interactions(gid) if i.text and i.kind != "recommended"]
        for owner, rows in (("item", items), ("interaction", inters)):
            sql = await store.embedding_count(owner, gid, rec.embedder.key)
            faiss_ids = set(rec.indexes.get(gid, owner).ids().tolist())
            assert len(rec.indexes.get(gid, owner)) == sql == len(rows), (gid, owner, len(faiss_ids), sql, len(rows))
            assert faiss_ids == {r.id for r in rows}, (gid, owner)


async def populate(rec: Recommender) -> list[Item]:
    rows = se_beer("hops", 10)
    items = make_items(rows[:6], start_id=100) + make_items(rows[6:10], start_id=200, guild=OTHER_GUILD, channel=21)
    await rec.add_items(items)
    for m in (1, 2):
        await rec.store.upsert_member(GUILD, m, f"member{m}")
        await rec.record([
            {"guild_id": GUILD, "member_id": m, "item_id": it.id, "kind": "reacted", "source_id": it.id,
             "created_at": NOW - 3600} for it in items[:3]
        ])
        await rec.record([{"guild_id": GUILD, "member_id": m, "item_id": items[3].id, "kind": "rated_up",
                           "text": "liked it", "created_at": NOW - 60}])
    await rec.record([{"guild_id": OTHER_GUILD, "member_id": 1, "item_id": items[6].id, "kind": "replied",
                       "text": "which hops?", "created_at": NOW - 60}])
    await assert_consistent(rec)
    return items


async def test_every_removal_path_keeps_rows_vectors_and_faiss_equal(rec: Recommender):
    items = await populate(rec)
    # un-react: the reaction on one message (by source message, as the bot's reaction-removal path)
    assert await rec.remove_interactions(GUILD, 1, item_id=items[0].id, kinds=["reacted"], source_id=items[0].id) == 1
    await assert_consistent(rec)
    # un-rate: the member's feedback kinds on an item
    assert await rec.remove_interactions(GUILD, 2, item_id=items[3].id, kinds=FEEDBACK) == 1
    await assert_consistent(rec)
    assert await rec.remove_interactions(GUILD, 2, item_id=items[3].id, kinds=FEEDBACK) == 0  # nothing left
    # item edit (re-embedded)
    assert await rec.update_item_text(items[1].id, "an edited question about dry hopping a pale ale")
    await assert_consistent(rec)
    # item delete (with everyone's interactions on it)
    assert await rec.remove_item(items[2].id)
    await assert_consistent(rec)
    # forget a member (their interactions) and an author (their items and interactions on them)
    await rec.forget_user(1)
    await assert_consistent(rec)
    await rec.forget_user(items[6].author_id)
    await assert_consistent(rec)


async def test_removal_during_pending_embedding_leaves_no_orphan_vector(rec: Recommender):
    """A row removed while still queued for embedding must not get a vector afterwards."""
    items = await populate(rec)
    ids = await rec.record([{"guild_id": GUILD, "member_id": 2, "item_id": items[4].id, "kind": "reacted",
                             "text": "cheers", "source_id": 9}])
    assert ids
    assert await rec.remove_interactions(GUILD, 2, source_id=9) == 1
    await assert_consistent(rec)


async def test_story_save_is_one_transaction_without_whole_table_counts(rec: Recommender):
    """One /story save (the story and its ``requested``) = one BEGIN…COMMIT, no COUNT(*) over items.
    Statements counted with sqlite3's trace callback (embedding, which runs after the commit, held)."""
    await populate(rec)
    await rec.store.upsert_member(GUILD, 5, "teller")
    rec._queue.kick = lambda: None  # hold the embedding task (it runs after the save's commit)
    item = Item(id=new_id(), guild_id=GUILD, kind="story", text="A brewer finds a hop that tastes of pine.",
                created_at=time.time(), channel_id=PUBLIC, author_id=5, title="The pine hop")
    statements: list[str] = []
    await rec.store._db.set_trace_callback(statements.append)
    saved = await rec.save_item(item, [{"guild_id": GUILD, "member_id": 5, "item_id": item.id, "kind": "requested",
                                        "text": "a hop that tastes of pine", "source_id": 42}])
    await rec.store._db.set_trace_callback(None)
    del rec._queue.kick
    assert saved
    upper = [" ".join(s.split()).upper() for s in statements]
    assert sum(s.startswith("BEGIN") for s in upper) == 1, statements
    assert sum(s == "COMMIT" for s in upper) == 1, statements
    assert not [s for s in upper if "COUNT(" in s and "FROM ITEMS" in s], statements
    assert len(statements) <= 10, statements  # 17 before (2 transactions, 2 COUNT(*) FROM items)
    assert (await rec.store.get_item(item.id)) is not None
    assert [i.kind for i in await rec.store.interactions(GUILD, 5)] == ["requested"]
    await assert_consistent(rec)  # embedded after the commit: rows = vectors = FAISS ids


async def test_story_save_of_an_opted_out_author_stores_nothing(rec: Recommender):
    await rec.store.set_opted_out(6)
    item = Item(id=new_id(), guild_id=GUILD, kind="story", text="a story", created_at=time.time(), author_id=6)
    assert not await rec.save_item(item, [{"guild_id": GUILD, "member_id": 6, "item_id": item.id,
                                           "kind": "requested", "text": "x"}])
    assert await rec.store.get_item(item.id) is None
    assert await rec.store.interactions(GUILD, 6) == []


async def test_conversation_paths_keep_rows_vectors_and_faiss_equal(rec: Recommender):
    """Issue 11: a conversation growing, an edit of one of its lines, a deletion that dissolves it, a
    forget of one of its members — after each, rows = stored vectors = FAISS ids."""
    from recsys.conversation_sync import chat_line_row, message_edited, messages_deleted, sync_conversations

    await populate(rec)
    for m, name in ((1, "member1"), (2, "member2"), (3, "member3")):
        await rec.store.upsert_member(GUILD, m, name)
    rows = [chat_line_row(700, GUILD, PUBLIC, 1, NOW - 900, "which hops give a pale ale that grapefruit aroma?"),
            chat_line_row(701, GUILD, PUBLIC, 2, NOW - 800, "member1: Citra or Simcoe, added late in the boil"),
            chat_line_row(702, GUILD, PUBLIC, 3, NOW - 700, "member2: and dry hop with Citra for two or three days",
                          reply_to=701)]
    await rec.add_items([Item(id=r["message_id"], guild_id=GUILD, kind="message", text=r["text"], channel_id=PUBLIC,
                              created_at=r["created_at"], author_id=r["author_id"]) for r in rows])
    for i in range(1, 4):  # one line after the other, as they arrive live
        await rec.store.add_chat_lines(rows[i - 1:i])
        await sync_conversations(rec, GUILD, PUBLIC, since=rows[i - 1]["created_at"] - 900)
        await assert_consistent(rec)
    assert (await rec.store.get_item(700)).meta["size"] == 3
    await message_edited(rec, 702, "member2: and dry hop with Mosaic for three days instead")
    await assert_consistent(rec)
    await rec.forget_user(3)
    await assert_consistent(rec)
    assert await messages_deleted(rec, [701]) == 1  # member1 alone: dissolved back into a message item
    assert not (await rec.store.get_item(700)).meta.get("conversation")
    await assert_consistent(rec)
