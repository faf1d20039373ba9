"""Items (messages, stories, catalogue entries) — one part of :class:`recsys.store.Store`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from recsys.storage.core import StoreCore
from recsys.storage.rows import Item, built, chunks
from recsys.storage.schema import ITEM_KINDS


_UPSERT_ITEM = (
    "INSERT INTO items (id, guild_id, channel_id, kind, author_id, title, text, url, tags, created_at, "
    "nsfw, rating, external_id, parent_item_id, meta) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(id) DO UPDATE SET title = excluded.title, text = excluded.text, url = excluded.url, "
    "tags = excluded.tags, nsfw = excluded.nsfw, rating = excluded.rating, meta = excluded.meta, "
    "channel_id = excluded.channel_id, parent_item_id = excluded.parent_item_id"
)


def _item_params(it: Item) -> tuple[Any, ...]:
    """The ``_UPSERT_ITEM`` parameters of one item."""
    return (
        it.id, it.guild_id, it.channel_id, it.kind, it.author_id, it.title, it.text, it.url,
        json.dumps(it.tags), it.created_at, int(it.nsfw), it.rating, it.external_id,
        it.parent_item_id, json.dumps(it.meta),
    )


class ContentStore(StoreCore):
    """Item rows as :class:`~recsys.storage.rows.Item` (or, for batched ranking, as columns)."""

    # ---- items ----------------------------------------------------------------------------
    async def upsert_items(self, items: Sequence[Item]) -> int:
        """Insert or update items (keyed by id); returns how many were new. Items by opted-out
        authors are skipped. One transaction; which ids are new is read inside it (by id, never a
        whole-table count)."""
        return len((await self._upsert_items(items))[1])

    async def _upsert_items(
        self, items: Sequence[Item], opted: dict[int, bool] | None = None
    ) -> tuple[set[int], set[int]]:
        """:meth:`upsert_items`: ``(ids stored (new or updated), ids that were new)``. ``opted``:
        user id -> opted out, already known (read for the others)."""
        if not items:
            return set(), set()
        rows = []
        opted = dict(opted or {})
        for it in items:
            if it.author_id is not None:
                if it.author_id not in opted:
                    opted[it.author_id] = await self.is_opted_out(it.author_id)  # type: ignore[attr-defined]
                if opted[it.author_id]:
                    continue
            if it.kind not in ITEM_KINDS:
                raise ValueError(f"unknown item kind {it.kind!r}")
            rows.append(_item_params(it))
        stored = {r[0] for r in rows}
        async with self.transaction():
            for gid in sorted({r[1] for r in rows}):
                await self.upsert_guild(gid)  # type: ignore[attr-defined]
            existed = await self._present_item_ids(sorted(stored))
            await self._db.executemany(_UPSERT_ITEM, rows)
        return stored, stored - existed

    async def _present_item_ids(self, ids: list[int]) -> set[int]:
        out: set[int] = set()
        for chunk in chunks(ids, 500):
            q = ",".join("?" * len(chunk))
            out.update(r[0] for r in await self._fetchall(f"SELECT id FROM items WHERE id IN ({q})", chunk))
        return out

    async def save_item(self, item: Item, interactions: Sequence[dict[str, Any]] = ()) -> tuple[bool, list[int]] | None:
        """Store ``item`` and the interactions that go with it (dicts as ``add_interactions``, e.g. the
        ``requested`` of a /story) in ONE transaction. Returns ``(item was new, new interaction ids)``,
        or ``None`` — nothing written — when the author opted out of recording."""
        known: dict[int, bool] = {}
        if item.author_id is not None:
            known[item.author_id] = await self.is_opted_out(item.author_id)  # type: ignore[attr-defined]
            if known[item.author_id]:
                return None
        async with self.transaction():
            _, new = await self._upsert_items([item], known)
            ids = await self._add_interactions(interactions, known) if interactions else []  # type: ignore[attr-defined]
        return bool(new), ids

    async def upsert_item(self, item: Item) -> bool:
        """Insert or update one item; True when it was new."""
        return bool(await self.upsert_items([item]))

    async def get_item(self, item_id: int) -> Item | None:
        row = await self._fetchone("SELECT * FROM items WHERE id = ?", (item_id,))
        return Item.from_row(row) if row else None

    async def get_items(self, item_ids: Iterable[int]) -> dict[int, Item]:
        ids = list(item_ids)
        out: dict[int, Item] = {}
        for chunk in chunks(ids, 500):
            q = ",".join("?" * len(chunk))
            for row in await self._fetchall(f"SELECT * FROM items WHERE id IN ({q})", chunk):
                out[row["id"]] = Item.from_row(row)
        return out

    async def item_quotes(self, item_ids: Iterable[int], width: int = 400) -> dict[int, str]:
        """Item id -> what a reason quotes for it: its title, else its text (first ``width`` characters);
        a light read of many items (a digest's reasons), ids not found left out."""
        ids = list(item_ids)
        out: dict[int, str] = {}
        for chunk in chunks(ids, 500):
            q = ",".join("?" * len(chunk))
            rows = await self._fetchall(
                f"SELECT id, substr(COALESCE(NULLIF(title, ''), text, ''), 1, ?) FROM items WHERE id IN ({q})",
                [width, *chunk],
            )
            out.update((r[0], r[1]) for r in rows)
        return out

    async def items(self, guild_id: int, *, kind: str | None = None, since: float | None = None) -> list[Item]:
        sql, params = "SELECT * FROM items WHERE guild_id = ?", [guild_id]
        if kind:
            sql += " AND kind = ?"
            params.append(kind)
        if since is not None:
            sql += " AND created_at >= ?"
            params.append(since)
        return [Item.from_row(r) for r in await self._fetchall(sql + " ORDER BY created_at, id", params)]

    async def item_by_external_id(self, guild_id: int, external_id: str) -> Item | None:
        row = await self._fetchone("SELECT * FROM items WHERE guild_id = ? AND external_id = ?", (guild_id, external_id))
        return Item.from_row(row) if row else None

    async def update_item_text(self, item_id: int, text: str, title: str | None = None) -> bool:
        """Change an item's text (an edited message); its vector is dropped for re-embedding."""
        async with self.transaction():
            cur = await self._write(
                "UPDATE items SET text = ?, title = COALESCE(?, title) WHERE id = ?", (text, title, item_id)
            )
            await self._write("DELETE FROM embeddings WHERE owner = 'item' AND owner_id = ?", (item_id,))
        return cur.rowcount > 0

    async def delete_item(self, item_id: int) -> bool:
        """Remove an item with its interactions, vectors and sent recommendations."""
        cur = await self._write("DELETE FROM items WHERE id = ?", (item_id,))
        return cur.rowcount > 0

    async def add_rating(self, item_id: int, delta: float) -> None:
        await self._write("UPDATE items SET rating = rating + ? WHERE id = ?", (delta, item_id))

    async def engagement_counts(self, guild_id: int, since: float | None = None) -> dict[int, int]:
        """Item id -> number of positive interactions by members other than the author (popularity prior)."""
        rows = await self._fetchall(
            "SELECT i.item_id, COUNT(*) AS n FROM interactions i JOIN items t ON t.id = i.item_id "
            "WHERE i.guild_id = ? AND i.weight > 0 AND i.kind NOT IN ('authored', 'recommended') "
            "AND (t.author_id IS NULL OR t.author_id != i.member_id) AND i.created_at >= ? GROUP BY i.item_id",
            (guild_id, since if since is not None else -1e18),
        )
        return {r["item_id"]: r["n"] for r in rows}


    async def recent_items(self, guild_id: int, limit: int, *, before: float | None = None) -> list[Item]:
        """The guild's newest ``limit`` items created before ``before`` (default: any time), newest first."""
        rows = await self._fetchall(
            "SELECT * FROM items WHERE guild_id = ? AND created_at <= ? ORDER BY created_at DESC, id DESC LIMIT ?",
            (guild_id, before if before is not None else 1e18, limit),
        )
        return [Item.from_row(r) for r in rows]


    async def item_columns(self, guild_id: int) -> dict[str, np.ndarray]:
        """The guild's items as columns for batched ranking, sorted by id: ``id`` int64,
        ``created_at`` float64 (UNIX s), ``channel_id`` / ``author_id`` int64 (-1 = none), ``nsfw``
        bool, ``rating`` float64, ``conversation_id`` int64 (-1 = none; a conversation item's is its
        own id, a message inside a conversation has its conversation's)."""
        rows = await self._fetchall(
            "SELECT id, created_at, COALESCE(channel_id, -1), COALESCE(author_id, -1), nsfw, rating, "
            "COALESCE(conversation_id, -1) FROM items WHERE guild_id = ? ORDER BY id",
            (guild_id,),
        )

        def columns() -> dict[str, np.ndarray]:
            cols = list(zip(*rows)) if rows else [()] * 7
            return {
                "id": np.array(cols[0], np.int64), "created_at": np.array(cols[1], np.float64),
                "channel_id": np.array(cols[2], np.int64), "author_id": np.array(cols[3], np.int64),
                "nsfw": np.array(cols[4], bool), "rating": np.array(cols[5], np.float64),
                "conversation_id": np.array(cols[6], np.int64),
            }

        return await built(columns, len(rows))
