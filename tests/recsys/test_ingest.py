"""Import of real DiscordChatExporter exports and JSON-lines catalogues (real SQLite, FAISS, embedder).

Data: ../shared/data/chat/dce_example_guild (GPL-3.0, slatinsky/DiscordChatExporter-frontend),
../shared/data/chat/ubuntu_irc (CC BY 4.0, Kummerfeld et al. 2019), ../shared/data/stories/scp_tales.jsonl
(CC BY-SA 3.0, SCP Wiki; creators and urls in each line). tests/fixtures/dce_reactions.json is
hand-written in DCE's format (reactions with their users, roles, a bot).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from recsys.ingest import ExportFormatError, import_exports, import_items, read_export
from recsys.service import Recommender
from recsys.store import Store
from tests.conftest import shared_data

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
GUILD = 748545324524575035
GENERAL = 1012224565567721552
THREAD = 1060927310439657577
CHILL = 1012224565567875236
ADAM, THOMAS, PATRICK, SPAMMER = 521486476985155645, 896568767994532880, 627848643557663699, 521486476985321458


@pytest_asyncio.fixture(loop_scope="function")  # the facade's embedding task runs on the test's loop
async def recommender(store: Store, settings, embedder):
    rec = Recommender(store, embedder, settings)
    await rec.start()
    try:
        yield rec
    finally:
        await rec.aclose()


async def _snapshot(rec: Recommender) -> dict:
    out = {t: await rec.store.count(t) for t in ("guilds", "channels", "members", "items", "interactions", "embeddings")}
    for g in await rec.store.list_guilds():
        s = rec.stats(g["id"])
        out[g["id"]] = (s["item_vectors"], s["interaction_vectors"])
    return out


async def _index_matches_store(rec: Recommender, guild_id: int) -> None:
    """Every stored vector is in the FAISS index and nothing else is."""
    for kind in ("item", "interaction"):
        ids = await rec.store.embedding_ids(kind, guild_id, rec.embedder.key)
        assert np.array_equal(np.sort(rec.indexes.get(guild_id, kind).ids()), ids), kind


async def test_example_guild_all_message_kinds(recommender: Recommender, store: Store):
    folder = shared_data("chat", "dce_example_guild")
    report = await import_exports(recommender, [folder], progress=False)
    assert report.errors == []
    assert report.files == 4 and report.messages == 35 + 6 + 5 + 5
    assert report.guild_ids == [GUILD]

    assert (await store.get_guild(GUILD))["name"] == "Example guild"
    thread = await store.get_channel(THREAD)
    assert thread["kind"] == "public_thread" and thread["parent_id"] == GENERAL and thread["name"] == "Thomas is Thomas"
    assert (await store.get_channel(GENERAL))["name"] == "general"
    names = {m["user_id"]: m["display_name"] for m in await store.members(GUILD)}
    assert names == {ADAM: "Adam", THOMAS: "Thomas", PATRICK: "Patrick", SPAMMER: "RICK NITRO"}  # DCE nickname

    items = {it.id: it for it in await store.items(GUILD)}
    # system messages (joins, "Started a thread.") and empty sticker/attachment-only messages are not items
    assert 1045178587575242785 not in items and THREAD not in {i for i, it in items.items() if not it.title}
    assert 1045179638760091709 not in items  # a sticker, no text
    # short, but replied to -> an item; short, but reacted to -> an item with its reaction count as rating
    assert items[1060926317920538735].text == "How so? We are chatting online now"
    assert items[1060926346089476176].rating == 1.0
    assert 1060926239034064967 not in items  # "Yes": short, no reply, no reaction
    # a link preview's title/description is part of the text
    assert "github" in items[1060926895719460986].text.lower()
    # the thread: one item, title + opening messages, id = the thread's id, in the thread channel
    t = items[THREAD]
    assert t.title == "Thomas is Thomas" and t.text.startswith("Here you are") and t.channel_id == THREAD
    assert t.meta["thread"] is True and t.author_id == ADAM
    # the message deleted in one copy of #chill talk was replied to in the other copy -> item
    assert 1060954094627463098 in items
    assert items[1060926317920538735].url == f"https://discord.com/channels/{GUILD}/{GENERAL}/1060926317920538735"

    inters = await store.interactions(GUILD)
    replied = {(i.member_id, i.item_id, i.source_id) for i in inters if i.kind == "replied"}
    assert (ADAM, 1060926317920538735, 1060926346089476176) in replied  # Adam answered Thomas
    assert (PATRICK, 1060926346089476176, 1060926395313827840) in replied
    assert (THOMAS, 1060954094627463098, 1060954094627463198) in replied  # reply to the (later deleted) spam
    assert (PATRICK, THREAD, 1060927520008065176) in replied  # joining a thread = replying to it
    assert (PATRICK, 1060927555093413928, 1060927583467876363) in replied  # reply inside the thread
    authored = Counter(i.member_id for i in inters if i.kind == "authored")
    assert authored[ADAM] > authored[THOMAS] > 0
    assert all(i.item_id in items for i in inters)
    assert report.items == len(items) and report.interactions == len(inters)

    await recommender.flush()
    stats = recommender.stats(GUILD)
    assert stats["item_vectors"] == len(items) and stats["interaction_vectors"] == len(inters)
    await _index_matches_store(recommender, GUILD)


async def test_reimport_changes_nothing(recommender: Recommender):
    folder = shared_data("chat", "dce_example_guild")
    first = await import_exports(recommender, [folder], progress=False)
    before = await _snapshot(recommender)
    vec_before = await recommender.store.get_embeddings("item", GUILD, recommender.embedder.key)
    again = await import_exports(recommender, [folder], progress=False)
    assert first.items > 0 and first.interactions > 0 and first.members == 4
    assert (again.items, again.interactions, again.members, again.errors) == (0, 0, 0, [])
    assert await _snapshot(recommender) == before
    vec_after = await recommender.store.get_embeddings("item", GUILD, recommender.embedder.key)
    assert np.array_equal(vec_before[0], vec_after[0]) and np.array_equal(vec_before[1], vec_after[1])


async def test_reactions_with_users_roles_and_bots(recommender: Recommender, store: Store):
    report = await import_exports(recommender, [FIXTURES / "dce_reactions.json"], progress=False)
    assert report.errors == []
    g = 900000000000000001
    inters = await store.interactions(g)
    kinds = Counter((i.kind, i.member_id) for i in inters)
    ana, ben, cho, bot = 900000000000001001, 900000000000001002, 900000000000001003, 900000000000001099
    # Ben reacted twice (two emojis) -> one interaction; Cho once; Ben also replied
    assert kinds[("reacted", ben)] == 1 and kinds[("reacted", cho)] == 1 and kinds[("replied", ben)] == 1
    assert kinds[("authored", ana)] == 1
    assert all(i.member_id != bot for i in inters)
    assert (await store.get_member(g, ana))["role_ids"] == [900000000000009001]
    assert (await store.get_member(g, bot))["is_bot"] is True
    items = await store.items(g)
    assert [it.id for it in items] == [900000000000000100]  # the bot's reminder is not an item
    assert items[0].rating == 3.0
    assert {m["user_id"] for m in await store.members_with_interactions(g, 1)} == {ana, ben, cho}


async def test_one_ubuntu_irc_file(recommender: Recommender, store: Store):
    path = shared_data("chat", "ubuntu_irc", "2016-12-19_20.json")
    raw = json.loads(path.read_text())  # the oracle: the file itself, read whole (it is small)
    msgs = {m["id"]: m for m in raw["messages"]}
    expected_replies = {
        (int(m["author"]["id"]), int(m["reference"]["messageId"]), int(m["id"]))
        for m in raw["messages"]
        if m.get("reference") and m["reference"]["messageId"] in msgs
        and msgs[m["reference"]["messageId"]]["author"]["id"] != m["author"]["id"]
    }
    report = await import_exports(recommender, [path], progress=False)
    gid = int(raw["guild"]["id"])
    bots = await store.bot_ids(gid)  # the channel's factoid bot answers `!` triggers: its lines are no items
    assert len(bots) == 1
    expected_replies = {(a, t, s) for a, t, s in expected_replies if int(msgs[str(t)]["author"]["id"]) not in bots}
    assert report.errors == [] and report.messages == len(raw["messages"]) == 1181
    assert report.members == len({m["author"]["id"] for m in raw["messages"]})
    inters = await store.interactions(gid)
    got = {(i.member_id, i.item_id, i.source_id) for i in inters if i.kind == "replied"}
    assert got == expected_replies and len(got) > 100
    long_enough = {int(m["id"]) for m in raw["messages"]
                   if len(m["content"].strip()) >= 40 and int(m["author"]["id"]) not in bots}
    items = {it.id for it in await store.items(gid)}
    assert long_enough <= items
    assert {t for _, t, _ in expected_replies} <= items  # replied-to messages are items however short
    await recommender.flush()
    assert recommender.stats(gid)["item_vectors"] == len(items)
    # a reply addressed "nick: …" is embedded by what it says, not by whom it addresses (a plain message
    # item: a conversation's opener item is embedded from the conversation, tests/recsys/test_conversation_sync.py)
    plain = {it.id for it in await store.items(gid) if not it.meta.get("conversation")}
    names = {(m["author"].get("nickname") or m["author"]["name"]).lower() for m in raw["messages"]}
    addressed = [m for m in raw["messages"] if int(m["id"]) in plain and ": " in m["content"]
                 and m["content"].split(": ")[0].lower() in names and m["content"].split(": ")[1][:1].isalpha()
                 and m["content"].split(": ")[1].split()[0].rstrip(":,").lower() not in names]
    assert len(addressed) > 100
    m = addressed[0]
    stored = recommender.indexes.get(gid, "item").vectors([int(m["id"])])[int(m["id"])]
    said = m["content"].split(": ", 1)[1]
    np.testing.assert_allclose(stored, recommender.embedder.encode([said])[0], atol=1e-5)
    again = await import_exports(recommender, [path], progress=False)
    assert (again.items, again.interactions, again.members) == (0, 0, 0)


async def test_truncated_file_errors_clearly_and_writes_nothing(recommender: Recommender, store: Store, tmp_path):
    folder = shared_data("chat", "dce_example_guild", "example_guild")
    general = next(folder.glob("*general*.json"))
    thread = next((folder / "_threads").glob("*.json"))
    data = general.read_bytes()
    broken = tmp_path / "general-truncated.json"
    broken.write_bytes(data[: len(data) // 2])
    report = await import_exports(recommender, [broken, thread], progress=False)
    assert len(report.errors) == 1
    line = report.errors[0]
    assert "general-truncated.json" in line and "truncated" in line and f"byte {len(data) // 2} " in line
    assert "\n" not in line
    # the good file was imported, nothing of the broken one
    assert report.files == 1
    assert await store.get_channel(GENERAL) is None or not [it for it in await store.items(GUILD) if it.channel_id == GENERAL]
    assert {it.channel_id for it in await store.items(GUILD)} == {THREAD}
    await recommender.flush()
    await _index_matches_store(recommender, GUILD)
    assert await store.count("embeddings") == recommender.stats(GUILD)["item_vectors"] + recommender.stats(GUILD)["interaction_vectors"]


def test_syntax_error_position_is_exact(tmp_path):
    src = shared_data("chat", "dce_example_guild", "example_guild")
    data = next(src.glob("*general*.json")).read_bytes()
    at = data.index(b'"content"', 20000)
    bad = tmp_path / "bad.json"
    bad.write_bytes(data[:at] + b"}" + data[at:])
    with pytest.raises(ExportFormatError) as err:
        read_export(bad)
    msg = str(err.value)
    line = data[:at].count(b"\n") + 1
    assert f"at byte {at}, line {line}:" in msg and "bad.json" in msg


def test_not_an_export(tmp_path):
    p = tmp_path / "list.json"
    p.write_text('[{"id": 1}]')
    with pytest.raises(ExportFormatError, match="not a DiscordChatExporter JSON export"):
        read_export(p)
    # a bad message costs that message only (tests/recsys/test_import_faults.py covers every field)
    p.write_text('{"guild": {"id": "1", "name": "g"}, "channel": {"id": "2", "name": "c"}, "messages": [{"id": "3"}]}')
    exp = read_export(p)
    assert exp.messages == [] and exp.problems == [f"{p}: message 3: field 'timestamp' is missing — message skipped"]


async def test_catalogue_import_reports_bad_lines(recommender: Recommender, store: Store, tmp_path):
    src = shared_data("stories", "scp_tales.jsonl")
    good = [json.loads(line) for line in src.read_text().splitlines()[:4]]
    lines = [json.dumps(good[0]), json.dumps(good[1]), "{not json", json.dumps(good[2]),
             json.dumps({"item_id": "no-text", "title": "x"}), json.dumps(good[3]), "", json.dumps(good[0])]
    cat = tmp_path / "tales.jsonl"
    cat.write_text("\n".join(lines) + "\n")
    await store.upsert_guild(GUILD, "Example guild")
    report = await import_items(recommender, cat, GUILD, progress=False)
    assert report.items == 4
    assert [e.split(": ", 1)[0] for e in report.errors] == [f"{cat}:3", f"{cat}:5", f"{cat}:8"]
    assert "not valid JSON" in report.errors[0] and "missing or empty 'text'" in report.errors[1]
    assert "duplicate id" in report.errors[2]
    items = await store.items(GUILD, kind="imported")
    by_ext = {it.external_id: it for it in items}
    first = by_ext[good[0]["item_id"]]
    assert first.title == good[0]["title"] and first.url == good[0]["url"] and first.rating == float(good[0]["rating"])
    assert first.tags == good[0]["tags"] and first.meta["creator"] == good[0]["creator"]
    assert good[0]["url"] in first.meta["credit"]
    await recommender.flush()
    assert recommender.stats(GUILD)["item_vectors"] == 4
    again = await import_items(recommender, cat, GUILD, progress=False)
    assert again.items == 0 and await store.count("items") == 4
    assert {it.id for it in await store.items(GUILD)} == {it.id for it in items}


# ---- messages deleted on Discord (issue 13, item 5) ----------------------------------------------
SPAM = 1060954094627463098  # "Free nitro giveaway! …" in one copy of #chill talk, gone from the other
BOOKS = 900000000000000001, 900000000000000010  # tests/fixtures/dce_reactions.json: guild, channel
BOOK_POST = 900000000000000100  # its message with two reactions and a reply


def _copy(tmp_path: Path, name: str, **changes) -> Path:
    """A copy of dce_reactions.json with top-level fields changed (``drop``: message ids left out)."""
    doc = json.loads((FIXTURES / "dce_reactions.json").read_text())
    drop = {str(i) for i in changes.pop("drop", ())}
    doc["messages"] = [m for m in doc["messages"] if m["id"] not in drop]
    doc.update(changes)
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


async def test_copies_without_exported_at_keep_the_message_and_offer_replace(recommender: Recommender, store: Store):
    folder = shared_data("chat", "dce_example_guild")
    without = next(folder.rglob("*without deleted message.json"))
    report = await import_exports(recommender, [folder], progress=False)
    assert report.errors == [] and report.removed == 0
    assert await store.get_item(SPAM) is not None  # which copy is newer cannot be told: kept
    assert len(report.notes) == 1
    note = report.notes[0]
    assert note.startswith(f"#chill talk ({CHILL}): 1 message is missing from {without}") and "\n" not in note
    assert f'campfire import --replace-channel "{without}"' in note
    # the admin confirms: the copy without it is the channel as it is now
    again = await import_exports(recommender, [without], progress=False, replace_channel=True)
    assert (again.removed, again.errors, again.notes) == (1, [], [])
    assert await store.get_item(SPAM) is None
    assert all(i.item_id != SPAM and i.source_id != SPAM for i in await store.interactions(GUILD))
    # the other channels stay; #chill talk keeps only its conversation (Adam, Patrick, Thomas), without the spam
    left = await store.items(GUILD)
    assert {it.channel_id for it in left if not it.meta.get("conversation")} == {GENERAL, THREAD}
    assert all(it.meta.get("conversation") and "nitro" not in it.text.lower() for it in left if it.channel_id == CHILL)
    await recommender.flush()
    await _index_matches_store(recommender, GUILD)


async def test_a_later_export_removes_what_was_deleted(recommender: Recommender, store: Store, tmp_path):
    first = await import_exports(recommender, [FIXTURES / "dce_reactions.json"], progress=False)  # exported 03-02
    assert first.errors == [] and await store.get_item(BOOK_POST) is not None
    before = {i.id for i in await store.interactions(BOOKS[0])}
    # an older export, or a newer one whose date range starts after the message, proves nothing
    for name, changes in (("older.json", {"exportedAt": "2024-03-01T12:00:00+00:00"}),
                          ("later-range.json", {"exportedAt": "2024-03-05T12:00:00+00:00",
                                                "dateRange": {"after": "2024-03-01T09:01:00+00:00", "before": None}})):
        report = await import_exports(recommender, [_copy(tmp_path, name, drop=[BOOK_POST], **changes)], progress=False)
        assert (report.removed, report.errors, report.notes) == (0, [], []), name
        assert await store.get_item(BOOK_POST) is not None
    # a newer export without it: deleted on Discord — the item, its reactions and the reply to it go
    newer = _copy(tmp_path, "newer.json", drop=[BOOK_POST], exportedAt="2024-03-05T12:00:00+00:00")
    report = await import_exports(recommender, [newer], progress=False)
    assert (report.removed, report.errors, report.notes) == (1, [], [])
    assert await store.get_item(BOOK_POST) is None
    assert len(before) == 4 and await store.interactions(BOOKS[0]) == []  # authored, 2 reacted, replied: all on it
    await recommender.flush()
    await _index_matches_store(recommender, BOOKS[0])


async def test_copies_in_one_run_are_read_oldest_first(recommender: Recommender, store: Store, tmp_path):
    """The newer copy sorts first by name; its exportedAt still gives it the last word."""
    newer = _copy(tmp_path, "a-newer.json", drop=[BOOK_POST], exportedAt="2024-03-05T12:00:00+00:00")
    older = _copy(tmp_path, "b-older.json")
    report = await import_exports(recommender, [newer, older], progress=False)
    assert (report.files, report.removed, report.errors, report.notes) == (2, 1, [], [])
    assert BOOK_POST not in {it.id for it in await store.items(BOOKS[0])}


async def test_a_dated_export_removes_a_message_the_bot_captured_live(recommender: Recommender, store: Store):
    from recsys.store import Item

    await store.upsert_guild(BOOKS[0], "g")
    live = Item(id=900000000000000150, guild_id=BOOKS[0], kind="message", channel_id=BOOKS[1], author_id=900000000000001001,
                text="A message the bot saw live, deleted while it was offline, about long novels.",
                created_at=1709283600.0, meta={"channel": "books", "author": "Ana"})  # 2024-03-01T09:00:00Z
    await recommender.add_items([live])
    report = await import_exports(recommender, [FIXTURES / "dce_reactions.json"], progress=False)  # exported 03-02
    assert report.removed == 1 and await store.get_item(live.id) is None


async def test_replace_channel_needs_one_export_per_channel(recommender: Recommender, store: Store, tmp_path):
    a, b = _copy(tmp_path, "a.json"), _copy(tmp_path, "b.json", drop=[BOOK_POST])
    report = await import_exports(recommender, [a, b], progress=False, replace_channel=True)
    assert report.files == 0 and len(report.errors) == 2 and all("--replace-channel" in e for e in report.errors)
    assert await store.count("items") == 0


async def test_progress_bars_never_go_backwards(recommender: Recommender, capsys):
    """Item 17: reading is a byte count with a known total; embedding a count without a total
    (the old bar's total grew while files were read, so its percentage went backwards)."""
    import re

    await import_exports(recommender, [shared_data("chat", "dce_example_guild")], progress=True)
    frames = re.split(r"[\r\n]", capsys.readouterr().err)
    reading = [int(m.group(1)) for f in frames if (m := re.match(r"\s*reading:\s+(\d+)%", f))]
    embedding = [f for f in frames if f.strip().startswith("embedding")]
    assert reading and reading == sorted(reading)
    assert embedding and not any("%" in f for f in embedding)
