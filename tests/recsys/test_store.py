import sqlite3

import numpy as np
import pytest

from recsys.store import SCHEMA_VERSION, Item, Store, new_id


async def test_migrates_from_empty_with_wal_and_foreign_keys(store: Store):
    assert await store.pragma("user_version") == SCHEMA_VERSION
    assert (await store.pragma("journal_mode")).lower() == "wal"
    assert await store.pragma("foreign_keys") == 1
    assert await store.pragma("busy_timeout") == 5000
    tables = {r[0] for r in sqlite3.connect(store.path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"guilds", "channels", "members", "items", "interactions", "embeddings", "recommendations_sent"} <= tables


async def test_reopen_does_not_migrate_again(data_dir):
    path = data_dir / "campfire.db"
    async with Store.connect(path) as s:
        await s.upsert_guild(1, "g")
    async with Store.connect(path) as s:
        assert await s.pragma("user_version") == SCHEMA_VERSION
        assert (await s.get_guild(1))["name"] == "g"


async def test_a_version_1_database_migrates_and_keeps_what_was_sent(data_dir):
    """Schema 1 -> 2 adds recommendations_sent.reason_item_id; rows sent before keep their reason."""
    from recsys.store import _MIGRATIONS, _split_sql

    path = data_dir / "campfire.db"
    db = sqlite3.connect(path)
    for stmt in _split_sql(_MIGRATIONS[0]):
        db.execute(stmt)
    db.execute("PRAGMA user_version=1")
    db.execute("INSERT INTO guilds (id, name, created_at) VALUES (1, 'g', 0)")
    db.execute("INSERT INTO items (id, guild_id, kind, text, created_at) VALUES (5, 1, 'message', 'hi', 1.0)")
    db.execute("INSERT INTO recommendations_sent (guild_id, member_id, item_id, date, reason, created_at) "
               "VALUES (1, 7, 5, '2026-01-01', 'because', 2.0)")
    db.commit()
    db.close()
    async with Store.connect(path) as s:
        assert await s.pragma("user_version") == SCHEMA_VERSION >= 2
        assert await s.recommendations_on(1, "2026-01-01") == {7: [(5, 0.0, "because")]}
        await s.record_recommendations(1, 8, [(5, 0.5, "because you liked: x", 5)], "2026-01-02")
        assert await s.recommendations_on(1, "2026-01-02") == {8: [(5, 0.5, "because you liked: x")]}


async def test_a_version_3_database_gets_chat_lines_from_its_messages(data_dir):
    """Schema 3 -> 4: message items become chat lines (threads do not), so conversations can form."""
    from recsys.store import _MIGRATIONS, _split_sql

    path = data_dir / "campfire.db"
    db = sqlite3.connect(path)
    for migration in _MIGRATIONS[:3]:
        for stmt in _split_sql(migration):
            db.execute(stmt)
    db.execute("PRAGMA user_version=3")
    db.execute("INSERT INTO guilds (id, name, created_at) VALUES (1, 'g', 0)")
    rows = [(5, 9, 70, "how do I fix grub?", None, "{}"), (6, 9, 71, "ann: reinstall it", 5, "{}"),
            (8, 8, 70, "a thread", None, '{"thread": true}')]
    for iid, cid, author, text, parent, meta in rows:
        db.execute("INSERT INTO items (id, guild_id, channel_id, kind, author_id, text, created_at, parent_item_id, meta) "
                   "VALUES (?, 1, ?, 'message', ?, ?, ?, ?, ?)", (iid, cid, author, text, float(iid), parent, meta))
    db.commit()
    db.close()
    async with Store.connect(path) as s:
        assert await s.pragma("user_version") == SCHEMA_VERSION >= 4
        lines = await s.chat_lines(1, 9)
        assert [(line["message_id"], line["author_id"], line["reply_to"]) for line in lines] == [(5, 70, None), (6, 71, 5)]
        assert await s.chat_lines(1, 8) == []
        assert await s.count("chat_lines") == 2


def _items(n=3, guild=10):
    return [Item(id=1000 + i, guild_id=guild, kind="message", text=f"message number {i}", created_at=1.0e9 + i,
                 channel_id=20, author_id=30 + i) for i in range(n)]


async def test_idempotent_upserts(store: Store):
    await store.upsert_channel(20, 10, "general")
    await store.upsert_member(10, 30, "alice")
    assert await store.upsert_items(_items()) == 3
    assert await store.upsert_items(_items()) == 0
    rows = [{"guild_id": 10, "member_id": 30, "kind": "authored", "item_id": 1000, "source_id": 1000}]
    assert len(await store.add_interactions(rows)) == 1
    assert await store.add_interactions(rows) == []
    await store.upsert_member(10, 30, "")
    await store.upsert_channel(20, 10, "general")
    assert await store.count("items") == 3
    assert await store.count("interactions") == 1
    assert await store.count("members") == 1
    assert (await store.get_member(10, 30))["display_name"] == "alice"


async def test_second_connection_sees_committed_rows(store: Store):
    await store.upsert_items(_items(2))
    async with Store.connect(store.path) as other:
        assert await other.count("items") == 2
        assert (await other.get_item(1001)).text == "message number 1"


async def test_foreign_keys_cascade_and_vectors_follow(store: Store):
    await store.upsert_items(_items(1))
    iid = await store.add_interaction(10, 31, "reacted", item_id=1000, text="message number 0")
    await store.put_embeddings("item", [1000], [10], np.ones((1, 4), np.float32) / 2, "m")
    await store.put_embeddings("interaction", [iid], [10], np.ones((1, 4), np.float32) / 2, "m")
    assert await store.count("embeddings") == 2
    assert await store.delete_item(1000)
    assert await store.count("interactions") == 0
    assert await store.count("embeddings") == 0
    with pytest.raises(sqlite3.IntegrityError):
        await store.add_interaction(10, 31, "reacted", item_id=999999)


async def test_opted_out_members_are_not_recorded(store: Store):
    await store.upsert_member(10, 30, "alice")
    await store.set_opted_out(30)
    assert await store.add_interaction(10, 30, "authored", text="hello") is None
    assert await store.upsert_items(_items(1)) == 0  # item 1000 is by author 30
    await store.set_opted_out(77)  # never seen: the choice is still remembered
    assert await store.is_opted_out(77)


async def test_transaction_rolls_back(store: Store):
    with pytest.raises(RuntimeError):
        async with store.transaction():
            await store.upsert_guild(5, "x")
            raise RuntimeError("boom")
    assert await store.get_guild(5) is None


async def test_embeddings_roundtrip_and_model_change(store: Store):
    await store.upsert_items(_items(3))
    vecs = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    await store.put_embeddings("item", [1000, 1001, 1002], [10] * 3, vecs, "model-a")
    ids, got = await store.get_embeddings("item", 10, "model-a")
    assert ids.tolist() == [1000, 1001, 1002] and np.allclose(got, vecs)
    assert await store.missing_embeddings("item", "model-a") == []
    assert len(await store.missing_embeddings("item", "model-b")) == 3  # new model -> re-embed


async def test_new_ids_are_unique_and_time_ordered():
    ids = [new_id(1.7e9) for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert new_id(1.8e9) > max(ids)
    assert max(ids) < 2**63


async def test_visibility_snapshot(store: Store):
    await store.upsert_member(10, 30, "alice", role_ids=[500])
    await store.upsert_member(10, 31, "bob", role_ids=[])
    await store.upsert_channel(20, 10, "general")
    await store.upsert_channel(21, 10, "staff", visibility={"public": False, "roles": [500]})
    await store.upsert_channel(22, 10, "secret", visibility={"public": False, "roles": [], "members": [31]})
    assert await store.visible_channel_ids(10, 30) == {20, 21}
    assert await store.visible_channel_ids(10, 31) == {20, 22}


async def test_concurrent_transactions_and_writes_do_not_interleave(store: Store):
    import asyncio

    async def writer(n: int):
        async with store.transaction():
            await store.upsert_guild(100 + n, f"g{n}")
            await asyncio.sleep(0)  # let other tasks run while this transaction is open
            await store.upsert_items([Item(id=5000 + n, guild_id=100 + n, kind="story", text="t", created_at=1.0)])
            if n % 5 == 0:
                raise RuntimeError("rolled back")

    async def lone(n: int):
        await store.upsert_guild(900 + n, "lone")

    results = await asyncio.gather(*[writer(n) for n in range(40)], *[lone(n) for n in range(40)], return_exceptions=True)
    failures = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(f, RuntimeError) and str(f) == "rolled back" for f in failures) and len(failures) == 8
    assert await store.count("items") == 32  # the 8 rolled-back transactions left nothing
    assert len([g for g in await store.list_guilds() if g["name"] == "lone"]) == 40  # no lone write was lost
