"""Forget and export a member (``/privacy``), and the tombstones that keep forgotten data forgotten —
one part of :class:`recsys.store.Store`.

A forget deletes every row about the member and leaves two kinds of tombstone (table ``tombstones``):

- ``author``: the member. Nothing they write, react or are (no member row, no display name) is
  recorded again, from live events or imports, until they opt in again (:meth:`MemberStore.set_opted_out`
  lifts it). ``is_opted_out`` is true meanwhile.
- ``message``: each message id they authored (items, and short messages known only from their
  ``authored`` interaction). Those texts were deleted on request, so they stay out even after an
  opt-in: another member replying to or reacting to one, a re-import of an old export, or an edit
  never brings it back; nor anything that points at it (a reply's or reaction's interaction).

A tombstone is a keyed BLAKE2b digest (16 bytes) of the id, never the id: the key is drawn once per
database (``tombstone_key``), so the file can tell whether a *given* id was forgotten — that is what a
tombstone is for — but holds no forgotten id to read back. The facade (``recsys.service.Recommender``)
filters every write through :meth:`PrivacyStore.recordable` inside the write's transaction, so a
forget running at the same time cannot be overtaken.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from recsys.storage.core import StoreCore
from recsys.storage.rows import Item, chunks, interaction_row, member_row

# what a digest reason that quoted a forgotten member's message says instead
FORGOTTEN_REASON = "picked for you"
DIGEST_BYTES = 16  # BLAKE2b output kept per tombstone: a collision has odds 2^-128 per pair of ids


def tombstone_digest(key: bytes, snowflake: int) -> bytes:
    """The tombstone of an id: BLAKE2b keyed with the database's ``key``, over the id as 8 signed
    big-endian bytes, :data:`DIGEST_BYTES` long."""
    return hashlib.blake2b(int(snowflake).to_bytes(8, "big", signed=True), key=key, digest_size=DIGEST_BYTES).digest()


class PrivacyStore(StoreCore):
    """Every row about one user, across guilds: delete (:meth:`forget_user`) or export; tombstones."""

    # ---- tombstones -------------------------------------------------------------------------
    async def _digests(self, ids: Iterable[int]) -> dict[bytes, int]:
        """Tombstone digest -> id, for ``ids`` (the key is read once per store)."""
        if self._tombstone_key is None:
            row = await self._fetchone("SELECT key FROM tombstone_key WHERE id = 1")
            self._tombstone_key = bytes(row[0])
        return {tombstone_digest(self._tombstone_key, i): int(i) for i in ids}

    async def _buried(self, authors: Iterable[int | None], messages: Iterable[int | None]) -> tuple[set[int], set[int]]:
        """Which of ``authors`` have an ``author`` tombstone and which of ``messages`` a ``message``
        one (None ignored): one query on the primary key per 500 ids."""
        want = {"author": await self._digests({int(i) for i in authors if i is not None}),
                "message": await self._digests({int(i) for i in messages if i is not None})}
        out: dict[str, set[int]] = {"author": set(), "message": set()}
        for chunk in chunks(list({*want["author"], *want["message"]}), 500):
            q = ",".join("?" * len(chunk))
            for kind, digest in await self._fetchall(  # a search of the primary key per digest
                f"SELECT kind, digest FROM tombstones WHERE kind IN ('author', 'message') AND digest IN ({q})", chunk,
            ):
                if bytes(digest) in want[kind]:
                    out[kind].add(want[kind][bytes(digest)])
        return out["author"], out["message"]

    async def _bury(self, kind: str, ids: Iterable[int]) -> None:
        digests = await self._digests(ids)
        await self._db.executemany("INSERT INTO tombstones (kind, digest) VALUES (?, ?) ON CONFLICT DO NOTHING",
                                   [(kind, d) for d in digests])

    async def is_forgotten(self, user_id: int) -> bool:
        """Whether ``user_id`` was forgotten and has not opted in since (their author tombstone)."""
        return bool((await self._buried([user_id], ()))[0])

    async def author_digest(self, user_id: int) -> bytes:
        """``user_id``'s author tombstone digest (to look it up in SQL with other conditions)."""
        return next(iter(await self._digests([user_id])))

    async def lift_author_tombstone(self, user_id: int) -> None:
        """Record ``user_id`` again (an opt-in). Their message tombstones stay."""
        await self._write("DELETE FROM tombstones WHERE kind = 'author' AND digest = ?", (await self.author_digest(user_id),))

    async def recordable_items(self, items: Sequence[Item]) -> list[Item]:
        """:meth:`recordable` for items alone: those not authored by a forgotten member and whose id
        is no forgotten message (also for reads, e.g. ``recsys.rated_stories``)."""
        return (await self.recordable(items))[0]

    async def recordable(
        self, items: Sequence[Item] = (), rows: Sequence[dict[str, Any]] = (), *, stored: Iterable[int] = ()
    ) -> tuple[list[Item], list[dict[str, Any]]]:
        """What of a write may be recorded. ``items`` without those authored by a forgotten member or
        whose id is a forgotten message; interaction dicts ``rows`` (as ``add_interactions``) without
        those by a forgotten member, on a forgotten message (``item_id``) or produced by one
        (``source_id``: a reaction to it), and without those on an item that is not stored — skipped
        because its author opted out or was forgotten (the foreign key would refuse the row and roll
        back its whole batch). ``stored``: item ids written in the same transaction (counted as
        stored). Call it inside the :meth:`transaction` that writes them: one tombstone query (per
        250 ids) and, for rows on items, one existence query."""
        authors, messages = await self._buried(
            [it.author_id for it in items] + [r["member_id"] for r in rows],
            [it.id for it in items] + [r.get(k) for r in rows for k in ("item_id", "source_id")],
        )
        items = [it for it in items if it.id not in messages and it.author_id not in authors]
        kept = [r for r in rows if int(r["member_id"]) not in authors
                and r.get("item_id") not in messages and r.get("source_id") not in messages]
        present = set(stored)
        wanted = {r["item_id"] for r in kept if r.get("item_id") is not None} - present
        if wanted:
            present |= await self.existing_ids("item", list(wanted))  # type: ignore[attr-defined]
        return items, [r for r in kept if r.get("item_id") is None or r["item_id"] in present]

    # ---- privacy --------------------------------------------------------------------------
    async def forget_user(self, user_id: int, *, scrub: bool = True) -> dict[str, int]:
        """Delete every row about ``user_id`` in every guild: their items (with everyone's interactions
        on them), interactions, vectors, recommendations, member rows, chat lines and ``item_members``
        rows; digest reasons sent to others that quoted their items become ``FORGOTTEN_REASON``.
        Tombstones the member and the ids of the messages they authored (see the module docstring),
        then (unless ``scrub`` is False: the caller still rewrites rows and calls :meth:`scrub` itself)
        :meth:`scrub`\\ s the files (VACUUM, WAL truncated). Returns counts per table (and
        ``quotes_removed``). The caller removes the returned ids from the FAISS indexes and rebuilds
        the conversations they were in (see ``Recommender.forget_user``)."""
        counts: dict[str, int] = {}
        async with self.transaction():
            # tombstones first: a write waiting for this transaction sees them (recordable)
            messages = await self._fetchall(
                "SELECT id FROM items WHERE author_id = ? UNION SELECT source_id FROM interactions "
                "WHERE member_id = ? AND kind = 'authored' AND source_id IS NOT NULL "
                "UNION SELECT message_id FROM chat_lines WHERE author_id = ?", (user_id, user_id, user_id))
            await self._bury("author", [user_id])
            await self._bury("message", [r[0] for r in messages])
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
            counts["chat_lines"] = (await self._write("DELETE FROM chat_lines WHERE author_id = ?", (user_id,))).rowcount
            counts["item_members"] = (
                await self._write("DELETE FROM item_members WHERE member_id = ?", (user_id,))).rowcount
        self._names_epoch += 1
        if scrub:
            await self.scrub()
        return counts

    async def export_user(self, user_id: int) -> dict[str, Any]:
        """Everything stored about ``user_id`` as JSON-ready data (for /privacy export): memberships,
        items, interactions, recommendations sent and chat lines (every message of theirs kept)."""
        members = [member_row(r) for r in await self._fetchall("SELECT * FROM members WHERE user_id = ?", (user_id,))]
        items = [asdict(Item.from_row(r)) for r in await self._fetchall("SELECT * FROM items WHERE author_id = ?", (user_id,))]
        inter = [asdict(interaction_row(r)) for r in await self._fetchall("SELECT * FROM interactions WHERE member_id = ?", (user_id,))]
        recs = [dict(r) for r in await self._fetchall("SELECT * FROM recommendations_sent WHERE member_id = ?", (user_id,))]
        lines = [dict(r) | {"mentions": json.loads(r["mentions"])}
                 for r in await self._fetchall("SELECT * FROM chat_lines WHERE author_id = ? ORDER BY created_at",
                                               (user_id,))]
        return {"user_id": user_id, "memberships": members, "items": items, "interactions": inter,
                "recommendations_sent": recs, "chat_lines": lines}

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
