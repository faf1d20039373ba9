"""Recording, Discord side: discord.py events become plain records for
:class:`campfire.features.recording.Recorder`, which queues, filters (learn/ignore lists, opt-outs)
and writes them in batches through the recommender (see that module for what is recorded).

This cog decides only what Discord makes of an event: which messages count (members' own text
messages in guild text channels — not bots, webhooks, system messages or DMs), fetching a message
that was replied or reacted to, the channel permission snapshots (``visibility``) and member roles,
refreshed when guilds become available and when channels, roles or members change. Message
contents are never logged at INFO.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from campfire.features.recording import Recorder
from campfire.features.types import ChannelRecord, Member, MemberRecord, MessageRecord, ReactionRecord

if TYPE_CHECKING:
    from bot.app import CampfireBotMixin

log = logging.getLogger(__name__)

TEXT_CHANNEL_TYPES = (discord.TextChannel, discord.Thread, discord.VoiceChannel, discord.StageChannel, discord.ForumChannel)
RECORDED_TYPES = (discord.MessageType.default, discord.MessageType.reply, discord.MessageType.thread_starter_message)


def visibility_snapshot(channel: discord.abc.GuildChannel) -> dict[str, Any]:
    """Who may view ``channel``: ``{"public": bool, "roles": [role ids], "members": [member ids
    allowed by an overwrite], "denied_members": [member ids denied by one]}``, computed with
    discord.py's ``permissions_for`` (overwrites and administrator included). A thread has its
    parent's snapshot (members of a private thread are not tracked)."""
    if isinstance(channel, discord.Thread) and channel.parent is not None:
        channel = channel.parent  # type: ignore[assignment]
    guild = channel.guild
    public = channel.permissions_for(guild.default_role).view_channel
    roles = sorted(r.id for r in guild.roles if channel.permissions_for(r).view_channel)
    members, denied = [], []
    for target, overwrite in channel.overwrites.items():
        is_member = isinstance(target, (discord.Member, discord.User)) or (
            isinstance(target, discord.Object) and target.type in (discord.Member, discord.User)
        )
        if not is_member:
            continue
        allow, deny = overwrite.pair()
        if allow.view_channel:
            members.append(target.id)
        elif deny.view_channel:
            denied.append(target.id)
    return {"public": bool(public), "roles": roles, "members": sorted(members), "denied_members": sorted(denied)}


def channel_kind(channel: Any) -> str:
    """The store's ``kind`` for a discord.py channel: ``thread``, ``forum``, ``voice``, ``category`` or ``text``."""
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


def channel_record(channel: Any) -> ChannelRecord:
    """A channel's name, kind, parent, NSFW flag and visibility snapshot."""
    return ChannelRecord(guild_id=channel.guild.id, id=channel.id, name=getattr(channel, "name", ""),
                         kind=channel_kind(channel), parent_id=getattr(channel, "parent_id", None),
                         nsfw=bool(getattr(channel, "nsfw", False)), visibility=visibility_snapshot(channel))


class Events(commands.Cog):
    """The recorder's adapter. ``await cog.flush()`` writes everything queued and waits for
    embedding (tests, shutdown); ``cog.stats`` counts what was written (``Recorder.stats``)."""

    def __init__(self, bot: CampfireBotMixin) -> None:
        self.bot = bot
        self.app = bot.app
        self.recorder = Recorder(bot.app)

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
        """Queue a channel's name, kind, parent, NSFW flag and visibility snapshot."""
        if isinstance(channel, (*TEXT_CHANNEL_TYPES, discord.CategoryChannel)):
            self.recorder.channel(channel_record(channel))

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

    @commands.Cog.listener()
    async def on_guild_available(self, guild: discord.Guild) -> None:
        self.snapshot_guild(guild)

    @commands.Cog.listener()
    async def on_guild_join(self, guild: discord.Guild) -> None:
        self.snapshot_guild(guild)

    @commands.Cog.listener()
    async def on_guild_channel_create(self, channel: discord.abc.GuildChannel) -> None:
        self.snapshot_channel(channel)

    @commands.Cog.listener()
    async def on_guild_channel_update(self, before: discord.abc.GuildChannel, after: discord.abc.GuildChannel) -> None:
        self.snapshot_channel(after)
        if isinstance(after, discord.CategoryChannel):  # synced children may have changed too
            for child in after.channels:
                self.snapshot_channel(child)

    @commands.Cog.listener()
    async def on_thread_create(self, thread: discord.Thread) -> None:
        self.snapshot_channel(thread)

    @commands.Cog.listener()
    async def on_guild_role_update(self, before: discord.Role, after: discord.Role) -> None:
        if before.permissions != after.permissions:
            for channel in after.guild.channels:
                self.snapshot_channel(channel)

    @commands.Cog.listener()
    async def on_guild_role_create(self, role: discord.Role) -> None:
        for channel in role.guild.channels:
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
