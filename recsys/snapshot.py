"""Per-guild snapshots of the ranking inputs that change only when the database does: what
:func:`recsys.batch.recommend_many` reads of a guild (interactions, the item table as columns,
members, channels, opt-outs, item members, stories) and, filled in by the ranking thread, the
member-independent columns derived from them (:func:`recsys.batch_rank.column_base`). ``/recommend``
is a batch of one member, so without this every call re-read the whole guild (≈ 3 s at 10k members ×
100k items on 2 cores, ``python -m bench.recsys``).

Invalidation is exact and needs no write-path hooks: a snapshot is served only while SQLite's own
change counters are what they were when it was read — the connection's ``total_changes()`` (rows
inserted, updated or deleted by this connection since it opened, rolled-back ones included) and
``PRAGMA data_version`` (changes committed by any other connection); both are read, in one statement,
before and after the guild is loaded, and a load during which they moved (or a transaction was
open on the connection) is used once and not cached (https://sqlite.org/c3ref/total_changes.html,
https://sqlite.org/pragma.html#pragma_data_version).
Nothing here is read from the FAISS indexes (vectors are looked up per call), so an index change
without SQL needs no key. Reads that depend on the call's ``now`` (items sent within the repeat
window, the newest candidates) are not cached.

Memory: one snapshot per guild, the :data:`MAX_GUILDS` most recently used guilds per store (a 100k-item
guild's snapshot is ≈ 60 MB, mostly its interactions as objects).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recsys.store import Interaction, Store

__all__ = ["MAX_GUILDS", "GuildSnapshot", "clear", "guild_snapshot", "loads"]

MAX_GUILDS = 4  # snapshots kept per store (least recently used dropped first)

_CACHE: weakref.WeakKeyDictionary[Any, OrderedDict[int, GuildSnapshot]] = weakref.WeakKeyDictionary()
_LOCKS: weakref.WeakKeyDictionary[Any, dict[int, asyncio.Lock]] = weakref.WeakKeyDictionary()
_LOADS: dict[str, int] = {"loads": 0, "hits": 0}  # counters for tests and benchmarks


@dataclass
class GuildSnapshot:
    """A guild's ranking inputs as read at change counters ``version`` (``(total_changes, data_version)``)."""

    version: tuple[int, int] | None
    interactions: list[Interaction]
    table: dict[str, Any]  # Store.item_columns (numpy arrays; never modified in place)
    members: dict[int, dict]
    channels: list[dict]
    opted: set[int]
    pairs: tuple[Any, Any]  # Store.item_member_pairs
    story_ids: frozenset[int]
    derived: dict[str, Any] = field(default_factory=dict)  # filled by the ranking (recsys.batch_rank.column_base)


async def _version(store: Store) -> tuple[int, int] | None:
    """``(total_changes(), data_version)`` of the store's connection, read on its thread in one
    statement; None while a transaction is open on it (its rows may still be rolled back, which
    ``total_changes`` does not undo, so nothing read meanwhile is cached)."""
    row = await store._fetchone("SELECT total_changes(), (SELECT data_version FROM pragma_data_version)")
    return None if store._db.in_transaction else (int(row[0]), int(row[1]))


async def guild_snapshot(store: Store, guild_id: int) -> GuildSnapshot:
    """The guild's snapshot: the cached one when the database is unchanged since it was read, else
    read now (on the store's thread; rows turned into arrays off the event loop by the store) and
    cached. Concurrent callers for one guild share one load."""
    locks = _LOCKS.setdefault(store, {})
    lock = locks.setdefault(int(guild_id), asyncio.Lock())
    async with lock:
        version = await _version(store)
        per_store = _CACHE.setdefault(store, OrderedDict())
        snap = per_store.get(int(guild_id))
        if snap is not None and version is not None and snap.version == version:
            per_store.move_to_end(int(guild_id))
            _LOADS["hits"] += 1
            return snap
        snap = GuildSnapshot(
            version=version,
            interactions=await store.interactions(guild_id),
            table=await store.item_columns(guild_id),
            members={m["user_id"]: m for m in await store.members(guild_id)},
            channels=await store.channels(guild_id),
            opted=await store.opted_out_ids(guild_id),
            pairs=await store.item_member_pairs(guild_id),
            story_ids=frozenset(it.id for it in await store.items(guild_id, kind="story")),
        )
        _LOADS["loads"] += 1
        if version is None or await _version(store) != version:
            per_store.pop(int(guild_id), None)  # written meanwhile: served once, never cached
            return snap
        per_store[int(guild_id)] = snap
        per_store.move_to_end(int(guild_id))
        while len(per_store) > MAX_GUILDS:
            per_store.popitem(last=False)
        return snap


def loads() -> dict[str, int]:
    """``{"loads": n, "hits": n}``: guild snapshots read from the store / served from the cache so far."""
    return dict(_LOADS)


def clear(store: Store | None = None) -> None:
    """Drop the cached snapshots of ``store`` (every store's when None)."""
    if store is None:
        _CACHE.clear()
    else:
        _CACHE.pop(store, None)
