"""The daily personalised post.

Every minute (``discord.ext.tasks.loop``) the cog asks ``recsys.digest.due_guilds`` which guilds'
local time (IANA timezone, ``zoneinfo``) has come today without a post, and for each:

1. ``recsys.digest.daily_picks(dry_run=False)`` — every subscribed member's picks, recorded in
   ``recommendations_sent`` (a re-run on the same local date returns the same picks);
2. one message in the guild's digest channel mentioning only those members
   (``AllowedMentions(users=[...])``), or — when it would pass 2,000 characters — a short message
   with a thread holding the picks; with no usable digest channel, one DM per member;
3. ``recsys.digest.mark_posted`` — so the guild is not due again that local day, even after a restart.

A restart later the same day catches up (the guild is still due); a failure before anything was
posted leaves the guild due, so the next tick retries. The clock is injectable (``DailyCog.clock``,
an aware UTC ``datetime``) for tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import discord
from discord.ext import commands, tasks

from bot.cogs.recommend import pick_line
from bot.messages import DISCORD_LIMIT, sanitise, split_message
from bot.views import services_of
from recsys.digest import MemberPicks, daily_picks, due_guilds, mark_posted

log = logging.getLogger(__name__)

THREAD_ARCHIVE_MINUTES = 1440


def utc_now() -> datetime:
    """The current time as an aware UTC ``datetime`` (the cog's default clock)."""
    return datetime.now(timezone.utc)


@dataclass
class DigestPost:
    """What one guild's daily post did (for logs and tests)."""

    guild_id: int
    date: str
    members: int
    where: str  # "channel" | "thread" | "dm" | "none"
    messages: list[discord.Message]


def member_section(mp: MemberPicks) -> str:
    """One member's part of the post: their mention, then one line per pick (reason and link)."""
    lines = [f"<@{mp.member_id}>"]
    lines += [f"{n}. {pick_line(p)}" for n, p in enumerate(mp.picks, 1)]
    return sanitise("\n".join(lines))


def pack(sections: list[str], limit: int = DISCORD_LIMIT) -> list[str]:
    """Sections joined into as few messages of ≤ ``limit`` characters as possible; a section that is
    longer than a message on its own is cut with ``bot.messages.split_message``."""
    out: list[str] = []
    for section in sections:
        for piece in split_message(section, limit):
            if out and len(out[-1]) + 2 + len(piece) <= limit:
                out[-1] += "\n\n" + piece
            else:
                out.append(piece)
    return out


def mentions_in(content: str, member_ids: list[int]) -> discord.AllowedMentions:
    """Allowed mentions for ``content``: only the listed members it mentions; never @everyone/@here,
    roles, or anyone else named in an item's text."""
    users = [discord.Object(id=m) for m in member_ids if f"<@{m}>" in content]
    return discord.AllowedMentions(everyone=False, roles=False, replied_user=False, users=users)


class DailyCog(commands.Cog, name="Daily"):
    """Posts each guild's daily picks once per local day."""

    def __init__(self, bot: commands.Bot, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.bot = bot
        self.clock = clock
        self._tick_lock = asyncio.Lock()

    @property
    def services(self) -> Any:
        return services_of(self.bot)

    async def cog_load(self) -> None:
        self.loop.start()

    async def cog_unload(self) -> None:
        self.loop.cancel()

    @tasks.loop(minutes=1)
    async def loop(self) -> None:
        try:
            await self.tick()
        except Exception:  # an exception would stop the loop for good: log it and try next minute
            log.exception("daily post tick failed")

    @loop.before_loop
    async def _wait_ready(self) -> None:
        await self.bot.wait_until_ready()

    async def tick(self, now: datetime | None = None) -> list[DigestPost]:
        """Post for every guild due at ``now`` (default ``self.clock()``); returns what was posted.
        Guilds the bot is not in (e.g. imported from an export) are skipped and stay due."""
        now = now or self.clock()
        services = self.services
        posts: list[DigestPost] = []
        async with self._tick_lock:  # a slow tick never overlaps the next one
            for guild_id, date in await due_guilds(services.store, now, services.settings.digest):
                guild = self.bot.get_guild(guild_id)
                if guild is None:
                    continue
                try:
                    posts.append(await self.post_digest(guild, date))
                except Exception:
                    log.exception("daily post for guild %s on %s failed; retrying next minute", guild_id, date)
        return posts

    async def post_digest(self, guild: discord.Guild, date: str) -> DigestPost:
        """Compute, post and mark one guild's daily post for its local ``date`` (YYYY-MM-DD)."""
        services = self.services
        picks = await daily_picks(services.recommender, guild.id, date, dry_run=False)
        if guild.chunked:  # members who left are not posted about
            picks = [mp for mp in picks if guild.get_member(mp.member_id) is not None]
        settings = await services.store.get_guild(guild.id) or {}
        channel = guild.get_channel(settings.get("digest_channel_id") or 0)
        where, messages = "none", []  # ``messages`` fills as they are sent
        try:
            if picks:
                me = guild.me
                if isinstance(channel, discord.TextChannel) and me is not None and channel.permissions_for(me).send_messages:
                    where = await self._post_in_channel(channel, picks, date, messages)
                else:
                    if settings.get("digest_channel_id"):
                        log.warning("guild %s: digest channel %s is missing or not writable; sending DMs",
                                    guild.id, settings.get("digest_channel_id"))
                    where = "dm"
                    await self._post_dms(guild, picks, date, messages)
        except Exception:
            if messages:  # part of today's post is out: never post it a second time today
                await mark_posted(services.store, guild.id, date)
                log.warning("daily post for guild %s on %s stopped after %d message(s); not retried today",
                            guild.id, date, len(messages))
            raise
        await mark_posted(services.store, guild.id, date)
        log.info("daily post for guild %s on %s: %d members, %s", guild.id, date, len(picks), where)
        return DigestPost(guild.id, date, len(picks), where, messages)

    async def _post_in_channel(
        self, channel: discord.TextChannel, picks: list[MemberPicks], date: str, sent: list[discord.Message]
    ) -> str:
        """Post in the digest channel (one message, or a header and a thread); appends to ``sent``
        as it goes and returns where the picks went (``channel`` | ``thread``)."""
        member_ids = [mp.member_id for mp in picks]
        header = f"🔥 **Today's picks** ({date})"
        sections = [member_section(mp) for mp in picks]
        whole = header + "\n\n" + "\n\n".join(sections)
        if len(whole) <= DISCORD_LIMIT:
            sent.append(await channel.send(whole, allowed_mentions=mentions_in(whole, member_ids), suppress_embeds=True))
            return "channel"
        # too long for one message: a short message, and the picks in a thread under it
        first = await channel.send(
            f"{header}: picks for {len(picks)} members in the thread below 👇", allowed_mentions=discord.AllowedMentions.none()
        )
        sent.append(first)
        target: discord.abc.Messageable = channel
        try:
            target = await first.create_thread(name=f"Today's picks {date}", auto_archive_duration=THREAD_ARCHIVE_MINUTES)
            where = "thread"
        except discord.HTTPException as err:  # no thread permission: continue in the channel
            log.warning("guild %s: cannot create the daily thread (%s); posting in the channel", channel.guild.id, err)
            where = "channel"
        for content in pack(sections):
            sent.append(await target.send(content, allowed_mentions=mentions_in(content, member_ids), suppress_embeds=True))
        return where

    async def _post_dms(
        self, guild: discord.Guild, picks: list[MemberPicks], date: str, sent: list[discord.Message]
    ) -> None:
        """DM each member their picks (appending to ``sent``); a member with closed DMs is skipped."""
        for mp in picks:
            lines = [f"🔥 Your picks from **{discord.utils.escape_markdown(guild.name)}** ({date}):"]
            lines += [f"{n}. {pick_line(p)}" for n, p in enumerate(mp.picks, 1)]
            lines.append("`/recommend unsubscribe` in the server stops these.")
            try:
                user = guild.get_member(mp.member_id) or await self.bot.fetch_user(mp.member_id)
                for content in split_message(sanitise("\n".join(lines))):
                    sent.append(await user.send(content, allowed_mentions=discord.AllowedMentions.none(),
                                                suppress_embeds=True))
            except discord.HTTPException as err:  # DMs closed or user gone: the others still get theirs
                log.info("guild %s: no DM to member %s (%s)", guild.id, mp.member_id, err)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(DailyCog(bot, clock=getattr(bot, "clock", None) or utc_now))
