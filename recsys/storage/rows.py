"""Row types and helpers shared by the store's parts: :class:`Item`, :class:`Interaction`,
:func:`new_id`, vector blobs, and the chunking / off-loop building rules for big reads."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiosqlite
import numpy as np

T = TypeVar("T")

# Discord's epoch (2015-01-01) in ms, for snowflake-shaped ids of our own items.
_DISCORD_EPOCH_MS = 1420070400000
_id_lock = threading.Lock()
_id_counter = itertools.count()


def new_id(at: float | None = None) -> int:
    """A unique snowflake-shaped id (int63) for a story or catalogue item created at ``at`` (UNIX s).

    Layout follows Discord's snowflake (ms since 2015-01-01 << 22 | sequence), so ids sort by time
    and never collide with real message ids of the same millisecond in practice (sequence ≥ 2^21).
    """
    ms = int((time.time() if at is None else at) * 1000) - _DISCORD_EPOCH_MS
    with _id_lock:
        seq = next(_id_counter) % (1 << 21)
    return (max(ms, 0) << 22) | (1 << 21) | seq


@dataclass
class Item:
    """A piece of community content that can be recommended."""

    id: int
    guild_id: int
    kind: str  # message | story | imported
    text: str
    created_at: float
    channel_id: int | None = None
    author_id: int | None = None
    title: str = ""
    url: str | None = None
    tags: list[str] = field(default_factory=list)
    nsfw: bool = False
    rating: float = 0.0
    external_id: str | None = None
    parent_item_id: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: the conversation item holding this message (its own id for a conversation item); None when no
    #: conversation holds it. Set only by recsys.conversation_sync, never by an item upsert.
    conversation_id: int | None = None

    @classmethod
    def from_row(cls, row: aiosqlite.Row) -> Item:
        d = dict(row)
        d["tags"] = json.loads(d["tags"])
        d["meta"] = json.loads(d["meta"])
        d["nsfw"] = bool(d["nsfw"])
        return cls(**d)


@dataclass
class Interaction:
    """One thing a member did (or was shown), about an item or a piece of text."""

    id: int
    guild_id: int
    member_id: int
    item_id: int | None
    kind: str
    weight: float
    created_at: float
    text: str
    source_id: int | None = None


def vector_to_blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def blob_to_vector(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<f4")


def member_row(row: aiosqlite.Row) -> dict[str, Any]:
    """A ``members`` row as a dict: ``role_ids`` a list, ``is_bot`` / ``opted_out`` / ``subscribed`` bools."""
    d = dict(row)
    d["role_ids"] = json.loads(d["role_ids"])
    for k in ("is_bot", "opted_out", "subscribed"):
        d[k] = bool(d[k])
    return d


def interaction_row(row: aiosqlite.Row) -> Interaction:
    """An ``interactions`` row as an :class:`Interaction` (the dedup key left out)."""
    d = dict(row)
    d.pop("dedup_key", None)
    return Interaction(**d)


OFF_LOOP_ROWS = 2000  # rows above which turning them into objects runs in a worker thread


async def built(build: Callable[[], T], rows: int) -> T:
    """``build()`` — Python objects from ``rows`` fetched rows — in a worker thread when there are
    more than ``OFF_LOOP_ROWS`` (a whole guild's 50k interactions or 100k items take ~0.3 s, which
    would pause the event loop), else inline."""
    return build() if rows <= OFF_LOOP_ROWS else await asyncio.to_thread(build)


def chunks(seq: list[Any], n: int) -> Iterable[list[Any]]:
    """``seq`` in slices of at most ``n`` (SQLite caps the ``?`` parameters of one statement)."""
    for i in range(0, len(seq), n):
        yield seq[i : i + n]
