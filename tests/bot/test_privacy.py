"""/privacy optout|optin|forget|export and /help through real discord.Interaction objects, on the
real store, embedder and FAISS indexes: ephemerality, the confirm buttons (custom ids, who may
press, expiry), the attachment. What forget/export/opt-out do to the data is tested without a bot
in tests/features/test_privacy.py."""

from __future__ import annotations

import copy
import json
import time

import pytest

from recsys.store import Item
from tests.bot.harness import snowflake


@pytest.fixture
def bot_extensions():
    return ("bot.cogs.privacy", "bot.cogs.help")


async def seed(h) -> dict[int, list[int]]:
    """Members 0 and 1 each wrote two messages and reacted to one of the other's; member 0 got a
    digest pick. Returns member id -> their item ids."""
    g, ch = h.guild.id, h.channels[0]
    await h.store.upsert_channel(ch.id, g, ch.name)
    now = time.time()
    mine: dict[int, list[int]] = {}
    items = []
    for m, topic in zip(h.members[:2], ("sailing boats on the lake", "baking bread at home")):
        await h.store.upsert_member(g, m.id, m.display_name)
        for k in range(2):
            iid = snowflake()
            mine.setdefault(m.id, []).append(iid)
            items.append(Item(id=iid, guild_id=g, kind="message", channel_id=ch.id, author_id=m.id,
                              created_at=now - 100 * (k + 1), text=f"Message {k} about {topic}, with enough words."))
    await h.recommender.add_items(items)
    a, b = h.members[0].id, h.members[1].id
    rows = [{"guild_id": g, "member_id": it.author_id, "kind": "authored", "item_id": it.id} for it in items]
    rows += [{"guild_id": g, "member_id": a, "kind": "reacted", "item_id": mine[b][0], "source_id": 1},
             {"guild_id": g, "member_id": b, "kind": "reacted", "item_id": mine[a][0], "source_id": 2}]
    await h.recommender.record(rows)
    await h.store.record_recommendations(g, a, [(mine[b][1], 0.9, "because")], "2026-01-01")
    await h.recommender.flush()
    return mine


def confirm_buttons(message: dict) -> list[str]:
    return [c["custom_id"] for row in message["components"] for c in row["components"]]


async def rows_about(h, user_id: int) -> int:
    data = await h.store.export_user(user_id)
    return sum(len(v) for k, v in data.items() if k != "user_id")


async def test_forget_after_confirmation_deletes(bot):
    h = bot
    mine = await seed(h)
    a = h.members[0].id
    ask = await h.invoke("privacy forget")
    assert ask.callback_type == 4 and ask.ephemeral
    assert await rows_about(h, a) > 0  # nothing happens before the confirmation
    yes, no = confirm_buttons(ask.message)
    assert yes.startswith(f"campfire:forget:yes:{a}:") and no.startswith(f"campfire:forget:no:{a}:")

    done = await h.click(yes, ask.message)
    assert done.callback_type == 7 and "Deleted" in done.text and "2 item vectors" in done.text
    assert await rows_about(h, a) == 0
    assert await h.store.get_items(mine[a]) == {}


async def test_cancel_other_members_and_expired_confirmations_delete_nothing(bot):
    h = bot
    await seed(h)
    a = h.members[0].id
    before = await rows_about(h, a)
    ask = await h.invoke("privacy forget")
    offered = copy.deepcopy(ask.message)  # the recorder updates ask.message in place when it is edited
    yes, no = confirm_buttons(offered)

    stranger = await h.click(yes, ask.message, member=h.members[1])
    assert stranger.ephemeral and "Only the member who asked" in stranger.text
    cancel = await h.click(no, ask.message)
    assert "nothing was deleted" in cancel.text.lower()

    stale = copy.deepcopy(offered)
    old = f"campfire:forget:yes:{a}:{int(time.time()) - 3600}"
    stale["components"][0]["components"][0]["custom_id"] = old
    expired = await h.click(old, stale)
    assert "expired" in expired.text
    assert await rows_about(h, a) == before


async def test_optout_and_optin_answer_privately(bot):
    h = bot
    a = h.members[0].id
    out = await h.invoke("privacy optout")
    assert out.ephemeral and "records nothing" in out.text
    assert await h.store.is_opted_out(a)
    back = await h.invoke("privacy optin")
    assert back.ephemeral and "back on" in back.text
    assert not await h.store.is_opted_out(a)


async def test_export_is_an_ephemeral_json_attachment(bot):
    h = bot
    mine = await seed(h)
    a = h.members[0].id
    inv = await h.invoke("privacy export", channel=await h.dm())  # works in DMs too
    assert inv.callback_type == 5 and inv.ephemeral
    followup = [r for r in inv.responses if r.kind == "followup"][-1]
    [(name, raw)] = followup.files
    assert name == f"campfire-export-{a}.json"
    data = json.loads(raw)
    assert data["user_id"] == a
    assert sorted(i["id"] for i in data["items"]) == sorted(mine[a])
    assert {i["kind"] for i in data["interactions"]} == {"authored", "reacted"}
    assert [r["item_id"] for r in data["recommendations_sent"]] == [mine[h.members[1].id][1]]


async def test_help_says_what_is_stored_and_how_to_delete_it(bot):
    inv = await bot.invoke("help")
    assert inv.callback_type == 4 and inv.ephemeral
    text = inv.text
    for phrase in ("What Campfire stores", "/privacy forget", "/privacy export", "/privacy optout", "/story"):
        assert phrase in text
    embed = inv.message["embeds"][0]
    assert all(len(f["value"]) <= 1024 for f in embed["fields"]) and len(embed["fields"]) <= 25


LONG = "Has anyone tried brewing a saison with wild yeast from the garden? Mine turned out tart."
WITH_EVENTS = pytest.mark.parametrize("bot_extensions", [("bot.cogs.privacy", "bot.cogs.events")])


@WITH_EVENTS
async def test_replies_and_reactions_to_a_forgotten_members_message_bring_nothing_back(bot):
    """Issue 13, item 3 through the gateway: after /privacy forget, another member replies to and
    reacts to the forgotten member's old message, and their member record is refreshed — nothing of
    theirs (item, interactions, member row, vectors) reappears."""
    h = bot
    a, b, c = h.members
    old = await h.post(LONG, member=a)
    await h.react(b, old, "🍺")
    await h.flush()
    assert (await h.store.get_item(old.id)).author_id == a.id
    ask = await h.invoke("privacy forget", member=a)
    done = await h.click(confirm_buttons(ask.message)[0], ask.message, member=a)
    assert "Deleted" in done.text
    reply = await h.post("Wild yeast is always a gamble, " + LONG.lower(), member=b, reply_to=old)
    await h.react(c, old, "🍞")
    h.bot.dispatch("member_join", a)  # their member record comes in again (a guild refresh does the same)
    await h.flush()
    assert await h.store.get_item(old.id) is None and await h.store.get_member(h.guild.id, a.id) is None
    assert await rows_about(h, a.id) == 0
    assert [i for i in await h.store.interactions(h.guild.id) if i.item_id == old.id or i.source_id == old.id] == []
    assert h.recommender.indexes.get(h.guild.id, "item").vectors([old.id]) == {}
    assert (await h.store.get_item(reply.id)).author_id == b.id  # the reply is b's own message


@WITH_EVENTS
async def test_messages_deleted_on_discord_in_bulk_leave_store_and_indexes(bot):
    h = bot
    msgs = [await h.post(f"{k}: {LONG}", member=h.members[k % 2]) for k in range(3)]
    await h.react(h.members[2], msgs[0], "🍺")
    await h.flush()
    gone = [msgs[0].id, msgs[1].id]
    h.state.parse_message_delete_bulk({"ids": [str(i) for i in gone], "channel_id": str(h.channels[0].id),
                                       "guild_id": str(h.guild.id)})
    await h.flush()
    assert set(await h.store.get_items([m.id for m in msgs])) == {msgs[2].id}
    assert [i for i in await h.store.interactions(h.guild.id) if i.item_id in gone] == []
    assert h.recommender.indexes.get(h.guild.id, "item").vectors(gone) == {}
    model = h.recommender.embedder.key
    for owner in ("item", "interaction"):
        assert h.recommender.stats(h.guild.id)[f"{owner}_vectors"] == await h.store.embedding_count(owner, h.guild.id, model)
