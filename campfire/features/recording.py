"""Recording: what members do in eligible channels becomes items and interactions for the recommender.

Front ends turn their events into plain records (:mod:`campfire.features.types`:
:class:`MessageRecord`, :class:`ReactionRecord`, :class:`ChannelRecord`, :class:`MemberRecord`)
and hand them to one :class:`Recorder`, which queues them and writes them in batches:

- a message → an item (when at least ``recsys.min_message_chars`` long, or when replied to or
  reacted to) and an ``authored`` interaction; a reply → ``replied`` on the replied-to item; a
  reaction → ``reacted`` (removed again when the reaction is); an edit → the item's text updated
  (re-embedded), or a new item when a short message grew long enough; a deletion → the item removed
  with its interactions and vectors.
- every member message (short ones too) → a chat line, written in the same batch as its item; then
  the channel's recent conversations are rebuilt (``recsys.conversation_sync``: a reply arriving
  later joins its conversation, whose item is re-embedded when its text changed substantially). An
  edit or a deletion changes or removes the line and rebuilds its conversation.
- channels (with their visibility snapshot), guild names and members (with their roles) are upserted,
  the latest snapshot of each winning within a batch.

Skipped: channels not eligible under the guild's learn/ignore lists, opted-out members (also
enforced by the store). Every write and EVERY removal goes through ``app.recommender`` (items,
interactions, edits, deletions, reaction removals), so SQL rows, stored vectors and FAISS ids stay
equal. Writes are applied every :data:`FLUSH_INTERVAL_S` seconds or at :data:`FLUSH_AT` queued
operations, by one background task; nothing here blocks the event loop. Message contents are never
logged at INFO. Never imports discord.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from campfire import ops
from campfire.features.guilds import load_settings
from campfire.features.types import ChannelRecord, GuildSettings, Member, MemberRecord, MessageRecord, ReactionRecord
from model.prompts import strip_controls
from recsys.conversation_sync import chat_line_row, message_edited, messages_deleted, sync_conversations
from recsys.conversations import GAP_S
from recsys.store import Item
from recsys.substance import text_length

if TYPE_CHECKING:
    from campfire.app import App

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5  # seconds between two batches of writes
FLUSH_AT = 200  # queued operations that trigger a batch at once
INTERACTION_TEXT_CHARS = 1000  # characters of a message kept on its ``authored`` interaction


async def upsert_member(app: App, member: Member) -> bool:
    """Store ``member``'s display name (and roles, for a :class:`MemberRecord` with ``role_ids``),
    unless they opted out — an opted-out member's name and roles are not kept. Returns whether it
    was stored. The one opt-out-guarded member upsert (recorder, ``/recommend``)."""
    if await app.store.is_opted_out(member.id):
        return False
    roles = member.role_ids if isinstance(member, MemberRecord) else None
    await app.store.upsert_member(member.guild_id, member.id, member.name, role_ids=roles, is_bot=member.is_bot)
    return True


async def threads_to_check(app: App, guild_id: int) -> list[ChannelRecord]:
    """The guild's threads stored without their type (kind ``thread``, no ``"thread"`` key in the
    snapshot: recorded before private threads got their own snapshot), as records. The front end
    looks each up once and records it again, so an old private thread stops having its parent's
    visibility."""
    return [ChannelRecord(guild_id=guild_id, id=c["id"], name=c["name"], kind=c["kind"], parent_id=c["parent_id"],
                          nsfw=c["nsfw"], visibility=c["visibility"])
            for c in await app.store.channels(guild_id) if c["kind"] == "thread" and "thread" not in c["visibility"]]


def message_item(message: MessageRecord, *, text: str | None = None) -> Item:
    """The item for a member's message: its id is the message id, ``parent_item_id`` the message it
    replies to; ``text`` replaces the message's (an edit). NUL and other control characters are
    stripped (newlines and tabs kept: :func:`model.prompts.strip_controls`) before anything is stored."""
    return Item(
        id=message.id, guild_id=message.guild_id, kind="message", text=strip_controls(message.text if text is None else text),
        created_at=message.created_at, channel_id=message.channel_id, author_id=message.author.id,
        url=message.url, nsfw=message.nsfw, parent_item_id=message.reply_to_id,
        meta={"channel": message.channel_name, "author": message.author.name},
    )


def eligible(settings: GuildSettings, channel_ids: Sequence[int]) -> bool:
    """Whether a channel (with its parent, for a thread) is learned from: not on the ignore list, and
    on the learn list when there is one."""
    if set(settings.ignore_channel_ids) & set(channel_ids):
        return False
    return not settings.learn_channel_ids or bool(set(settings.learn_channel_ids) & set(channel_ids))


class _Batch:
    """One batch of queued writes: snapshots (latest wins), items, context items and interactions,
    committed items before the interactions that point at them."""

    def __init__(self, app: App, stats: dict[str, int]) -> None:
        self.app, self.stats = app, stats
        self.guilds: dict[int, GuildSettings] = {}
        self.snapshots: dict[tuple[str, int, int], Callable[[], Awaitable[Any]]] = {}
        self.items: dict[int, Item] = {}
        self.context: dict[int, Item] = {}
        self.rows: list[dict[str, Any]] = []
        self.lines: dict[int, dict[str, Any]] = {}

    async def eligible(self, guild_id: int, channel_ids: Sequence[int]) -> bool:
        if guild_id not in self.guilds:  # one guild read per guild and batch
            self.guilds[guild_id] = await load_settings(self.app, guild_id)
        return eligible(self.guilds[guild_id], channel_ids)

    async def add(self, op: str, arg: Any) -> None:
        if op == "snapshot":
            key, apply = arg
            self.snapshots[key] = apply
            return
        guild_id, channel_ids, payload = arg
        if not await self.eligible(guild_id, channel_ids):
            return
        if op == "item":
            self.items[payload.id] = payload  # the latest version of a message wins
        elif op == "context_item":
            self.context.setdefault(payload.id, payload)  # never overwrites the stored copy
        elif op == "interaction":
            self.rows.append(payload)
        elif op == "line":
            self.lines[payload["message_id"]] = payload
        else:  # pragma: no cover
            raise ValueError(f"unknown recorder op {op!r}")

    async def commit(self) -> None:
        store, rec = self.app.store, self.app.recommender
        channels_first = sorted(self.snapshots.items(), key=lambda kv: kv[0][0] != "channel")
        for _, apply in channels_first:
            await apply()
        fresh = {i: it for i, it in self.context.items() if i not in self.items}
        if fresh:
            stored = set(await store.get_items(list(fresh)))
            self.items.update({i: it for i, it in fresh.items() if i not in stored})
        if self.items:  # a conversation's opener item is recsys.conversation_sync's, never overwritten
            held = await store.get_items(list(self.items))
            for i in [i for i, it in held.items() if it.meta.get("conversation")]:
                del self.items[i]
        items = interactions = 0
        if self.items:
            items = await rec.add_items(list(self.items.values()))
        if self.rows:
            wanted = {r["item_id"] for r in self.rows if r.get("item_id") is not None}
            present = set(await store.get_items(wanted)) if wanted else set()
            # an interaction on an item that was not stored (e.g. its author opted out) is dropped
            keep = [r for r in self.rows if r.get("item_id") is None or r["item_id"] in present]
            interactions = len(await rec.record(keep))
        if self.lines:
            await self._conversations()
        self.stats["items"] += items
        self.stats["interactions"] += interactions
        if items or interactions:
            ops.count_import(kind="live", items=items, interactions=interactions)
        self.snapshots.clear()
        self.items.clear()
        self.context.clear()
        self.rows.clear()
        self.lines.clear()

    async def _conversations(self) -> None:
        """Store the batch's chat lines, then rebuild each channel's recent conversations (from its
        earliest new line minus the builder's gap)."""
        await self.app.store.add_chat_lines(list(self.lines.values()))
        since: dict[tuple[int, int], float] = {}
        for ln in self.lines.values():
            key = (ln["guild_id"], ln["channel_id"])
            since[key] = min(ln["created_at"], since.get(key, ln["created_at"]))
        for (gid, cid), at in sorted(since.items()):
            await sync_conversations(self.app.recommender, gid, cid, since=at - GAP_S)


class Recorder:
    """The event queue. ``start()`` runs the writer task, ``await stop()`` ends it and writes what is
    queued, ``await flush()`` writes everything queued now and waits until it is embedded. The
    record methods only queue (they never block); ``stats`` counts ``items``, ``interactions``,
    ``edits``, ``deletes``, ``reactions_removed`` and failed batches (``errors``)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._ops: list[tuple[str, Any]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.stats = {"items": 0, "interactions": 0, "edits": 0, "deletes": 0, "reactions_removed": 0, "errors": 0}

    # ---- lifetime ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer task on the running loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._writer(), name="campfire-recorder")

    async def stop(self) -> None:
        """Stop the writer task and write what is still queued."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self._apply()

    async def flush(self) -> None:
        """Write every queued operation now and wait until the recommender has embedded them."""
        await self._apply()
        await self.app.recommender.flush()

    # ---- queue ---------------------------------------------------------------------------------
    def _queue(self, op: str, arg: Any) -> None:
        self._ops.append((op, arg))
        if len(self._ops) >= FLUSH_AT:
            self._wake.set()

    def _call(self, fn: Callable[[], Awaitable[Any]]) -> None:
        """Queue a barrier: ``fn`` runs after everything queued before it is written."""
        self._queue("call", fn)

    async def _writer(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=FLUSH_INTERVAL_S)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self._apply()

    async def _apply(self) -> None:
        """Write the queued operations in order; a failed batch is logged and counted, not retried."""
        async with self._lock:
            ops, self._ops = self._ops, []
            if not ops:
                return
            try:
                batch = _Batch(self.app, self.stats)
                for op, arg in ops:
                    if op == "call":  # edits, deletions, removals: in order after what came before
                        await batch.commit()
                        await arg()
                    else:
                        await batch.add(op, arg)
                await batch.commit()
            except Exception:  # keep recording
                self.stats["errors"] += 1
                log.exception("recording a batch of %d operation(s) failed", len(ops))

    # ---- what is recorded ------------------------------------------------------------------------
    def message(self, message: MessageRecord, *, replied_to: MessageRecord | None = None) -> bool:
        """Queue a member's message, and the reply it makes to ``replied_to`` (the message it replies
        to, when recordable); False (nothing queued) for a message without text."""
        if not message.text.strip():
            return False
        gid, chans = message.guild_id, message.channel_ids
        is_item = text_length(message.text) >= self.app.settings.recsys.min_message_chars  # CJK weighs more
        if isinstance(message.author, MemberRecord):
            self.member(message.author)
        if replied_to is not None:
            self._queue("context_item", (gid, chans, message_item(replied_to)))
        item = message_item(message)
        if is_item:
            self._queue("item", (gid, chans, item))
        if not message.author.is_bot:
            self._queue("line", (gid, chans, chat_line_row(message.id, gid, message.channel_id, message.author.id,
                                                           message.created_at, item.text, message.reply_to_id)))
        self._queue("interaction", (gid, chans, {
            "guild_id": gid, "member_id": message.author.id, "kind": "authored",
            "item_id": message.id if is_item else None, "text": message.text[:INTERACTION_TEXT_CHARS],
            "created_at": message.created_at, "source_id": message.id,
        }))
        if message.reply_to_id is not None and replied_to is not None and replied_to.author.id != message.author.id:
            self._queue("interaction", (gid, chans, {
                "guild_id": gid, "member_id": message.author.id, "kind": "replied", "item_id": replied_to.id,
                "created_at": message.created_at, "source_id": message.id,
            }))
        return True

    def edit(self, message_id: int, text: str, *, before: MessageRecord | None = None) -> None:
        """Queue an edit of message ``message_id`` to ``text``. ``before`` is the message as it was
        (when the front end still has it): a message that grows from under ``min_message_chars`` to at
        least that becomes an item like a new one; otherwise a stored item gets the new text (and
        is re-embedded). Its chat line gets the new text and its conversation is rebuilt."""
        min_chars = self.app.settings.recsys.min_message_chars
        text = strip_controls(text)
        grows = before is not None and text_length(text) >= min_chars and text_length(before.text) < min_chars
        if grows:
            self._queue("item", (before.guild_id, before.channel_ids, message_item(before, text=text)))
        rec = self.app.recommender

        async def apply() -> None:  # the chat line (and its conversation), and the item unless just made
            if await message_edited(rec, message_id, text, item=not grows):  # False: no such item
                self.stats["edits"] += 1

        self._call(apply)

    def delete(self, message_ids: Sequence[int]) -> None:
        """Queue the deletion of these messages' items, with their interactions and vectors, and of
        their chat lines (their conversations are rebuilt)."""
        ids, rec = list(message_ids), self.app.recommender

        async def apply() -> None:
            self.stats["deletes"] += await messages_deleted(rec, ids)

        self._call(apply)

    def reaction(self, reaction: ReactionRecord, added: bool) -> None:
        """Queue a reaction. Added: the message becomes an item if it is not one (never overwriting
        the stored copy) and, unless members react to their own message, a ``reacted`` interaction
        is recorded (``reaction.message`` is required). Removed: the member's ``reacted``
        interactions on the message go, rows and FAISS ids together (``Recommender.remove_interactions``)."""
        gid, member = reaction.guild_id, reaction.member
        if not added:
            rec, mid = self.app.recommender, reaction.message_id

            async def apply() -> None:
                self.stats["reactions_removed"] += await rec.remove_interactions(gid, member.id, item_id=mid,
                                                                                 kinds=["reacted"])

            self._call(apply)
            return
        message = reaction.message
        if message is None:
            raise ValueError("an added reaction needs the message it was added to")
        if isinstance(member, MemberRecord):
            self.member(member)
        self._queue("context_item", (gid, message.channel_ids, message_item(message)))
        if message.author.id != member.id:
            self._queue("interaction", (gid, message.channel_ids, {
                "guild_id": gid, "member_id": member.id, "kind": "reacted", "item_id": message.id,
                "source_id": message.id,
            }))

    def member(self, member: Member) -> None:
        """Queue a member's name (and roles) for :func:`upsert_member`; the latest snapshot wins."""
        app = self.app
        self._queue("snapshot", (("member", member.guild_id, member.id), lambda: upsert_member(app, member)))

    def channel(self, channel: ChannelRecord) -> None:
        """Queue a channel's name, kind, parent, NSFW flag and visibility snapshot (the latest wins)."""
        store = self.app.store

        def apply() -> Awaitable[None]:
            return store.upsert_channel(channel.id, channel.guild_id, channel.name, channel.kind,
                                        parent_id=channel.parent_id, nsfw=channel.nsfw, visibility=channel.visibility)

        self._queue("snapshot", (("channel", channel.guild_id, channel.id), apply))

    def guild(self, guild_id: int, name: str) -> None:
        """Queue a guild's name."""
        store = self.app.store
        self._queue("snapshot", (("channel", guild_id, -guild_id), lambda: store.upsert_guild(guild_id, name)))
