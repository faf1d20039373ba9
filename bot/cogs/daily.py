"""The daily personalised post: the Discord side of :mod:`campfire.features.digest`.

Every minute (``discord.ext.tasks.loop``) the cog asks :func:`campfire.features.digest.due` which
guilds' local time has come today without a post and, for each guild the bot is in, hands
:func:`campfire.features.digest.post` its sending: one message in the guild's digest channel
mentioning only the members picked for (``AllowedMentions(users=[...])``), or — when it would pass
2,000 characters — a short message with a thread holding the picks; with no usable digest channel,
one DM per member. Where the post goes is decided first, and the picks are chosen for its readers
(a :class:`campfire.features.digest.Audience`): in a channel, only picks and quoted reasons every
reader of that channel can see; in a DM, what that member can see. Which guilds are due, the picks
(recorded), marking posted and the retry policy (a failure before anything was sent retries next
tick; after a partial post, never twice a day) are the feature's; the text is :mod:`bot.render`'s. The clock is injectable (``DailyCog.clock``, an aware
UTC ``datetime``) for tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import discord
from discord.ext import commands, tasks

from bot import render
from bot.messages import DISCORD_LIMIT, split_message
from campfire.features import digest
from campfire.features.digest import Audience

if TYPE_CHECKING:
    from campfire.app import App
    from campfire.features.types import DigestDue, DigestRun, MemberPicks

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


def digest_channel(guild: discord.Guild, channel_id: int | None) -> discord.TextChannel | None:
    """The guild's digest channel when the bot can post there; None means DMs."""
    channel = guild.get_channel(channel_id or 0)
    me = guild.me
    if isinstance(channel, discord.TextChannel) and me is not None and channel.permissions_for(me).send_messages:
        return channel
    return None


class DailyCog(commands.Cog, name="Daily"):
    """Posts each guild's daily picks once per local day."""

    def __init__(self, bot: commands.Bot, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.bot = bot
        self.clock = clock
        self._tick_lock = asyncio.Lock()

    @property
    def app(self) -> App:
        return self.bot.app  # type: ignore[attr-defined]

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
        Guilds the bot is not in (e.g. imported from an export) are skipped and stay due; a guild
        whose post fails is logged (the feature's retry policy decides whether it stays due)."""
        now = now or self.clock()
        posts: list[DigestPost] = []
        async with self._tick_lock:  # a slow tick never overlaps the next one
            for due in await digest.due(self.app, now):
                guild = self.bot.get_guild(due.guild.id)
                if guild is None:
                    continue
                try:
                    posts.append(await self.post_digest(guild, due))
                except Exception:
                    log.exception("daily post for guild %s on %s failed", due.guild.id, due.date)
        return posts

    async def post_digest(self, guild: discord.Guild, due: DigestDue) -> DigestPost:
        """Compute, send and mark one guild's daily post (:func:`campfire.features.digest.post`)."""
        sent: list[discord.Message] = []  # fills as messages go out (the retry policy reads it)

        def present(member_id: int) -> bool:  # members who left are not posted about
            return not guild.chunked or guild.get_member(member_id) is not None

        channel = digest_channel(guild, due.guild.digest_channel_id)
        if channel is None and due.guild.digest_channel_id:
            log.warning("guild %s: digest channel %s is missing or not writable; sending DMs",
                        guild.id, due.guild.digest_channel_id)

        async def deliver(run: DigestRun) -> str:
            if channel is not None:
                return await self._post_in_channel(channel, run, sent)
            await self._post_dms(guild, run, sent)
            return "dm"

        # the picks are chosen for where they go: a channel's readers all see every pick and reason
        audience = Audience(channel.id if channel is not None else None)
        run = await digest.post(self.app, due, deliver, sent=sent, present=present, audience=audience)
        return DigestPost(guild.id, run.date, len(run.picks), run.where, sent)

    async def _post_in_channel(self, channel: discord.TextChannel, run: DigestRun, sent: list[discord.Message]) -> str:
        """Post in the digest channel (one message, or a header and a thread); appends to ``sent``
        as it goes and returns where the picks went (``channel`` | ``thread``)."""
        member_ids = [mp.member_id for mp in run.picks]
        sections = [render.digest_member_section(mp) for mp in run.picks]
        whole = render.digest_header(run.date) + "\n\n" + "\n\n".join(sections)
        if len(whole) <= DISCORD_LIMIT:
            sent.append(await channel.send(whole, allowed_mentions=mentions_in(whole, member_ids), suppress_embeds=True))
            return "channel"
        # too long for one message: a short message, and the picks in a thread under it
        first = await channel.send(render.digest_thread_intro(run.date, len(run.picks)),
                                   allowed_mentions=discord.AllowedMentions.none())
        sent.append(first)
        target: discord.abc.Messageable = channel
        try:
            target = await first.create_thread(name=render.digest_thread_name(run.date),
                                               auto_archive_duration=THREAD_ARCHIVE_MINUTES)
            where = "thread"
        except discord.HTTPException as err:  # no thread permission: continue in the channel
            log.warning("guild %s: cannot create the daily thread (%s); posting in the channel", channel.guild.id, err)
            where = "channel"
        for content in pack(sections):
            sent.append(await target.send(content, allowed_mentions=mentions_in(content, member_ids), suppress_embeds=True))
        return where

    async def _post_dms(self, guild: discord.Guild, run: DigestRun, sent: list[discord.Message]) -> None:
        """DM each member their picks (appending to ``sent``); a member with closed DMs is skipped."""
        for mp in run.picks:
            try:
                await self._dm(guild, mp, run.date, sent)
            except discord.HTTPException as err:  # DMs closed or user gone: the others still get theirs
                log.info("guild %s: no DM to member %s (%s)", guild.id, mp.member_id, err)

    async def _dm(self, guild: discord.Guild, mp: MemberPicks, date: str, sent: list[discord.Message]) -> None:
        user = guild.get_member(mp.member_id) or await self.bot.fetch_user(mp.member_id)
        for content in split_message(render.digest_dm(guild.name, mp, date)):
            sent.append(await user.send(content, allowed_mentions=discord.AllowedMentions.none(), suppress_embeds=True))


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(DailyCog(bot, clock=getattr(bot, "clock", None) or utc_now))
