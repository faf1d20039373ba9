"""The ranking pipeline's shared steps — one implementation for ``/recommend``, the daily digest
(:func:`recsys.batch.recommend_many`; ``/recommend`` is a batch of one) and ``campfire eval``
(:mod:`recsys.eval` scores its candidates with :func:`rank_rows` / :func:`row_features` and
:func:`choose_rows`, with the same inputs as production).

Arrays are ``(B, L)``: row b holds member b's candidates (``valid`` marks the real ones). Times are
UNIX seconds. Numbers without a cited source were tuned on se_beer's time protocol (``campfire eval``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from recsys.rank import TRENDING_WINDOW_S, Ranker, count_greater_rows, feature_matrix, mmr_rows
from recsys.store import Interaction, Item, channels_visible_to
from recsys.substance import LowSubstance

if TYPE_CHECKING:
    from recsys.store import Store

CANDIDATES_PER_INTEREST = 200
NEIGHBOUR_HITS = 100
FRESH_CANDIDATES = 200  # newest items always compete (freshness dominates in live communities)
POPULAR_CANDIDATES = 100  # most engaged-with, trending and most recently active items
MMR_POOL = 50  # best-scored candidates MMR chooses from
# Up to 3 interest centroids: on se_beer/time NDCG@10 0.7245 vs 0.7233 for one centroid (static: 0.0304
# vs 0.0311) — within noise, kept for the protocol a digest faces (`python -m recsys.eval --interests 1|3`).
DEFAULT_MAX_INTERESTS = 3
STATS_TTL_S = 60.0
RATE_ITEMS = 1000  # newest items the guild's pace (GuildStats.rate) is measured over
NOT_PROFILE = {"recommended", "viewed"}


@dataclass
class Pick:
    """One recommendation: the item, its ranker score (probability in [0, 1]), a one-line reason and
    the item whose words the reason quotes when they are another member's (``None`` otherwise), so
    forgetting that member can take the quote back."""

    item: Item
    score: float
    reason: str
    reason_item_id: int | None = None


@dataclass
class GuildStats:
    """Per-guild aggregates the ranker needs, cached for ``STATS_TTL_S`` seconds."""

    popularity: dict[int, int]  # item -> positive interactions by others
    trending: dict[int, int]  # the same within TRENDING_WINDOW_S
    last_active: dict[int, float]  # item -> latest interaction time
    now: float = 0.0  # the reference time trending was computed for
    rate: float = 0.0  # the guild's recent pace: items per second over its newest RATE_ITEMS items
    at: float = field(default_factory=time.monotonic)
    # message items never recommended (greetings, thanks, bot commands, bare links, spam): the
    # candidate filter (recsys.batch_rank) drops them for every member (recsys.substance)
    low_substance: frozenset[int] = frozenset()

    def most_active(self, n: int) -> list[int]:
        return sorted(self.last_active, key=self.last_active.get, reverse=True)[:n]


async def load_stats(store: Store, guild_id: int, now: float, low: LowSubstance | None = None) -> GuildStats:
    """The guild's stats at ``now`` (UNIX s). ``low``: the caller's :class:`recsys.substance.LowSubstance`
    (the Recommender's judges each message once); without one every message item is judged here."""
    recent = [it.created_at for it in await store.recent_items(guild_id, RATE_ITEMS, before=now)]
    return GuildStats(
        popularity=await store.engagement_counts(guild_id),
        trending=await store.engagement_counts(guild_id, since=now - TRENDING_WINDOW_S),
        last_active=await store.last_activity(guild_id),
        now=now,
        rate=activity_rate(recent),
        # judged from the stored text when the stats load: live, imported and older messages alike
        low_substance=await (low or LowSubstance()).ids(store, guild_id),
    )


def activity_rate(created: list[float]) -> float:
    """Items per second over the span of ``created`` (UNIX s; the guild's newest items); 0 with < 2."""
    if len(created) < 2:
        return 0.0
    return (len(created) - 1) / max(max(created) - min(created), 1.0)


def active_time(created: np.ndarray, last_active: np.ndarray, now: float) -> np.ndarray:
    """An item's last activity: its creation or its latest interaction up to ``now``."""
    return np.maximum(created, np.minimum(last_active, now))


def row_features(
    *, valid: np.ndarray, content: np.ndarray, neighbour: np.ndarray, created: np.ndarray, active: np.ndarray,
    popularity: np.ndarray, trending: np.ndarray, rating: np.ndarray, last_seen: np.ndarray, now: float, rate: float,
) -> np.ndarray:
    """Step 4's ranker features for a batch of members: every argument ``(B, L)`` (row b: member b's
    candidates, ``valid`` marking the real ones; ``created`` / ``active`` UNIX s; ``popularity`` the
    positive interactions by others so far, which also gives answeredness: ``unanswered`` when 0;
    ``rating`` the items' stored ratings), ``last_seen (B, 1)`` (the member's latest interaction,
    ``-inf`` for none),
    ``rate`` the guild's pace (items per second, :func:`activity_rate`). Returns
    ``(B, L, len(FEATURES)) float64`` (:func:`recsys.rank.feature_matrix`); ranks (newer / busier
    counts) are within each row's valid candidates."""
    return feature_matrix(
        content=content,
        neighbour=neighbour,
        age_s=now - created,
        newer_count=count_greater_rows(created, valid),
        idle_s=now - active,
        busier_count=count_greater_rows(active, valid),
        created=created,
        last_seen=last_seen,
        popularity=popularity,
        trending=trending,
        rating=rating,
        rate=rate,
    )


def rank_rows(ranker: Ranker, **inputs) -> np.ndarray:
    """Step 4's scores: ranker logits ``(B, L) float64`` of :func:`row_features` (same keyword
    arguments), ``-inf`` where not ``valid``."""
    return np.where(inputs["valid"], ranker.score(row_features(**inputs)), -np.inf)


def choose_rows(
    logits: np.ndarray, valid: np.ndarray, vectors: Callable[[np.ndarray], np.ndarray], k: int, lam: float,
    order: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Step 4's MMR for a batch of members over each row's ``MMR_POOL`` best-scored valid candidates.
    ``logits``/``valid`` ``(B, L)``; ``vectors(idx)`` gives the candidates' vectors ``(B, P, dim)``
    for column indices ``idx (B, P)``; ``order (B, L)``: the columns by descending logit, ties by
    column (``argsort(-logits, kind="stable")``; computed when not given — pass it to choose again
    with fewer valid candidates without sorting again). Returns ``(pool (B, P), picks (B, k))``:
    column indices (pool entries that are not valid, and picks a row did not fill, are -1)."""
    if order is None:
        order = order_rows(logits)
    ok = np.take_along_axis(valid, order, axis=1)
    first = ok & (np.cumsum(ok, axis=1) <= MMR_POOL)  # each row's MMR_POOL best valid columns
    at = np.argsort(~first, axis=1, kind="stable")[:, :MMR_POOL]
    ok = np.take_along_axis(first, at, axis=1)
    pool = np.where(ok, np.take_along_axis(order, at, axis=1), -1)
    safe = np.maximum(pool, 0)
    chosen = mmr_rows(np.take_along_axis(logits, safe, axis=1), vectors(safe), ok, k, lam)
    picks = np.where(chosen >= 0, np.take_along_axis(pool, np.maximum(chosen, 0), axis=1), -1)
    return pool, picks


def order_rows(logits: np.ndarray, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Columns of ``logits (B, L)`` by descending value: ``(B, L) int64``. Ties by ascending
    ``tiebreak (B, L)`` when given (:func:`recsys.batch_rank.tiebreak_keys`: seeded by date and
    member), else by column."""
    order = np.argsort(-logits, axis=1, kind="stable")
    if tiebreak is None:
        return order
    ranked = np.take_along_axis(logits, order, axis=1)
    tied = np.flatnonzero(((ranked[:, 1:] == ranked[:, :-1]) & np.isfinite(ranked[:, 1:])).any(axis=1))
    if len(tied):  # only rows with equal finite scores are sorted again (float scores rarely tie)
        by_tie = np.argsort(tiebreak[tied], axis=1, kind="stable")
        again = np.argsort(-np.take_along_axis(logits[tied], by_tie, axis=1), axis=1, kind="stable")
        order[tied] = np.take_along_axis(by_tie, again, axis=1)
    return order


def profile_interactions(history: list[Interaction]) -> list[Interaction]:
    """The interactions a profile is built from: weighted, and not ones the member was only shown."""
    return [i for i in history if i.kind not in NOT_PROFILE and i.weight != 0]


def seen_items(history: list[Interaction], window_start: float) -> set[int]:
    """Items the member must not be recommended: every item they interacted with, and those
    recommended to them since ``window_start`` (UNIX s)."""
    return {i.item_id for i in history
            if i.item_id is not None and (i.kind != "recommended" or i.created_at >= window_start)}


def latest_activity(history: list[Interaction]) -> float | None:
    """The member's latest interaction time (UNIX s; being shown a recommendation does not count),
    ``None`` when they have none."""
    acts = [i.created_at for i in history if i.kind != "recommended"]
    return max(acts) if acts else None


async def guild_candidates(store: Store, stats: GuildStats, guild_id: int, now: float) -> set[int]:
    """Candidates every member gets: the newest, trending, most engaged-with and most recently active items."""
    return {it.id for it in await store.recent_items(guild_id, FRESH_CANDIDATES, before=now)} | stats_candidates(stats)


def stats_candidates(stats: GuildStats) -> frozenset[int]:
    """The part of :func:`guild_candidates` the guild's statistics give: the ``POPULAR_CANDIDATES``
    most trending, most engaged-with and most recently active items."""
    top = set(sorted(stats.trending, key=stats.trending.get, reverse=True)[:POPULAR_CANDIDATES])
    top.update(sorted(stats.popularity, key=stats.popularity.get, reverse=True)[:POPULAR_CANDIDATES])
    top.update(stats.most_active(POPULAR_CANDIDATES))
    return frozenset(top)


def visible_from_snapshot(guild_id: int, member: dict | None, member_id: int, channels: list[dict]) -> set[int]:
    """Channels the member may view, from rows already loaded (``member`` as :meth:`Store.members`,
    ``channels`` as :meth:`Store.channels`; a digest loads them once per guild): the store's rule
    (:func:`recsys.store.channels_visible_to`), and a thread or forum post also needs its parent."""
    visible = channels_visible_to(guild_id, member, member_id, channels)
    parents = {ch["id"]: ch["parent_id"] for ch in channels}
    return {c for c in visible if parents.get(c) is None or parents[c] in visible or parents[c] not in parents}
