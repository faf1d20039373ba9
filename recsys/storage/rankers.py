"""Per-guild fitted rankers (``guild_rankers``) — one part of :class:`recsys.store.Store`.

A row is written only when the guild's own ranker beat the default on its held-out time slice
(:mod:`recsys.guild_ranker` decides); it goes with the guild (``ON DELETE CASCADE``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from recsys.storage.core import StoreCore


class RankerStore(StoreCore):
    """The ``guild_rankers`` table: weights, when fitted, and the held-out metrics that justified it."""

    async def save_guild_ranker(
        self, guild_id: int, weights: Mapping[str, Any], fitted_at: float, metrics: Mapping[str, Any]
    ) -> None:
        """Store (replace) ``guild_id``'s ranker: ``weights`` (JSON-ready, e.g. ``recsys.rank.Ranker``'s
        fields), ``fitted_at`` (UNIX s) and ``metrics`` (JSON-ready: held-out NDCG@10 of both rankers, sizes)."""
        async with self.transaction():
            await self._write(
                "INSERT INTO guild_rankers (guild_id, weights, fitted_at, metrics) VALUES (?,?,?,?) "
                "ON CONFLICT(guild_id) DO UPDATE SET weights = excluded.weights, fitted_at = excluded.fitted_at, "
                "metrics = excluded.metrics",
                (guild_id, json.dumps(dict(weights)), float(fitted_at), json.dumps(dict(metrics))),
            )

    async def guild_ranker(self, guild_id: int) -> dict[str, Any] | None:
        """``{"weights": {...}, "fitted_at": UNIX s, "metrics": {...}}`` of ``guild_id``'s stored ranker,
        or None when it has none (the default ranks for it)."""
        row = await self._fetchone("SELECT weights, fitted_at, metrics FROM guild_rankers WHERE guild_id = ?",
                                   (guild_id,))
        if row is None:
            return None
        return {"weights": json.loads(row[0]), "fitted_at": float(row[1]), "metrics": json.loads(row[2])}

    async def delete_guild_ranker(self, guild_id: int) -> bool:
        """Drop ``guild_id``'s ranker (the default ranks for it again); False when it had none."""
        async with self.transaction():
            cur = await self._write("DELETE FROM guild_rankers WHERE guild_id = ?", (guild_id,))
        return cur.rowcount > 0
