"""The ranking pass: :func:`recommend_many`, the pipeline of :mod:`recsys.recommend` for many members
of a guild at once (the daily digest), and for one (``/recommend`` is a batch of one).

Guild-wide work is done once — interactions, sent items, permission snapshots, opt-outs and the
item table (as columns) loaded once, and kept between calls while the database is unchanged
(:mod:`recsys.snapshot`: a /recommend reuses the guild's snapshot and its derived columns); one
FAISS batch search of the item index and one of the interaction index for every interest vector of
every member; neighbourhood scores for all members
as one sparse table. Members are then ranked ``CHUNK`` at a time as ``(members, candidates)`` arrays:
the filters, the ranker's features, the scores and MMR are array operations over the whole chunk
(:func:`recsys.pipeline.rank_rows` / :func:`recsys.pipeline.choose_rows`). Everything but the store
reads runs in a worker thread (:mod:`recsys.batch_rank`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.audience import quote_masks, shared_channels
from recsys.batch_rank import MIN_ITEM_CAP, SCORING_THREADS, Loaded, Ranked, rank_many
from recsys.pipeline import (
    CANDIDATES_PER_INTEREST,
    DEFAULT_MAX_INTERESTS,
    FRESH_CANDIDATES,
    NEIGHBOUR_HITS,
    GuildStats,
    Pick,
    stats_candidates,
)
from recsys.reasons import reasons_many
from recsys.snapshot import guild_snapshot
from recsys.store import Item, Store

if TYPE_CHECKING:
    from campfire.config import RecsysSettings
    from recsys.index import IndexSet
    from recsys.rank import Ranker

__all__ = ["CHUNK", "MIN_ITEM_CAP", "SCORING_THREADS", "recommend_many"]

log = logging.getLogger(__name__)

# Members ranked together: a chunk's arrays are CHUNK × candidates (≈ 600) × 10 features float64
# (≈ 6 MB), plus the vectors of its personal candidates and MMR pools (≈ 30 MB at 384-d); 128
# already amortises numpy's per-call cost. Chunks are scored by SCORING_THREADS worker threads.
CHUNK = 128
FEW_MEMBERS = 8  # up to this many members, the items sent to them are read member by member (indexed)
_rank_many = rank_many  # the blocking step (a module attribute, so tests can hold a digest here)


async def recommend_many(
    store: Store,
    indexes: IndexSet,
    settings: RecsysSettings,
    ranker: Ranker,
    stats: GuildStats,
    guild_id: int,
    member_ids: list[int],
    *,
    k: int,
    now: float,
    exclude_sent: bool = False,
    max_interests: int = DEFAULT_MAX_INTERESTS,
    max_item_share: float | None = None,
    per_interest: int = CANDIDATES_PER_INTEREST,
    neighbour_hits: int = NEIGHBOUR_HITS,
    guild: Mapping[str, Any] | None = None,
    audience: int | None = None,
) -> dict[int, list[Pick]]:
    """Top ``k`` picks for each of ``member_ids`` in ``guild_id`` at ``now`` (UNIX s): member id ->
    picks, best first (members with none left out).

    ``max_item_share`` (e.g. 0.1): no item goes to more than ``max(MIN_ITEM_CAP, share × members)``
    members; members are served in order of ``member_ids`` and one whose best items are full gets
    their next best, so one item cannot dominate a whole guild's digest. ``None``: no cap (each
    member's picks are then what :func:`recsys.recommend.recommend` gives them alone).
    ``per_interest`` / ``neighbour_hits``: FAISS depth per interest vector in the item / interaction
    index (a digest may search shallower to save time: FAISS cost grows with k). ``guild``: the
    guild row when the caller has it (as :meth:`Store.get_guild`; else read once here). ``audience``
    (:mod:`recsys.audience`): None — each member reads their own picks; a channel id — everyone who
    can view it reads them all, so picks come only from channels every reader can view and reasons
    quote nothing from elsewhere."""
    if not member_ids:
        return {}
    t0 = time.perf_counter()
    window_start = now - settings.repeat_window_days * 86400.0
    loaded = await _load(store, stats, guild_id, now, None if exclude_sent else window_start, guild, member_ids)
    shared = None
    if audience is not None:  # the ranking sees only the channels every reader of the post can view
        shared = shared_channels(guild_id, loaded.members, loaded.channels, audience)
        loaded = replace(loaded, channels=[c for c in loaded.channels if c["id"] in shared])
    t1 = time.perf_counter()
    if not len(loaded.table["id"]):
        return {}
    ranked = await asyncio.to_thread(
        _rank_many, loaded, indexes.get(guild_id, "item"), indexes.get(guild_id, "interaction"), settings, ranker,
        stats, guild_id, list(member_ids), k=k, now=now, window_start=window_start, max_interests=max_interests,
        max_item_share=max_item_share, per_interest=per_interest, neighbour_hits=neighbour_hits, chunk=CHUNK,
    )
    t2 = time.perf_counter()
    ids = loaded.table["id"]
    items = await store.get_items({int(ids[p]) for rows in ranked.picked.values() for p, _ in rows})
    quotes = await store.item_quotes(
        {i.item_id for used, _ in ranked.used_by.values() for i in used if i.item_id is not None}
    )
    t3 = time.perf_counter()
    out = await asyncio.to_thread(_with_reasons, ranked, ids, items, quotes, loaded, guild_id, shared)
    log.debug("recommend_many: %d members, loads %.2fs, ranking %.2fs, items %.2fs, reasons %.2fs", len(member_ids),
              t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3)
    return out


async def _load(
    store: Store, stats: GuildStats, guild_id: int, now: float, sent_since: float | None,
    guild: Mapping[str, Any] | None, member_ids: list[int],
) -> Loaded:
    """The store reads of one pass (on the event loop; the guild row only when not given): the guild's
    snapshot (:mod:`recsys.snapshot`, re-read only when the database changed) and what depends on
    ``now`` — the items sent since ``sent_since`` (per member for a few members, else in one query)
    and the shared candidates (sorting the guild's stats: in a worker thread)."""
    if guild is None:
        guild = await store.get_guild(guild_id) or {}
    snap = await guild_snapshot(store, guild_id)
    if len(member_ids) <= FEW_MEMBERS:
        since = sent_since if sent_since is not None else -1e18
        sent_by = {m: s for m in dict.fromkeys(member_ids) if (s := await store.recommended_since(guild_id, m, since))}
    else:
        sent_by = await store.recommended_by_member(guild_id, sent_since)
    return Loaded(
        interactions=snap.interactions, table=snap.table, members=snap.members, channels=snap.channels,
        nsfw_ok=bool(guild.get("nsfw_allowed")), opted=snap.opted, sent_by=sent_by,
        shared=await asyncio.to_thread(shared_candidates, snap.table, snap.derived, stats, now), pairs=snap.pairs,
        story_ids=snap.story_ids,
        derived=snap.derived,
    )


def shared_candidates(table: Mapping[str, np.ndarray], derived: dict, stats: GuildStats, now: float) -> set[int]:
    """:func:`recsys.pipeline.guild_candidates` from a current snapshot's item columns instead of the
    store: the ``FRESH_CANDIDATES`` newest items created at or before ``now`` (newest first, then the
    higher id, as its query orders them) and :func:`recsys.pipeline.stats_candidates` (computed once
    per ``stats`` object and kept in ``derived``)."""
    got = derived.get("popular")
    if got is None or got[0] is not stats:
        got = derived["popular"] = (stats, stats_candidates(stats))
    ids, created = table["id"], table["created_at"]
    at = np.flatnonzero(created <= now)
    newest = at[np.lexsort((-ids[at], -created[at]))[:FRESH_CANDIDATES]]
    return set(ids[newest].tolist()) | got[1]


def _with_reasons(
    ranked: Ranked, ids: np.ndarray, items: dict[int, Item], quotes: dict[int, str], loaded: Loaded, guild_id: int,
    shared: set[int] | None,
) -> dict[int, list[Pick]]:
    """Step 5 for every member's picks (items deleted meanwhile dropped); scores are the ranker's
    probabilities (logistic of the logits). Reasons quote only what the audience may read
    (``shared``: a channel audience's channels; None: each member's own, :func:`recsys.audience.quote_masks`)."""
    chosen = {m: [(p, lg) for p, lg in rows if int(ids[p]) in items] for m, rows in ranked.picked.items()}
    chosen = {m: rows for m, rows in chosen.items() if rows}
    members = loaded.members
    allow = quote_masks(guild_id, [(m, ranked.used_by[m][0]) for m in chosen], loaded.table, members,
                        loaded.channels, shared)
    reasons = reasons_many(
        [(*ranked.used_by[m], np.array([ranked.cvec[p] for p, _ in rows]), [bool(ranked.popular[p]) for p, _ in rows])
         for m, rows in chosen.items()],
        quotes,
        frozenset((m.get("display_name") or "").lower() for m in members.values()) - {""},
        allow,
    )
    return {
        m: [Pick(item=items[int(ids[p])], score=float(1 / (1 + np.exp(-lg))), reason=r, reason_item_id=src)
            for (p, lg), (r, src) in zip(rows, why, strict=True)]
        for (m, rows), why in zip(chosen.items(), reasons, strict=True)
    }
