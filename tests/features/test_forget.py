"""Forget keeps forgotten data forgotten (issue 13, items 3-5), on the real store, embedder and FAISS
indexes without a bot: replies and reactions to a forgotten member's old messages, their own new
activity, member snapshots and re-imports of old exports bring nothing of theirs back until they opt in
(and their forgotten messages never come back); after a forget the raw bytes of ``campfire.db``, its
``-wal`` and ``-shm`` and the FAISS index files hold none of their texts, name, id or vectors; messages
deleted on Discord (one or in bulk) leave the store and the indexes."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from campfire.features import privacy
from campfire.features.recording import Recorder
from campfire.features.types import Member, MemberRecord, MessageRecord, ReactionRecord
from recsys.ingest import import_exports

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
GUILD, CHANNEL = 604_200_000_000_000_001, 604_200_000_000_000_010
# snowflake-sized ids, so SQLite stores them as 8-byte integers that a byte search can find
ZEPH = MemberRecord(guild_id=GUILD, id=604_212_345_678_901_234, name="Zephyrine Quillfeather", role_ids=(41,))
BOB = MemberRecord(guild_id=GUILD, id=604_212_345_678_905_555, name="Bob", role_ids=())
CAROL = MemberRecord(guild_id=GUILD, id=604_212_345_678_907_777, name="Carol", role_ids=())
Z_TEXTS = ["Zephyrine's sourdough starter smells of green apples after the third feeding, is that normal?",
           "Zephyrine tried rye flour in the levain and the crumb came out purple-grey and dense."]
Z_SHORT = "lol kiwi jam"  # under min_message_chars: an item only once replied or reacted to
_ids = itertools.count(604_230_000_000_000_000)


def message(text: str, author: Member, *, reply_to: MessageRecord | None = None) -> MessageRecord:
    mid = next(_ids)
    return MessageRecord(guild_id=GUILD, channel_id=CHANNEL, id=mid, author=author, text=text, created_at=time.time(),
                         reply_to_id=reply_to.id if reply_to else None, channel_name="bakery",
                         url=f"https://discord.com/channels/{GUILD}/{CHANNEL}/{mid}")


@pytest.fixture
def app(offline_app):
    return offline_app


@pytest.fixture
async def recorder(offline_app):
    rec = Recorder(offline_app)
    yield rec
    await rec.stop()


async def seed(recorder: Recorder, others: int = 0) -> list[MessageRecord]:
    """Zephyrine wrote two long messages and a short one, Bob reacted to the first, Zephyrine to
    Bob's; ``others`` more messages by Bob and Carol. Returns Zephyrine's messages."""
    mine = [message(t, ZEPH) for t in Z_TEXTS] + [message(Z_SHORT, ZEPH)]
    bobs = message("Bob keeps his starter in the fridge and feeds it once a week, works fine.", BOB)
    for m in (*mine, bobs):
        recorder.message(m)
    for k in range(others):
        recorder.message(message(f"Note {k}: a loaf with {k % 7 + 2} folds and {60 + k} minutes of proofing.",
                                 (BOB, CAROL)[k % 2]))
    recorder.reaction(ReactionRecord(GUILD, mine[0].id, BOB, message=mine[0]), added=True)
    recorder.reaction(ReactionRecord(GUILD, bobs.id, ZEPH, message=bobs), added=True)
    await recorder.flush()
    assert await privacy.export(recorder.app, ZEPH.id)  # something to forget
    return mine


async def nothing_of(app, user_id: int, message_ids: list[int]) -> None:
    """No row, vector or FAISS id of ``user_id`` or of ``message_ids``; FAISS = SQL."""
    store, rec = app.store, app.recommender
    await rec.flush()
    data = await store.export_user(user_id)
    assert [data[k] for k in ("memberships", "items", "interactions", "recommendations_sent")] == [[], [], [], []]
    assert await store.get_items(message_ids) == {}
    assert [i for i in await store.interactions(GUILD) if i.member_id == user_id or i.item_id in message_ids
            or i.source_id in message_ids] == []
    assert all(m["user_id"] != user_id for m in await store.members(GUILD))
    assert rec.indexes.get(GUILD, "item").vectors(message_ids) == {}
    model = rec.embedder.key
    for owner in ("item", "interaction"):
        assert rec.stats(GUILD)[f"{owner}_vectors"] == await store.embedding_count(owner, GUILD, model)


async def test_replies_reactions_and_snapshots_after_forget_bring_nothing_back(app, recorder):
    mine = await seed(recorder)
    await privacy.forget(app, ZEPH.id)
    # another member replies to her long message and reacts to her short one; her member snapshot
    # comes in (a guild refresh); she writes and reacts again without opting in
    reply = message("Green apples mean it is hungry: feed it twice a day for a week.", BOB, reply_to=mine[0])
    recorder.message(reply, replied_to=mine[0])
    recorder.reaction(ReactionRecord(GUILD, mine[2].id, CAROL, message=mine[2]), added=True)
    recorder.member(ZEPH)
    new = message("Zephyrine again: the green-apple smell is gone after two feedings a day.", ZEPH)
    recorder.message(new)
    recorder.reaction(ReactionRecord(GUILD, reply.id, ZEPH, message=reply), added=True)
    await recorder.flush()
    assert recorder.stats["errors"] == 0
    await nothing_of(app, ZEPH.id, [m.id for m in (*mine, new)])
    # Bob's reply is his own: stored, with his authored interaction only (no "replied" on her message)
    assert (await app.store.get_item(reply.id)).author_id == BOB.id
    assert {(i.kind, i.item_id) for i in await app.store.interactions(GUILD, BOB.id) if i.source_id == reply.id} == {
        ("authored", reply.id)}
    assert await privacy.is_opted_out(app, ZEPH.id)  # nothing recorded until she opts in


async def test_optin_lifts_it_for_new_activity_but_forgotten_messages_stay_out(app, recorder):
    mine = await seed(recorder)
    await privacy.forget(app, ZEPH.id)
    await privacy.opt_in(app, ZEPH.id)
    assert not await privacy.is_opted_out(app, ZEPH.id)
    new = message("Zephyrine is back: the rye levain now rises in six hours at room temperature.", ZEPH)
    recorder.message(new)
    recorder.reaction(ReactionRecord(GUILD, mine[0].id, CAROL, message=mine[0]), added=True)  # an old message
    recorder.edit(mine[2].id, Z_SHORT + " — and it grew long enough to be an item after an edit", before=mine[2])
    await recorder.flush()
    assert (await app.store.get_item(new.id)).author_id == ZEPH.id
    assert (await app.store.get_member(GUILD, ZEPH.id))["display_name"] == ZEPH.name
    old = [m.id for m in mine]
    assert await app.store.get_items(old) == {}
    assert [i for i in await app.store.interactions(GUILD) if i.item_id in old or i.source_id in old] == []


async def test_reimport_of_an_old_export_imports_none_of_a_forgotten_members_messages(app):
    path = FIXTURES / "dce_reactions.json"  # Ana's message, Ben's and Cho's reactions, Ben's reply
    g, ana, ben, cho, ana_msg = (900000000000000001, 900000000000001001, 900000000000001002, 900000000000001003,
                                 900000000000000100)
    await import_exports(app.recommender, [path], progress=False)
    assert (await app.store.get_item(ana_msg)).author_id == ana
    await privacy.forget(app, ana)
    again = await import_exports(app.recommender, [path], progress=False)
    assert again.errors == [] and again.items == 0 and again.interactions == 0
    await app.recommender.flush()
    assert await app.store.get_item(ana_msg) is None and await app.store.get_member(g, ana) is None
    assert [i for i in await app.store.interactions(g) if ana in (i.member_id,) or i.item_id == ana_msg] == []
    assert {m["user_id"] for m in await app.store.members(g)} >= {ben, cho}
    # after an opt-in she is recorded again, but the message she had forgotten is not re-imported
    await privacy.opt_in(app, ana)
    await import_exports(app.recommender, [path], progress=False)
    assert await app.store.get_item(ana_msg) is None
    assert (await app.store.get_member(g, ana)) is not None


def raw(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


@pytest.mark.parametrize(("app_settings_overrides", "secure_delete"),
                         [({}, True), ({"recsys": {"hnsw_threshold": 16}}, False)], ids=["flat", "hnsw-insecure"])
async def test_forget_leaves_no_bytes_in_the_database_wal_shm_or_index_files(app, recorder, secure_delete):
    """What "no trace" means here: none of her texts (also before an edit) or name (UTF-8), nor her id
    as decimal text (as in a JSON column) or as SQLite's 8-byte big-endian integer, in ``campfire.db``,
    ``-wal`` or ``-shm``; none of her item ids (FAISS int64) or vectors (float32) in the index files.
    The store opens with ``secure_delete`` on; the second case turns it off first, as SQLite's own
    default is (this machine's SQLite is built with it on): the VACUUM after a forget must clean alone."""
    assert await app.store.pragma("secure_delete") == 1
    if not secure_delete:
        await app.store.pragma("secure_delete=OFF")
    mine = await seed(recorder, others=60)
    for k in range(3):  # she edits a message, each edit longer: the cell moves, old copies are left behind
        recorder.edit(mine[0].id, Z_TEXTS[0] + " Edit: it was the flour, not the water." * (k + 1), before=mine[0])
        recorder.message(message(f"Carol's aside {k}: the oven spring improved with a steam tray and a lid.", CAROL))
        await recorder.flush()
    store, rec = app.store, app.recommender
    model = rec.embedder.key
    vectors = []  # of her texts (her reaction's vector is Bob's text: it stays, as his message's)
    authored = [i.id for i in await store.interactions(GUILD, ZEPH.id) if i.kind == "authored"]
    for owner, ids in (("item", [m.id for m in mine]), ("interaction", authored)):
        vectors += list((await store.embeddings_for(owner, ids, model)).values())
    assert len(vectors) >= 4
    assert rec.stats(GUILD)["item_index"] == ("hnsw" if app.settings.recsys.hnsw_threshold < 60 else "flat")
    await privacy.forget(app, ZEPH.id)
    db = Path(store.path)
    files = {name: raw(db.with_name(db.name + name)) for name in ("", "-wal", "-shm")}
    assert files[""] and len(files["-wal"]) == 0  # the WAL was truncated
    needles = [t.encode() for t in (*Z_TEXTS, Z_SHORT, ZEPH.name)] + [
        str(ZEPH.id).encode(), ZEPH.id.to_bytes(8, "big", signed=True)]
    for name, data in files.items():
        found = [n for n in needles if n in data]
        assert found == [], f"campfire.db{name} still holds {found}"
    index_files = sorted(Path(app.settings.index_dir).rglob("*.faiss"))
    assert index_files
    for f in index_files:
        data = f.read_bytes()
        assert not [m.id for m in mine if np.int64(m.id).tobytes() in data], f
        assert not [v for v in vectors if np.asarray(v, np.float32).tobytes() in data], f
    # the other members' messages are all still there
    assert len(await store.items(GUILD)) == 64


async def test_messages_deleted_on_discord_one_or_in_bulk_leave_store_and_indexes(app, recorder):
    msgs = [message(f"Bread question {k}: why does my crust go soft an hour after baking, every single time?", BOB)
            for k in range(4)]
    for m in msgs:
        recorder.message(m)
    recorder.reaction(ReactionRecord(GUILD, msgs[1].id, CAROL, message=msgs[1]), added=True)
    await recorder.flush()
    recorder.delete([msgs[0].id])  # on_raw_message_delete
    recorder.delete([msgs[1].id, msgs[2].id])  # on_raw_bulk_message_delete
    await recorder.flush()
    gone = [m.id for m in msgs[:3]]
    assert set(await app.store.get_items([m.id for m in msgs])) == {msgs[3].id}
    assert [i for i in await app.store.interactions(GUILD) if i.item_id in gone] == []
    assert app.recommender.indexes.get(GUILD, "item").vectors(gone) == {}
    assert recorder.stats["deletes"] == 3
    model = app.recommender.embedder.key
    for owner in ("item", "interaction"):
        assert app.recommender.stats(GUILD)[f"{owner}_vectors"] == await app.store.embedding_count(owner, GUILD, model)
