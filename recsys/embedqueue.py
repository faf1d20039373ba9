"""The facade's embedding queue: rows written to SQLite wait here (``(owner, id, guild_id, text)``)
and one background task embeds them in batches (encoding in a worker thread), stores their vectors
and adds them to the guild's FAISS index — so a stored vector and its FAISS id land together, under
the facade's write lock (:meth:`recsys.service.Recommender.exclusive`)."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.embed import embedding_text
from recsys.index import KINDS

if TYPE_CHECKING:
    from recsys.embed import Embedder
    from recsys.index import IndexSet
    from recsys.store import Store

log = logging.getLogger(__name__)

RECENT_TEXTS = 4096  # text -> vector kept for reuse by _encode_reusing
EMBED_CHUNK = 512  # texts per encode call from the queue (the model batches them by embed_batch_size)


class EmbedQueue:
    """Rows waiting for embedding. A plain deque and a worker task started on whichever event loop
    enqueues, so the facade survives being used from several loops (tests, a CLI run after a bot)
    without binding to the first one. ``lock()`` gives the facade's write lock of the running loop."""

    def __init__(self, store: Store, embedder: Embedder, indexes: IndexSet, lock: Callable[[], asyncio.Lock]):
        self.store, self.embedder, self.indexes, self._lock = store, embedder, indexes, lock
        self._pending: deque[tuple[str, int, int, str]] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._recent_vectors: OrderedDict[str, np.ndarray] = OrderedDict()  # see _encode_reusing
        self._names: dict[int, tuple[Any, frozenset[str]]] = {}  # guild -> (cache key, display names)
        self._error: BaseException | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def queued(self) -> set[tuple[str, int]]:
        """``(owner, id)`` of every row waiting."""
        return {(o, i) for o, i, _, _ in self._pending}

    def discard(self, owner: str, ids: Iterable[int]) -> None:
        """Drop the waiting rows of ``owner`` (``item`` / ``interaction``) with these ids (their text
        changed since they were queued; the caller queues the new one)."""
        stale = set(ids)
        if any(o == owner and i in stale for o, i, _, _ in self._pending):
            self._pending = deque(r for r in self._pending if not (r[0] == owner and r[1] in stale))

    def push(self, rows: Iterable[tuple[str, int, int, str]]) -> None:
        """Queue ``(owner, id, guild_id, text)`` rows and start the worker."""
        self._pending.extend(rows)
        self.kick()

    def kick(self) -> None:
        """Start the embedding task on the running loop if there is work and none is running there."""
        if not self._pending:
            return
        loop = asyncio.get_running_loop()
        w = self._worker
        if w is None or w.done() or w.get_loop() is not loop:
            self._worker = loop.create_task(self._drain(), name="campfire-embed")

    async def wait(self) -> None:
        """Wait until every queued row is embedded, stored and indexed. Re-raises the error that
        stopped an embedding batch, if any (its rows stay unembedded; queued again at the next start)."""
        while True:
            self.kick()
            w = self._worker
            if w is None or w.get_loop() is not asyncio.get_running_loop() or w.done():
                if not self._pending:
                    break
                continue
            await asyncio.shield(w)
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    async def _drain(self) -> None:
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(EMBED_CHUNK, len(self._pending)))]
            try:
                await self._embed_batch(batch)
            except Exception as err:  # keep serving; wait() reports it
                log.exception("embedding a batch of %d failed", len(batch))
                self._error = err

    async def _embed_batch(self, batch: list[tuple[str, int, int, str]]) -> None:
        last = {(r[0], r[1]): k for k, r in enumerate(batch)}  # one row per id: the latest text wins
        batch = [r for k, r in enumerate(batch) if last[(r[0], r[1])] == k]
        names = {gid: await self.member_names(gid) for gid in {r[2] for r in batch}}
        vecs = await self._encode_reusing([embedding_text(text, names[gid]) for _, _, gid, text in batch])
        async with self._lock():
            for owner in KINDS:
                rows = [(i, r) for i, r in enumerate(batch) if r[0] == owner]
                if not rows:
                    continue
                alive = await self.store.existing_ids(owner, [r[1] for _, r in rows])
                rows = [(i, r) for i, r in rows if r[1] in alive]  # forgotten or removed meanwhile: drop
                if not rows:
                    continue
                sel = np.array([i for i, _ in rows])
                ids = [r[1] for _, r in rows]
                await self.store.put_embeddings(owner, ids, [r[2] for _, r in rows], vecs[sel], self.embedder.key)
                by_guild: dict[int, list[int]] = {}
                for pos, (_, r) in enumerate(rows):
                    by_guild.setdefault(r[2], []).append(pos)
                for gid, pos in by_guild.items():
                    index = self.indexes.get(gid, owner)
                    await asyncio.to_thread(index.add, [ids[p] for p in pos], vecs[sel[pos]])

    async def member_names(self, guild_id: int) -> frozenset[str]:
        """The guild's member display names, lower-case (for :func:`recsys.embed.embedding_text`),
        re-read when a member joins, is renamed or forgotten (:meth:`Store.names_version`) or the
        member count changes."""
        key = (await self.store.member_count(guild_id), self.store.names_version(guild_id))
        cached = self._names.get(guild_id)
        if cached is None or cached[0] != key:
            cached = self._names[guild_id] = (key, frozenset(await self.store.member_names(guild_id)))
        return cached[1]

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
