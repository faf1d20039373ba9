"""Forget and export a member (``/privacy``) — one part of :class:`recsys.store.Store`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from recsys.storage.core import StoreCore
from recsys.storage.rows import Item, interaction_row, member_row

# what a digest reason that quoted a forgotten member's message says instead
FORGOTTEN_REASON = "picked for you"


class PrivacyStore(StoreCore):
    """Every row about one user, across guilds: delete (:meth:`forget_user`) or export."""

    # ---- privacy --------------------------------------------------------------------------
    async def forget_user(self, user_id: int) -> dict[str, int]:
        """Delete every row about ``user_id`` in every guild: their items (with everyone's interactions
        on them), interactions, vectors, recommendations and member rows; digest reasons sent to others
        that quoted their items become ``FORGOTTEN_REASON``. Returns counts per table (and
        ``quotes_removed``).
        The caller removes the returned ids from the FAISS indexes (see recsys.privacy)."""
        counts: dict[str, int] = {}
        async with self.transaction():
            # digest reasons sent to others that quote this member's items lose the quote
            counts["quotes_removed"] = (await self._write(
                "UPDATE recommendations_sent SET reason = ?, reason_item_id = NULL "
                "WHERE reason_item_id IN (SELECT id FROM items WHERE author_id = ?)", (FORGOTTEN_REASON, user_id),
            )).rowcount
            counts["items"] = (await self._write("DELETE FROM items WHERE author_id = ?", (user_id,))).rowcount
            counts["interactions"] = (
                await self._write("DELETE FROM interactions WHERE member_id = ?", (user_id,))
            ).rowcount
            counts["recommendations_sent"] = (
                await self._write("DELETE FROM recommendations_sent WHERE member_id = ?", (user_id,))
            ).rowcount
            counts["members"] = (await self._write("DELETE FROM members WHERE user_id = ?", (user_id,))).rowcount
        self._names_epoch += 1
        return counts

    async def export_user(self, user_id: int) -> dict[str, Any]:
        """Everything stored about ``user_id`` as JSON-ready data (for /privacy export)."""
        members = [member_row(r) for r in await self._fetchall("SELECT * FROM members WHERE user_id = ?", (user_id,))]
        items = [asdict(Item.from_row(r)) for r in await self._fetchall("SELECT * FROM items WHERE author_id = ?", (user_id,))]
        inter = [asdict(interaction_row(r)) for r in await self._fetchall("SELECT * FROM interactions WHERE member_id = ?", (user_id,))]
        recs = [dict(r) for r in await self._fetchall("SELECT * FROM recommendations_sent WHERE member_id = ?", (user_id,))]
        return {"user_id": user_id, "memberships": members, "items": items, "interactions": inter,
                "recommendations_sent": recs}

    async def ids_owned_by(self, user_id: int) -> dict[int, dict[str, list[int]]]:
        """Per guild, the item ids authored and interaction ids made by ``user_id`` (to drop from indexes)."""
        out: dict[int, dict[str, list[int]]] = {}
        for r in await self._fetchall("SELECT guild_id, id FROM items WHERE author_id = ?", (user_id,)):
            out.setdefault(r["guild_id"], {"items": [], "interactions": []})["items"].append(r["id"])
        for r in await self._fetchall(
            "SELECT guild_id, id FROM interactions WHERE member_id = ? OR item_id IN (SELECT id FROM items WHERE author_id = ?)",
            (user_id, user_id),
        ):
            out.setdefault(r["guild_id"], {"items": [], "interactions": []})["interactions"].append(r["id"])
        return out
