"""The recorder's Discord adapter (bot.cogs.events) driven through dpytest: which Discord events and
messages become records, reply and reaction fetching, permission snapshots. What the recorder does
with records (batching, learn/ignore lists, opt-outs, edits, FAISS = SQL) is tested without a bot
in tests/features/test_recording.py."""

from __future__ import annotations

import discord
import discord.ext.test as dpytest
import pytest
from discord.ext.test import backend as dpy_backend

from tests.bot.harness import snowflake
from tests.bot.private_threads import answer_thread_members, members_update, open_private_thread

LONG = "Has anyone tried brewing a saison with wild yeast from the garden? Mine turned out tart."
SHORT = "nice!"


@pytest.fixture
def bot_extensions():
    return ("bot.cogs.events",)


async def test_message_becomes_item_with_authored_interaction_and_is_embedded(bot):
    msg = await bot.post(LONG)
    await bot.flush()
    item = await bot.store.get_item(msg.id)
    assert item is not None and item.kind == "message" and item.text == LONG
    assert (item.guild_id, item.channel_id, item.author_id) == (bot.guild.id, bot.channels[0].id, bot.member.id)
    inter = await bot.store.interactions(bot.guild.id, bot.member.id)
    assert [(i.kind, i.item_id, i.source_id) for i in inter] == [("authored", msg.id, msg.id)]
    # embedding was queued through the Recommender and done off the loop: the vector is stored
    assert msg.id in await bot.store.embeddings_for("item", [msg.id], bot.recommender.embedder.key)
    member = await bot.store.get_member(bot.guild.id, bot.member.id)
    assert member is not None and member["display_name"] == bot.member.display_name


async def test_short_message_is_no_item_until_replied_to(bot):
    short = await bot.post(SHORT)
    await bot.flush()
    assert await bot.store.get_item(short.id) is None
    other = bot.members[1]
    reply = await bot.post("I agree, " + LONG, member=other, reply_to=short)
    await bot.flush()
    # the reply makes the two a conversation: its item is the opener's id, holding both lines
    parent = await bot.store.get_item(short.id)
    assert parent is not None and parent.conversation_id == short.id and parent.meta.get("conversation")
    assert LONG in parent.text  # its substantive lines ("nice!" is not one)
    assert await bot.store.conversation_message_ids([short.id]) == {short.id: [short.id, reply.id]}
    child = await bot.store.get_item(reply.id)
    assert child is not None and child.parent_item_id == short.id
    kinds = {(i.kind, i.item_id) for i in await bot.store.interactions(bot.guild.id, other.id)}
    assert kinds == {("authored", reply.id), ("replied", short.id)}


async def test_reactions_added_and_removed(bot):
    msg = await bot.post(LONG)
    other = bot.members[1]
    await bot.react(other, msg, "🍺")
    await bot.flush()
    reacted = [i for i in await bot.store.interactions(bot.guild.id, other.id) if i.kind == "reacted"]
    assert [(i.item_id, i.member_id) for i in reacted] == [(msg.id, other.id)]
    await bot.react(other, msg, "🍺", add=False)
    await bot.flush()
    assert not [i for i in await bot.store.interactions(bot.guild.id, other.id) if i.kind == "reacted"]
    # the removal went through the recommender: FAISS holds what SQLite holds
    stats, model = bot.recommender.stats(bot.guild.id), bot.recommender.embedder.key
    assert stats["interaction_vectors"] == await bot.store.embedding_count("interaction", bot.guild.id, model) == 1


async def test_edit_updates_and_delete_removes_the_item(bot):
    msg = await bot.post(LONG)
    await bot.flush()
    edited = LONG + " Edit: it was the yeast, not the hops."
    await bot.edit(msg, edited)
    await bot.flush()
    assert (await bot.store.get_item(msg.id)).text == edited
    # re-embedded after the edit
    assert msg.id in await bot.store.embeddings_for("item", [msg.id], bot.recommender.embedder.key)
    await bot.delete(msg)
    await bot.flush()
    assert await bot.store.get_item(msg.id) is None
    assert [i for i in await bot.store.interactions(bot.guild.id) if i.item_id == msg.id] == []


async def test_bots_and_dms_are_not_recorded(bot):
    helper = bot.make_bot_member("HelperBot")
    await bot.post(LONG, member=helper)
    dm = await bot.dm(bot.member)
    await bot.post(LONG + " (in a DM)", channel=dm)
    kept = await bot.post(LONG + " (kept)")
    await bot.flush()
    items = await bot.store.items(bot.guild.id)
    assert [i.id for i in items] == [kept.id]
    members = {i.member_id for i in await bot.store.interactions(bot.guild.id)}
    assert members == {bot.member.id}


async def test_thread_messages_carry_their_parent_channel(bot):
    await bot.store.update_guild(bot.guild.id, ignore_channel_ids=[bot.channels[1].id])
    ignored = bot.make_thread(bot.channels[1], "side talk")
    await bot.post(LONG + " (in a thread of an ignored channel)", channel=ignored)
    learned = bot.make_thread(bot.channels[0], "main talk")
    kept = await bot.post(LONG + " (in a thread of a learned channel)", channel=learned)
    await bot.flush()
    assert [(i.id, i.channel_id) for i in await bot.store.items(bot.guild.id)] == [(kept.id, learned.id)]


async def test_channel_permission_snapshot_and_member_roles_drive_visibility(bot):
    guild, private = bot.guild, bot.channels[1]
    mods = dpy_backend.make_role("mods", guild)
    await dpytest.add_role(bot.members[1], mods)
    await bot.set_permissions(private, guild.default_role, view_channel=False)
    await bot.set_permissions(private, mods, view_channel=True)
    await bot.set_permissions(private, bot.members[2], view_channel=True)
    await bot.flush()
    snap = (await bot.store.get_channel(private.id))["visibility"]
    assert snap["public"] is False
    assert mods.id in snap["roles"] and guild.default_role.id not in snap["roles"]
    assert snap["members"] == [bot.members[2].id]
    stored = await bot.store.get_member(guild.id, bot.members[1].id)
    assert mods.id in stored["role_ids"]
    assert private.id in await bot.store.visible_channel_ids(guild.id, bot.members[1].id)  # via the role
    assert private.id in await bot.store.visible_channel_ids(guild.id, bot.members[2].id)  # via a member overwrite
    await bot.store.upsert_member(guild.id, bot.members[0].id, bot.members[0].display_name, role_ids=[])
    assert private.id not in await bot.store.visible_channel_ids(guild.id, bot.members[0].id)


async def test_guild_snapshot_records_every_channel(bot):
    events = bot.bot.get_cog("Events")
    events.snapshot_guild(bot.guild)
    await bot.flush()
    stored = {c["id"]: c for c in await bot.store.channels(bot.guild.id)}
    for channel in bot.channels:
        assert stored[channel.id]["name"] == channel.name
        assert stored[channel.id]["visibility"]["public"] is True


async def test_short_message_edited_to_a_long_one_becomes_an_item(bot):
    msg = await bot.post(SHORT)
    await bot.flush()
    assert await bot.store.get_item(msg.id) is None
    await bot.edit(msg, LONG)
    await bot.flush()
    item = await bot.store.get_item(msg.id)
    assert item is not None and item.text == LONG


async def test_reply_keeps_its_parent_when_it_is_replied_to_in_turn(bot):
    root = await bot.post(LONG)
    middle = await bot.post("Replying: " + LONG, member=bot.members[1], reply_to=root)
    await bot.flush()
    await bot.post("And replying again: " + LONG, member=bot.members[2], reply_to=middle)
    await bot.flush()
    assert (await bot.store.get_item(middle.id)).parent_item_id == root.id


# ---- private threads (issue 13, item 1) -------------------------------------------------------------
async def store_members(h) -> None:
    for m in h.members:
        await h.store.upsert_member(h.guild.id, m.id, m.display_name, role_ids=[r.id for r in m.roles[1:]])


async def test_a_private_thread_is_visible_only_to_its_members_as_they_join_and_leave(bot, monkeypatch):
    h = bot
    m0, m1, m2 = h.members
    roster = [m1]  # what Discord answers when the bot lists the thread's members
    answer_thread_members(h, monkeypatch, roster)
    await store_members(h)
    thread = await open_private_thread(h, h.channels[0], owner=m1)
    await bot.flush()
    row = await h.store.get_channel(thread.id)
    assert row["kind"] == "private_thread" and row["parent_id"] == h.channels[0].id
    snap = row["visibility"]
    assert snap["public"] is False and snap["members_known"] is True and snap["members"] == [m1.id]

    async def who_sees() -> set[int]:
        return {m.id for m in h.members if thread.id in await h.store.visible_channel_ids(h.guild.id, m.id)}

    assert await who_sees() == {m1.id}  # not the parent channel's readers
    await members_update(h, thread, added=(m2,))
    await bot.flush()
    assert await who_sees() == {m1.id, m2.id}
    await members_update(h, thread, removed=(m2,))
    await bot.flush()
    assert await who_sees() == {m1.id}

    # whoever may manage threads in the parent sees private threads too
    mods = dpy_backend.make_role("mods", h.guild, permissions=discord.Permissions(view_channel=True,
                                                                                  manage_threads=True).value)
    await dpytest.add_role(m0, mods)
    await bot.flush()
    assert mods.id in (await h.store.get_channel(thread.id))["visibility"]["roles"]
    assert await who_sees() == {m0.id, m1.id}


async def test_a_private_thread_with_unknown_members_is_shown_only_to_its_participants(bot, monkeypatch):
    h = bot
    _, m1, m2 = h.members
    answer_thread_members(h, monkeypatch, None)  # Discord refuses the member list
    await store_members(h)
    thread = await open_private_thread(h, h.channels[0], owner=m1)
    first = await h.post(LONG, channel=thread, member=m1)
    await h.post("agreed", channel=thread, member=m2, reply_to=first)  # a short reply: m2 took part
    await bot.flush()
    snap = (await h.store.get_channel(thread.id))["visibility"]
    assert snap["public"] is False and snap["members_known"] is False

    async def who_sees() -> set[int]:
        return {m.id for m in h.members if thread.id in await h.store.visible_channel_ids(h.guild.id, m.id)}

    assert await who_sees() == {m1.id, m2.id}  # its author and its replier, not m0
    await members_update(h, thread, removed=(m2,))  # seen leaving: no longer, participant or not
    await bot.flush()
    assert await who_sees() == {m1.id}


async def test_threads_stored_before_the_fix_are_looked_up_once_and_recorded_again(bot, monkeypatch):
    """A thread stored by an older version has its parent's visibility and no type: when the guild
    becomes available it is looked up — a private thread gets its own snapshot, one Discord no longer
    shows becomes private with unknown members (participants only)."""
    h = bot
    m0, m1, _ = h.members
    answer_thread_members(h, monkeypatch, [m1])
    private_id, gone_id, parent = snowflake(), snowflake(), h.channels[0]
    for tid in (private_id, gone_id):
        await h.store.upsert_channel(tid, h.guild.id, "old thread", "thread", parent_id=parent.id,
                                     visibility={"public": True, "roles": [], "members": [], "denied_members": []})
    await store_members(h)
    assert private_id in await h.store.visible_channel_ids(h.guild.id, m0.id)  # the old leak

    async def get_channel(channel_id):
        if int(channel_id) == gone_id:
            raise discord.NotFound(type("R", (), {"status": 404, "reason": "Not Found"})(), "Unknown Channel")
        return {"id": str(private_id), "guild_id": str(h.guild.id), "parent_id": str(parent.id), "type": 12,
                "owner_id": str(m1.id), "name": "old thread", "message_count": 3, "member_count": 1,
                "rate_limit_per_user": 0, "flags": 0,
                "thread_metadata": {"archived": True, "auto_archive_duration": 1440, "locked": False,
                                    "archive_timestamp": discord.utils.utcnow().isoformat()}}

    monkeypatch.setattr(h.bot.http, "get_channel", get_channel)
    await h.bot.get_cog("Events").on_guild_available(h.guild)
    await bot.flush()
    private, gone = (await h.store.get_channel(private_id)), (await h.store.get_channel(gone_id))
    assert private["kind"] == gone["kind"] == "private_thread" and private["parent_id"] == gone["parent_id"] == parent.id
    assert private["visibility"]["members"] == [m1.id] and private["visibility"]["members_known"] is True
    assert gone["visibility"]["members_known"] is False
    for tid in (private_id, gone_id):
        assert tid not in await h.store.visible_channel_ids(h.guild.id, m0.id)
    assert private_id in await h.store.visible_channel_ids(h.guild.id, m1.id)
