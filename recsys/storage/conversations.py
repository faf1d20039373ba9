"""Chat lines and conversations — one part of :class:`recsys.store.Store`.

``chat_lines`` holds every recorded member message of a guild channel (short ones too: the builder,
:mod:`recsys.conversations`, links "yes, that fixed it" to its question); ``item_members`` who took
part in an item (``participant``: wrote a line of it) or was addressed in it without writing
(``addressed``: @mention, "nick:" or a reply). Conversation items themselves are ``items`` rows
written through the facade; :mod:`recsys.conversation_sync` decides what they are and writes the
links here in one transaction (:meth:`ConversationStore.write_conversation_links`).
Lines by opted-out or forgotten members, and forgotten message ids, are never stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from recsys.storage.core import StoreCore
from recsys.storage.rows import built, chunks

ROLES = ("participant", "addressed")
_UPSERT_LINE = (
    "INSERT INTO chat_lines (message_id, guild_id, channel_id, author_id, created_at, text, reply_to, mentions) "
    "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(message_id) DO UPDATE SET text = excluded.text, "
    "reply_to = excluded.reply_to, mentions = excluded.mentions"
)


def _line(row: Any) -> dict[str, Any]:
    return {"message_id": row[0], "guild_id": row[1], "channel_id": row[2], "author_id": row[3],
            "created_at": row[4], "text": row[5], "reply_to": row[6], "mentions": json.loads(row[7]),
            "conversation_id": row[8]}


class ConversationStore(StoreCore):
    """``chat_lines`` and ``item_members`` rows, and the conversation links of lines and items."""

    # ---- chat lines -------------------------------------------------------------------------
    async def add_chat_lines(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert or update chat lines: dicts with ``message_id``, ``guild_id``, ``channel_id``,
        ``author_id``, ``created_at`` (UNIX s), ``text`` and optional ``reply_to`` (message id) and
        ``mentions`` (user ids). An existing line keeps its ``conversation_id`` (text, reply and
        mentions are updated). Lines by opted-out or forgotten members and forgotten message ids are
        skipped (tombstones, ``PrivacyStore``). Returns how many rows were written. One transaction."""
        if not rows:
            return 0
        opted = {a: await self.is_opted_out(a) for a in {int(r["author_id"]) for r in rows}}  # type: ignore[attr-defined]
        params = []
        async with self.transaction():
            _, buried = await self._buried((), [r["message_id"] for r in rows])  # type: ignore[attr-defined]
            for r in rows:
                if opted[int(r["author_id"])] or int(r["message_id"]) in buried:
                    continue
                params.append((int(r["message_id"]), int(r["guild_id"]), int(r["channel_id"]), int(r["author_id"]),
                               float(r["created_at"]), str(r["text"]), r.get("reply_to"),
                               json.dumps([int(m) for m in r.get("mentions") or ()])))
            for gid in sorted({p[1] for p in params}):
                await self.upsert_guild(gid)  # type: ignore[attr-defined]
            await self._db.executemany(_UPSERT_LINE, params)
        return len(params)

    async def chat_lines(self, guild_id: int, channel_id: int | None = None, *, since: float | None = None,
                         until: float | None = None) -> list[dict[str, Any]]:
        """A guild's (or one channel's) chat lines created in ``[since, until]`` (UNIX s, open when
        None), in time order (then id): dicts as :meth:`add_chat_lines` plus ``conversation_id``
        (None when no conversation holds the line). Built off the event loop when large."""
        sql = ("SELECT message_id, guild_id, channel_id, author_id, created_at, text, reply_to, mentions, "
               "conversation_id FROM chat_lines WHERE guild_id = ? AND created_at >= ? AND created_at <= ?")
        params: list[Any] = [guild_id, -1e18 if since is None else since, 1e18 if until is None else until]
        if channel_id is not None:
            sql += " AND channel_id = ?"
            params.append(channel_id)
        rows = await self._fetchall(sql + " ORDER BY created_at, message_id", params)
        return await built(lambda: [_line(r) for r in rows], len(rows))

    async def chat_channels(self, guild_id: int) -> list[int]:
        """The channels of ``guild_id`` that have chat lines, by id."""
        rows = await self._fetchall("SELECT DISTINCT channel_id FROM chat_lines WHERE guild_id = ? ORDER BY 1",
                                    (guild_id,))
        return [r[0] for r in rows]

    async def chat_line_ids(self, guild_id: int, channel_id: int, after: float, until: float
                            ) -> dict[int, tuple[int, float]]:
        """The channel's lines created in ``(after, until]`` (UNIX s; infinite bounds allowed):
        message id -> ``(author_id, created_at)``."""
        rows = await self._fetchall(
            "SELECT message_id, author_id, created_at FROM chat_lines WHERE guild_id = ? AND channel_id = ? "
            "AND created_at > ? AND created_at <= ?",
            (guild_id, channel_id, max(after, -1e18), min(until, 1e18)))
        return {r[0]: (r[1], r[2]) for r in rows}

    async def conversation_starts(self, conversation_ids: Iterable[int]) -> dict[int, float]:
        """Conversation id -> creation time (UNIX s) of its first stored line."""
        out: dict[int, float] = {}
        for chunk in chunks(sorted(set(conversation_ids)), 500):
            q = ",".join("?" * len(chunk))
            out.update((r[0], r[1]) for r in await self._fetchall(
                f"SELECT conversation_id, MIN(created_at) FROM chat_lines WHERE conversation_id IN ({q}) "
                "GROUP BY conversation_id", chunk))
        return out

    async def edit_chat_line(self, message_id: int, text: str) -> tuple[int, int, float] | None:
        """Replace a line's text (an edited message); ``(guild_id, channel_id, created_at)`` of the
        line, or None when no such line is stored."""
        row = await self._fetchone("SELECT guild_id, channel_id, created_at FROM chat_lines WHERE message_id = ?",
                                   (message_id,))
        if row is None:
            return None
        await self._write("UPDATE chat_lines SET text = ? WHERE message_id = ?", (text, message_id))
        return row[0], row[1], row[2]

    async def delete_chat_lines(self, message_ids: Iterable[int]) -> list[tuple[int, int, float]]:
        """Delete lines (deleted messages); ``(guild_id, channel_id, created_at)`` of each one deleted."""
        out: list[tuple[int, int, float]] = []
        async with self.transaction():
            for chunk in chunks(sorted(set(message_ids)), 500):
                q = ",".join("?" * len(chunk))
                rows = await self._fetchall(
                    f"SELECT guild_id, channel_id, created_at FROM chat_lines WHERE message_id IN ({q})", chunk)
                out += [(r[0], r[1], r[2]) for r in rows]
                await self._write(f"DELETE FROM chat_lines WHERE message_id IN ({q})", chunk)
        return out

    async def member_chat(self, member_id: int) -> dict[tuple[int, int], set[int]]:
        """``(guild_id, channel_id)`` -> ids of the conversations holding a line of ``member_id`` or
        addressing them (the conversations a forget must rebuild); channels with their lines but no
        conversation map to an empty set."""
        out: dict[tuple[int, int], set[int]] = {}
        for g, c, conv in await self._fetchall(
            "SELECT DISTINCT guild_id, channel_id, conversation_id FROM chat_lines WHERE author_id = ? "
            "UNION SELECT DISTINCT l.guild_id, l.channel_id, l.conversation_id FROM item_members m "
            "JOIN chat_lines l ON l.conversation_id = m.item_id WHERE m.member_id = ?", (member_id, member_id)):
            convs = out.setdefault((g, c), set())
            if conv is not None:
                convs.add(conv)
        return out

    async def display_names(self, guild_id: int) -> dict[int, str]:
        """Member id -> display name (non-empty ones) of ``guild_id``: how members address each other
        ("nick: …"). Cached per guild until a member joins, is renamed or anyone is forgotten
        (:meth:`MemberStore.names_version`), so a live sync does not re-read 10k members per batch."""
        cache: dict[int, tuple[Any, dict[int, str]]] = self.__dict__.setdefault("_display_names", {})
        key = (await self.member_count(guild_id), self.names_version(guild_id))  # type: ignore[attr-defined]
        hit = cache.get(guild_id)
        if hit is None or hit[0] != key:
            rows = await self._fetchall(
                "SELECT user_id, display_name FROM members WHERE guild_id = ? AND display_name != ''", (guild_id,))
            hit = cache[guild_id] = (key, {r[0]: r[1] for r in rows})
        return hit[1]

    async def bot_ids(self, guild_id: int) -> set[int]:
        """Members of ``guild_id`` flagged bot (by Discord, or by :meth:`flag_bots`)."""
        return {r[0] for r in await self._fetchall("SELECT user_id FROM members WHERE guild_id = ? AND is_bot = 1",
                                                   (guild_id,))}

    async def flag_bots(self, guild_id: int, member_ids: Iterable[int]) -> None:
        """Flag members of ``guild_id`` as bots (an IRC factoid bot answering ``!`` triggers); members
        not stored are added with no name."""
        async with self.transaction():
            for m in sorted({int(i) for i in member_ids}):
                await self._write("INSERT INTO members (guild_id, user_id, is_bot) VALUES (?, ?, 1) "
                                  "ON CONFLICT(guild_id, user_id) DO UPDATE SET is_bot = 1", (guild_id, m))

    async def backfill_pending(self) -> list[int]:
        """Guilds whose chat lines still wait for their first conversation sync (schema 5's
        ``conversation_backfill`` queue: databases from before schema 4), by id."""
        return [r[0] for r in await self._fetchall("SELECT guild_id FROM conversation_backfill ORDER BY 1")]

    async def backfill_done(self, guild_id: int) -> None:
        """Take ``guild_id`` off the backfill queue."""
        await self._write("DELETE FROM conversation_backfill WHERE guild_id = ?", (guild_id,))

    # ---- links ------------------------------------------------------------------------------
    async def write_conversation_links(
        self, line_conversation: Mapping[int, int | None], item_conversation: Mapping[int, int | None],
        members: Mapping[tuple[int, int], Sequence[tuple[int, str]]],
    ) -> None:
        """In one transaction: ``chat_lines.conversation_id`` (message id -> conversation id or None),
        ``items.conversation_id`` (item id -> id or None; absent items are ignored) and the
        ``item_members`` of each ``(guild_id, item_id)`` in ``members`` replaced by its
        ``(member_id, role)`` pairs (items not stored are skipped)."""
        async with self.transaction():
            await self._db.executemany("UPDATE chat_lines SET conversation_id = ? WHERE message_id = ?",
                                       [(c, m) for m, c in line_conversation.items()])
            await self._db.executemany("UPDATE items SET conversation_id = ? WHERE id = ?",
                                       [(c, i) for i, c in item_conversation.items()])
            ids = sorted({i for _, i in members})
            present = await self._present_item_ids(ids)  # type: ignore[attr-defined]
            for chunk in chunks(ids, 500):
                await self._write(f"DELETE FROM item_members WHERE item_id IN ({','.join('?' * len(chunk))})", chunk)
            await self._db.executemany(
                "INSERT INTO item_members (guild_id, item_id, member_id, role) VALUES (?,?,?,?) "
                "ON CONFLICT DO NOTHING",
                [(g, i, m, role) for (g, i), pairs in members.items() if i in present for m, role in pairs])

    async def item_member_pairs(self, guild_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Who took part in or was addressed by which item of ``guild_id`` (both roles):
        ``(member_ids, item_ids)``, int64 arrays of equal length sorted by member then item, one pair
        each (a member in both roles counts once). Never recommend an item to one of its members."""
        rows = await self._fetchall(
            "SELECT DISTINCT member_id, item_id FROM item_members WHERE guild_id = ? ORDER BY member_id, item_id",
            (guild_id,))

        def arrays() -> tuple[np.ndarray, np.ndarray]:
            pairs = np.array([(r[0], r[1]) for r in rows], np.int64).reshape(-1, 2)
            return np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])

        return await built(arrays, len(rows))

    async def item_members_of(self, item_id: int) -> dict[str, list[int]]:
        """``{"participant": [ids], "addressed": [ids]}`` of one item (sorted)."""
        out: dict[str, list[int]] = {role: [] for role in ROLES}
        for m, role in await self._fetchall(
            "SELECT member_id, role FROM item_members WHERE item_id = ? ORDER BY member_id", (item_id,)):
            out[role].append(m)
        return out

    async def conversation_message_ids(self, item_ids: Iterable[int]) -> dict[int, list[int]]:
        """Item id -> the Discord message ids it covers: every chat line of a conversation or thread
        (time order); ``[id]`` for a single message item; ``[]`` for stories, catalogue entries and a
        thread whose lines are not stored. Ids not stored are left out."""
        ids = sorted({int(i) for i in item_ids})
        out: dict[int, list[int]] = {}
        for chunk in chunks(ids, 500):
            q = ",".join("?" * len(chunk))
            for conv, mid in await self._fetchall(
                f"SELECT conversation_id, message_id FROM chat_lines WHERE conversation_id IN ({q}) "
                "ORDER BY created_at, message_id", chunk):
                out.setdefault(conv, []).append(mid)
            for i, kind, meta in await self._fetchall(f"SELECT id, kind, meta FROM items WHERE id IN ({q})", chunk):
                if i not in out:
                    single = kind == "message" and not json.loads(meta).get("thread")
                    out[i] = [i] if single else []
        return {i: out[i] for i in ids if i in out}
