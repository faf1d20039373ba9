"""Recording, Discord side: discord.py events become plain records for
:class:`campfire.features.recording.Recorder`, which queues, filters (learn/ignore lists, opt-outs)
and writes them in batches through the recommender (see that module for what is recorded).

This cog decides only what Discord makes of an event: which messages count (members' own text
messages in guild text channels — not bots, webhooks, system messages or DMs), fetching a message
that was replied or reacted to, the channel permission snapshots (``visibility``, computed by
:mod:`bot.visibility`) and member roles, refreshed when guilds become available and when channels,
threads, roles or members change. Private threads are visible only to their members (tracked from
thread member joins and removals, fetched from Discord when a thread is first seen) and to those who
manage threads. Message contents are never logged at INFO.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.visibility import (PRIVATE_THREAD_KIND, UNKNOWN_PRIVATE_THREAD, ThreadMembers, is_private_thread,
                            visibility_snapshot)
from campfire.features import recording
from campfire.features.recording import Recorder
from campfire.features.types import ChannelRecord, Member, MemberRecord, MessageRecord, ReactionRecord

if TYPE_CHECKING:
    from bot.app import CampfireBotMixin

log = logging.getLogger(__name__)

TEXT_CHANNEL_TYPES = (discord.TextChannel, discord.Thread, discord.VoiceChannel, discord.StageChannel, discord.ForumChannel)
RECORDED_TYPES = (discord.MessageType.default, discord.MessageType.reply, discord.MessageType.thread_starter_message)


def channel_kind(channel: Any) -> str:
    """The store's ``kind`` for a discord.py channel: ``private_thread``, ``thread``, ``forum``,
    ``voice``, ``category`` or ``text``."""
    if is_private_thread(channel):
        return PRIVATE_THREAD_KIND
    if isinstance(channel, discord.Thread):
        return "thread"
    if isinstance(channel, discord.ForumChannel):
        return "forum"
    if isinstance(channel, discord.VoiceChannel):
        return "voice"
    if isinstance(channel, discord.CategoryChannel):
        return "category"
    return "text"


def member_record(member: discord.Member) -> MemberRecord:
    """A guild member with their roles (the @everyone role left out)."""
    roles = tuple(r.id for r in member.roles if r.id != member.guild.id)
    return MemberRecord(guild_id=member.guild.id, id=member.id, name=member.display_name, is_bot=member.bot, role_ids=roles)


def recordable(message: discord.Message) -> bool:
    """A member's own message in a guild text channel (no bots, webhooks, system messages, DMs)."""
    return (
        message.guild is not None
        and not message.author.bot
        and message.webhook_id is None
        and message.type in RECORDED_TYPES
        and isinstance(message.channel, TEXT_CHANNEL_TYPES)
    )


def message_record(message: discord.Message) -> MessageRecord:
    """The plain record of a recordable message (see :func:`recordable`)."""
    assert message.guild is not None
    channel = message.channel
    user = message.author  # a Member (roles known: refreshed with the message), else a User
    author = member_record(user) if isinstance(user, discord.Member) else Member(
        guild_id=message.guild.id, id=user.id, name=user.display_name, is_bot=user.bot)
    return MessageRecord(
        guild_id=message.guild.id, channel_id=channel.id, id=message.id, author=author, text=message.content,
        created_at=message.created_at.timestamp(), parent_channel_id=getattr(channel, "parent_id", None),
        reply_to_id=message.reference.message_id if message.reference is not None else None,
        url=message.jump_url, nsfw=bool(getattr(channel, "is_nsfw", lambda: False)()),
        channel_name=getattr(channel, "name", ""),
    )


def channel_record(channel: Any, threads: ThreadMembers | None = None) -> ChannelRecord:
    """A channel's name, kind, parent, NSFW flag and visibility snapshot (a private thread's from
    ``threads``: :func:`bot.visibility.visibility_snapshot`)."""
    return ChannelRecord(guild_id=channel.guild.id, id=channel.id, name=getattr(channel, "name", ""),
                         kind=channel_kind(channel), parent_id=getattr(channel, "parent_id", None),
                         nsfw=bool(getattr(channel, "nsfw", False)), visibility=visibility_snapshot(channel, threads))


class Events(commands.Cog):
    """The recorder's adapter. ``await cog.flush()`` writes everything queued and waits for
    embedding (tests, shutdown); ``cog.stats`` counts what was written (``Recorder.stats``)."""

    def __init__(self, bot: CampfireBotMixin) -> None:
        self.bot = bot
        self.app = bot.app
        self.recorder = Recorder(bot.app)
        self.threads = ThreadMembers()  # members of private threads (bot.visibility)

    @property
    def stats(self) -> dict[str, int]:
        return self.recorder.stats

    async def cog_load(self) -> None:
        self.recorder.start()

    async def cog_unload(self) -> None:
        await self.recorder.stop()

    async def flush(self) -> None:
        """Write every queued record now and wait until the recommender has embedded them."""
        await self.recorder.flush()

    # ---- messages --------------------------------------------------------------------------------
    def record_message(self, message: discord.Message, *, replied_to: discord.Message | None = None) -> bool:
        """Queue a member's message (and the reply it makes) for recording; False when skipped."""
        if not recordable(message):
            return False
        parent = message_record(replied_to) if replied_to is not None and recordable(replied_to) else None
        return self.recorder.message(message_record(message), replied_to=parent)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if not recordable(message):
            return
        replied = None
        if message.reference is not None and message.reference.message_id is not None:
            replied = await self._fetch(message.channel, message.reference.message_id, message.reference.resolved)
        self.record_message(message, replied_to=replied)

    @commands.Cog.listener()
    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        content = payload.data.get("content")
        if payload.guild_id is None or content is None or (payload.data.get("author") or {}).get("bot"):
            return
        cached = payload.cached_message
        before = message_record(cached) if cached is not None and recordable(cached) else None
        self.recorder.edit(payload.message_id, content, before=before)

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        if payload.guild_id is not None:
            self.recorder.delete([payload.message_id])

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        if payload.guild_id is not None:
            self.recorder.delete(sorted(payload.message_ids))

    # ---- reactions -------------------------------------------------------------------------------
    async def _fetch(self, channel: Any, message_id: int, resolved: Any = None) -> discord.Message | None:
        if isinstance(resolved, discord.Message):
            return resolved
        cached = self.bot._connection._get_message(message_id)  # type: ignore[attr-defined]
        if cached is not None:
            return cached
        if channel is None:
            return None
        try:
            return await channel.fetch_message(message_id)
        except (discord.NotFound, discord.Forbidden, discord.HTTPException):
            return None

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if payload.guild_id is None or payload.member is None or payload.member.bot:
            return
        channel = self.bot.get_channel(payload.channel_id)  # type: ignore[attr-defined]
        message = await self._fetch(channel, payload.message_id)
        if message is None or not recordable(message):
            return
        self.recorder.reaction(ReactionRecord(guild_id=payload.guild_id, message_id=message.id,
                                              member=member_record(payload.member), message=message_record(message)),
                               added=True)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        if payload.guild_id is None:
            return
        member = Member(guild_id=payload.guild_id, id=payload.user_id)
        self.recorder.reaction(ReactionRecord(guild_id=payload.guild_id, message_id=payload.message_id, member=member),
                               added=False)

    # ---- channels, roles and members (visibility snapshots) ---------------------------------------
    def snapshot_channel(self, channel: Any) -> None:
        """Queue a channel's name, kind, parent, NSFW flag and visibility snapshot (a private thread's
        with the members known so far: :class:`bot.visibility.ThreadMembers`)."""
        if isinstance(channel, (*TEXT_CHANNEL_TYPES, discord.CategoryChannel)):
            self.recorder.channel(channel_record(channel, self.threads))

    def snapshot_with_threads(self, channel: Any) -> None:
        """Queue ``channel``'s snapshot and those of its threads (whose snapshots derive from it)."""
        self.snapshot_channel(channel)
        for thread in getattr(channel, "threads", ()):
            self.snapshot_channel(thread)

    async def refresh_thread(self, thread: Any) -> None:
        """Queue a thread's snapshot; for a private thread whose members are unknown, fetch them
        from Discord and queue the snapshot again (on failure it stays unknown: participants only)."""
        self.snapshot_channel(thread)
        unknown = is_private_thread(thread) and self.threads.members(thread.id) is None
        if unknown and not self.threads.fetching(thread.id) and await self.threads.fetch(thread):
            self.snapshot_channel(thread)

    def _queue_member(self, member: Any) -> None:
        if isinstance(member, discord.Member):
            self.recorder.member(member_record(member))

    def snapshot_guild(self, guild: discord.Guild) -> None:
        """Queue snapshots of every channel and member role list of ``guild``."""
        self.recorder.guild(guild.id, guild.name)
        for channel in [*guild.channels, *guild.threads]:
            self.snapshot_channel(channel)
        for member in guild.members:
            self._queue_member(member)

    async def _guild_seen(self, guild: discord.Guild) -> None:
        for thread in guild.threads:  # a reconnect may have missed membership events: fetch again
            self.threads.forget(thread.id)
        self.snapshot_guild(guild)
        for thread in guild.threads:
            if is_private_thread(thread):
                await self.refresh_thread(thread)
        await self.check_stored_threads(guild)

    async def check_stored_threads(self, guild: discord.Guild) -> None:
        """Threads stored without their type (before private threads had their own snapshot) and not
        active now: look each up once (``GET /channels/{id}``) and record it again; one Discord will
        not show (deleted, or hidden from the bot) is recorded as a private thread of unknown members."""
        for record in await recording.threads_to_check(self.app, guild.id):
            if guild.get_thread(record.id) is not None:
                continue  # active: snapshotted just now
            try:
                channel = await guild.fetch_channel(record.id)
            except discord.HTTPException:
                self.recorder.channel(replace(record, kind=PRIVATE_THREAD_KIND, visibility=dict(UNKNOWN_PRIVATE_THREAD)))
                continue
            if isinstance(channel, discord.Thread):
                await self.refresh_thread(channel)

    @commands.Cog.listener()
    async def on_guild_available(self, guild: discord.Guild) -> None:
        await self._guild_seen(guild)

    @commands.Cog.listener()
    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self._guild_seen(guild)

    @commands.Cog.listener()
    async def on_guild_channel_create(self, channel: discord.abc.GuildChannel) -> None:
        self.snapshot_channel(channel)

    @commands.Cog.listener()
    async def on_guild_channel_update(self, before: discord.abc.GuildChannel, after: discord.abc.GuildChannel) -> None:
        self.snapshot_with_threads(after)
        if isinstance(after, discord.CategoryChannel):  # synced children may have changed too
            for child in after.channels:
                self.snapshot_with_threads(child)

    @commands.Cog.listener()
    async def on_thread_create(self, thread: discord.Thread) -> None:
        await self.refresh_thread(thread)

    @commands.Cog.listener()
    async def on_thread_join(self, thread: discord.Thread) -> None:  # the bot added to it, or a thread sync
        await self.refresh_thread(thread)

    @commands.Cog.listener()
    async def on_thread_update(self, before: discord.Thread, after: discord.Thread) -> None:
        await self.refresh_thread(after)

    @commands.Cog.listener()
    async def on_thread_delete(self, thread: discord.Thread) -> None:
        self.threads.forget(thread.id)

    @commands.Cog.listener()
    async def on_thread_remove(self, thread: discord.Thread) -> None:
        """The bot left a thread (or lost sight of it): its membership may change unseen from now on."""
        self.threads.forget(thread.id)
        await self.refresh_thread(thread)

    @commands.Cog.listener()
    async def on_thread_member_join(self, member: discord.ThreadMember) -> None:
        self.threads.changed(member.thread_id, member.id, joined=True)
        await self.refresh_thread(member.thread)

    @commands.Cog.listener()
    async def on_raw_thread_member_remove(self, payload: discord.RawThreadMembersUpdate) -> None:
        """A member left or was removed (raw: sent whether or not discord.py had them cached)."""
        for member_id in payload.data.get("removed_member_ids", []):
            self.threads.changed(payload.thread_id, int(member_id), joined=False)
        guild = self.bot.get_guild(payload.guild_id)  # type: ignore[attr-defined]
        thread = guild.get_thread(payload.thread_id) if guild is not None else None
        if thread is not None:
            await self.refresh_thread(thread)

    @commands.Cog.listener()
    async def on_guild_role_update(self, before: discord.Role, after: discord.Role) -> None:
        if before.permissions != after.permissions:
            for channel in [*after.guild.channels, *after.guild.threads]:
                self.snapshot_channel(channel)

    @commands.Cog.listener()
    async def on_guild_role_create(self, role: discord.Role) -> None:
        for channel in [*role.guild.channels, *role.guild.threads]:
            self.snapshot_channel(channel)

    @commands.Cog.listener()
    async def on_member_join(self, member: discord.Member) -> None:
        self._queue_member(member)

    @commands.Cog.listener()
    async def on_member_update(self, before: discord.Member, after: discord.Member) -> None:
        if before.roles != after.roles or before.display_name != after.display_name:
            self._queue_member(after)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Events(bot))  # type: ignore[arg-type]
