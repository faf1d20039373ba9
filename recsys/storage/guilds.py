"""Guild settings and channels (with their permission snapshots) — one part of :class:`recsys.store.Store`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from recsys.storage.core import StoreCore

_GUILD_SETTING_KEYS = {
    "name",
    "digest_channel_id",
    "digest_time",
    "timezone",
    "persona",
    "nsfw_allowed",
    "learn_channel_ids",
    "ignore_channel_ids",
    "last_digest_date",
}


class GuildStore(StoreCore):
    """Guild rows (settings as a dict; see :meth:`get_guild`) and channel rows."""

    # ---- guilds ---------------------------------------------------------------------------
    async def upsert_guild(self, guild_id: int, name: str = "") -> None:
        await self._write(
            "INSERT INTO guilds (id, name, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET name = CASE WHEN excluded.name != '' THEN excluded.name ELSE name END",
            (guild_id, name, time.time()),
        )

    async def get_guild(self, guild_id: int) -> dict[str, Any] | None:
        """The guild's row as a dict (``learn_channel_ids`` / ``ignore_channel_ids`` lists,
        ``nsfw_allowed`` bool), or None."""
        row = await self._fetchone("SELECT * FROM guilds WHERE id = ?", (guild_id,))
        return _guild(row) if row is not None else None

    async def list_guilds(self) -> list[dict[str, Any]]:
        """Every guild row (as :meth:`get_guild`), by id, in one query."""
        return [_guild(r) for r in await self._fetchall("SELECT * FROM guilds ORDER BY id")]

    async def update_guild(self, guild_id: int, **settings: Any) -> None:
        """Set guild settings (keys: digest_channel_id, digest_time, timezone, persona, nsfw_allowed,
        learn_channel_ids, ignore_channel_ids, last_digest_date, name). Raises ValueError on unknown keys."""
        unknown = set(settings) - _GUILD_SETTING_KEYS
        if unknown:
            raise ValueError(f"unknown guild setting(s): {', '.join(sorted(unknown))}")
        await self.upsert_guild(guild_id)
        for key, value in settings.items():
            if key in ("learn_channel_ids", "ignore_channel_ids"):
                value = json.dumps([int(x) for x in value])
            elif key == "nsfw_allowed":
                value = int(bool(value))
            await self._write(f"UPDATE guilds SET {key} = ? WHERE id = ?", (value, guild_id))

    # ---- channels -------------------------------------------------------------------------
    async def upsert_channel(
        self,
        channel_id: int,
        guild_id: int,
        name: str = "",
        kind: str = "text",
        *,
        parent_id: int | None = None,
        nsfw: bool = False,
        visibility: dict[str, Any] | None = None,
    ) -> None:
        """Insert or update a channel. ``visibility`` is the permission snapshot
        ``{"public": bool, "roles": [role ids that may view], "members": [...], "denied_members": [...]}``;
        ``None`` keeps the stored snapshot (public for a new channel)."""
        await self.upsert_guild(guild_id)
        vis = json.dumps(visibility) if visibility is not None else None
        await self._write(
            "INSERT INTO channels (id, guild_id, name, kind, parent_id, nsfw, visibility, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, COALESCE(?, '{\"public\": true}'), ?) "
            "ON CONFLICT(id) DO UPDATE SET name = excluded.name, kind = excluded.kind, "
            "parent_id = excluded.parent_id, nsfw = excluded.nsfw, "
            "visibility = COALESCE(?, visibility), updated_at = excluded.updated_at",
            (channel_id, guild_id, name, kind, parent_id, int(nsfw), vis, time.time(), vis),
        )

    async def get_channel(self, channel_id: int) -> dict[str, Any] | None:
        row = await self._fetchone("SELECT * FROM channels WHERE id = ?", (channel_id,))
        if row is None:
            return None
        d = dict(row)
        d["visibility"] = json.loads(d["visibility"])
        d["nsfw"] = bool(d["nsfw"])
        return d

    async def channels(self, guild_id: int) -> list[dict[str, Any]]:
        rows = await self._fetchall("SELECT id FROM channels WHERE guild_id = ? ORDER BY id", (guild_id,))
        return [await self.get_channel(r["id"]) for r in rows]  # type: ignore[misc]

    async def set_channel_persona(self, channel_id: int, persona: str | None) -> None:
        await self._write("UPDATE channels SET persona = ? WHERE id = ?", (persona, channel_id))

    async def visible_channel_ids(self, guild_id: int, member_id: int) -> set[int]:
        """Channels of ``guild_id`` the member may view, from the stored permission snapshots and the
        member's stored roles (see :func:`channels_visible_to`)."""
        member = await self.get_member(guild_id, member_id)
        return channels_visible_to(guild_id, member, member_id, await self.channels(guild_id))



def channels_visible_to(
    guild_id: int, member: dict[str, Any] | None, member_id: int, channels: Iterable[dict[str, Any]]
) -> set[int]:
    """Ids of ``channels`` (rows as :meth:`Store.channels`) that ``member`` (a row as
    :meth:`Store.get_member`, or None) may view: public, or one of their roles (the guild id is the
    @everyone role) or they themselves allowed, and they not denied."""
    roles = set(member["role_ids"]) if member else set()
    roles.add(guild_id)
    visible: set[int] = set()
    for ch in channels:
        vis = ch["visibility"]
        if member_id in vis.get("denied_members", []):
            continue
        if vis.get("public", False) or member_id in vis.get("members", []) or roles & set(vis.get("roles", [])):
            visible.add(ch["id"])
    return visible


def _guild(row: Any) -> dict[str, Any]:
    d = dict(row)
    d["learn_channel_ids"] = json.loads(d["learn_channel_ids"])
    d["ignore_channel_ids"] = json.loads(d["ignore_channel_ids"])
    d["nsfw_allowed"] = bool(d["nsfw_allowed"])
    return d
