"""Conversations stored and kept up to date (recsys.conversation_sync, recsys.storage.conversations):
import, live growth, edit, deletion, threads and opt-outs — real SQLite, real FAISS, the real
all-MiniLM-L6-v2; after every path the item index holds exactly the stored items' vectors.

Data: tests/fixtures/ubuntu_irc_excerpt.json (150 real #ubuntu lines, CC BY 4.0, Kummerfeld et al.
2019; see tests/fixtures/README.md) and tests/fixtures/dce_conversations.json (hand-made).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recsys.conversation_sync import (
    chat_line_row,
    message_edited,
    messages_deleted,
    sync_conversations,
)
from recsys.conversations import GAP_S
from recsys.embed import embedding_text
from recsys.ingest import import_exports
from recsys.service import Recommender
from recsys.store import Item, Store

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
HAND = 100000000000000002  # dce_conversations.json's guild
ANA, BEN, CHO = 11, 12, 15  # dce_conversations.json's members (also used in guild G)
G, CH, THREAD = 5001, 6001, 6002
T0 = 1.7e9


async def consistent(rec: Recommender, guild_id: int) -> list[Item]:
    """Every stored item has its vector in SQLite and in FAISS, and nothing else is there."""
    await rec.flush()
    items = await rec.store.items(guild_id)
    faiss_ids = set(rec.indexes.get(guild_id, "item").ids().tolist())
    sql_ids = set((await rec.store.embedding_ids("item", guild_id, rec.embedder.key)).tolist())
    assert faiss_ids == sql_ids == {it.id for it in items}
    return items


async def vector_is_text(rec: Recommender, item: Item) -> np.ndarray:
    """The item's FAISS vector is the embedding of its current title and text (as the facade embeds)."""
    vec = rec.indexes.get(item.guild_id, "item").vectors([item.id])[item.id]
    text = embedding_text(f"{item.title}\n{item.text}" if item.title else item.text,
                          await rec.store.member_names(item.guild_id))
    np.testing.assert_allclose(vec, rec.embedder.encode([text])[0], atol=1e-5)
    return vec


async def test_import_stores_conversations_with_their_members(rec: Recommender, store: Store):
    report = await import_exports(rec, [FIXTURES / "dce_conversations.json"], progress=False)
    assert report.errors == []
    items = {it.id: it for it in await consistent(rec, HAND)}
    convs = {i: it for i, it in items.items() if it.meta.get("conversation")}
    # GPU passthrough (Ana, Ben; Cho @mentioned), the Chinese exchange; Cho's monologue is none
    proxmox = convs[1001]
    assert proxmox.conversation_id == 1001 and proxmox.author_id == ANA and proxmox.created_at == items[1001].created_at
    assert proxmox.title.startswith("has anyone got GPU passthrough") and "IOMMU" in proxmox.text
    assert proxmox.url == f"https://discord.com/channels/{HAND}/300000000000000001/1001"
    assert proxmox.meta["participants"] == 2 and proxmox.meta["size"] >= 4
    assert 1005 in convs and convs[1005].meta["participants"] == 2 and "serenity" in convs[1005].text
    assert not any(it.channel_id and 1011 <= i <= 1013 for i, it in convs.items())
    assert report.items == len(items)  # conversation items count as new items the first time
    assert report.conversations == len(convs) and f"; {len(convs)} conversation(s)" in report.summary()
    # item_members: participants and the addressed member who wrote nothing in it
    assert await store.item_members_of(1001) == {"participant": [ANA, BEN], "addressed": [CHO]}
    members, item_ids = await store.item_member_pairs(HAND)
    assert members.dtype == item_ids.dtype == np.int64 and len(members) == len(item_ids) > 0
    assert list(zip(members, item_ids)) == sorted(zip(members.tolist(), item_ids.tolist()))
    assert {(CHO, 1001), (ANA, 1001), (BEN, 1001)} <= set(zip(members.tolist(), item_ids.tolist()))
    # message ids a pick covers: the conversation's lines in time order; a lone item's own id
    covered = await store.conversation_message_ids([1001, 1005, 999])
    assert covered[1001][0] == 1001 and covered[1001] == sorted(covered[1001]) and 1004 in covered[1001]
    assert 999 not in covered
    lines = {ln["message_id"]: ln for ln in await store.chat_lines(HAND)}
    assert len(lines) == 13 and all(lines[m]["conversation_id"] == 1001 for m in covered[1001])
    assert lines[1004]["mentions"] == [ANA, CHO] and lines[1011]["conversation_id"] is None
    # messages inside a conversation point at it (not candidates); the conversation is its own
    for i, it in items.items():
        if i in lines and lines[i]["conversation_id"] is not None:
            assert it.conversation_id == lines[i]["conversation_id"]
    # a re-import changes nothing: no new item, no re-embedding
    vec = await store.get_embeddings("item", HAND, rec.embedder.key)
    again = await import_exports(rec, [FIXTURES / "dce_conversations.json"], progress=False)
    assert (again.items, again.interactions, again.errors) == (0, 0, [])
    after = await store.get_embeddings("item", HAND, rec.embedder.key)
    assert np.array_equal(vec[0], after[0]) and np.array_equal(vec[1], after[1])
    assert {i: (it.title, it.text, it.meta) for i, it in items.items()} == {
        it.id: (it.title, it.text, it.meta) for it in await store.items(HAND)}


async def test_a_real_irc_excerpt_becomes_conversations(rec: Recommender, store: Store):
    raw = json.loads((FIXTURES / "ubuntu_irc_excerpt.json").read_text())
    report = await import_exports(rec, [FIXTURES / "ubuntu_irc_excerpt.json"], progress=False)
    gid = int(raw["guild"]["id"])
    items = await consistent(rec, gid)
    convs = [it for it in items if it.meta.get("conversation") and not it.meta.get("monologue")]
    monologues = [it for it in items if it.meta.get("monologue")]  # one member's lines typed in a row
    lines = await store.chat_lines(gid)
    assert report.errors == [] and len(lines) == len(raw["messages"]) == 150
    assert len(convs) >= 5 and all(c.meta["participants"] >= 2 for c in convs)
    assert all(m.meta["participants"] == 1 and m.meta["size"] >= 2 for m in monologues)
    convs += monologues
    assert max(c.meta["size"] for c in convs) < 100  # the channel does not collapse into one
    by_conv: dict[int, set[int]] = {}
    for ln in lines:
        if ln["conversation_id"] is not None:
            by_conv.setdefault(ln["conversation_id"], set()).add(ln["author_id"])
    for c in convs:
        got = await store.item_members_of(c.id)
        assert set(got["participant"]) == by_conv[c.id] and len(got["participant"]) == c.meta["participants"]
        assert not set(got["addressed"]) & by_conv[c.id]
        assert c.title and len(c.title) <= 120 and len(c.text) <= 1500


async def _guild(rec: Recommender) -> None:
    await rec.store.upsert_guild(G, "g")
    await rec.store.upsert_channel(CH, G, "help")
    for uid, name in ((ANA, "ana"), (BEN, "ben"), (CHO, "cho")):
        await rec.store.upsert_member(G, uid, name)


async def _post(rec: Recommender, *rows: dict, force: bool = False):
    """As the recorder does: items for long lines, the lines, then the channel's recent window."""
    await rec.add_items([Item(id=r["message_id"], guild_id=G, kind="message", text=r["text"],
                              created_at=r["created_at"], channel_id=r["channel_id"], author_id=r["author_id"],
                              meta={"channel": "help"}) for r in rows if len(r["text"]) >= 40])
    await rec.store.add_chat_lines(list(rows))
    return await sync_conversations(rec, G, rows[0]["channel_id"], since=min(r["created_at"] for r in rows) - GAP_S,
                                    force=force)


QUESTION = "after the dist-upgrade my X keyboard layout is broken, every key types the wrong letter"
ANSWER = "ana: run sudo dpkg-reconfigure xserver-xorg and pick your layout again, then restart X"
LATER = "ben: that did not fix it for me last week, I had to set XkbLayout in xorg.conf by hand"


async def test_a_later_reply_joins_the_conversation_and_it_is_re_embedded(rec: Recommender):
    await _guild(rec)
    await _post(rec, chat_line_row(101, G, CH, ANA, T0, QUESTION))
    assert (await rec.store.get_item(101)).meta.get("conversation") is None  # one member: no conversation yet
    report = await _post(rec, chat_line_row(102, G, CH, BEN, T0 + 60, ANSWER))
    assert (report.created, report.conversations) == (0, 1)  # the opener's item is upgraded in place
    conv = (await consistent(rec, G))[0]
    assert conv.id == 101 and conv.meta["conversation"] and conv.meta["size"] == 2
    assert conv.meta["opener"]["item"] == {"channel": "help"}  # its plain message item, kept to restore
    before = rec.indexes.get(G, "item").vectors([101])[101]
    # ten minutes later a third member answers the answer: it joins, the text changes, a new vector
    report = await _post(rec, chat_line_row(103, G, CH, CHO, T0 + 600, LATER, reply_to=102))
    assert report.reembedded == 1
    await consistent(rec, G)
    conv = await rec.store.get_item(101)
    assert conv.meta["size"] == 3 and conv.meta["participants"] == 3 and "XkbLayout" in conv.text
    after = await vector_is_text(rec, conv)
    assert not np.allclose(before, after)
    assert (await rec.store.get_item(103)).conversation_id == 101
    assert await rec.store.conversation_message_ids([101, 102]) == {101: [101, 102, 103], 102: [102]}


async def test_edit_and_delete_rebuild_and_dissolve_the_conversation(rec: Recommender):
    await _guild(rec)
    rec._queue.kick = lambda: None  # embedding held: the opener's plain text is still queued when it is upgraded
    await _post(rec, chat_line_row(101, G, CH, ANA, T0, QUESTION), chat_line_row(102, G, CH, BEN, T0 + 60, ANSWER),
                chat_line_row(103, G, CH, CHO, T0 + 90, "ana: same here", reply_to=101))
    del rec._queue.kick
    conv = await rec.store.get_item(101)
    assert "dpkg-reconfigure" in conv.text
    # upgraded in the batch that queued its plain text: the vector is the conversation's, not the line's
    await consistent(rec, G)
    await vector_is_text(rec, conv)
    # an edit: the line, the message item and the conversation's text all change (forced: old words leave)
    assert await message_edited(rec, 102, "ana: try setxkbmap with your layout code, that is all it takes here")
    conv = await rec.store.get_item(101)
    assert "setxkbmap" in conv.text and "dpkg-reconfigure" not in conv.text
    assert (await rec.store.get_item(102)).text.startswith("ana: try setxkbmap")
    await consistent(rec, G)
    # deleting the answers leaves Ana alone: the conversation dissolves back into her message item
    assert await messages_deleted(rec, [102]) == 1
    assert (await rec.store.get_item(101)).meta["participants"] == 2  # Cho still answered
    await messages_deleted(rec, [103])
    plain = await rec.store.get_item(101)
    assert plain.text == QUESTION and plain.title == "" and plain.meta == {"channel": "help"}
    assert plain.conversation_id is None and await rec.store.item_members_of(101) == {"participant": [ANA],
                                                                                      "addressed": []}
    assert [it.id for it in await consistent(rec, G)] == [101]
    # a conversation opened by a short line is removed, not restored, when it dissolves
    await _post(rec, chat_line_row(201, G, CH, CHO, T0 + 9000, "cho: hi, anyone around?"),
                chat_line_row(202, G, CH, BEN, T0 + 9030, "cho: yes, " + ANSWER[5:]))
    assert (await rec.store.get_item(201)).meta["conversation"]
    await messages_deleted(rec, [202])
    assert await rec.store.get_item(201) is None and await rec.store.get_item(202) is None
    assert [it.id for it in await consistent(rec, G)] == [101]


async def test_a_thread_is_one_conversation_under_its_id(rec: Recommender):
    await _guild(rec)
    await rec.store.upsert_channel(THREAD, G, "keyboard layout after upgrade", "public_thread", parent_id=CH)
    await _post(rec, chat_line_row(301, G, THREAD, ANA, T0, QUESTION))
    assert await rec.store.get_item(THREAD) is None  # one member's thread: nothing to recommend yet
    await _post(rec, chat_line_row(302, G, THREAD, BEN, T0 + 3000, "it is the same bug as on the forum, see there"))
    thread = await rec.store.get_item(THREAD)
    assert thread.title == "keyboard layout after upgrade" and thread.meta["thread"] and thread.conversation_id == THREAD
    assert (await rec.store.get_item(301)).conversation_id == THREAD
    assert await rec.store.conversation_message_ids([THREAD]) == {THREAD: [301, 302]}
    await consistent(rec, G)


async def test_lines_of_opted_out_or_forgotten_members_are_never_stored(rec: Recommender):
    await _guild(rec)
    await rec.store.set_opted_out(CHO)
    assert await rec.store.add_chat_lines([chat_line_row(401, G, CH, CHO, T0, "a line of an opted-out member")]) == 0
    await rec.forget_user(BEN)
    assert await rec.store.add_chat_lines([chat_line_row(402, G, CH, BEN, T0, "a line of a forgotten member"),
                                           chat_line_row(403, G, CH, ANA, T0, "ana's line")]) == 1
    assert [ln["message_id"] for ln in await rec.store.chat_lines(G)] == [403]
