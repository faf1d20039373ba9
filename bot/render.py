"""How Campfire looks on Discord: every embed, message body and view the cogs send, built from the
typed results of :mod:`campfire.features` within Discord's limits
(https://discord.com/developers/docs/resources/message#embed-object-embed-limits)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import discord

from campfire.features.text import clip

if TYPE_CHECKING:
    from campfire.features.types import SavedStory, StoryPlan

# ---- stories ---------------------------------------------------------------------------------------
EMBED_TITLE_MAX = 256
EMBED_DESCRIPTION_MAX = 4096
EMBED_FOOTER_MAX = 2048
EMBED_AUTHOR_MAX = 256
EMBEDS_TOTAL_MAX = 6000
STORY_COLOUR = discord.Colour.orange()


#: Shown above a story while it is written a second time (the first failed the quality gate).
STORY_RETRY_NOTE = "✍️ That one did not come out well — writing it once more…"


def story_footer(plan: StoryPlan, *, saved: bool = True, rejected: bool = False) -> str:
    """The line under a story: genre · length · theme, and why it was not saved (it failed the
    quality gate; or the member opted out)."""
    request = plan.request
    footer = f"{request.genre} · {request.length} · theme: {request.theme}"
    if rejected:
        return footer + " · not saved (did not pass the quality check)"
    return footer if saved else footer + " · not saved (you opted out of recording)"


def story_embeds(
    title: str, text: str, requester: discord.abc.User, *, footer: str = "", writing: bool = False
) -> list[discord.Embed]:
    """The story as embeds within Discord's limits: the first titled by the story and crediting the
    requester, the text split over as many descriptions (≤ 4096 characters each) as the 6,000-character
    total of one message allows; text beyond that is cut with "…" (the stored item keeps all of it).
    With ``writing`` (while it streams) the title gets ✍️ and only the newest text that fits one
    description is shown."""
    from bot.messages import sanitise, split_message

    title = clip(title.strip() or "Untitled", EMBED_TITLE_MAX)
    author = clip(f"Requested by {requester.display_name}", EMBED_AUTHOR_MAX)
    footer = clip(footer, EMBED_FOOTER_MAX) if footer else ""
    budget = EMBEDS_TOTAL_MAX - len(title) - len(author) - len(footer) - 40  # room for split_message's joins
    body = sanitise(text).strip() or ("✍️ …" if writing else "(the story came out empty)")
    if writing:
        body = body if len(body) <= EMBED_DESCRIPTION_MAX else "…" + body[-(EMBED_DESCRIPTION_MAX - 1):]
        parts = [body]
    else:
        parts = split_message(clip(body, budget), EMBED_DESCRIPTION_MAX)[:10]
    embeds = []
    for n, part in enumerate(parts):
        embed = discord.Embed(description=part, colour=STORY_COLOUR)
        if n == 0:
            embed.title = ("✍️ " + title)[:EMBED_TITLE_MAX] if writing else title
            embed.set_author(name=author, icon_url=requester.display_avatar.url)
        embeds.append(embed)
    if footer:
        embeds[-1].set_footer(text=footer)
    return embeds


def writing_embeds(plan: StoryPlan, raw: str, requester: discord.abc.User) -> list[discord.Embed]:
    """A story while it streams (``raw``: the model's text so far, title line first). A new story
    shows its title once that line is complete; a continuation keeps "<title> (part N)"."""
    from model.story import split_title

    heading = plan.heading
    title, body = split_title(raw, heading) if "\n" in raw else (heading, raw)
    return story_embeds(title if plan.previous is None else heading, body, requester, footer=story_footer(plan),
                        writing=True)


def told_embeds(story: SavedStory, plan: StoryPlan, requester: discord.abc.User) -> list[discord.Embed]:
    """The finished story (the footer says when and why it was not saved; a rejected story's
    ``notice`` goes in the message body above it)."""
    footer = story_footer(plan, saved=story.saved, rejected=bool(story.rejected))
    return story_embeds(story.shown_title, story.text, requester, footer=footer)


def story_cooldown_text(wait_s: float) -> str:
    """The ephemeral answer to a member who asks for another story within ``story.cooldown_s``."""
    return f"⏳ One story at a time! You can ask for another in {math.ceil(wait_s)} s."


RATED_TEXT = {"up": "Thanks! 👍 noted.", "down": "Thanks — 👎 noted."}
RATING_NOT_KEPT_TEXT = "You opted out of recording, so your rating was not kept."

# ---- picks and the daily post -----------------------------------------------------------------------
if TYPE_CHECKING:
    from campfire.features.types import GuildSettings, MemberPicks, Pick

PICK_FIELD_NAME_MAX = 256
PICK_FIELD_VALUE_MAX = 1024
PICK_FIELDS_MAX = 25
PICKS_COLOUR = discord.Colour.blurple()
PICKS_FOOTER = "Buttons below: 👍 more like this · 👎 less like this · 🚫 not interested (rows follow the picks)"
NO_PICKS_TEXT = "I have nothing to recommend yet — talk, react and ask for a /story, and picks will follow!"
SUBSCRIBE_OPTED_OUT_TEXT = "Recording is off for you, so I cannot pick for you. `/privacy optin` turns recording back on."
UNSUBSCRIBED_TEXT = "👋 Unsubscribed: no more daily picks for you here."
FEEDBACK_GONE_TEXT = "That item is no longer stored, so your feedback was not kept."
FEEDBACK_OPTED_OUT_TEXT = "Recording is off for you, so this was not kept."


def participants_note(pick: Pick) -> str:
    """How many took part in a conversation or thread pick ("4 participants"); '' for other picks."""
    n = int(getattr(pick, "participants", 0) or 0)
    return f"{n} participants" if n >= 2 and pick.kind in ("conversation", "thread") else ""


def pick_line(pick: Pick, *, width: int = 300) -> str:
    """One pick as a line of Markdown: ``**Title** (N participants) — reason <link>`` (the title ≤ 80
    characters, the reason ≤ ``width``; the participants only for a conversation or thread; the link in
    angle brackets, so Discord shows no preview)."""
    people = participants_note(pick)
    line = f"**{clip(pick.title, 80, one_line=True)}**" + (f" ({people})" if people else "")
    line += f" — {clip(pick.reason, width)}"
    return f"{line} <{pick.link}>" if pick.link else line


def picks_embed(picks: list[Pick], member: discord.abc.User) -> discord.Embed:
    """The picks as one embed within Discord's limits: one field per pick (≤ 25), name ≤ 256 and
    value ≤ 1024 characters, and all text together ≤ 6,000 characters (each field gets an equal
    share of what the title, author and footer leave); the link is kept whole when the reason is cut.
    A conversation shows its title, how many took part (:func:`participants_note`), its reason and
    the jump link to its first message."""
    embed = discord.Embed(title="Picked for you", colour=PICKS_COLOUR)
    embed.set_author(name=clip(member.display_name, EMBED_AUTHOR_MAX), icon_url=member.display_avatar.url)
    embed.set_footer(text=PICKS_FOOTER)
    shown = picks[:PICK_FIELDS_MAX]
    share = (EMBEDS_TOTAL_MAX - len(embed)) // max(1, len(shown))  # len(Embed) counts title, author, footer
    for n, pick in enumerate(shown, 1):
        tail = f"\n[Open]({pick.link})" if pick.link else ""
        if len(tail) > share // 2:  # an enormous url: the title and reason matter more than the link
            tail = ""
        # the title gets at most half of what the link leaves, the reason the rest
        name = clip(f"{n}. {pick.title}", min(PICK_FIELD_NAME_MAX, max(16, (share - len(tail)) // 2)), one_line=True)
        people = participants_note(pick)
        reason = f"{people} · {pick.reason or 'Recommended for you'}" if people else pick.reason or "Recommended for you"
        room = max(1, min(PICK_FIELD_VALUE_MAX, share - len(name)) - len(tail))
        embed.add_field(name=name, value=clip(reason, room) + tail, inline=False)
    return embed


def subscribed_text(guild: GuildSettings) -> str:
    """The answer to ``/recommend subscribe``: when (local time, timezone) and where picks arrive."""
    where = f"in <#{guild.digest_channel_id}>" if guild.digest_channel_id else "by direct message"
    return (f"✅ Subscribed! Your picks arrive every day at {guild.digest_time} ({guild.timezone}) {where}. "
            "`/recommend unsubscribe` stops them.")


def digest_member_section(mp: MemberPicks) -> str:
    """One member's part of a daily post in a channel: their mention, then one numbered line per pick."""
    from bot.messages import sanitise

    lines = [f"<@{mp.member_id}>"] + [f"{n}. {pick_line(p)}" for n, p in enumerate(mp.picks, 1)]
    return sanitise("\n".join(lines))


def digest_header(date: str) -> str:
    """The first line of a daily post in a channel (``date``: the guild-local YYYY-MM-DD)."""
    return f"🔥 **Today's picks** ({date})"


def digest_thread_intro(date: str, members: int) -> str:
    """The short channel message over a daily post too long for one message (the picks follow in a thread)."""
    return f"{digest_header(date)}: picks for {members} members in the thread below 👇"


def digest_thread_name(date: str) -> str:
    return f"Today's picks {date}"


def digest_dm(guild_name: str, mp: MemberPicks, date: str) -> str:
    """A member's daily picks by direct message (no digest channel): where from, the picks, how to stop."""
    from bot.messages import sanitise

    lines = [f"🔥 Your picks from **{discord.utils.escape_markdown(guild_name)}** ({date}):"]
    lines += [f"{n}. {pick_line(p)}" for n, p in enumerate(mp.picks, 1)]
    lines.append("`/recommend unsubscribe` in the server stops these.")
    return sanitise("\n".join(lines))


# ---- settings, status and privacy -------------------------------------------------------------------
if TYPE_CHECKING:
    from campfire.features.types import ForgetResult, GuildSettings, GuildStatus, SettingsUpdate

ADMIN_COLOUR = discord.Colour.dark_teal()
HELP_COLOUR = discord.Colour.orange()
EMBED_FIELD_NAME_MAX = 256
EMBED_FIELD_VALUE_MAX = 1024
STATUS_FIELDS_MAX = 20  # index stats shown by /campfire status (an embed holds 25 fields)


def _channel_mentions(ids: tuple[int, ...] | list[int]) -> str:
    return ", ".join(f"<#{i}>" for i in ids) if ids else "—"


def settings_embed(settings: GuildSettings) -> discord.Embed:
    """A guild's settings as an embed (field values ≤ 1,024 characters)."""
    embed = discord.Embed(title="Campfire settings", colour=ADMIN_COLOUR)
    digest = f"<#{settings.digest_channel_id}>" if settings.digest_channel_id else "direct messages"
    embed.add_field(name="Daily post", value=f"{digest} at {settings.digest_time} ({settings.timezone})", inline=False)
    embed.add_field(name="Persona", value=clip(settings.persona or "(default)", EMBED_FIELD_VALUE_MAX), inline=False)
    embed.add_field(name="NSFW allowed", value="yes" if settings.nsfw_allowed else "no")
    learn = settings.learn_channel_ids
    embed.add_field(name="Learns from", value=clip(_channel_mentions(learn) if learn else "every channel it can see",
                                                   EMBED_FIELD_VALUE_MAX))
    embed.add_field(name="Ignores", value=clip(_channel_mentions(settings.ignore_channel_ids), EMBED_FIELD_VALUE_MAX))
    return embed


def settings_reply(update: SettingsUpdate, notes: list[str]) -> str:
    """The text above the settings embed: saved or not, a channel persona set, then any warnings
    (``notes``); at most 2,000 characters."""
    header = "✅ Saved." if update.changed else "Current settings (pass options to change them):"
    lines = [header]
    if update.channel_persona is not None:
        channel_id, persona = update.channel_persona
        lines.append(f"Persona in <#{channel_id}> and its threads: " + (
            clip(persona, 1500) if persona else "the server's persona (its own was reset)."))
    return clip("\n".join([*lines, *notes]), 2000)


def settings_refused(err: Exception) -> str:
    """A refused ``/campfire settings`` (the validator's sentence)."""
    return f"🙏 {err} Nothing was changed."


def status_embed(status: GuildStatus) -> discord.Embed:
    """``/campfire status``: generator health and queue, index sizes, the last daily post."""
    embed = discord.Embed(title="Campfire status", colour=ADMIN_COLOUR)
    if status.healthy is None:
        embed.add_field(name="Generator", value="not connected", inline=False)
    else:
        embed.add_field(name="Generator", value="🟢 healthy" if status.healthy else "🔴 unavailable")
        embed.add_field(name="Generating now", value=str(status.in_flight))
        embed.add_field(name="Waiting in queue", value=str(status.queue_depth))
    for key, value in list(status.index.items())[:STATUS_FIELDS_MAX]:
        embed.add_field(name=clip(str(key).replace("_", " "), EMBED_FIELD_NAME_MAX), value=clip(str(value), EMBED_FIELD_VALUE_MAX))
    embed.set_footer(text=f"Last daily post: {status.last_digest_date or 'never'}")
    return embed


OPTED_OUT = (
    "🔕 Done: from now on Campfire records nothing about you, in any server, and you get no daily picks.\n"
    "What was stored before is still there: `/privacy forget` deletes it, `/privacy export` shows it. "
    "`/privacy optin` turns recording back on."
)
OPTED_IN = "🔔 Recording is back on: your messages, reactions and stories shape your picks again."
FORGET_PROMPT = (
    "⚠️ This deletes **everything** Campfire stored about you, in every server: your messages it learned "
    "from, your reactions, ratings and requested stories, the picks sent to you, and their embeddings. "
    "It cannot be undone. Delete it all?"
)
FORGET_NOT_YOURS = "Only the member who asked can answer this."
FORGET_CANCELLED = "Cancelled: nothing was deleted."
FORGET_EXPIRED = "This confirmation has expired: run `/privacy forget` again."
FORGET_RUNNING = "🧹 Deleting…"
EXPORT_READY = "📦 Everything Campfire stores about you:"
EXPORT_TOO_LARGE = ("Your data is larger than the attachment limit here. Please ask the server's admins for help — "
                    "nothing was changed.")


def forget_done(result: ForgetResult) -> str:
    """What ``/privacy forget`` deleted, and whether recording stays off."""
    done = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in result.counts.items() if n) or "nothing was stored"
    more = (" Nothing new about you is recorded until you `/privacy optin`; what was deleted stays deleted."
            if result.opted_out else " New activity will be recorded again unless you `/privacy optout`.")
    return f"✅ Deleted ({done}).{more}"


HELP_COMMANDS = (
    "**Chat** — mention me, reply to me, or DM me; I remember the reply chain (and the thread in my threads).\n"
    "`/story` — a short story about your theme (genre, length, English or 中文), with 👍 / 👎 / Continue / Regenerate.\n"
    "`/recommend now` — your personal picks from this server, with 👍 / 👎 / Not interested.\n"
    "`/recommend subscribe` · `/recommend unsubscribe` — your picks in the daily post.\n"
    "`/campfire settings` · `/campfire status` — for server managers."
)
HELP_STORED = (
    "In the channels I can read (server managers choose which): messages with their author, channel and time; "
    "replies and reactions; stories you ask for and your 👍 / 👎; the picks sent to you; your display name and "
    "roles (so you are only shown what you may see); and text embeddings (numbers computed from that text) for "
    "finding what you may like. Nothing from direct messages is stored. It is all kept in this Campfire's own database, "
    "run by this bot's operators."
)
HELP_CONTROL = (
    "`/privacy optout` — record nothing more about me (`/privacy optin` undoes it).\n"
    "`/privacy export` — download everything stored about me (JSON).\n"
    "`/privacy forget` — delete everything stored about me, in every server, after a confirmation."
)


def help_embed() -> discord.Embed:
    """The ``/help`` embed: commands, what Campfire stores, how to opt out, export or delete
    (three fields, each ≤ 1,024 characters)."""
    embed = discord.Embed(
        title="Campfire 🔥", colour=HELP_COLOUR,
        description="An AI companion for this community: chat, stories, and daily picks of what you may have missed.",
    )
    embed.add_field(name="Commands", value=HELP_COMMANDS, inline=False)
    embed.add_field(name="What Campfire stores", value=HELP_STORED, inline=False)
    embed.add_field(name="Your data, your call", value=HELP_CONTROL, inline=False)
    return embed
