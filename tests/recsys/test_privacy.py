"""forget/export and opt-outs: rows and vectors gone from SQLite and from the FAISS indexes."""

from __future__ import annotations

import numpy as np

from recsys.index import VectorIndex
from recsys.service import Recommender
from recsys.store import Item

G = 7
ALICE, BOB = 71, 72
TEXTS = {
    ALICE: ["My homebrew saison finished at 1.002, is that too dry?", "Best yeast for a farmhouse ale?"],
    BOB: ["Where can I buy fresh Citra hops in Berlin?", "How cold should a stout be served?"],
}


async def _guild(rec: Recommender, store) -> None:
    await store.upsert_channel(70, G, "general")
    for uid, name in ((ALICE, "alice"), (BOB, "bob")):
        await store.upsert_member(G, uid, name)
    items = [Item(id=uid * 100 + i, guild_id=G, kind="message", text=t, created_at=1.7e9 + i, channel_id=70,
                  author_id=uid) for uid, texts in TEXTS.items() for i, t in enumerate(texts)]
    await rec.add_items(items)
    rows = []
    for uid, texts in TEXTS.items():
        rows += [{"guild_id": G, "member_id": uid, "kind": "authored", "item_id": uid * 100 + i, "text": t,
                  "created_at": 1.7e9 + i} for i, t in enumerate(texts)]
    rows.append({"guild_id": G, "member_id": BOB, "kind": "replied", "item_id": ALICE * 100, "source_id": 9,
                 "text": "1.002 is fine for a saison", "created_at": 1.7e9 + 5})
    rows.append({"guild_id": G, "member_id": ALICE, "kind": "reacted", "item_id": BOB * 100, "created_at": 1.7e9 + 6})
    await rec.record(rows)
    await rec.flush()


async def test_forget_removes_rows_and_vectors(store, settings, embedder):
    rec = Recommender(store, embedder, settings)
    await rec.start()
    await _guild(rec, store)
    assert rec.stats(G)["item_vectors"] == 4 and rec.stats(G)["interaction_vectors"] == 6

    exported = await rec.export_user(ALICE)
    assert len(exported["items"]) == 2 and len(exported["interactions"]) == 3

    counts = await rec.forget_user(ALICE)
    assert counts["items"] == 2 and counts["item_vectors"] == 2
    # alice's 3 interactions and bob's reply to alice's item
    assert counts["interaction_vectors"] == 4
    assert await store.get_member(G, ALICE) is None
    assert (await rec.export_user(ALICE))["interactions"] == []
    # SQLite: no vector left for any of her rows
    item_ids, _ = await store.get_embeddings("item", G, embedder.key)
    inter_ids, _ = await store.get_embeddings("interaction", G, embedder.key)
    assert sorted(item_ids.tolist()) == [BOB * 100, BOB * 100 + 1]
    bob_inters = {i.id for i in await store.interactions(G, BOB)}
    assert set(inter_ids.tolist()) == bob_inters and len(bob_inters) == 2  # bob's reply went with her item
    # FAISS, in memory and on disk
    assert set(rec.indexes.get(G, "item").ids().tolist()) == {BOB * 100, BOB * 100 + 1}
    assert set(rec.indexes.get(G, "interaction").ids().tolist()) == bob_inters
    on_disk = VectorIndex.load(settings.index_dir / str(G) / "item.faiss", dim=embedder.dim, model=embedder.key,
                               hnsw_threshold=10**6)
    assert set(on_disk.ids().tolist()) == {BOB * 100, BOB * 100 + 1}
    # her text is no longer findable
    q = await embedder.aencode([TEXTS[ALICE][0]])
    assert not set(rec.indexes.get(G, "item").search(q, 10)[1][0].tolist()) & {ALICE * 100, ALICE * 100 + 1}
    await rec.aclose()
    # and a restart agrees with SQLite
    rec = Recommender(store, embedder, settings)
    report = await rec.start()
    assert report[(G, "item")] == "loaded" and report[(G, "interaction")] == "loaded"
    await rec.aclose()


async def test_opted_out_members_are_not_recorded(store, settings, embedder):
    rec = Recommender(store, embedder, settings)
    await rec.start()
    await store.upsert_channel(70, G, "general")
    await store.set_opted_out(BOB)
    added = await rec.add_items([Item(id=5, guild_id=G, kind="message", text="bob's post about hops", created_at=1.7e9,
                                      channel_id=70, author_id=BOB)])
    ids = await rec.record([{"guild_id": G, "member_id": BOB, "kind": "requested", "text": "a story about hops"}])
    await rec.flush()
    assert added == 0 and ids == []
    assert await store.count("items") == 0 and await store.count("interactions") == 0
    assert await store.count("embeddings") == 0
    assert rec.stats(G)["item_vectors"] == 0
    await rec.aclose()


async def test_tombstones_hold_digests_not_ids_and_optin_lifts_only_the_author(store, settings, embedder):
    rec = Recommender(store, embedder, settings)
    await rec.start()
    await _guild(rec, store)
    await rec.forget_user(ALICE)
    assert await store.is_forgotten(ALICE) and await store.is_opted_out(ALICE) and not await store.is_forgotten(BOB)
    assert await store.upsert_member(G, ALICE, "alice") is False and await store.get_member(G, ALICE) is None
    rows = await store._fetchall("SELECT kind, digest FROM tombstones")
    assert sorted(r[0] for r in rows) == ["author", "message", "message"]  # her two messages
    assert all(len(r[1]) == 16 and ALICE.to_bytes(8, "big") not in r[1] for r in rows)
    await store.set_opted_out(ALICE, False)  # /privacy optin
    assert not await store.is_forgotten(ALICE) and await store.upsert_member(G, ALICE, "alice") is True
    assert [r[0] for r in await store._fetchall("SELECT kind FROM tombstones")] == ["message", "message"]
    again = Item(id=ALICE * 100, guild_id=G, kind="message", text=TEXTS[ALICE][0], created_at=1.7e9, channel_id=70,
                 author_id=ALICE)
    assert await rec.add_items([again]) == 0 and await rec.save_item(again) is False
    assert await rec.record([{"guild_id": G, "member_id": BOB, "kind": "reacted", "item_id": None,
                              "source_id": ALICE * 100, "text": "a reaction to her old message"}]) == []
    await rec.aclose()


async def test_interactions_on_an_item_that_was_not_stored_are_dropped_not_failed(store, settings, embedder):
    """An opted-out author's message is skipped; another member's reaction to it used to fail the whole
    batch (FOREIGN KEY constraint failed) — an import of a file with it imported nothing."""
    from pathlib import Path

    from recsys.ingest import import_exports

    rec = Recommender(store, embedder, settings)
    await rec.start()
    await store.set_opted_out(900000000000001001)  # Ana, whose message Ben and Cho reacted to
    report = await import_exports(rec, [Path(__file__).resolve().parent.parent / "fixtures" / "dce_reactions.json"],
                                  progress=False)
    assert report.errors == [] and report.files == 1 and report.items == 0
    assert await store.get_member(900000000000000001, 900000000000001002) is not None  # Ben still imported
    g = 900000000000000001
    ids = await rec.record([{"guild_id": g, "member_id": BOB, "kind": "reacted", "item_id": 424242},
                            {"guild_id": g, "member_id": BOB, "kind": "requested", "text": "a story about hops"}])
    assert len(ids) == 1 and (await store.get_interactions(ids))[ids[0]].kind == "requested"
    await rec.aclose()


async def test_scrub_refuses_inside_a_transaction_and_reports_what_it_did(store):
    import pytest

    with pytest.raises(RuntimeError):
        async with store.transaction():
            await store.scrub()
    assert await store.scrub() == {"vacuumed": True, "wal_truncated": True}
    assert await store.pragma("secure_delete") == 1


async def test_forget_takes_their_words_out_of_every_conversation(store, settings, embedder):
    """Issue 11: a forgotten member's chat lines go, and every conversation they wrote in is rebuilt —
    their words leave its title, text and vector; one left with a single member dissolves back into a
    message item. Real #ubuntu lines (tests/fixtures/ubuntu_irc_excerpt.json, CC BY 4.0) and the
    hand-made tests/fixtures/dce_conversations.json."""
    from pathlib import Path

    from recsys.ingest import import_exports

    fixtures = Path(__file__).resolve().parent.parent / "fixtures"
    rec = Recommender(store, embedder, settings)
    await rec.start()
    await import_exports(rec, [fixtures / "ubuntu_irc_excerpt.json", fixtures / "dce_conversations.json"],
                         progress=False)
    await rec.flush()
    irc = 100000000000000001
    convs = [it for it in await store.items(irc) if it.meta.get("conversation") and it.meta["participants"] >= 3]
    conv = max(convs, key=lambda c: c.meta["size"])
    lines = await store.chat_lines(irc)
    member = next(ln["author_id"] for ln in lines if ln["conversation_id"] == conv.id and ln["author_id"] != conv.author_id)
    said = [ln["text"].split(": ", 1)[-1].split(", ", 1)[-1] for ln in lines if ln["author_id"] == member]
    said = [s for s in said if len(s) >= 15]
    assert said and any(s in conv.text for s in said)  # their words were in it
    before = rec.indexes.get(irc, "item").vectors([conv.id])[conv.id]
    exported = await rec.export_user(member)
    assert sorted(ln["message_id"] for ln in exported["chat_lines"]) == sorted(
        ln["message_id"] for ln in lines if ln["author_id"] == member)
    counts = await rec.forget_user(member)
    assert counts["chat_lines"] == len(exported["chat_lines"]) and counts["conversations_rebuilt"] >= 1
    assert all(ln["author_id"] != member for ln in await store.chat_lines(irc))
    for it in await store.items(irc):
        assert not any(s in it.text or s in it.title for s in said), it.id
    assert not np.allclose(rec.indexes.get(irc, "item").vectors([conv.id])[conv.id], before)
    # Ben of the hand-made channel: Ana's GPU question is left alone and turns back into her message
    await rec.forget_user(12)
    ana = await store.get_item(1001)  # her question and her follow-up 90 s later: her monologue, 1 participant
    assert ana.text.startswith("has anyone got GPU passthrough working on proxmox?") and "IOMMU" not in ana.text
    assert not ana.meta.get("conversation") or (ana.meta.get("monologue") and ana.meta["participants"] == 1)
    assert all("IOMMU" not in it.text for it in await store.items(100000000000000002))
    members, _ = await store.item_member_pairs(100000000000000002)
    assert 12 not in members.tolist() and member not in (await store.item_member_pairs(irc))[0].tolist()
    for gid in (irc, 100000000000000002):  # rows = stored vectors = FAISS ids
        ids = {it.id for it in await store.items(gid)}
        assert set(rec.indexes.get(gid, "item").ids().tolist()) == ids
        assert set((await store.embedding_ids("item", gid, embedder.key)).tolist()) == ids
    # a re-import brings none of their lines back
    await import_exports(rec, [fixtures / "dce_conversations.json"], progress=False)
    assert all("IOMMU" not in it.text for it in await store.items(100000000000000002))
    await rec.aclose()
