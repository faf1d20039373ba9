"""``Recommender``: the facade the bot, console, importer and digest use (store + embedder + indexes).

Writes land in SQLite first; their embedding is queued and done in batches by one background task
(encoding in a worker thread), then the vectors are stored and added to the guild's FAISS indexes.
:meth:`Recommender.flush` waits for the queue. Index files are saved on flush/close.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.batch import recommend_many as _recommend_many
from recsys.embed import embedding_text
from recsys.index import KINDS, IndexSet
from recsys.rank import DEFAULT_RANKER, Ranker
from recsys.recommend import STATS_TTL_S, GuildStats, Pick, load_stats
from recsys.recommend import recommend as _recommend
from recsys.store import Item, Store

if TYPE_CHECKING:
    from campfire.config import Settings
    from recsys.embed import Embedder

__all__ = ["Pick", "Recommender"]

log = logging.getLogger(__name__)

RECENT_TEXTS = 4096  # text -> vector kept for reuse by _encode_reusing
EMBED_CHUNK = 512  # texts per encode call from the queue (the model batches them by embed_batch_size)


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
        # rows waiting for embedding: (owner, id, guild_id, text). A plain deque and a worker task
        # started on whichever event loop enqueues, so the facade survives being used from several
        # loops (tests, a CLI run after a bot) without binding to the first one.
        self._pending: deque[tuple[str, int, int, str]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._locks: dict[int, asyncio.Lock] = {}
        self._recent_vectors: OrderedDict[str, np.ndarray] = OrderedDict()  # see _encode_reusing
        self._stats: dict[int, GuildStats] = {}
        self._names: dict[int, tuple[Any, frozenset[str]]] = {}  # guild -> (cache key, display names)
        self._error: BaseException | None = None
        self.start_report: dict[tuple[int, str], str] = {}

    # ---- lifetime ---------------------------------------------------------------------------
    async def start(self) -> dict[tuple[int, str], str]:
        """Load every guild's indexes, rebuilding from stored vectors when missing, stale or corrupt,
        and queue whatever lacks a vector from the current model (new rows, or a model change).
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
            self._pending.extend((owner, row_id, gid, text) for row_id, gid, text in missing)
        self._kick()
        return dict(self.start_report)

    def _write_lock(self) -> asyncio.Lock:
        """Serialises vector writes with forget/remove (one lock per event loop)."""
        loop = asyncio.get_running_loop()
        lock = self._locks.get(id(loop))
        if lock is None:
            lock = self._locks[id(loop)] = asyncio.Lock()
        return lock

    def _kick(self) -> None:
        """Start the embedding task on the running loop if there is work and none is running there."""
        if not self._pending:
            return
        loop = asyncio.get_running_loop()
        w = self._worker
        if w is None or w.done() or w.get_loop() is not loop:
            self._worker = loop.create_task(self._drain(), name="campfire-embed")

    async def flush(self) -> None:
        """Wait until every queued row is embedded, stored and indexed; then save changed indexes.
        Re-raises the error that stopped an embedding batch, if any (the batch's rows stay unembedded
        and are queued again at the next :meth:`start`)."""
        while True:
            self._kick()
            w = self._worker
            if w is None or w.get_loop() is not asyncio.get_running_loop() or w.done():
                if not self._pending:
                    break
                continue
            await asyncio.shield(w)
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        await asyncio.to_thread(self.indexes.save)

    async def aclose(self) -> None:
        """Finish queued embedding and save the indexes."""
        await self.flush()

    # ---- embedding queue --------------------------------------------------------------------
    async def _drain(self) -> None:
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(EMBED_CHUNK, len(self._pending)))]
            try:
                await self._embed_batch(batch)
            except Exception as err:  # keep serving; flush() reports it
                log.exception("embedding a batch of %d failed", len(batch))
                self._error = err

    async def _embed_batch(self, batch: list[tuple[str, int, int, str]]) -> None:
        names = {gid: await self._member_names(gid) for gid in {r[2] for r in batch}}
        vecs = await self._encode_reusing([embedding_text(text, names[gid]) for _, _, gid, text in batch])
        async with self._write_lock():
            for owner in KINDS:
                rows = [(i, r) for i, r in enumerate(batch) if r[0] == owner]
                if not rows:
                    continue
                alive = await self.store.existing_ids(owner, [r[1] for _, r in rows])
                rows = [(i, r) for i, r in rows if r[1] in alive]  # forgotten meanwhile: drop
                if not rows:
                    continue
                sel = np.array([i for i, _ in rows])
                ids = [r[1] for _, r in rows]
                gids = [r[2] for _, r in rows]
                await self.store.put_embeddings(owner, ids, gids, vecs[sel], self.embedder.key)
                by_guild: dict[int, list[int]] = {}
                for pos, (_, r) in enumerate(rows):
                    by_guild.setdefault(r[2], []).append(pos)
                for gid, pos in by_guild.items():
                    index = self.indexes.get(gid, owner)
                    await asyncio.to_thread(index.add, [ids[p] for p in pos], vecs[sel[pos]])

    async def _member_names(self, guild_id: int) -> frozenset[str]:
        """The guild's member display names, lower-case (for :func:`recsys.embed.embedding_text`),
        re-read when a member joins, is renamed or forgotten (:meth:`Store.names_version`) or the
        member count changes."""
        key = (await self.store.member_count(guild_id), self.store.names_version(guild_id))
        cached = self._names.get(guild_id)
        if cached is None or cached[0] != key:
            cached = self._names[guild_id] = (key, frozenset(await self.store.member_names(guild_id)))
        return cached[1]

    def exclusive(self) -> asyncio.Lock:
        """The lock vector writes and :meth:`forget_user` take; a digest holds it from reading who
        gets picks to recording them, so a member forgotten meanwhile leaves nothing behind."""
        return self._write_lock()

    async def _encode_reusing(self, texts: list[str]) -> np.ndarray:
        """Encode ``texts`` once each: duplicates within the batch and texts met in the last
        ``RECENT_TEXTS`` encodings (an authored message is both an item and an interaction with the
        same text) reuse their vector. Returns ``(n, dim) float32``."""
        unique = list(dict.fromkeys(t for t in texts if t not in self._recent_vectors))
        if unique:
            fresh = await self.embedder.aencode(unique)
            for t, v in zip(unique, fresh, strict=True):
                self._recent_vectors[t] = v
        out = np.vstack([self._recent_vectors[t] for t in texts]) if texts else np.zeros((0, self.embedder.dim), np.float32)
        for t in texts:
            self._recent_vectors.move_to_end(t)
        while len(self._recent_vectors) > RECENT_TEXTS:
            self._recent_vectors.popitem(last=False)
        return out

    def pending(self) -> int:
        """Rows waiting to be embedded."""
        return len(self._pending)

    # ---- writes -----------------------------------------------------------------------------
    async def add_items(self, items: Sequence[Item]) -> int:
        """Store items (upsert by id) and queue the new or changed ones for embedding; returns how
        many were new. Items by opted-out authors are skipped (by the store)."""
        if not items:
            return 0
        before = await self.store.get_items([it.id for it in items])
        changed = [it.id for it in items if it.id in before and item_text(before[it.id]) != item_text(it)]
        new = await self.store.upsert_items(items)
        stored = await self.store.existing_ids("item", [it.id for it in items])
        if changed:
            await self._drop_vectors("item", changed)
        done = await self.store.embedded_ids("item", [it.id for it in items], self.embedder.key)
        queued = {(o, i) for o, i, _, _ in self._pending} if self._pending else set()
        for it in items:
            if it.id in stored and it.id not in done and ("item", it.id) not in queued:
                self._pending.append(("item", it.id, it.guild_id, item_text(it)))
        self._kick()
        for gid in {it.guild_id for it in items}:
            self._stats.pop(gid, None)
        return new

    async def update_item_text(self, item_id: int, text: str, title: str | None = None) -> bool:
        """Change an item's text (an edited message) and re-embed it; False when there is no such item."""
        if not await self.store.update_item_text(item_id, text, title):
            return False
        item = await self.store.get_item(item_id)
        await self._drop_vectors("item", [item_id], embeddings_gone=True)
        self._pending.append(("item", item_id, item.guild_id, item_text(item)))  # type: ignore[union-attr]
        self._kick()
        return True

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
        self._stats.pop(item.guild_id, None)
        return True

    async def record(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Record interactions (dicts as :meth:`Store.add_interactions`); returns the new ids.
        Each new interaction with text (or, when its text is empty, the text of its item) is queued
        for the interaction index; ``recommended`` ones are not embedded."""
        rows = [dict(r) for r in rows]
        need = [r["item_id"] for r in rows if not r.get("text") and r.get("item_id") is not None]
        if need:
            items = await self.store.get_items(need)
            for r in rows:
                it = items.get(r.get("item_id")) if not r.get("text") else None
                if it is not None:
                    r["text"] = item_text(it)[:1000]
        ids = await self.store.add_interactions(rows)
        if ids:
            for inter in (await self.store.get_interactions(ids)).values():
                if inter.text and inter.kind != "recommended":
                    self._pending.append(("interaction", inter.id, inter.guild_id, inter.text))
            self._kick()
        for gid in {int(r["guild_id"]) for r in rows}:
            self._stats.pop(gid, None)
        return ids

    # ---- reads ------------------------------------------------------------------------------
    async def recommend(
        self,
        guild_id: int,
        member_id: int,
        *,
        k: int | None = None,
        now: float | None = None,
        exclude_sent: bool = False,
    ) -> list[Pick]:
        """Up to ``k`` (default ``recsys.picks_per_member``) picks for the member, best first, each
        with a score in [0, 1] and a one-line reason. Only items of ``guild_id`` in channels the
        member can view. ``now`` (UNIX s, default the current time) is the reference for freshness;
        ``exclude_sent`` drops everything ever sent to the member in a digest."""
        now = time.time() if now is None else float(now)
        k = self.settings.recsys.picks_per_member if k is None else int(k)
        if k <= 0:
            raise ValueError("k must be a positive number of picks")
        stats = await self._guild_stats(guild_id, now)
        return await _recommend(
            self.store, self.indexes, self.settings.recsys, self.rankers.get(guild_id, DEFAULT_RANKER), stats,
            guild_id, member_id, k=k, now=now, exclude_sent=exclude_sent, names=await self._member_names(guild_id),
        )

    async def _guild_stats(self, guild_id: int, now: float) -> GuildStats:
        stats = self._stats.get(guild_id)
        if stats is None or time.monotonic() - stats.at > STATS_TTL_S or abs(stats.now - now) > 3600:
            stats = self._stats[guild_id] = await load_stats(self.store, guild_id, now)
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
    ) -> dict[int, list[Pick]]:
        """:meth:`recommend` for many members of one guild in one batched pass (the daily digest):
        member id -> picks (members with none are left out). ``max_item_share`` caps the share of
        members one item may go to (see :func:`recsys.batch.recommend_many`); ``None`` = no cap,
        the same picks as :meth:`recommend` per member. ``depth``: FAISS neighbours per interest vector
        in both indexes (default: :meth:`recommend`'s, 200 items / 100 interactions). Raises ValueError for ``k`` ≤ 0."""
        now = time.time() if now is None else float(now)
        k = self.settings.recsys.picks_per_member if k is None else int(k)
        if k <= 0:
            raise ValueError("k must be a positive number of picks")
        stats = await self._guild_stats(guild_id, now)
        return await _recommend_many(
            self.store, self.indexes, self.settings.recsys, self.rankers.get(guild_id, DEFAULT_RANKER), stats,
            guild_id, list(member_ids), k=k, now=now, exclude_sent=exclude_sent, max_item_share=max_item_share,
            **({"per_interest": depth, "neighbour_hits": depth} if depth else {}),
        )

    async def forget_user(self, user_id: int) -> dict[str, int]:
        """Delete everything about ``user_id`` in every guild (rows and vectors, from SQLite and the
        FAISS indexes): their items (with everyone's interactions on them), their interactions,
        recommendations and memberships. Returns counts per table plus ``item_vectors`` and
        ``interaction_vectors`` removed from the indexes."""
        async with self._write_lock():
            owned = await self.store.ids_owned_by(user_id)
            counts = await self.store.forget_user(user_id)
            removed = {"item_vectors": 0, "interaction_vectors": 0}
            for gid, ids in owned.items():
                removed["item_vectors"] += await asyncio.to_thread(self.indexes.get(gid, "item").remove, ids["items"])
                removed["interaction_vectors"] += await asyncio.to_thread(
                    self.indexes.get(gid, "interaction").remove, ids["interactions"]
                )
                self._stats.pop(gid, None)
            await asyncio.to_thread(self.indexes.save)
        return counts | removed

    async def export_user(self, user_id: int) -> dict[str, Any]:
        """Everything stored about ``user_id`` (JSON-ready; see :meth:`Store.export_user`)."""
        return await self.store.export_user(user_id)

    def stats(self, guild_id: int) -> dict[str, Any]:
        """Index sizes and kinds for a guild, and rows waiting to be embedded:
        ``{"item_vectors": n, "interaction_vectors": n, "item_index": "flat"|"hnsw", ..., "pending": n}``."""
        return self.indexes.stats(guild_id) | {"pending": self.pending(), "model": self.embedder.name}
