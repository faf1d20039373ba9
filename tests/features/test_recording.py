"""Recording (campfire.features.recording) on plain records, without a bot: the real store, embedder
and FAISS indexes on a temporary data dir. After every removal path — a reaction removed, an edit,
a deletion, a forget, an un-rate — the FAISS indexes hold exactly the vectors SQLite holds."""

from __future__ import annotations

import itertools
import time

import pytest

from campfire.features import picks, privacy
from campfire.features.guilds import update_settings
from campfire.features.recording import Recorder, upsert_member
from campfire.features.types import ChannelRecord, Member, MemberRecord, MessageRecord, ReactionRecord, SettingsRequest

LONG = "Has anyone tried brewing a saison with wild yeast from the garden? Mine turned out tart."
SHORT = "nice!"
GUILD, CHANNEL, OTHER_CHANNEL = 1001, 2001, 2002
ALICE = MemberRecord(guild_id=GUILD, id=31, name="Alice", role_ids=(41,))
BOB = MemberRecord(guild_id=GUILD, id=32, name="Bob", role_ids=())
CAROL = MemberRecord(guild_id=GUILD, id=33, name="Carol", role_ids=())
_ids = itertools.count(900_000_000_000)


def message(text: str = LONG, *, author: Member = ALICE, channel: int = CHANNEL, reply_to: MessageRecord | None = None,
            parent_channel: int | None = None) -> MessageRecord:
    mid = next(_ids)
    return MessageRecord(guild_id=GUILD, channel_id=channel, id=mid, author=author, text=text, created_at=time.time(),
                         parent_channel_id=parent_channel, reply_to_id=reply_to.id if reply_to else None,
                         url=f"https://discord.com/channels/{GUILD}/{channel}/{mid}", channel_name="brewing")


@pytest.fixture
def app(offline_app):
    """Recording never generates: the app without a generator."""
    return offline_app


@pytest.fixture
async def recorder(offline_app):
    rec = Recorder(offline_app)
    yield rec
    await rec.stop()


async def assert_faiss_matches_sql(app, guild_id: int = GUILD) -> dict[str, int]:
    """FAISS ids = stored vectors, for items and interactions; returns the counts."""
    await app.recommender.flush()
    stats, model = app.recommender.stats(guild_id), app.recommender.embedder.key
    counts = {}
    for owner in ("item", "interaction"):
        sql = await app.store.embedding_count(owner, guild_id, model)
        assert stats[f"{owner}_vectors"] == sql, f"{owner}: FAISS {stats[f'{owner}_vectors']} vs SQL {sql}"
        counts[owner] = sql
    return counts


async def test_message_becomes_item_with_authored_interaction_and_is_embedded(app, recorder):
    msg = message()
    assert recorder.message(msg)
    await recorder.flush()
    item = await app.store.get_item(msg.id)
    assert item is not None and item.kind == "message" and item.text == LONG
    assert (item.guild_id, item.channel_id, item.author_id, item.url) == (GUILD, CHANNEL, ALICE.id, msg.url)
    assert item.meta == {"channel": "brewing", "author": "Alice"}
    inter = await app.store.interactions(GUILD, ALICE.id)
    assert [(i.kind, i.item_id, i.source_id) for i in inter] == [("authored", msg.id, msg.id)]
    assert msg.id in await app.store.embeddings_for("item", [msg.id], app.recommender.embedder.key)
    member = await app.store.get_member(GUILD, ALICE.id)
    assert member["display_name"] == "Alice" and member["role_ids"] == [41]
    assert await assert_faiss_matches_sql(app) == {"item": 1, "interaction": 1}
    assert not recorder.message(message("   "))  # no text: nothing queued


async def test_short_message_is_no_item_until_replied_to(app, recorder):
    short = message(SHORT)
    recorder.message(short)
    await recorder.flush()
    assert await app.store.get_item(short.id) is None
    reply = message("I agree, " + LONG, author=BOB, reply_to=short)
    recorder.message(reply, replied_to=short)
    await recorder.flush()
    parent = await app.store.get_item(short.id)
    assert parent is not None  # now an item: the opener of Alice and Bob's conversation (its text is the conversation's)
    assert parent.meta["conversation"] and parent.meta["participants"] == 2 and parent.conversation_id == short.id
    assert (await app.store.get_item(reply.id)).parent_item_id == short.id
    kinds = {(i.kind, i.item_id) for i in await app.store.interactions(GUILD, BOB.id)}
    assert kinds == {("authored", reply.id), ("replied", short.id)}


async def test_reaction_removed_leaves_faiss_equal_to_sql(app, recorder):
    msg = message()
    recorder.message(msg)
    recorder.reaction(ReactionRecord(GUILD, msg.id, BOB, message=msg), added=True)
    recorder.reaction(ReactionRecord(GUILD, msg.id, ALICE, message=msg), added=True)  # own message: not recorded
    await recorder.flush()
    reacted = [i for i in await app.store.interactions(GUILD) if i.kind == "reacted"]
    assert [(i.item_id, i.member_id) for i in reacted] == [(msg.id, BOB.id)]
    assert await assert_faiss_matches_sql(app) == {"item": 1, "interaction": 2}

    recorder.reaction(ReactionRecord(GUILD, msg.id, Member(GUILD, BOB.id)), added=False)
    await recorder.flush()
    assert not [i for i in await app.store.interactions(GUILD) if i.kind == "reacted"]
    assert await assert_faiss_matches_sql(app) == {"item": 1, "interaction": 1}
    assert recorder.stats["reactions_removed"] == 1


async def test_reaction_added_and_removed_in_one_batch_leaves_nothing(app, recorder):
    msg = message()
    recorder.message(msg)
    await recorder.flush()
    recorder.reaction(ReactionRecord(GUILD, msg.id, BOB, message=msg), added=True)
    recorder.reaction(ReactionRecord(GUILD, msg.id, Member(GUILD, BOB.id)), added=False)  # a barrier: after the add
    await recorder.flush()
    assert not [i for i in await app.store.interactions(GUILD) if i.kind == "reacted"]
    await assert_faiss_matches_sql(app)


async def test_edit_re_embeds_and_delete_removes_with_faiss_equal_to_sql(app, recorder):
    msg = message()
    recorder.message(msg)
    recorder.reaction(ReactionRecord(GUILD, msg.id, BOB, message=msg), added=True)
    await recorder.flush()
    edited = LONG + " Edit: it was the yeast, not the hops."
    recorder.edit(msg.id, edited, before=msg)
    await recorder.flush()
    assert (await app.store.get_item(msg.id)).text == edited
    assert msg.id in await app.store.embeddings_for("item", [msg.id], app.recommender.embedder.key)
    assert recorder.stats["edits"] == 1
    assert await assert_faiss_matches_sql(app) == {"item": 1, "interaction": 2}

    recorder.delete([msg.id])
    await recorder.flush()
    assert await app.store.get_item(msg.id) is None
    assert [i for i in await app.store.interactions(GUILD) if i.item_id == msg.id] == []
    assert recorder.stats["deletes"] == 1
    counts = await assert_faiss_matches_sql(app)
    assert counts["item"] == 0


async def test_short_message_edited_to_a_long_one_becomes_an_item(app, recorder):
    short = message(SHORT)
    recorder.message(short)
    await recorder.flush()
    recorder.edit(short.id, LONG, before=short)
    await recorder.flush()
    item = await app.store.get_item(short.id)
    assert item is not None and item.text == LONG
    recorder.edit(next(_ids), LONG)  # an edit of a message never stored changes nothing
    await recorder.flush()
    assert recorder.stats["edits"] == 0 and recorder.stats["errors"] == 0


async def test_forget_and_unrate_leave_faiss_equal_to_sql(app, recorder):
    mine, theirs = message(), message(LONG + " (Bob's)", author=BOB)
    recorder.message(mine)
    recorder.message(theirs)
    recorder.reaction(ReactionRecord(GUILD, theirs.id, ALICE, message=theirs), added=True)
    recorder.reaction(ReactionRecord(GUILD, mine.id, BOB, message=mine), added=True)
    await recorder.flush()
    await assert_faiss_matches_sql(app)

    assert await picks.feedback(app, GUILD, CAROL.id, theirs.id, "rated_up") == "kept"
    assert await picks.feedback(app, GUILD, CAROL.id, theirs.id, "rated_down") == "kept"  # replaces the 👍
    kinds = [i.kind for i in await app.store.interactions(GUILD, CAROL.id)]
    assert kinds == ["rated_down"]
    await assert_faiss_matches_sql(app)

    result = await privacy.forget(app, ALICE.id)
    assert result.counts["item_vectors"] == 1 and result.opted_out
    assert await app.store.get_item(mine.id) is None
    assert all(i.member_id != ALICE.id and i.item_id != mine.id for i in await app.store.interactions(GUILD))
    assert await assert_faiss_matches_sql(app) == {"item": 1, "interaction": 2}  # Bob's authored, Carol's 👎


async def test_opted_out_members_and_ignored_or_unlisted_channels_are_not_recorded(app, recorder):
    await privacy.opt_out(app, CAROL.id)
    recorder.message(message(LONG + " (opted out)", author=CAROL))
    await update_settings(app, GUILD, SettingsRequest(ignore=OTHER_CHANNEL))
    recorder.message(message(LONG + " (ignored)", channel=OTHER_CHANNEL))
    recorder.message(message(LONG + " (thread of an ignored channel)", channel=5005, parent_channel=OTHER_CHANNEL))
    kept = message(LONG + " (kept)")
    recorder.message(kept)
    await recorder.flush()
    assert [i.id for i in await app.store.items(GUILD)] == [kept.id]
    assert {i.member_id for i in await app.store.interactions(GUILD)} == {ALICE.id}
    assert await app.store.get_member(GUILD, CAROL.id) is None or (await app.store.get_member(GUILD, CAROL.id))["display_name"] == ""

    await update_settings(app, GUILD, SettingsRequest(learn_from=OTHER_CHANNEL))  # now only that channel
    skipped, learned = message(LONG + " one"), message(LONG + " two", channel=OTHER_CHANNEL)
    recorder.message(skipped)
    recorder.message(learned)
    await recorder.flush()
    assert await app.store.get_item(skipped.id) is None and await app.store.get_item(learned.id) is not None


async def test_channel_snapshot_and_member_roles_drive_visibility(app, recorder):
    recorder.guild(GUILD, "Brewers")
    vis = {"public": False, "roles": [41], "members": [BOB.id], "denied_members": []}
    recorder.channel(ChannelRecord(GUILD, OTHER_CHANNEL, "private", "text", visibility={"public": True}))
    recorder.channel(ChannelRecord(GUILD, OTHER_CHANNEL, "private", "text", visibility=vis))  # the latest wins
    for member in (ALICE, BOB, CAROL):
        recorder.member(member)
    await recorder.flush()
    assert (await app.store.get_guild(GUILD))["name"] == "Brewers"
    assert (await app.store.get_channel(OTHER_CHANNEL))["visibility"] == vis
    assert OTHER_CHANNEL in await app.store.visible_channel_ids(GUILD, ALICE.id)  # via the role
    assert OTHER_CHANNEL in await app.store.visible_channel_ids(GUILD, BOB.id)  # via a member overwrite
    assert OTHER_CHANNEL not in await app.store.visible_channel_ids(GUILD, CAROL.id)


async def test_upsert_member_keeps_nothing_of_an_opted_out_member(app):
    assert await upsert_member(app, ALICE)
    assert (await app.store.get_member(GUILD, ALICE.id))["role_ids"] == [41]
    assert await upsert_member(app, Member(GUILD, ALICE.id, "Alice B."))  # no roles given: stored roles kept
    row = await app.store.get_member(GUILD, ALICE.id)
    assert row["display_name"] == "Alice B." and row["role_ids"] == [41]
    await privacy.opt_out(app, BOB.id)
    assert not await upsert_member(app, BOB)
    assert (await app.store.get_member(GUILD, BOB.id) or {}).get("display_name", "") == ""


async def test_writes_are_batched_and_the_writer_task_runs_alone(app, recorder, monkeypatch):
    calls: list[int] = []
    original = app.recommender.add_items

    async def add_items(items):
        calls.append(len(items))
        return await original(items)

    monkeypatch.setattr(app.recommender, "add_items", add_items)
    recorder.start()
    posted = [message(f"{LONG} (number {i})") for i in range(30)]
    for msg in posted:
        recorder.message(msg)
    await recorder.stop()  # writes what is queued
    await app.recommender.flush()
    # 30 messages, then the one item of their author's lines in a row (a monologue: recsys.conversation_sync)
    assert sum(calls) == 31 and len(calls) < 10
    assert len(await app.store.items(GUILD)) == len(posted)


async def test_message_contents_are_not_logged_at_info(app, recorder, caplog):
    secret = "my very private sentence about brewing that must not reach the logs at all"
    with caplog.at_level("INFO"):
        msg = message(secret)
        recorder.message(msg)
        recorder.edit(msg.id, secret + " (edited)", before=msg)
        await recorder.flush()
    assert await app.store.get_item(msg.id) is not None
    assert all(secret not in r.getMessage() for r in caplog.records)


async def test_control_characters_are_never_stored(app, recorder):
    """Issue 13 item 9: NUL and other control bytes are stripped before storing (newlines and tabs kept),
    for a new message and for an edit."""
    msg = message("Saison notes:\x00 wild yeast\x07 from the garden\tturned out\ntart and dry, would brew again.")
    recorder.message(msg)
    await recorder.flush()
    item = await app.store.get_item(msg.id)
    assert item.text == "Saison notes: wild yeast from the garden\tturned out\ntart and dry, would brew again."
    recorder.edit(msg.id, "Edited:\x00\x1b saison with garden yeast, tart and dry, would brew it again.")
    await recorder.flush()
    assert (await app.store.get_item(msg.id)).text == "Edited: saison with garden yeast, tart and dry, would brew it again."


async def test_live_replies_grow_a_conversation_and_edits_and_deletes_rebuild_it(app, recorder):
    """Issue 11: every recorded message is a chat line (short ones too); a reply joins its conversation
    (re-embedded), an edit changes it, a deletion dissolves it; FAISS stays equal to SQL throughout."""
    recorder.channel(ChannelRecord(guild_id=GUILD, id=CHANNEL, name="brewing", kind="text"))
    question = message(LONG)
    recorder.message(question)
    await recorder.flush()
    assert (await app.store.get_item(question.id)).meta.get("conversation") is None
    answer = message("Alice: the wild yeast was probably Brettanomyces, it gives that tart finish", author=BOB,
                     reply_to=question)
    thanks = message(SHORT, author=ALICE)
    recorder.message(answer, replied_to=question)
    recorder.message(thanks)
    await recorder.flush()
    conv = await app.store.get_item(question.id)
    assert conv.meta["conversation"] and conv.meta["participants"] == 2 and "Brettanomyces" in conv.text
    assert conv.meta["channel"] == "brewing"
    assert await app.store.conversation_message_ids([question.id]) == {question.id: [question.id, answer.id, thanks.id]}
    assert (await app.store.get_item(answer.id)).conversation_id == question.id
    await assert_faiss_matches_sql(app)
    recorder.edit(answer.id, "Alice: sounds like a Lactobacillus infection to me, sour and tart", before=answer)
    await recorder.flush()
    conv = await app.store.get_item(question.id)
    assert "Lactobacillus" in conv.text and "Brettanomyces" not in conv.text
    await assert_faiss_matches_sql(app)
    recorder.delete([answer.id])
    await recorder.flush()
    plain = await app.store.get_item(question.id)
    assert plain.text == LONG and not plain.meta.get("conversation") and plain.conversation_id is None
    assert recorder.stats["errors"] == 0
    await assert_faiss_matches_sql(app)
