"""Recommendations sent in digests (``recommendations_sent``) — one part of :class:`recsys.store.Store`."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from recsys.storage.core import StoreCore
from recsys.storage.rows import built


class SentStore(StoreCore):
    """What each member was sent, and when (a digest never repeats an item)."""

    async def recommended_since(self, guild_id: int, member_id: int, since: float) -> set[int]:
        """Items sent to the member in a digest at or after ``since`` (UNIX s)."""
        rows = await self._fetchall(
            "SELECT item_id FROM recommendations_sent WHERE guild_id = ? AND member_id = ? AND created_at >= ?",
            (guild_id, member_id, since),
        )
        return {r[0] for r in rows}

    # ---- recommendations ------------------------------------------------------------------
    async def record_recommendations(
        self, guild_id: int, member_id: int, picks: Sequence[tuple[Any, ...]], date: str
    ) -> None:
        """Remember that ``picks`` (item id, score, reason[, id of the item the reason quotes]) were
        sent on ``date`` (YYYY-MM-DD)."""
        await self.record_digest(guild_id, {member_id: picks}, date)

    async def record_digest(self, guild_id: int, picks: Mapping[int, Sequence[tuple[Any, ...]]], date: str) -> None:
        """:meth:`record_recommendations` for many members (member id -> picks) in one transaction."""
        now = time.time()
        async with self.transaction():
            await self._db.executemany(
                "INSERT INTO recommendations_sent (guild_id, member_id, item_id, date, score, reason, created_at, "
                "reason_item_id) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                [(guild_id, m, p[0], date, p[1], p[2], now, p[3] if len(p) > 3 else None)
                 for m, rows in picks.items() for p in rows],
            )

    async def recommended_item_ids(self, guild_id: int, member_id: int) -> set[int]:
        """Every item ever sent to the member in a digest (a digest never repeats an item)."""
        rows = await self._fetchall(
            "SELECT item_id FROM recommendations_sent WHERE guild_id = ? AND member_id = ?", (guild_id, member_id)
        )
        return {r["item_id"] for r in rows}

    async def recommended_by_member(self, guild_id: int, since: float | None = None) -> dict[int, set[int]]:
        """Member id -> items sent to them in the guild's digests (at or after ``since``, UNIX s, when
        given): :meth:`recommended_item_ids` / :meth:`recommended_since` for every member in one query."""
        rows = await self._fetchall(
            "SELECT member_id, item_id FROM recommendations_sent WHERE guild_id = ? AND created_at >= ?",
            (guild_id, since if since is not None else -1e18),
        )

        def by_member() -> dict[int, set[int]]:
            out: dict[int, set[int]] = {}
            for r in rows:
                out.setdefault(r[0], set()).add(r[1])
            return out

        return await built(by_member, len(rows))


    async def recommendations_on(self, guild_id: int, date: str) -> dict[int, list[tuple[int, float, str]]]:
        """Member id -> ``(item_id, score, reason)`` sent in the guild's digest of ``date`` (YYYY-MM-DD),
        best score first (a digest re-run on the same date returns what was already sent)."""
        rows = await self._fetchall(
            "SELECT member_id, item_id, score, reason FROM recommendations_sent WHERE guild_id = ? AND date = ? "
            "ORDER BY member_id, score DESC, item_id",
            (guild_id, date),
        )
        out: dict[int, list[tuple[int, float, str]]] = {}
        for r in rows:
            out.setdefault(r["member_id"], []).append((r["item_id"], r["score"], r["reason"]))
        return out
