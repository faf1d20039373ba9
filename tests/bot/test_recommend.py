"""/recommend through real discord.Interaction objects, on the real store, embedder and FAISS
indexes: picks only from channels the member can see, reasons and links, feedback buttons,
subscribe / unsubscribe."""

from __future__ import annotations

import re
import time

import pytest

from recsys.store import Item
from tests.bot.harness import snowflake
from tests.bot.private_threads import (
    answer_thread_members,
    members_update,
    open_private_thread,
)

PUBLIC = [
    "My sourdough starter finally doubled overnight; a long cold proof gave the loaf an open, glossy crumb.",
    "Tried rye flour in a sourdough loaf this weekend: dense but very tasty, next time more water.",
    "The 42 bus now leaves ten minutes earlier on weekdays, the new timetable is on the town website.",
    "Looking for a quiet mechanical keyboard for programming at night, any switch recommendations?",
]
HIDDEN = [
    "Moderators only: planning the sourdough bread baking contest, judges and prizes for the best loaf.",
    "Moderators only: sourdough hydration ratios for an open crumb, notes for the contest rules.",
]


@pytest.fixture
def bot_extensions():
    return ("bot.cogs.recommend",)


async def seed(h) -> dict[str, list[int]]:
    """Two channels: #0 public, #1 visible only to a role nobody here has. Member 1 wrote
    everything; member 0 wrote about sourdough (their profile)."""
    g, pub, hid = h.guild.id, h.channels[0], h.channels[1]
    me, author = h.members[0], h.members[1]
    await h.store.upsert_channel(pub.id, g, pub.name, visibility={"public": True})
    await h.store.upsert_channel(hid.id, g, hid.name, visibility={"public": False, "roles": [snowflake()]})
    for m in h.members:
        await h.store.upsert_member(g, m.id, m.display_name, role_ids=[])
    now = time.time()
    ids: dict[str, list[int]] = {"public": [], "hidden": [], "own": []}
    items = []
    for n, (where, texts) in enumerate((("public", PUBLIC), ("hidden", HIDDEN))):
        for k, text in enumerate(texts):
            iid = snowflake()
            ids[where].append(iid)
            items.append(Item(id=iid, guild_id=g, kind="message", text=text, created_at=now - 3600 * (k + 1),
                              channel_id=(pub if where == "public" else hid).id, author_id=author.id))
    own = snowflake()
    ids["own"].append(own)
    items.append(Item(id=own, guild_id=g, kind="message", channel_id=pub.id, author_id=me.id, created_at=now - 7200,
                      text="I bake sourdough bread every weekend and love a crusty, open-crumb loaf."))
    await h.recommender.add_items(items)
    for iid in ids["public"] + ids["hidden"]:
        await h.recommender.record([{"guild_id": g, "member_id": author.id, "kind": "authored", "item_id": iid}])
    await h.recommender.record([{"guild_id": g, "member_id": me.id, "kind": "authored", "item_id": own}])
    await h.recommender.flush()
    return ids


def pick_ids(message: dict) -> list[int]:
    ids = []
    for row in message.get("components") or []:
        for c in row["components"]:
            m = re.fullmatch(r"campfire:rec:up:(\d+)", c["custom_id"])
            if m:
                ids.append(int(m.group(1)))
    return ids


async def test_recommend_now_picks_only_from_visible_channels(bot):
    h = bot
    ids = await seed(h)
    inv = await h.invoke("recommend now")
    assert inv.callback_type == 5 and inv.ephemeral  # deferred privately before any work
    msg = inv.message
    embed = msg["embeds"][0]
    picked = pick_ids(msg)
    assert picked, inv.text
    assert not set(picked) & set(ids["hidden"]), "a pick from a channel the member cannot view"
    assert not set(picked) & set(ids["own"])
    assert set(picked) <= set(ids["public"])
    # one field per pick: its reason and a jump link to the message, within Discord's limits
    assert len(embed["fields"]) == len(picked) <= 25
    for field, iid in zip(embed["fields"], picked):
        assert len(field["name"]) <= 256 and len(field["value"]) <= 1024
        assert f"https://discord.com/channels/{h.guild.id}/{h.channels[0].id}/{iid}" in field["value"]
        assert field["value"].split("\n")[0].strip()  # a reason line
    # the most similar public message (sourdough) is among them
    assert ids["public"][0] in picked or ids["public"][1] in picked

    # control: once the channel is visible to everyone, its (more similar) messages are picked too
    await h.store.upsert_channel(h.channels[1].id, h.guild.id, h.channels[1].name, visibility={"public": True})
    again = await h.invoke("recommend now")
    assert set(pick_ids(again.message)) & set(ids["hidden"])


async def test_feedback_buttons_feed_the_profile(bot):
    h = bot
    await seed(h)
    inv = await h.invoke("recommend now")
    picked = pick_ids(inv.message)
    assert len(picked) >= 2
    first, second = picked[0], picked[1]
    me = h.member.id

    no = await h.click(f"campfire:rec:no:{first}", inv.message)
    assert no.callback_type == 7  # the picks message is updated in place: that row disabled, choice marked
    row = next(r for r in no.message["components"] if any(c["custom_id"].endswith(f":{first}") for c in r["components"]))
    assert all(c.get("disabled") for c in row["components"])
    assert [c["style"] for c in row["components"] if c["custom_id"] == f"campfire:rec:no:{first}"] == [3]
    other_rows = [r for r in no.message["components"] if r is not row]
    assert other_rows and not any(c.get("disabled") for r in other_rows for c in r["components"])

    await h.click(f"campfire:rec:up:{second}", inv.message)
    await h.click(f"campfire:rec:down:{second}", inv.message)  # replaces the 👍
    mine = {(i.item_id, i.kind) for i in await h.store.interactions(h.guild.id, me)}
    assert (first, "dismissed") in mine
    assert (second, "rated_down") in mine and (second, "rated_up") not in mine
    await h.recommender.flush()
    # dismissed and down-rated items are not recommended again
    later = await h.invoke("recommend now")
    assert not {first, second} & set(pick_ids(later.message))


async def test_subscribe_and_unsubscribe(bot):
    h = bot
    await h.store.update_guild(h.guild.id, digest_time="08:30", timezone="Asia/Shanghai")
    sub = await h.invoke("recommend subscribe")
    assert sub.ephemeral and "08:30" in sub.text and "Asia/Shanghai" in sub.text
    assert [m["user_id"] for m in await h.store.subscribed_members(h.guild.id)] == [h.member.id]
    unsub = await h.invoke("recommend unsubscribe")
    assert unsub.ephemeral
    assert await h.store.subscribed_members(h.guild.id) == []


async def test_opted_out_member_cannot_subscribe_and_gets_a_hint(bot):
    h = bot
    await h.store.set_opted_out(h.member.id, True)
    inv = await h.invoke("recommend subscribe")
    assert inv.ephemeral and "/privacy optin" in inv.text
    assert await h.store.subscribed_members(h.guild.id) == []


async def test_no_history_and_no_items_is_a_friendly_message(bot):
    inv = await bot.invoke("recommend now")
    assert inv.ephemeral and "nothing to recommend yet" in inv.text


def test_picks_embed_stays_within_discord_limits_for_25_long_picks():
    """25 picks with 5,000-character reasons and long titles: every field within its limit, the whole
    embed within 6,000 characters, links kept whole."""
    from types import SimpleNamespace

    from bot.render import picks_embed
    from campfire.features.types import Pick

    member = SimpleNamespace(display_name="m" * 300, display_avatar=SimpleNamespace(url="https://cdn.discordapp.com/a.png"))
    picks = [
        Pick(item_id=1000 + n, title="T" * 200, link=f"https://example.org/story/{n}", kind="story", score=0.5,
             reason=f"{n} " + "because " * 700)
        for n in range(25)
    ]
    embed = picks_embed(picks, member)
    assert len(embed.fields) == 25
    assert len(embed) <= 6000
    assert all(len(f.name) <= 256 and len(f.value) <= 1024 for f in embed.fields)
    assert all(f.value.endswith(f"[Open](https://example.org/story/{n})") for n, f in enumerate(embed.fields))


def test_a_conversation_pick_shows_title_participants_reason_and_jump_link():
    """/recommend's embed and the daily post's lines show a conversation as its title, how many took
    part, the reason and the jump link to its first message; other picks show no participants."""
    from types import SimpleNamespace

    from bot.render import digest_member_section, pick_line, picks_embed
    from campfire.features.types import MemberPicks, Pick

    link = "https://discord.com/channels/1/2/3"
    conv = Pick(item_id=3, title="How do I get sound back after upgrading alsa?", link=link, kind="conversation",
                     score=0.8, reason="because you asked about: no sound from my speakers", participants=4,
                     message_ids=(3, 4, 5))
    story = Pick(item_id=9, title="The lighthouse", link=None, kind="story", score=0.5, reason="new in this server")
    member = SimpleNamespace(display_name="m", display_avatar=SimpleNamespace(url="https://cdn.discordapp.com/a.png"))
    first, second = picks_embed([conv, story], member).fields
    assert first.name == f"1. {conv.title}"
    assert first.value == f"4 participants · {conv.reason}\n[Open]({link})"
    assert "participants" not in second.value
    assert pick_line(conv) == f"**{conv.title}** (4 participants) — {conv.reason} <{link}>"
    assert pick_line(story) == "**The lighthouse** — new in this server"
    section = digest_member_section(MemberPicks(1, 42, "m", (conv, story)))
    assert section.splitlines()[1] == f"1. {pick_line(conv)}"


# ---- private threads (issue 13, item 1) -------------------------------------------------------------
THREAD_TEXTS = [
    "Secret thread: our sourdough starter recipe for the bakery contest, rye and a long cold proof.",
    "Secret thread: sourdough crumb notes, higher hydration gave the loaf a glossy open crumb.",
]
GENERAL_TEXTS = [
    "The 42 bus now leaves ten minutes earlier on weekdays, the new timetable is on the town website.",
    "Looking for a quiet mechanical keyboard for programming at night, any switch recommendations?",
    "Baking bread at home: which flour do you buy for a good sandwich loaf?",
]


@pytest.mark.parametrize("bot_extensions", [("bot.cogs.events", "bot.cogs.recommend")])
async def test_recommend_never_shows_a_private_thread_to_a_member_not_in_it(bot, monkeypatch):
    """A private thread (type 12) of a public channel, recorded live: its messages reach only its
    members — as they join and leave — and the live check holds even against a stale stored row."""
    h = bot
    m0, m1, _ = h.members
    roster = [m1]
    answer_thread_members(h, monkeypatch, roster)
    await h.bot.get_cog("Events").on_guild_available(h.guild)
    thread = await open_private_thread(h, h.channels[0], owner=m1)
    secret = [(await h.post(t, channel=thread, member=m1)).id for t in THREAD_TEXTS]
    for t in GENERAL_TEXTS:
        await h.post(t, member=m1)
    await h.post("I bake sourdough bread every weekend and love a crusty, open-crumb loaf.", member=m0)
    await h.flush()

    async def picks_for_m0() -> list[int]:
        inv = await h.invoke("recommend now", member=m0)
        return pick_ids(inv.message) if inv.message and inv.message.get("components") else []

    outside = await picks_for_m0()
    assert outside and not set(outside) & set(secret), "a private thread's message for a member not in it"
    await members_update(h, thread, added=(m0,))  # m0 is added to the thread: now they see it
    await h.flush()
    assert set(await picks_for_m0()) & set(secret)
    await members_update(h, thread, removed=(m0,))
    await h.flush()
    assert not set(await picks_for_m0()) & set(secret)
    # a stale row (a thread stored with its parent's visibility, as before): the live check still refuses
    await h.store.upsert_channel(thread.id, h.guild.id, thread.name, "thread", parent_id=h.channels[0].id,
                                 visibility={"public": True})
    assert not set(await picks_for_m0()) & set(secret)
