"""Guild settings and channels (with their permission snapshots) — one part of :class:`recsys.store.Store`.

Who may view a channel, from its stored snapshot (:func:`channels_visible_to`): public, or one of the
member's roles or they themselves allowed, and they not denied. A **private thread** (kind
``private_thread``, from the bot or from DiscordChatExporter's ``GuildPrivateThread``) is never
public: only its members and the roles / members that manage threads in its parent see it. While its
membership is unknown (the snapshot has no ``"members_known": true`` — an imported thread, or one
whose members Discord has not told yet), :meth:`GuildStore.channels` adds its participants (the
authors of its items and those who replied to them), so it is shown to nobody but them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from recsys.storage.core import StoreCore
from recsys.storage.rows import chunks

#: The channel kind of a private thread (Discord type 12); see the module doc.
PRIVATE_THREAD = "private_thread"

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
        """The channel's row as stored (``visibility`` the snapshot dict, ``nsfw`` bool), or None."""
        row = await self._fetchone("SELECT * FROM channels WHERE id = ?", (channel_id,))
        return _channel(row) if row is not None else None

    async def channels(self, guild_id: int) -> list[dict[str, Any]]:
        """The guild's channels (as :meth:`get_channel`), by id, with the visibility the rule applies:
        a private thread is not public, and one whose membership is unknown lists its participants
        among its ``members`` (see the module doc)."""
        rows = [_channel(r) for r in await self._fetchall("SELECT * FROM channels WHERE guild_id = ? ORDER BY id",
                                                          (guild_id,))]
        unknown = [ch["id"] for ch in rows if ch["kind"] == PRIVATE_THREAD and not ch["visibility"].get("members_known")]
        joined = await self.thread_participants(guild_id, unknown) if unknown else {}
        for ch in rows:
            if ch["kind"] == PRIVATE_THREAD:
                vis = ch["visibility"] = {**ch["visibility"], "public": False}
                if ch["id"] in joined:
                    vis["members"] = sorted(set(vis.get("members", [])) | joined[ch["id"]])
        return rows

    async def thread_participants(self, guild_id: int, channel_ids: list[int]) -> dict[int, set[int]]:
        """Channel id -> who took part in it: the authors of its items and the members who replied to
        one of them (channels without any left out)."""
        out: dict[int, set[int]] = {}
        for chunk in chunks(channel_ids, 400):
            q = ",".join("?" * len(chunk))
            rows = await self._fetchall(
                f"SELECT channel_id, author_id FROM items WHERE guild_id = ? AND channel_id IN ({q}) "
                "AND author_id IS NOT NULL "
                "UNION SELECT it.channel_id, i.member_id FROM interactions i JOIN items it ON it.id = i.item_id "
                f"WHERE it.guild_id = ? AND it.channel_id IN ({q}) AND i.kind IN ('authored', 'replied')",
                [guild_id, *chunk, guild_id, *chunk],
            )
            for channel_id, member_id in rows:
                out.setdefault(channel_id, set()).add(member_id)
        return out

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
    :meth:`Store.get_member`, or None) may view: public (never a private thread), or one of their
    roles (the guild id is the @everyone role) or they themselves allowed, and they not denied."""
    roles = set(member["role_ids"]) if member else set()
    roles.add(guild_id)
    visible: set[int] = set()
    for ch in channels:
        vis = ch["visibility"]
        if member_id in vis.get("denied_members", []):
            continue
        public = vis.get("public", False) and ch.get("kind") != PRIVATE_THREAD
        if public or member_id in vis.get("members", []) or roles & set(vis.get("roles", [])):
            visible.add(ch["id"])
    return visible


def _channel(row: Any) -> dict[str, Any]:
    d = dict(row)
    d["visibility"] = json.loads(d["visibility"])
    d["nsfw"] = bool(d["nsfw"])
    return d


def _guild(row: Any) -> dict[str, Any]:
    d = dict(row)
    d["learn_channel_ids"] = json.loads(d["learn_channel_ids"])
    d["ignore_channel_ids"] = json.loads(d["ignore_channel_ids"])
    d["nsfw_allowed"] = bool(d["nsfw_allowed"])
    return d
