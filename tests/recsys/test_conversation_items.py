"""Conversation items for the gaps a fresh tester found (issue 11), end to end on real SQLite, FAISS
and all-MiniLM-L6-v2: a member mentioned anywhere never gets the conversation, a monologue is one
pick, a bot's factoid answers are no items, an imported thread counts its participants, a short
Chinese question is an item, and a database from before schema 4 gets its conversations once.

Bot lines are real #ubuntu factoid answers (``../shared/data/chat/ubuntu_irc``, CC BY 4.0).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from campfire.features.picks import pick_kind
from recsys.conversation_sync import chat_line_row, sync_conversations
from recsys.ingest import import_exports
from recsys.service import Recommender
from recsys.store import Item, Store

G, CH, THREAD = 5001, 6001, 6002
ANA, BEN, CHO, DAN, BOT = 11, 12, 13, 14, 99
T0 = 1.7e9
NOW = T0 + 3600


async def _guild(rec: Recommender) -> None:
    await rec.store.upsert_guild(G, "g")
    await rec.store.upsert_channel(CH, G, "help")
    for uid, name in ((ANA, "ana_fox"), (BEN, "ben"), (CHO, "cho_cho"), (DAN, "dan_the_man"), (BOT, "ubottu")):
        await rec.store.upsert_member(G, uid, name)


async def _post(rec: Recommender, *rows: dict) -> None:
    """As the recorder does: items for long lines, the lines, then the channel synced."""
    await rec.add_items([Item(id=r["message_id"], guild_id=G, kind="message", text=r["text"],
                              created_at=r["created_at"], channel_id=r["channel_id"], author_id=r["author_id"],
                              meta={"channel": "help"}) for r in rows if len(r["text"]) >= 40])
    await rec.store.add_chat_lines(list(rows))
    await sync_conversations(rec, G, rows[0]["channel_id"])
    await rec.flush()


async def _picked(rec: Recommender, member: int) -> list[int]:
    return [p.item.id for p in await rec.recommend(G, member, k=10, now=NOW)]


async def test_a_member_mentioned_mid_line_is_never_offered_the_conversation(rec: Recommender):
    await _guild(rec)
    await _post(rec, chat_line_row(101, G, CH, ANA, T0, "after the dist-upgrade my keyboard layout is broken, every key is wrong"),
                chat_line_row(102, G, CH, BEN, T0 + 60, "ana_fox: run sudo dpkg-reconfigure keyboard-configuration, then reboot"),
                chat_line_row(103, G, CH, ANA, T0 + 120, "that fixed it, thanks! cho_cho had the same problem yesterday"))
    assert (await rec.store.item_members_of(101)) == {"participant": [ANA, BEN], "addressed": [CHO]}
    assert 101 in await _picked(rec, DAN)
    assert 101 not in await _picked(rec, CHO)  # named mid-line: their client alerted them, they saw it


async def test_a_monologue_is_one_pick(rec: Recommender):
    await _guild(rec)
    await _post(rec, chat_line_row(201, G, CH, ANA, T0, "my wifi drops every few minutes since the 24.04 upgrade, on a thinkpad"),
                chat_line_row(202, G, CH, ANA, T0 + 40, "iwlwifi in dmesg says the firmware crashed and restarted again"),
                chat_line_row(203, G, CH, ANA, T0 + 90, "has anyone seen that with the intel ax200 card on noble?"))
    mono = await rec.store.get_item(201)
    assert mono.meta["monologue"] and mono.meta["participants"] == 1 and mono.meta["size"] == 3
    assert pick_kind(mono) == "message"  # one member's message, not a conversation of two
    assert [(await rec.store.get_item(i)).conversation_id for i in (202, 203)] == [201, 201]
    assert await _picked(rec, BEN) == [201]  # before: three picks, one per line
    assert await _picked(rec, ANA) == []
    assert await rec.store.conversation_message_ids([201]) == {201: [201, 202, 203]}


FACTOIDS = [
    ("!upgrade | ben", "ben: For upgrading, see the instructions at https://help.ubuntu.com/community/UpgradeNotes"),
    ("!upstart | dan_the_man", "dan_the_man: Upstart is meant to replace the old Sys V Init system with an "
                               "event-driven init model."),
    ("!hcl | cho_cho", "cho_cho: For lists of supported hardware on Ubuntu see https://wiki.ubuntu.com/HardwareSupport"),
    ("!anyone | ben", "ben: A large amount of the first questions asked in this channel start with \"Does "
                      "anyone/anybody...\"  Why not ask your next question (the real one) and see?"),
    ("!iso | dan_the_man", "dan_the_man: To mount an ISO disc image, type « sudo mount -o loop <ISO-file> "
                           "<mount point> »"),
]


async def test_a_bot_answering_triggers_is_no_participant_and_its_answers_no_items(rec: Recommender):
    await _guild(rec)
    rows = []
    for k, (trigger, answer) in enumerate(FACTOIDS):
        rows += [chat_line_row(300 + 2 * k, G, CH, ANA, T0 + 900 * k, trigger),
                 chat_line_row(301 + 2 * k, G, CH, BOT, T0 + 900 * k + 1, answer)]
    await _post(rec, *rows)
    assert await rec.store.bot_ids(G) == {BOT}  # found by its lines, flagged from now on
    assert [it for it in await rec.store.items(G)] == []  # no factoid item, no trigger "conversation"
    assert await _picked(rec, CHO) == []


async def test_an_imported_thread_counts_its_participants(rec: Recommender, tmp_path: Path):
    def msg(i: int, author: int, name: str, text: str) -> dict:
        return {"id": str(i), "type": "Default", "timestamp": f"2026-03-14T18:0{i % 10}:00.000+00:00",
                "content": text, "author": {"id": str(author), "name": name, "isBot": False}}

    export = {"guild": {"id": str(G), "name": "g"},
              "channel": {"id": str(THREAD), "type": "GuildPublicThread", "categoryId": str(CH), "category": "help",
                          "name": "keyboard layout after upgrade"},
              "messages": [msg(401, ANA, "ana_fox", "after the upgrade my keyboard layout is wrong in every app"),
                           msg(402, BEN, "ben", "same here, setxkbmap fixes it until the next reboot"),
                           msg(403, ANA, "ana_fox", "dpkg-reconfigure keyboard-configuration made it stick")]}
    path = tmp_path / "thread.json"
    path.write_text(json.dumps(export))
    report = await import_exports(rec, [path], progress=False)
    assert report.errors == []
    thread = await rec.store.get_item(THREAD)
    assert thread.meta["thread"] and thread.title == "keyboard layout after upgrade"
    assert (thread.meta["participants"], thread.meta["size"]) == (2, 3)  # before: no count, shown as 0


async def test_a_short_chinese_question_is_an_item(rec: Recommender, tmp_path: Path):
    question = "请问升级到二十四点零四以后声卡没有声音怎么办？"  # 23 characters: "sound gone after upgrading to 24.04?"
    export = {"guild": {"id": str(G), "name": "g"}, "channel": {"id": str(CH), "type": "GuildTextChat", "name": "help"},
              "messages": [{"id": "501", "type": "Default", "timestamp": "2026-03-14T18:00:00.000+00:00",
                            "content": question, "author": {"id": str(ANA), "name": "ana_fox", "isBot": False}},
                           {"id": "502", "type": "Default", "timestamp": "2026-03-14T19:00:00.000+00:00",
                            "content": "谢谢大家", "author": {"id": str(BEN), "name": "ben", "isBot": False}}]}
    path = tmp_path / "zh.json"
    path.write_text(json.dumps(export, ensure_ascii=False))
    assert (await import_exports(rec, [path], progress=False)).errors == []
    assert len(question) < rec.settings.recsys.min_message_chars
    assert (await rec.store.get_item(501)).text == question
    assert await rec.store.get_item(502) is None  # "thanks everyone" stays a line


async def test_a_database_from_before_schema_4_gets_its_conversations_once(store: Store, settings, embedder):
    from recsys.store import _MIGRATIONS, _split_sql

    path = settings.db_path.with_name("old.db")
    db = sqlite3.connect(path)
    for migration in _MIGRATIONS[:3]:
        for stmt in _split_sql(migration):
            db.execute(stmt)
    db.execute("PRAGMA user_version=3")
    db.execute("INSERT INTO guilds (id, name, created_at) VALUES (?, 'g', 0)", (G,))
    db.execute("INSERT INTO channels (id, guild_id, name, updated_at) VALUES (?, ?, 'help', 0)", (CH, G))
    for uid, name in ((ANA, "ana_fox"), (BEN, "ben")):
        db.execute("INSERT INTO members (guild_id, user_id, display_name) VALUES (?, ?, ?)", (G, uid, name))
    old = [(601, ANA, T0, "after the dist-upgrade my keyboard layout is broken, every key is wrong"),
           (602, BEN, T0 + 60, "ana_fox: run sudo dpkg-reconfigure keyboard-configuration, then reboot")]
    for iid, author, at, text in old:
        db.execute("INSERT INTO items (id, guild_id, channel_id, kind, author_id, text, created_at, meta) "
                   "VALUES (?, ?, ?, 'message', ?, ?, ?, '{}')", (iid, G, CH, author, text, at))
    db.commit()
    db.close()
    async with Store.connect(path) as s:
        assert await s.backfill_pending() == [G]
        r = Recommender(s, embedder, settings)
        await r.start()  # the backfill: once, the builder off the event loop for large channels
        try:
            await r.flush()
            conv = await s.get_item(601)
            assert conv.meta["conversation"] and conv.meta["participants"] == 2 and conv.conversation_id == 601
            assert (await s.get_item(602)).conversation_id == 601
            assert await s.backfill_pending() == []
        finally:
            await r.aclose()
        r = Recommender(s, embedder, settings)
        await r.start()  # nothing queued any more: a second start does not sync again
        await r.aclose()
        assert await s.backfill_pending() == []
