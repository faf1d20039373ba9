"""Members: display names, roles, subscriptions and opt-outs — one part of :class:`recsys.store.Store`.

Opted-out members are never recorded: the other parts ask :meth:`MemberStore.is_opted_out`. A
forgotten member (``recsys.storage.privacy``) counts as opted out until they opt in again, and gets
no member row at all meanwhile (no display name, no roles)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from recsys.storage.core import StoreCore
from recsys.storage.rows import member_row


class MemberStore(StoreCore):
    """Member rows (dicts as :func:`recsys.storage.rows.member_row`) and the opt-out state."""

    # ---- members --------------------------------------------------------------------------
    async def upsert_member(
        self,
        guild_id: int,
        user_id: int,
        display_name: str = "",
        *,
        role_ids: Iterable[int] | None = None,
        is_bot: bool = False,
    ) -> bool:
        """Store a member's display name (an empty one keeps the stored name), roles (None keeps them)
        and bot flag; an opted-out member's row keeps ``opted_out`` set. Returns False — nothing
        written — for a forgotten member (``PrivacyStore.is_forgotten``): their row must not come back
        from a live event or an import until they opt in again."""
        async with self.transaction():  # the check and the write together: a forget cannot slip between
            if await self.is_forgotten(user_id):  # type: ignore[attr-defined]
                return False
            await self.upsert_guild(guild_id)  # type: ignore[attr-defined]
            roles = json.dumps(sorted(int(r) for r in role_ids)) if role_ids is not None else None
            opted = int(await self.is_opted_out(user_id))
            before = await self._fetchone(
                "SELECT display_name FROM members WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
            )
            await self._write(
                "INSERT INTO members (guild_id, user_id, display_name, role_ids, is_bot, opted_out) "
                "VALUES (?, ?, ?, COALESCE(?, '[]'), ?, ?) ON CONFLICT(guild_id, user_id) DO UPDATE SET "
                "display_name = CASE WHEN excluded.display_name != '' THEN excluded.display_name ELSE display_name END, "
                # a bot stays one (recsys.chat_bots flags IRC factoid bots Discord does not)
                "role_ids = COALESCE(?, role_ids), is_bot = MAX(is_bot, excluded.is_bot)",
                (guild_id, user_id, display_name, roles, int(is_bot), opted, roles),
            )
        if before is None or (display_name and display_name != before[0]):  # a new member or a new name
            self._names_versions[guild_id] = self._names_versions.get(guild_id, 0) + 1
        return True

    def names_version(self, guild_id: int) -> tuple[int, int]:
        """Changes whenever a member of the guild is added or renamed, or anyone is forgotten, through
        this store (a cache key for the guild's display names)."""
        return self._names_epoch, self._names_versions.get(guild_id, 0)

    async def get_member(self, guild_id: int, user_id: int) -> dict[str, Any] | None:
        row = await self._fetchone("SELECT * FROM members WHERE guild_id = ? AND user_id = ?", (guild_id, user_id))
        return member_row(row) if row else None

    async def members(self, guild_id: int) -> list[dict[str, Any]]:
        rows = await self._fetchall("SELECT * FROM members WHERE guild_id = ? ORDER BY user_id", (guild_id,))
        return [member_row(r) for r in rows]

    async def member_count(self, guild_id: int) -> int:
        (n,) = await self._fetchone("SELECT COUNT(*) FROM members WHERE guild_id = ?", (guild_id,))
        return int(n)

    async def member_names(self, guild_id: int) -> set[str]:
        """The guild's member display names, lower-case (empty names left out)."""
        rows = await self._fetchall("SELECT DISTINCT display_name FROM members WHERE guild_id = ?", (guild_id,))
        return {r[0].lower() for r in rows if r[0]}

    async def find_members(self, name: str, guild_id: int | None = None) -> list[dict[str, Any]]:
        """Members whose display name equals ``name`` (case-insensitive), or whose user id is ``name``."""
        sql = "SELECT * FROM members WHERE (lower(display_name) = lower(?) OR CAST(user_id AS TEXT) = ?)"
        params: list[Any] = [name, name]
        if guild_id is not None:
            sql += " AND guild_id = ?"
            params.append(guild_id)
        return [member_row(r) for r in await self._fetchall(sql + " ORDER BY guild_id", params)]

    async def set_subscribed(self, guild_id: int, user_id: int, subscribed: bool) -> None:
        await self.upsert_member(guild_id, user_id)
        await self._write(
            "UPDATE members SET subscribed = ? WHERE guild_id = ? AND user_id = ?",
            (int(subscribed), guild_id, user_id),
        )

    async def subscribed_members(self, guild_id: int) -> list[dict[str, Any]]:
        rows = await self._fetchall(
            "SELECT * FROM members WHERE guild_id = ? AND subscribed = 1 AND opted_out = 0 ORDER BY user_id",
            (guild_id,),
        )
        return [member_row(r) for r in rows]

    async def members_with_interactions(self, guild_id: int, minimum: int = 3) -> list[dict[str, Any]]:
        """Members (not opted out, not bots) with at least ``minimum`` interactions in the guild."""
        rows = await self._fetchall(
            "SELECT m.* FROM members m JOIN interactions i ON i.guild_id = m.guild_id AND i.member_id = m.user_id "
            "WHERE m.guild_id = ? AND m.opted_out = 0 AND m.is_bot = 0 AND i.kind != 'recommended' "
            "GROUP BY m.user_id HAVING COUNT(*) >= ? ORDER BY m.user_id",
            (guild_id, minimum),
        )
        return [member_row(r) for r in rows]

    async def set_opted_out(self, user_id: int, opted_out: bool = True) -> None:
        """Opt a user out of (or back into) recording, in every guild. Opting in also lifts a forgotten
        member's author tombstone (``PrivacyStore.lift_author_tombstone``; their forgotten messages
        stay forgotten)."""
        if not opted_out:
            await self.lift_author_tombstone(user_id)  # type: ignore[attr-defined]
        await self._write("UPDATE members SET opted_out = ?, subscribed = CASE WHEN ? THEN 0 ELSE subscribed END "
                          "WHERE user_id = ?", (int(opted_out), int(opted_out), user_id))
        if opted_out and not await self._fetchone("SELECT 1 FROM members WHERE user_id = ?", (user_id,)):
            # remember the choice even for a user we have never seen in a guild
            await self._write(
                "INSERT INTO guilds (id, name, created_at) VALUES (0, '(opt-outs)', ?) ON CONFLICT(id) DO NOTHING",
                (time.time(),),
            )
            await self._write(
                "INSERT INTO members (guild_id, user_id, opted_out) VALUES (0, ?, 1) "
                "ON CONFLICT(guild_id, user_id) DO UPDATE SET opted_out = 1",
                (user_id,),
            )

    async def is_opted_out(self, user_id: int) -> bool:
        """Whether nothing may be recorded about ``user_id``: they opted out, or were forgotten and
        have not opted in since."""
        (out,) = await self._fetchone(
            "SELECT EXISTS (SELECT 1 FROM members WHERE user_id = ? AND opted_out = 1) "
            "OR EXISTS (SELECT 1 FROM tombstones WHERE kind = 'author' AND digest = ?)",
            (user_id, await self.author_digest(user_id)),  # type: ignore[attr-defined]
        )
        return bool(out)

    async def opted_out_ids(self, guild_id: int) -> set[int]:
        rows = await self._fetchall(
            "SELECT DISTINCT user_id FROM members WHERE opted_out = 1 AND user_id IN "
            "(SELECT user_id FROM members WHERE guild_id = ?)",
            (guild_id,),
        )
        return {r["user_id"] for r in rows}
