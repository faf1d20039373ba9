"""Interactions (what members did, or were shown) — one part of :class:`recsys.store.Store`."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from recsys.storage.core import StoreCore
from recsys.storage.rows import Interaction, built, chunks, interaction_row
from recsys.storage.schema import DEFAULT_WEIGHTS, INTERACTION_KINDS


class InteractionStore(StoreCore):
    """Interaction rows as :class:`~recsys.storage.rows.Interaction`, and the aggregates ranking reads."""

    # ---- interactions -------------------------------------------------------------------
    async def add_interactions(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Record interactions; each dict has guild_id, member_id, kind and optionally item_id,
        weight (default by kind), created_at (default now), text, source_id. Duplicates (same guild,
        member, kind, item, source) and opted-out members are skipped. Returns the new ids."""
        return await self._add_interactions(rows)

    async def _add_interactions(
        self, rows: Sequence[dict[str, Any]], opted: dict[int, bool] | None = None
    ) -> list[int]:
        """:meth:`add_interactions`; ``opted``: user id -> opted out, already known (read for the others)."""
        new_ids: list[int] = []
        opted = dict(opted or {})
        async with self.transaction():
            for r in rows:
                kind = r["kind"]
                if kind not in INTERACTION_KINDS:
                    raise ValueError(f"unknown interaction kind {kind!r}")
                mid = int(r["member_id"])
                if mid not in opted:
                    opted[mid] = await self.is_opted_out(mid)
                if opted[mid]:
                    continue
                key = f"{r['guild_id']}:{mid}:{kind}:{r.get('item_id')}:{r.get('source_id')}"
                cur = await self._write(
                    "INSERT INTO interactions (guild_id, member_id, item_id, kind, weight, created_at, text, "
                    "source_id, dedup_key) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(dedup_key) DO NOTHING",
                    (
                        r["guild_id"], mid, r.get("item_id"), kind,
                        r.get("weight", DEFAULT_WEIGHTS[kind]), r.get("created_at") or time.time(),
                        r.get("text") or "", r.get("source_id"), key,
                    ),
                )
                if cur.rowcount:
                    new_ids.append(cur.lastrowid)  # type: ignore[arg-type]
        return new_ids

    async def add_interaction(self, guild_id: int, member_id: int, kind: str, **fields: Any) -> int | None:
        """Record one interaction (see :meth:`add_interactions`); its id, or None when skipped."""
        ids = await self.add_interactions([{"guild_id": guild_id, "member_id": member_id, "kind": kind, **fields}])
        return ids[0] if ids else None

    async def remove_interactions(
        self, guild_id: int, member_id: int, *, item_id: int | None = None, kinds: Iterable[str] | None = None,
        source_id: int | None = None,
    ) -> int:
        """Delete a member's interactions on an item (e.g. a removed reaction, a changed rating);
        returns how many. Their stored vectors go with them (trigger); the FAISS ids do not — callers
        outside the store use ``Recommender.remove_interactions``, which removes both."""
        return len(await self.delete_interactions(guild_id, member_id, item_id=item_id, kinds=kinds,
                                                  source_id=source_id))

    async def delete_interactions(
        self, guild_id: int, member_id: int, *, item_id: int | None = None, kinds: Iterable[str] | None = None,
        source_id: int | None = None,
    ) -> list[int]:
        """:meth:`remove_interactions` returning the deleted ids (to drop from the interaction index).
        Filters (all optional, ANDed): ``item_id``, ``kinds``, ``source_id`` (the Discord message)."""
        sql, params = "DELETE FROM interactions WHERE guild_id = ? AND member_id = ?", [guild_id, member_id]
        if item_id is not None:
            sql += " AND item_id = ?"
            params.append(item_id)
        if kinds is not None:
            ks = list(kinds)
            sql += f" AND kind IN ({','.join('?' * len(ks))})"
            params += ks
        if source_id is not None:
            sql += " AND source_id = ?"
            params.append(source_id)
        async with self.transaction():
            cur = await self._write(sql + " RETURNING id", params)
            return [r[0] for r in await cur.fetchall()]

    async def interactions(
        self, guild_id: int, member_id: int | None = None, *, before: float | None = None
    ) -> list[Interaction]:
        """A guild's (or one member's) interactions, oldest first."""
        sql, params = "SELECT * FROM interactions WHERE guild_id = ?", [guild_id]
        if member_id is not None:
            sql += " AND member_id = ?"
            params.append(member_id)
        if before is not None:
            sql += " AND created_at < ?"
            params.append(before)
        rows = await self._fetchall(sql + " ORDER BY created_at, id", params)
        return await built(lambda: [interaction_row(r) for r in rows], len(rows))

    async def get_interactions(self, ids: Iterable[int]) -> dict[int, Interaction]:
        out: dict[int, Interaction] = {}
        for chunk in chunks(list(ids), 500):
            q = ",".join("?" * len(chunk))
            for row in await self._fetchall(f"SELECT * FROM interactions WHERE id IN ({q})", chunk):
                out[row["id"]] = interaction_row(row)
        return out


    async def interaction_ids_for_items(self, item_ids: Sequence[int]) -> dict[int, list[int]]:
        """Guild id -> ids of every interaction on the given items (to drop from indexes with them)."""
        out: dict[int, list[int]] = {}
        for chunk in chunks(list(item_ids), 500):
            q = ",".join("?" * len(chunk))
            for r in await self._fetchall(f"SELECT guild_id, id FROM interactions WHERE item_id IN ({q})", chunk):
                out.setdefault(r[0], []).append(r[1])
        return out

    async def engaged_items(
        self, guild_id: int, member_ids: Sequence[int], *, before: float | None = None
    ) -> list[tuple[int, int, float]]:
        """``(member_id, item_id, weight)`` of the members' interactions on items with positive weight,
        excluding ``recommended``/``viewed`` (the neighbourhood signal)."""
        out: list[tuple[int, int, float]] = []
        for chunk in chunks(list(member_ids), 500):
            q = ",".join("?" * len(chunk))
            rows = await self._fetchall(
                f"SELECT member_id, item_id, weight FROM interactions WHERE guild_id = ? AND member_id IN ({q}) "
                "AND item_id IS NOT NULL AND weight > 0 AND kind NOT IN ('recommended', 'viewed') AND created_at < ?",
                [guild_id, *chunk, before if before is not None else 1e18],
            )
            out.extend((r[0], r[1], r[2]) for r in rows)
        return out

    async def interaction_members(self, ids: Sequence[int]) -> dict[int, int]:
        """Interaction id -> member id."""
        out: dict[int, int] = {}
        for chunk in chunks(list(ids), 500):
            q = ",".join("?" * len(chunk))
            out.update((r[0], r[1]) for r in await self._fetchall(f"SELECT id, member_id FROM interactions WHERE id IN ({q})", chunk))
        return out


    async def last_activity(self, guild_id: int) -> dict[int, float]:
        """Item id -> time (UNIX s) of its latest interaction (any kind but ``recommended``)."""
        rows = await self._fetchall(
            "SELECT item_id, MAX(created_at) FROM interactions WHERE guild_id = ? AND item_id IS NOT NULL "
            "AND kind != 'recommended' GROUP BY item_id",
            (guild_id,),
        )
        return {r[0]: r[1] for r in rows}
