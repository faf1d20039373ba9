"""Keeping a guild's conversation items equal to what its chat lines say (issue 11).

:func:`sync_conversations` reads a channel's stored chat lines (``Store.chat_lines``), groups them
with :func:`recsys.conversations.build_conversations` and writes the result through the
:class:`~recsys.service.Recommender` facade, so rows = stored vectors = FAISS ids on every path:

- a **conversation item** per conversation: an ``items`` row of kind ``message`` whose id is its
  opener's message id (a Discord id: stable while the opener stays, never colliding), its own
  ``conversation_id``, ``title`` / ``text`` from the builder, ``url`` the opener's jump link and
  ``meta = {"conversation": true, "participants", "size", "last_at", "channel", "opener"}``. An opener
  that was a message item is upgraded in place (its item meta kept under ``meta["opener"]``); the
  text is re-embedded when it changed substantially (:func:`substantial`) or when ``force`` (edits,
  deletions, forgets: a removed line's words must leave the text and the vector);
- a **monologue** (one member's lines linked by continuation, nobody else: a question typed over
  several lines) is one item too, ``meta["monologue"] = true`` and one participant, so its lines are
  never several picks;
- **bots** (flagged, or answering ``!`` triggers: :func:`recsys.conversations.bot_authors`, then
  flagged) are never participants: a trigger and its factoid answer are no conversation;
- a Discord **thread** is one conversation under the thread's id (an imported thread item keeps its
  title and text, and gains its participants and size; a thread seen only live gets an item built
  from its lines);
- ``items.conversation_id`` of message items inside a conversation, ``chat_lines.conversation_id``
  and ``item_members`` (participants and addressed members; for a lone message item its author and
  whom it addresses), in one transaction with the item upserts;
- a conversation that no longer exists is **dissolved**: its item turns back into the opener's plain
  message item when the opener was one or is long enough to be one, else it is removed.

Called by the importer after each export, by the live recorder after each batch (lines since the new
ones minus :data:`~recsys.conversations.GAP_S`, widened to whole conversations), after an edit, a
deletion or a forget, and once for databases from before schema 4 (:mod:`recsys.conversation_backfill`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from recsys.chat_bots import bot_items, guild_bots
from recsys.conversations import (
    GAP_S,
    ChatLine,
    Conversation,
    addressed_ids,
    build_conversations,
)
from recsys.conversations_text import mentioned_ids, names_index
from recsys.store import Item
from recsys.substance import text_length

if TYPE_CHECKING:
    from recsys.service import Recommender

__all__ = ["SyncReport", "chat_line_row", "message_edited", "messages_deleted", "resync", "substantial",
           "sync_conversations", "sync_lock"]

log = logging.getLogger(__name__)

OFF_LOOP_LINES = 300  # lines above which the builder runs in a worker thread (~1 ms per 100 lines here)
WIDEN_STEPS = 4  # times a window is widened to take in whole conversations before it is cut
CHANGE = 0.2  # share of words added or dropped (Jaccard distance) that makes a text change substantial
_MENTION = re.compile(r"<@!?(\d+)>")
_holding: contextvars.ContextVar[Any] = contextvars.ContextVar("campfire_conversation_sync", default=None)


@dataclass
class SyncReport:
    """What one :func:`sync_conversations` call did: ``channels`` synced, ``lines`` read,
    ``conversations`` built, conversation items ``created`` (new ids), ``updated`` (rows rewritten:
    text, title or meta), ``reembedded`` (of those, text changed), ``dissolved`` (turned back into a
    message item or removed), ``seconds`` wall time."""

    channels: int = 0
    lines: int = 0
    conversations: int = 0
    created: int = 0
    updated: int = 0
    reembedded: int = 0
    dissolved: int = 0
    seconds: float = 0.0


def chat_line_row(message_id: int, guild_id: int, channel_id: int, author_id: int, created_at: float, text: str,
                  reply_to: int | None = None, mentions: Iterable[int] = ()) -> dict[str, Any]:
    """A ``Store.add_chat_lines`` row; raw ``<@id>`` mentions in ``text`` are added to ``mentions``."""
    found = [int(m) for m in _MENTION.findall(text or "")]
    return {"message_id": message_id, "guild_id": guild_id, "channel_id": channel_id, "author_id": author_id,
            "created_at": created_at, "text": text, "reply_to": reply_to,
            "mentions": sorted({*map(int, mentions), *found})}


@asynccontextmanager
async def sync_lock(recommender: Recommender) -> AsyncIterator[None]:
    """Hold the recommender's conversation lock: syncs run one at a time, and a forget holds it from
    deleting a member's lines to rebuilding their conversations, so a sync that read their lines
    before cannot write their words back after. Re-entrant within one task (a ContextVar)."""
    if _holding.get() is recommender:
        yield
        return
    locks = recommender.__dict__.setdefault("_conversation_locks", {})  # one per event loop, as its write lock
    lock = locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())
    async with lock:
        token = _holding.set(recommender)
        try:
            yield
        finally:
            _holding.reset(token)


def substantial(old: str, new: str) -> bool:
    """Whether ``new`` differs enough from ``old`` to re-embed: more than :data:`CHANGE` of the words
    of either added or dropped (Jaccard distance of their word sets), or the length changed by more
    than a fifth."""
    if old == new:
        return False
    a, b = set(old.lower().split()), set(new.lower().split())
    if not a or not b:
        return True
    return 1 - len(a & b) / len(a | b) > CHANGE or abs(len(new) - len(old)) > 0.2 * max(len(old), 1)


async def sync_conversations(recommender: Recommender, guild_id: int, channel_id: int | None = None, *,
                             since: float | None = None, force: bool = False) -> SyncReport:
    """Rebuild the conversations of one channel (or of every channel of the guild with chat lines)
    from the stored chat lines created at or after ``since`` (UNIX s; None = all), widened to whole
    conversations, and write them (module docstring). ``force``: rewrite every conversation text that
    changed at all (after an edit, deletion or forget), not only substantial changes.
    Returns a :class:`SyncReport`. Raises what the store raises (nothing is half-written: the links
    and item rows of a channel land in one transaction). Syncs run one at a time (:func:`sync_lock`)."""
    t0 = asyncio.get_running_loop().time()
    store = recommender.store
    report = SyncReport()
    channels = [channel_id] if channel_id is not None else await store.chat_channels(guild_id)
    names = await store.display_names(guild_id)
    async with sync_lock(recommender):
        for cid in channels:
            await _sync_channel(recommender, guild_id, cid, names, since, force, report)
            report.channels += 1
    report.seconds = asyncio.get_running_loop().time() - t0
    return report


async def _window(store, guild_id: int, channel_id: int, since: float | None) -> list[dict[str, Any]]:
    """The channel's lines from ``since``, widened until it starts with whole conversations; lines of
    conversations that still begin before it after :data:`WIDEN_STEPS` widenings are left out (kept
    as they are)."""
    lines = await store.chat_lines(guild_id, channel_id, since=since)
    if since is None:
        return lines
    starts: dict[int, float] = {}
    for _ in range(WIDEN_STEPS):
        starts = await store.conversation_starts({ln["conversation_id"] for ln in lines} - {None})
        earliest = min(starts.values(), default=since)
        if earliest >= since:
            return lines
        since = earliest
        lines = await store.chat_lines(guild_id, channel_id, since=since)
    starts = await store.conversation_starts({ln["conversation_id"] for ln in lines} - {None})
    cut = {c for c, t in starts.items() if t < since}
    return [ln for ln in lines if ln["conversation_id"] not in cut]


def _chat(lines: Sequence[Mapping[str, Any]]) -> list[ChatLine]:
    return [ChatLine(id=ln["message_id"], channel_id=ln["channel_id"], author_id=ln["author_id"],
                     created_at=ln["created_at"], text=ln["text"], reply_to=ln["reply_to"],
                     mention_ids=tuple(ln["mentions"])) for ln in lines]


async def _sync_channel(recommender: Recommender, guild_id: int, channel_id: int, names: Mapping[int, str],
                        since: float | None, force: bool, report: SyncReport) -> None:
    store = recommender.store
    channel = await store.get_channel(channel_id) or {}
    thread = str(channel.get("kind") or "").endswith("thread")
    lines = await _window(store, guild_id, channel_id, None if thread else since)
    if not lines:
        return
    chat = _chat(lines)
    bots, min_chars = await guild_bots(store, guild_id, chat), recommender.settings.recsys.min_message_chars
    build = functools.partial(build_conversations, chat, names, thread=thread, bots=bots, monologues=True,
                              min_chars=min_chars)
    convs = await asyncio.to_thread(build) if len(chat) > OFF_LOOP_LINES else build()
    if thread and convs and len(convs[0].participants) < 2 and await store.get_item(channel_id) is None:
        convs = []  # a thread of one member is no conversation (until someone answers)
    report.lines += len(lines)
    plan = _Plan(guild_id, channel_id, channel, names, lines, convs, thread)
    existing = await store.get_items(plan.ids_to_read())
    if not thread:  # a thread started from the opener owns that id (Discord reuses it): no conversation item
        plan.drop({i for i in plan.convs if i in existing and existing[i].meta.get("thread")})
    report.conversations += len(plan.convs)
    items, dissolve = plan.items(existing, force, min_chars)
    dissolve += bot_items(plan.lines, existing, bots, set(plan.convs))  # a bot's line is no item of its own
    changed = [it for it in items if _differs(existing.get(it.id), it)]
    async with store.transaction():
        report.created += await recommender.add_items(changed)
        present = set(existing) | await store.existing_ids("item", [it.id for it in changed])
        await store.write_conversation_links(plan.line_links(), plan.item_links(present, dissolve),
                                             plan.members(present))
    report.updated += sum(1 for it in changed if it.id in existing)
    report.reembedded += sum(1 for it in changed if it.id in existing and _text(existing[it.id]) != _text(it))
    for item_id in dissolve:
        await recommender.remove_item(item_id)
    report.dissolved += len(dissolve) + sum(1 for it in changed if it.id in plan.dissolved)


def _text(item: Item) -> tuple[str, str]:
    return item.title, item.text


def _differs(old: Item | None, new: Item) -> bool:
    if old is None:
        return True
    return (old.title, old.text, old.meta, old.url, old.author_id, old.created_at) != (
        new.title, new.text, new.meta, new.url, new.author_id, new.created_at)


class _Plan:
    """What one channel's conversations mean for its rows: conversation items, dissolved ones, and the
    links of lines, items and members."""

    def __init__(self, guild_id: int, channel_id: int, channel: Mapping[str, Any], names: Mapping[int, str],
                 lines: Sequence[Mapping[str, Any]], convs: Sequence[Conversation], thread: bool):
        self.guild_id, self.channel_id, self.channel, self.thread = guild_id, channel_id, channel, thread
        self.names_lower = names_index(names)
        self.lines = {ln["message_id"]: ln for ln in lines}
        self.convs = {(channel_id if thread else c.id): c for c in convs}
        self.line_conv: dict[int, int | None] = {m: None for m in self.lines}
        for cid, c in self.convs.items():
            for m in c.message_ids:
                self.line_conv[m] = cid
        old = {ln["conversation_id"] for ln in lines} - {None}
        self.dissolved = old - set(self.convs)
        self.kept: dict[int, Item] = {}  # conversation and restored items as written

    def drop(self, ids: set[int]) -> None:
        """Leave conversations ``ids`` out: their lines stay single."""
        for cid in ids:
            for m in self.convs.pop(cid).message_ids:
                self.line_conv[m] = None

    def ids_to_read(self) -> list[int]:
        return sorted(set(self.lines) | set(self.convs) | self.dissolved)

    def items(self, existing: Mapping[int, Item], force: bool, min_chars: int) -> tuple[list[Item], list[int]]:
        """(items to upsert: conversation items and restored openers, ids of items to remove)."""
        out: list[Item] = []
        remove: list[int] = []
        for cid, c in self.convs.items():
            item = self._thread_item(c, existing.get(cid)) if self.thread else self._item(c, existing.get(cid), force)
            if item is not None:
                out.append(item)
        for did in sorted(self.dissolved):
            old = existing.get(did)
            if old is None or not old.meta.get("conversation") or did in self.convs:
                continue
            restored = self._restore(old, min_chars)
            if restored is None:
                remove.append(did)
            else:
                out.append(restored)
        self.kept = {it.id: it for it in out}
        return out, remove

    def _meta(self, c: Conversation, old: Item | None = None) -> dict[str, Any]:
        name = self.channel.get("name") or (old.meta.get("channel") if old is not None else None) or ""
        meta = {"participants": len(c.participants), "size": len(c.message_ids), "last_at": c.last_at, "channel": name}
        if len(c.participants) < 2 and not self.thread:
            meta["monologue"] = True
        return meta

    def _item(self, c: Conversation, old: Item | None, force: bool) -> Item:
        opener = self.lines[c.id]
        if old is not None and old.meta.get("conversation"):
            was = old.meta.get("opener", {"item": None})
        else:
            was = {"item": old.meta if old is not None else None}
        meta = {**({"source": old.meta["source"]} if old is not None and "source" in old.meta else {}),
                "conversation": True, **self._meta(c, old), "opener": was}
        if old is not None and "exported_at" in old.meta:
            meta["exported_at"] = old.meta["exported_at"]
        title, text = c.title, c.text
        if (old is not None and old.meta.get("conversation") and not force
                and not substantial(f"{old.title}\n{old.text}", f"{title}\n{text}")):
            title, text = old.title, old.text  # a small change: the vector stays (no re-embedding)
        return Item(id=c.id, guild_id=self.guild_id, kind="message", text=text, title=title,
                    created_at=opener["created_at"], channel_id=self.channel_id, author_id=opener["author_id"],
                    url=f"https://discord.com/channels/{self.guild_id}/{self.channel_id}/{c.id}",
                    nsfw=bool(self.channel.get("nsfw")), rating=old.rating if old is not None else 0.0,
                    tags=old.tags if old is not None else [], meta=meta)

    def _thread_item(self, c: Conversation, old: Item | None) -> Item | None:
        if old is not None and old.meta.get("thread") and "messages" in old.meta:
            # an imported thread item: title and text are the importer's; who took part is counted here
            meta = {**old.meta, "participants": len(c.participants), "size": len(c.message_ids), "last_at": c.last_at}
            return replace(old, meta=meta)
        first = self.lines[c.message_ids[0]]
        return Item(id=self.channel_id, guild_id=self.guild_id, kind="message", text=c.text,
                    title=self.channel.get("name") or c.title, created_at=first["created_at"],
                    channel_id=self.channel_id, author_id=first["author_id"],
                    url=f"https://discord.com/channels/{self.guild_id}/{self.channel_id}",
                    nsfw=bool(self.channel.get("nsfw")), rating=old.rating if old is not None else 0.0,
                    meta={"thread": True, **self._meta(c)})

    def _restore(self, old: Item, min_chars: int) -> Item | None:
        """The opener's plain message item again, or None when it should not be one."""
        line = self.lines.get(old.id)
        was = (old.meta.get("opener") or {}).get("item")
        if line is None or (was is None and text_length(line["text"]) < min_chars):
            return None
        meta = dict(was) if was is not None else {"channel": self.channel.get("name") or ""}
        return Item(id=old.id, guild_id=old.guild_id, kind="message", text=line["text"], created_at=old.created_at,
                    channel_id=old.channel_id, author_id=old.author_id, url=old.url, nsfw=old.nsfw,
                    rating=old.rating, tags=old.tags, parent_item_id=line["reply_to"], meta=meta)

    def line_links(self) -> dict[int, int | None]:
        return dict(self.line_conv)

    def item_links(self, present: set[int], removed: Sequence[int]) -> dict[int, int | None]:
        """``items.conversation_id`` of every stored item among the lines and conversations; a
        monologue item's own is NULL: it ranks as the one message it is, not as a conversation."""
        out = {i: self.line_conv.get(i) for i in present if i in self.lines or i in self.convs}
        for cid, c in self.convs.items():
            out[cid] = cid if self.thread or len(c.participants) > 1 else None
        for did in self.dissolved - set(removed):
            out.setdefault(did, self.line_conv.get(did))
        return {i: c for i, c in out.items() if i in present}

    def members(self, present: set[int]) -> dict[tuple[int, int], list[tuple[int, str]]]:
        """``item_members`` of the conversation items and of the message items among the lines."""
        out: dict[tuple[int, int], list[tuple[int, str]]] = {}
        for cid, c in self.convs.items():
            out[(self.guild_id, cid)] = ([(m, "participant") for m in c.participants]
                                         + [(m, "addressed") for m in c.addressed])
        for mid, ln in self.lines.items():
            if mid in self.convs or mid not in present:
                continue
            author = ln["author_id"]
            addressed = addressed_ids(ln["text"], self.names_lower, ln["mentions"]) | mentioned_ids(ln["text"], self.names_lower)
            target = self.lines.get(ln["reply_to"]) if ln["reply_to"] is not None else None
            if target is not None:
                addressed.add(target["author_id"])
            addressed.discard(author)
            out[(self.guild_id, mid)] = [(author, "participant")] + [(m, "addressed") for m in sorted(addressed)]
        return out


# ---- edits and deletions ------------------------------------------------------------------------
async def message_edited(recommender: Recommender, message_id: int, text: str, *, item: bool = True) -> bool:
    """A member edited message ``message_id`` to ``text``: its chat line changes and (with ``item``,
    when it is a plain message item) its item text too — re-embedded — and its conversation is
    rebuilt (forced, so the old words leave the conversation's text and vector). A conversation or
    thread item is never given the line's text. Returns whether the message's item was updated."""
    store = recommender.store
    where = await store.edit_chat_line(message_id, text)
    held = await store.get_item(message_id) if item else None
    changed = False
    if held is not None and not held.meta.get("conversation") and not held.meta.get("thread"):
        changed = await recommender.update_item_text(message_id, text)
    if where is not None:
        guild_id, channel_id, at = where
        await sync_conversations(recommender, guild_id, channel_id, since=at - GAP_S, force=True)
    return changed


async def messages_deleted(recommender: Recommender, message_ids: Iterable[int]) -> int:
    """Messages were deleted: their items (with interactions and vectors) and chat lines go, and the
    conversations they were in are rebuilt (forced). Returns how many items were removed."""
    ids = list(message_ids)
    removed = 0
    for mid in ids:
        removed += await recommender.remove_item(mid)
    gone = await recommender.store.delete_chat_lines(ids)
    await resync(recommender, gone)
    return removed


async def resync(recommender: Recommender, places: Iterable[tuple[int, int, float]]) -> SyncReport:
    """Rebuild (forced) the conversations around each ``(guild_id, channel_id, at)``: one sync per
    channel from its earliest ``at`` minus :data:`~recsys.conversations.GAP_S`."""
    earliest: dict[tuple[int, int], float] = {}
    for g, c, at in places:
        earliest[(g, c)] = min(at, earliest.get((g, c), at))
    total = SyncReport()
    for (g, c), at in sorted(earliest.items()):
        r = await sync_conversations(recommender, g, c, since=at - GAP_S, force=True)
        for name in ("channels", "lines", "conversations", "created", "updated", "reembedded", "dissolved"):
            setattr(total, name, getattr(total, name) + getattr(r, name))
    return total
