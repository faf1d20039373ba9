"""Picks for one member: profile → candidates → filters → learned ranker → MMR → reasons.

1. Profile (``recsys.profile``) from the member's interactions: the vector of the item they engaged
   with (or of the interaction's own text), weighted by kind and decayed by age.
2. Candidates, all from the member's own guild's indexes: nearest items to each interest (item
   index); items engaged with by the members whose interactions are nearest to this member's
   (interaction index, the neighbourhood signal); the guild's newest and most engaged-with items.
3. Eligibility (:mod:`recsys.eligibility`) and filters: only candidates (a conversation stands for
   the messages inside it), never the member's own, one they took part in or were addressed by, one
   they interacted with (a message inside a conversation counts for the conversation), a low-substance
   message, a story somebody rated down; channel visible to the member (stored permission snapshot; a
   thread needs its parent visible too), not recommended within ``repeat_window_days`` (never again
   with ``exclude_sent``), no opted-out authors, NSFW only where the guild allows it, nothing created
   after ``now``.
4. Score with the guild's ranker (its own when it beat the default on a held-out slice,
   :mod:`recsys.guild_ranker`; else ``recsys.rank.DEFAULT_RANKER``) over content, neighbourhood,
   freshness, popularity and rating features, conversations preferred over lone lines; ties broken
   by a hash of the day, the member and the item; re-rank the best with MMR (``mmr_lambda``) and
   show them best score first.
5. Reason: the member's interaction nearest to the pick ("because you asked about: …"); cold start
   (no history) ranks the guild's well-received recent conversations first.

There is one implementation of these steps: :func:`recommend` is :func:`recsys.batch.recommend_many`
for a batch of one member (the guild's reads and member-independent columns are reused from
:mod:`recsys.snapshot` while the database is unchanged); the steps' shared parts live in :mod:`recsys.pipeline` (ranking) and
:mod:`recsys.reasons` (step 5), which ``campfire eval`` (:mod:`recsys.eval`) ranks through too.
The names below are re-exported from there for existing callers.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from recsys.batch import recommend_many
from recsys.pipeline import (
    CANDIDATES_PER_INTEREST,
    DEFAULT_MAX_INTERESTS,
    FRESH_CANDIDATES,
    MMR_POOL,
    NEIGHBOUR_HITS,
    NOT_PROFILE,
    POPULAR_CANDIDATES,
    RATE_ITEMS,
    STATS_TTL_S,
    GuildStats,
    Pick,
    active_time,
    activity_rate,
    choose_rows,
    guild_candidates,
    latest_activity,
    load_stats,
    order_rows,
    profile_interactions,
    rank_rows,
    row_features,
    seen_items,
    visible_from_snapshot,
)
from recsys.reasons import MIN_REASON_CHARS, MIN_REASON_SIMILARITY, pick_reason, pick_reasons, reason_for, reasons_many

if TYPE_CHECKING:
    from campfire.config import RecsysSettings
    from recsys.index import IndexSet
    from recsys.rank import Ranker
    from recsys.store import Store

__all__ = [
    "CANDIDATES_PER_INTEREST", "DEFAULT_MAX_INTERESTS", "FRESH_CANDIDATES", "MIN_REASON_CHARS",
    "MIN_REASON_SIMILARITY", "MMR_POOL", "NEIGHBOUR_HITS", "NOT_PROFILE", "POPULAR_CANDIDATES", "RATE_ITEMS",
    "STATS_TTL_S", "GuildStats", "Pick", "active_time", "activity_rate", "choose_rows", "guild_candidates",
    "latest_activity", "load_stats", "order_rows", "pick_reason", "pick_reasons", "profile_interactions",
    "rank_rows", "reason_for", "reasons_many", "recommend", "row_features", "seen_items", "visible_from_snapshot",
]


async def recommend(
    store: Store,
    indexes: IndexSet,
    settings: RecsysSettings,
    ranker: Ranker,
    stats: GuildStats,
    guild_id: int,
    member_id: int,
    *,
    k: int,
    now: float,
    exclude_sent: bool = False,
    max_interests: int = DEFAULT_MAX_INTERESTS,
    names: Collection[str] | None = None,
    guild: Mapping[str, Any] | None = None,
) -> list[Pick]:
    """Top ``k`` picks for ``member_id`` in ``guild_id`` at ``now`` (UNIX s), best first; ``[]`` when
    there are none. See the module doc: the digest's :func:`recsys.batch.recommend_many` for a batch
    of one member (no per-item cap), so /recommend and the digest cannot drift apart. ``names``: the
    guild's member display names, lower-case, for the reasons' quotes (the batch reads the guild's
    members itself; kept for callers). ``guild``: the guild row when the caller has read it (as
    :meth:`Store.get_guild`; not read again)."""
    del names  # the batch derives them from the member rows it loads
    picks = await recommend_many(
        store, indexes, settings, ranker, stats, guild_id, [member_id], k=k, now=now, exclude_sent=exclude_sent,
        max_interests=max_interests, guild=guild,
    )
    return picks.get(member_id, [])
