"""``Recommender``: the facade the bot, console, importer and digest use (store + embedder + indexes).

Writes land in SQLite first; their embedding is queued and done in batches by one background task
(encoding in a worker thread), then the vectors are stored and added to the guild's FAISS indexes.
:meth:`Recommender.flush` waits for the queue. Index files are saved on flush/close.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from recsys.batch import recommend_many as _recommend_many
from recsys.conversation_backfill import backfill_conversations
from recsys.conversation_sync import resync, sync_lock
from recsys.recommend import recommend as _recommend
from recsys.embedqueue import EmbedQueue
from recsys.index import KINDS, IndexSet
from recsys.pipeline import STATS_TTL_S, GuildStats, Pick, load_stats
from recsys.rank import DEFAULT_RANKER, Ranker
from recsys.store import Item, Store
from recsys.substance import LowSubstance

if TYPE_CHECKING:
    from campfire.config import Settings
    from recsys.embed import Embedder

__all__ = ["Pick", "Recommender"]

log = logging.getLogger(__name__)

def item_text(item: Item) -> str:
    """What an item's vector is made from: title and text (as ``Store.missing_embeddings``), before
    :func:`recsys.embed.embedding_text`."""
    return f"{item.title}\n{item.text}" if item.title else item.text


class Recommender:
    """Recommendations for a community. Build with a :class:`Store`, a loaded
    :class:`~recsys.embed.Embedder` and the :class:`Settings`; call :meth:`start` before use and
    :meth:`aclose` at the end."""

    def __init__(self, store: Store, embedder: Embedder, settings: Settings):
        self.store = store
        self.embedder = embedder
        self.settings = settings
        self.indexes = IndexSet(
            settings.index_dir, dim=embedder.dim, model=embedder.key, hnsw_threshold=settings.recsys.hnsw_threshold
        )
        self.rankers: dict[int, Ranker] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._queue = EmbedQueue(store, embedder, self.indexes, self._write_lock)  # rows waiting for vectors
        self._stats: dict[int, GuildStats] = {}
        self._low_substance = LowSubstance()  # each message judged once (recsys.substance)
        self.start_report: dict[tuple[int, str], str] = {}

    # ---- lifetime ---------------------------------------------------------------------------
    async def start(self) -> dict[tuple[int, str], str]:
        """Load every guild's indexes, rebuilding from stored vectors when missing, stale or corrupt,
        and queue whatever lacks a vector from the current model (new rows, or a model change); build
        once the conversations of guilds whose chat lines predate them (:mod:`recsys.conversation_backfill`).
        Returns ``{(guild_id, kind): "loaded" | "rebuilt (…)"}``."""
        model = self.embedder.key
        for guild in await self.store.list_guilds():
            gid = guild["id"]
            for kind in KINDS:
                expected = await self.store.embedding_ids(kind, gid, model)
                why = await asyncio.to_thread(self.indexes.try_load, gid, kind, expected)
                if why is not None:
                    ids, vecs = await self.store.get_embeddings(kind, gid, model)
                    await asyncio.to_thread(self.indexes.rebuild, gid, kind, ids, vecs)
                    log.info("index %s/%s rebuilt from %d stored vectors (%s)", gid, kind, len(ids), why)
                self.start_report[(gid, kind)] = "loaded" if why is None else f"rebuilt ({why})"
        for owner in KINDS:
            missing = await self.store.missing_embeddings(owner, model)
            if missing:
                log.info("queueing %d %s(s) for embedding with %s", len(missing), owner, model)
            self._queue.push((owner, row_id, gid, text) for row_id, gid, text in missing)
        await backfill_conversations(self)  # once: guilds whose chat lines predate conversations (schema 5)
        return dict(self.start_report)

    def _write_lock(self) -> asyncio.Lock:
        """Serialises vector writes with forget/remove (one lock per event loop)."""
        loop = asyncio.get_running_loop()
        lock = self._locks.get(id(loop))
        if lock is None:
            lock = self._locks[id(loop)] = asyncio.Lock()
        return lock

    async def flush(self) -> None:
        """Wait until every queued row is embedded, stored and indexed; then save changed indexes.
        Re-raises the error that stopped an embedding batch, if any (the batch's rows stay unembedded
        and are queued again at the next :meth:`start`)."""
        await self._queue.wait()
        await asyncio.to_thread(self.indexes.save)

    async def aclose(self) -> None:
        """Finish queued embedding and save the indexes."""
        await self.flush()

    def exclusive(self) -> asyncio.Lock:
        """The lock vector writes and :meth:`forget_user` take; a digest holds it from reading who
        gets picks to recording them, so a member forgotten meanwhile leaves nothing behind."""
        return self._write_lock()

    def pending(self) -> int:
        """Rows waiting to be embedded."""
        return len(self._queue)

    # ---- writes -----------------------------------------------------------------------------
    async def add_items(self, items: Sequence[Item]) -> int:
        """Store items (upsert by id) and queue the new or changed ones for embedding; returns how
        many were new. Items by opted-out authors are skipped (by the store), and so are items of a
        forgotten member or whose id is a forgotten message (``Store.recordable``, checked in
        the write's transaction)."""
        if not items:
            return 0
        before = await self.store.get_items([it.id for it in items])
        async with self.store.transaction():
            items, _ = await self.store.recordable(items)
            new = await self.store.upsert_items(items)
        changed = [it.id for it in items if it.id in before and item_text(before[it.id]) != item_text(it)]
        stored = await self.store.existing_ids("item", [it.id for it in items])
        if changed:
            await self._drop_vectors("item", changed)
            self._unqueue("item", changed)  # a text still waiting is stale: the new one is queued instead
        done = await self.store.embedded_ids("item", [it.id for it in items], self.embedder.key)
        queued = self._queue.queued() if len(self._queue) else set()
        self._queue.push(("item", it.id, it.guild_id, item_text(it)) for it in items
                         if it.id in stored and it.id not in done and ("item", it.id) not in queued)
        self._forget_stats(it.guild_id for it in items)
        return new

    async def save_item(self, item: Item, interactions: Sequence[dict[str, Any]] = ()) -> bool:
        """Store a new item together with the interactions that go with it (a /story save: the story
        and its ``requested``; dicts as :meth:`Store.add_interactions`, an empty ``text`` taking the
        item's) in ONE SQL transaction, then queue them for embedding (vectors and FAISS ids land
        together after the commit, as for every write). Returns False — nothing stored — when the
        author opted out of recording or was forgotten (interactions by forgotten members are dropped,
        see :meth:`record`). Saving an id that exists updates it (re-embedded if its text changed)."""
        rows = [dict(r) for r in interactions]
        for r in rows:
            if not r.get("text") and r.get("item_id") == item.id:
                r["text"] = item_text(item)[:1000]
        async with self.store.transaction():
            kept, rows = await self.store.recordable([item], rows, stored=[item.id])
            if not kept:
                return False
            saved = await self.store.save_item(item, rows)
        if saved is None:
            return False
        is_new, ids = saved
        if not is_new:  # an existing item: its old vector goes, as for an edit
            await self._drop_vectors("item", [item.id])
        self._queue.push([("item", item.id, item.guild_id, item_text(item))])
        if ids:
            for inter in (await self.store.get_interactions(ids)).values():
                if inter.text and inter.kind != "recommended":
                    self._queue.push([("interaction", inter.id, inter.guild_id, inter.text)])
        self._forget_stats([item.guild_id])
        return True

    async def update_item_text(self, item_id: int, text: str, title: str | None = None) -> bool:
        """Change an item's text (an edited message) and re-embed it; False when there is no such item."""
        if not await self.store.update_item_text(item_id, text, title):
            return False
        item = await self.store.get_item(item_id)
        await self._drop_vectors("item", [item_id], embeddings_gone=True)
        self._unqueue("item", [item_id])
        self._queue.push([("item", item_id, item.guild_id, item_text(item))])  # type: ignore[union-attr]
        return True

    def _unqueue(self, owner: str, ids: Sequence[int]) -> None:
        """Drop rows still waiting for embedding with a text that changed since (a message upgraded to
        a conversation, or a conversation that grew, in the same batch it was queued): the queue would
        otherwise embed the old text and skip the new one. A batch already being encoded writes its old
        vector first and the new text's replaces it (vectors and FAISS ids are replaced by id)."""
        self._queue.discard(owner, ids)

    async def _drop_vectors(self, owner: str, ids: list[int], *, embeddings_gone: bool = False) -> None:
        if not embeddings_gone:
            await self.store.delete_embeddings(owner, ids)
        for gid in self.indexes.guilds():
            await asyncio.to_thread(self.indexes.get(gid, owner).remove, ids)

    async def remove_item(self, item_id: int) -> bool:
        """Delete an item with its interactions, their vectors and index entries."""
        async with self._write_lock():
            item = await self.store.get_item(item_id)
            if item is None:
                return False
            inter = await self.store.interaction_ids_for_items([item_id])
            await self.store.delete_item(item_id)
            await asyncio.to_thread(self.indexes.get(item.guild_id, "item").remove, [item_id])
            for gid, ids in inter.items():
                await asyncio.to_thread(self.indexes.get(gid, "interaction").remove, ids)
        self._forget_stats([item.guild_id, *inter])
        return True

    async def remove_interactions(
        self, guild_id: int, member_id: int, *, item_id: int | None = None, kinds: Sequence[str] | None = None,
        source_id: int | None = None,
    ) -> int:
        """The one removal route for interactions (a removed reaction, an un-rate): delete a member's
        interactions in ``guild_id`` matching every filter given (``item_id``; ``kinds``, e.g.
        ``["reacted"]`` or the feedback kinds; ``source_id``, the Discord message that produced them),
        with their stored vectors and their FAISS ids, together under the write lock. Returns how
        many rows were deleted."""
        async with self._write_lock():
            ids = await self.store.delete_interactions(guild_id, member_id, item_id=item_id, kinds=kinds,
                                                       source_id=source_id)
            if ids:
                await asyncio.to_thread(self.indexes.get(guild_id, "interaction").remove, ids)
        if ids:
            self._forget_stats([guild_id])
        return len(ids)

    async def record(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Record interactions (dicts as :meth:`Store.add_interactions`); returns the new ids.
        Each new interaction with text (or, when its text is empty, the text of its item) is queued
        for the interaction index; ``recommended`` ones are not embedded. Rows by opted-out members
        are skipped (by the store), and so are rows by a forgotten member, on (``item_id``) or from
        (``source_id``) a forgotten message, or on an item that is not stored (its author opted out or
        was forgotten) — ``Store.recordable``, in the write's transaction."""
        rows = [dict(r) for r in rows]
        need = [r["item_id"] for r in rows if not r.get("text") and r.get("item_id") is not None]
        if need:
            items = await self.store.get_items(need)
            for r in rows:
                it = items.get(r.get("item_id")) if not r.get("text") else None
                if it is not None:
                    r["text"] = item_text(it)[:1000]
        async with self.store.transaction():
            _, rows = await self.store.recordable(rows=rows)
            ids = await self.store.add_interactions(rows)
        if ids:
            self._queue.push(("interaction", inter.id, inter.guild_id, inter.text)
                             for inter in (await self.store.get_interactions(ids)).values()
                             if inter.text and inter.kind != "recommended")
        self._forget_stats(int(r["guild_id"]) for r in rows)
        return ids

    def _forget_stats(self, guild_ids) -> None:
        """Drop the cached :class:`GuildStats` of ``guild_ids`` (their popularity changed)."""
        for gid in set(guild_ids):
            self._stats.pop(gid, None)

    # ---- reads ------------------------------------------------------------------------------
    async def recommend(
        self,
        guild_id: int,
        member_id: int,
        *,
        k: int | None = None,
        now: float | None = None,
        exclude_sent: bool = False,
        guild: Mapping[str, Any] | None = None,
    ) -> list[Pick]:
        """Up to ``k`` (default ``recsys.picks_per_member``) picks for the member, best first, each
        with a score in [0, 1] and a one-line reason. Only items of ``guild_id`` in channels the
        member can view. ``now`` (UNIX s, default the current time) is the reference for freshness;
        ``exclude_sent`` drops everything ever sent to the member in a digest. ``guild``: the guild
        row (:meth:`Store.get_guild`) when the caller already has it, so it is not read again.
        One member is a batch of one of :meth:`recommend_many` (the same pipeline)."""
        now = time.time() if now is None else float(now)
        k = self.settings.recsys.picks_per_member if k is None else int(k)
        if k <= 0:
            raise ValueError("k must be a positive number of picks")
        stats = await self._guild_stats(guild_id, now)
        return await _recommend(
            self.store, self.indexes, self.settings.recsys, self.rankers.get(guild_id, DEFAULT_RANKER), stats,
            guild_id, member_id, k=k, now=now, exclude_sent=exclude_sent, guild=guild,
        )

    async def _guild_stats(self, guild_id: int, now: float) -> GuildStats:
        stats = self._stats.get(guild_id)
        if stats is None or time.monotonic() - stats.at > STATS_TTL_S or abs(stats.now - now) > 3600:
            stats = self._stats[guild_id] = await load_stats(self.store, guild_id, now, self._low_substance)
        return stats

    async def recommend_many(
        self,
        guild_id: int,
        member_ids: Sequence[int],
        *,
        k: int | None = None,
        now: float | None = None,
        exclude_sent: bool = False,
        max_item_share: float | None = None,
        depth: int | None = None,
        guild: Mapping[str, Any] | None = None,
        audience: int | None = None,
    ) -> dict[int, list[Pick]]:
        """:meth:`recommend` for many members of one guild in one batched pass (the daily digest):
        member id -> picks (members with none are left out). ``max_item_share`` caps the share of
        members one item may go to (see :func:`recsys.batch.recommend_many`); ``None`` = no cap,
        the same picks as :meth:`recommend` per member. ``depth``: FAISS neighbours per interest vector
        in both indexes (default: :meth:`recommend`'s, 200 items / 100 interactions). ``guild``: the guild
        row when the caller already has it (the digest), so it is not read again. ``audience``: who reads
        the picks (:mod:`recsys.audience`): None, each member their own (a DM); a channel id, everyone
        who can view it (a daily post there: picks and quotes only from what they all can view).
        Raises ValueError for ``k`` ≤ 0."""
        now = time.time() if now is None else float(now)
        k = self.settings.recsys.picks_per_member if k is None else int(k)
        if k <= 0:
            raise ValueError("k must be a positive number of picks")
        stats = await self._guild_stats(guild_id, now)
        return await _recommend_many(
            self.store, self.indexes, self.settings.recsys, self.rankers.get(guild_id, DEFAULT_RANKER), stats,
            guild_id, list(member_ids), k=k, now=now, exclude_sent=exclude_sent, max_item_share=max_item_share,
            guild=guild, audience=audience, **({"per_interest": depth, "neighbour_hits": depth} if depth else {}),
        )

    async def forget_user(self, user_id: int) -> dict[str, int]:
        """Delete everything about ``user_id`` in every guild (rows and vectors, from SQLite and the
        FAISS indexes): their items (with everyone's interactions on them), their interactions,
        recommendations and memberships. Tombstones the member and their message ids so no write
        records them again (``Store.forget_user``; lifted for the member, not the messages, by an
        opt-in). Their chat lines go too, and every conversation they wrote in or were addressed in is
        rebuilt without them (``recsys.conversation_sync``: their words leave its title, text and
        vector; a conversation left with one participant dissolves). Then it rewrites ``campfire.db``
        (VACUUM, WAL truncated) and the changed index files (a flat index is written without the
        removed vectors, an HNSW graph compacted first), so the bytes are gone from disk too. Returns
        counts per table plus ``item_vectors`` and ``interaction_vectors`` removed from the indexes
        and ``conversations_rebuilt``."""
        async with sync_lock(self):  # no conversation sync between reading their lines and the rebuild
            affected = await self.store.member_chat(user_id)
            starts = await self.store.conversation_starts({c for convs in affected.values() for c in convs})
            async with self._write_lock():
                owned = await self.store.ids_owned_by(user_id)
                counts = await self.store.forget_user(user_id, scrub=False)
                removed = {"item_vectors": 0, "interaction_vectors": 0}
                for gid, ids in owned.items():
                    removed["item_vectors"] += await asyncio.to_thread(self.indexes.get(gid, "item").remove,
                                                                       ids["items"])
                    removed["interaction_vectors"] += await asyncio.to_thread(
                        self.indexes.get(gid, "interaction").remove, ids["interactions"]
                    )
                self._forget_stats(owned)
            # their conversations, rebuilt before the files are rewritten (the old texts' bytes go too)
            places = [(g, c, min(starts[i] for i in convs if i in starts)) for (g, c), convs in affected.items()
                      if any(i in starts for i in convs)]
            rebuilt = await resync(self, places)
        try:
            await self._queue.wait()  # the rebuilt texts' vectors, before the files are rewritten
        finally:
            await self.store.scrub()
            await asyncio.to_thread(self.indexes.save)
        return counts | removed | {"conversations_rebuilt": rebuilt.conversations}

    async def export_user(self, user_id: int) -> dict[str, Any]:
        """Everything stored about ``user_id`` (JSON-ready; see :meth:`Store.export_user`)."""
        return await self.store.export_user(user_id)

    def stats(self, guild_id: int) -> dict[str, Any]:
        """Index sizes and kinds for a guild, and rows waiting to be embedded:
        ``{"item_vectors": n, "interaction_vectors": n, "item_index": "flat"|"hnsw", ..., "pending": n}``."""
        return self.indexes.stats(guild_id) | {"pending": self.pending(), "model": self.embedder.name}
