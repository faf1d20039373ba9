"""Recording: what members do in eligible channels becomes items and interactions for the recommender.

- Messages → an item (when at least ``recsys.min_message_chars`` long, or when replied to or reacted
  to) and an ``authored`` interaction; replies → ``replied`` on the replied-to item; reactions →
  ``reacted`` (removed again when the reaction is); edits → item text updated (re-embedded);
  deletions → item removed (with its interactions and vectors).
- Channel permission snapshots (``visibility`` for the filter that keeps a member's picks inside
  channels they can see) and member roles are refreshed when guilds become available and when
  channels, roles or members change.

Skipped: bots, DMs, channels not eligible under the guild's learn/ignore lists, opted-out members
(also enforced by the store). Writes are queued and applied in batches by one background task
(every ``FLUSH_INTERVAL_S`` seconds or ``FLUSH_AT`` operations), through the ``Recommender``
facade, which stores rows (aiosqlite's thread) and embeds them in a worker thread — nothing here
blocks the event loop. Message contents are never logged at INFO.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from recsys.store import Item

if TYPE_CHECKING:
    from bot.app import CampfireBotMixin

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5  # seconds between two batches of writes
FLUSH_AT = 200  # operations that trigger a batch at once
TEXT_CHANNEL_TYPES = (discord.TextChannel, discord.Thread, discord.VoiceChannel, discord.StageChannel, discord.ForumChannel)


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


class Events(commands.Cog):
    """The recorder. ``await cog.flush()`` applies everything queued and waits for embedding (tests,
    shutdown). ``cog.stats`` counts what was written."""

    def __init__(self, bot: CampfireBotMixin) -> None:
        self.bot = bot
        self.services = bot.services
        self.settings = bot.services.settings
        self._ops: list[tuple[str, Any]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.stats = {"items": 0, "interactions": 0, "edits": 0, "deletes": 0, "errors": 0}

    async def cog_load(self) -> None:
        self._task = asyncio.create_task(self._writer(), name="campfire-recorder")

    async def cog_unload(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self._apply()

    # ---- queue ---------------------------------------------------------------------------------
    def _queue(self, op: str, arg: Any) -> None:
        self._ops.append((op, arg))
        if len(self._ops) >= FLUSH_AT:
            self._wake.set()

    async def _writer(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=FLUSH_INTERVAL_S)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self._apply()

    async def flush(self) -> None:
        """Apply every queued write now and wait until the recommender has embedded them."""
        await self._apply()
        await self.services.recommender.flush()

    async def _apply(self) -> None:
        """Write the queued operations in order: runs of items and interactions in batches, items
        before the interactions that point at them."""
        async with self._lock:
            ops, self._ops = self._ops, []
            if not ops:
                return
            try:
                await self._apply_ops(ops)
            except Exception:  # keep recording; the batch is logged, not retried
                self.stats["errors"] += 1
                log.exception("recording a batch of %d operation(s) failed", len(ops))

    async def _apply_ops(self, ops: list[tuple[str, Any]]) -> None:
        """Ops: ``member`` / ``channel`` (snapshots, latest wins), ``item`` (a member's own message),
        ``context_item`` (a message seen because it was replied or reacted to: inserted when missing,
        never overwriting the stored copy), ``interaction``, and ``call`` (an edit, deletion or
        reaction removal: a barrier, applied in order after everything queued before it)."""
        rec = self.services.recommender
        store = self.services.store
        guilds: dict[int, dict[str, Any] | None] = {}
        members: dict[tuple[int, int], Callable[[], Awaitable[Any]]] = {}
        channels: dict[int, Callable[[], Awaitable[Any]]] = {}
        items: dict[int, Item] = {}
        context: dict[int, Item] = {}
        rows: list[dict[str, Any]] = []

        async def eligible(guild_id: int, channel_ids: tuple[int, ...]) -> bool:
            if guild_id not in guilds:
                guilds[guild_id] = await store.get_guild(guild_id)
            guild = guilds[guild_id]
            if guild is None:
                return True
            ignore, learn = set(guild["ignore_channel_ids"]), set(guild["learn_channel_ids"])
            if ignore & set(channel_ids):
                return False
            return not learn or bool(learn & set(channel_ids))

        async def commit() -> None:
            for apply in [*channels.values(), *members.values()]:
                await apply()
            fresh = {i: it for i, it in context.items() if i not in items}
            if fresh:
                stored = set(await store.get_items(list(fresh)))
                items.update({i: it for i, it in fresh.items() if i not in stored})
            if items:
                self.stats["items"] += await rec.add_items(list(items.values()))
            if rows:
                wanted = {r["item_id"] for r in rows if r.get("item_id") is not None}
                present = set(await store.get_items(wanted)) if wanted else set()
                # an interaction on an item that was not stored (e.g. its author opted out) is dropped
                keep = [r for r in rows if r.get("item_id") is None or r["item_id"] in present]
                self.stats["interactions"] += len(await rec.record(keep))
            for batch in (channels, members, items, context):
                batch.clear()
            rows.clear()

        for op, arg in ops:
            if op == "member":
                key, apply = arg
                members[key] = apply
            elif op == "channel":
                key, apply = arg
                channels[key] = apply
            elif op in ("item", "context_item", "interaction"):
                guild_id, channel_ids, payload = arg
                if not await eligible(guild_id, channel_ids):
                    continue
                if op == "item":
                    items[payload.id] = payload  # the latest version of a message wins
                elif op == "context_item":
                    context.setdefault(payload.id, payload)
                else:
                    rows.append(payload)
            elif op == "call":
                await commit()
                await arg()
            else:  # pragma: no cover
                raise ValueError(f"unknown recorder op {op!r}")
        await commit()

    def _call(self, fn: Callable[[], Awaitable[Any]]) -> None:
        self._queue("call", fn)

    # ---- what counts ---------------------------------------------------------------------------
    @staticmethod
    def _channel_ids(channel: Any) -> tuple[int, ...]:
        parent = getattr(channel, "parent_id", None)
        return (channel.id, parent) if parent else (channel.id,)

    def _recordable(self, message: discord.Message) -> bool:
        return (
            message.guild is not None
            and not message.author.bot
            and message.webhook_id is None
            and message.type in (discord.MessageType.default, discord.MessageType.reply, discord.MessageType.thread_starter_message)
            and isinstance(message.channel, TEXT_CHANNEL_TYPES)
        )

    def _item(self, message: discord.Message, *, text: str | None = None) -> Item:
        """The item for a member's message (its id is the message id; ``parent_item_id`` the message
        it replies to)."""
        assert message.guild is not None
        channel = message.channel
        parent_id = message.reference.message_id if message.reference is not None else None
        return Item(
            id=message.id,
            guild_id=message.guild.id,
            kind="message",
            text=message.content if text is None else text,
            created_at=message.created_at.timestamp(),
            channel_id=channel.id,
            author_id=message.author.id,
            url=message.jump_url,
            nsfw=bool(getattr(channel, "is_nsfw", lambda: False)()),
            parent_item_id=parent_id,
            meta={"channel": getattr(channel, "name", ""), "author": message.author.display_name},
        )

    def record_message(self, message: discord.Message, *, replied_to: discord.Message | None = None) -> bool:
        """Queue a member's message (and the reply it makes) for recording; False when skipped."""
        if not self._recordable(message) or not message.content.strip():
            return False
        assert message.guild is not None
        gid, chans = message.guild.id, self._channel_ids(message.channel)
        parent = replied_to if replied_to is not None and self._recordable(replied_to) else None
        ref_id = message.reference.message_id if message.reference is not None else None
        is_item = len(message.content) >= self.settings.recsys.min_message_chars
        self._queue_member(message.author)
        if parent is not None:
            self._queue("context_item", (gid, chans, self._item(parent)))
        if is_item:
            self._queue("item", (gid, chans, self._item(message)))
        self._queue("interaction", (gid, chans, {
            "guild_id": gid, "member_id": message.author.id, "kind": "authored",
            "item_id": message.id if is_item else None, "text": message.content[:1000],
            "created_at": message.created_at.timestamp(), "source_id": message.id,
        }))
        if ref_id is not None and parent is not None and parent.author.id != message.author.id:
            self._queue("interaction", (gid, chans, {
                "guild_id": gid, "member_id": message.author.id, "kind": "replied", "item_id": parent.id,
                "created_at": message.created_at.timestamp(), "source_id": message.id,
            }))
        return True

    def _queue_member(self, member: Any) -> None:
        if not isinstance(member, discord.Member):
            return
        gid, uid, name = member.guild.id, member.id, member.display_name
        roles = [r.id for r in member.roles if r.id != member.guild.id]
        is_bot = member.bot
        store = self.services.store

        async def apply() -> None:
            if not await store.is_opted_out(uid):  # an opted-out member's name and roles are not kept
                await store.upsert_member(gid, uid, name, role_ids=roles, is_bot=is_bot)

        self._queue("member", ((gid, uid), apply))

    # ---- messages --------------------------------------------------------------------------------
    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if not self._recordable(message):
            return
        replied = None
        if message.reference is not None and message.reference.message_id is not None:
            replied = await self._fetch(message.channel, message.reference.message_id, message.reference.resolved)
        self.record_message(message, replied_to=replied)

    @commands.Cog.listener()
    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        if payload.guild_id is None:
            return
        content = payload.data.get("content")
        author = payload.data.get("author") or {}
        if content is None or author.get("bot"):
            return
        message_id = payload.message_id
        rec = self.services.recommender
        store = self.services.store
        min_chars = self.settings.recsys.min_message_chars
        message = payload.cached_message

        async def apply() -> None:
            if await store.get_item(message_id) is not None:
                await rec.update_item_text(message_id, content)
                self.stats["edits"] += 1

        if message is not None and self._recordable(message) and len(content) >= min_chars and len(message.content) < min_chars:
            # grew long enough to be an item: recorded like a new one (eligibility checked as usual)
            self._queue("item", (payload.guild_id, self._channel_ids(message.channel), self._item(message, text=content)))
        else:
            self._call(apply)

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        if payload.guild_id is not None:
            self._queue_delete([payload.message_id])

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        if payload.guild_id is not None:
            self._queue_delete(sorted(payload.message_ids))

    def _queue_delete(self, ids: list[int]) -> None:
        rec = self.services.recommender

        async def apply() -> None:
            for message_id in ids:
                if await rec.remove_item(message_id):
                    self.stats["deletes"] += 1

        self._call(apply)

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
        if message is None or not self._recordable(message):
            return
        gid, chans = payload.guild_id, self._channel_ids(message.channel)
        self._queue_member(payload.member)
        self._queue("context_item", (gid, chans, self._item(message)))
        if message.author.id != payload.user_id:
            self._queue("interaction", (gid, chans, {
                "guild_id": gid, "member_id": payload.user_id, "kind": "reacted", "item_id": message.id,
                "source_id": message.id,
            }))

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        if payload.guild_id is None:
            return
        store = self.services.store
        gid, uid, mid = payload.guild_id, payload.user_id, payload.message_id
        self._call(lambda: store.remove_interactions(gid, uid, item_id=mid, kinds=["reacted"]))

    # ---- channels, roles and members (visibility snapshots) ---------------------------------------
    def snapshot_channel(self, channel: Any) -> None:
        """Queue a channel's name, kind, parent, NSFW flag and visibility snapshot."""
        if not isinstance(channel, (*TEXT_CHANNEL_TYPES, discord.CategoryChannel)):
            return
        store = self.services.store
        vis = visibility_snapshot(channel)
        args = (channel.id, channel.guild.id, getattr(channel, "name", ""), channel_kind(channel))
        extra = {"parent_id": getattr(channel, "parent_id", None), "nsfw": bool(getattr(channel, "nsfw", False)),
                 "visibility": vis}
        self._queue("channel", (channel.id, lambda: store.upsert_channel(*args, **extra)))

    def snapshot_guild(self, guild: discord.Guild) -> None:
        """Queue snapshots of every channel and member role list of ``guild``."""
        store = self.services.store
        gid, name = guild.id, guild.name
        self._queue("channel", (-gid, lambda: store.upsert_guild(gid, name)))
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
