"""Picks for one member: profile → candidates → filters → learned ranker → MMR → reasons.

1. Profile (``recsys.profile``) from the member's interactions: the vector of the item they engaged
   with (or of the interaction's own text), weighted by kind and decayed by age.
2. Candidates, all from the member's own guild's indexes: nearest items to each interest (item
   index); items engaged with by the members whose interactions are nearest to this member's
   (interaction index, the neighbourhood signal); the guild's newest and most engaged-with items.
3. Filters: channel visible to the member (stored permission snapshot; a thread needs its parent
   visible too), not their own, not already interacted with, not recommended within
   ``repeat_window_days`` (never again with ``exclude_sent``), no opted-out authors, NSFW only where
   the guild allows it, nothing created after ``now``.
4. Score with the learned ranker (``recsys.rank``) over content, neighbourhood, freshness and
   popularity features; re-rank the best with MMR (``mmr_lambda``).
5. Reason: the member's interaction nearest to the pick ("because you asked about: …"); cold start
   (no history) falls back to the guild's well-received recent items.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from recsys.profile import build_profile
from recsys.rank import TRENDING_WINDOW_S, Ranker, count_greater, feature_matrix, mmr, neighbour_scores
from recsys.store import Interaction, Item, Store

if TYPE_CHECKING:
    from campfire.config import RecsysSettings
    from recsys.index import IndexSet

CANDIDATES_PER_INTEREST = 200
NEIGHBOUR_HITS = 100
FRESH_CANDIDATES = 200  # newest items always compete (freshness dominates in live communities)
POPULAR_CANDIDATES = 100  # most engaged-with, trending and most recently active items
MMR_POOL = 50  # best-scored candidates MMR chooses from
# Up to 3 interest centroids: on se_beer/time NDCG@10 0.7245 vs 0.7233 for one centroid (static: 0.0304
# vs 0.0311) — within noise, kept for the protocol a digest faces (`python -m recsys.eval --interests 1|3`).
DEFAULT_MAX_INTERESTS = 3
STATS_TTL_S = 60.0
_NOT_PROFILE = {"recommended", "viewed"}
_VERBS = {
    "authored": "you wrote about",
    "replied": "you replied to",
    "reacted": "you reacted to",
    "requested": "you asked for a story about",
    "rated_up": "you liked",
    "clicked": "you opened",
    "viewed": "you read",
}


@dataclass
class Pick:
    """One recommendation: the item, its ranker score (probability in [0, 1]) and a one-line reason."""

    item: Item
    score: float
    reason: str


@dataclass
class GuildStats:
    """Per-guild aggregates the ranker needs, cached for ``STATS_TTL_S`` seconds."""

    popularity: dict[int, int]  # item -> positive interactions by others
    trending: dict[int, int]  # the same within TRENDING_WINDOW_S
    last_active: dict[int, float]  # item -> latest interaction time
    now: float = 0.0  # the reference time trending was computed for
    at: float = field(default_factory=time.monotonic)

    def most_active(self, n: int) -> list[int]:
        return sorted(self.last_active, key=self.last_active.get, reverse=True)[:n]


async def load_stats(store: Store, guild_id: int, now: float) -> GuildStats:
    return GuildStats(
        popularity=await store.engagement_counts(guild_id),
        trending=await store.engagement_counts(guild_id, since=now - TRENDING_WINDOW_S),
        last_active=await store.last_activity(guild_id),
        now=now,
    )


def reason_for(inter: Interaction, item: Item | None) -> str:
    """One line naming the interaction: "because you replied to: <title or first words>"."""
    verb = _VERBS.get(inter.kind, "you engaged with")
    if inter.kind in ("authored", "requested") and inter.text:
        about = inter.text
    elif item is not None:
        about = item.title or item.text
    else:
        about = inter.text
    about = " ".join(about.split())
    if len(about) > 80:
        about = about[:77].rstrip() + "…"
    return f"because {verb}: {about}"


async def visible_channels(store: Store, guild_id: int, member_id: int) -> set[int]:
    """Channels the member may view; a thread or forum post also needs its parent visible."""
    visible = await store.visible_channel_ids(guild_id, member_id)
    parents = {ch["id"]: ch["parent_id"] for ch in await store.channels(guild_id)}
    return {c for c in visible if parents.get(c) is None or parents[c] in visible or parents[c] not in parents}


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
) -> list[Pick]:
    """Top ``k`` picks for ``member_id`` in ``guild_id`` at ``now`` (UNIX s). See the module doc."""
    item_index = indexes.get(guild_id, "item")
    inter_index = indexes.get(guild_id, "interaction")
    window_start = now - settings.repeat_window_days * 86400.0

    # 1. profile
    history = [i for i in await store.interactions(guild_id, member_id) if i.created_at <= now]
    seen: set[int] = set()
    for i in history:
        if i.item_id is not None and (i.kind != "recommended" or i.created_at >= window_start):
            seen.add(i.item_id)
    seen |= await (store.recommended_item_ids(guild_id, member_id) if exclude_sent
                   else store.recommended_since(guild_id, member_id, window_start))
    prof_rows = [i for i in history if i.kind not in _NOT_PROFILE and i.weight != 0]
    item_vecs = await asyncio.to_thread(item_index.vectors, {i.item_id for i in prof_rows if i.item_id is not None})
    inter_vecs = await asyncio.to_thread(inter_index.vectors, [i.id for i in prof_rows])
    used: list[Interaction] = []
    vecs: list[np.ndarray] = []
    for i in prof_rows:
        v = item_vecs.get(i.item_id) if i.item_id is not None else None
        v = v if v is not None else inter_vecs.get(i.id)
        if v is not None:
            used.append(i)
            vecs.append(v)
    dim = indexes.dim
    hv = np.vstack(vecs) if vecs else np.zeros((0, dim), np.float32)
    profile = build_profile(
        hv,
        np.array([i.weight for i in used]),
        np.array([(now - i.created_at) / 86400.0 for i in used]),
        half_life_days=settings.half_life_days,
        max_interests=max_interests,
    )

    # 2. candidates
    cand: set[int] = set()
    neigh: dict[int, float] = {}
    if not profile.cold:
        _, ids = await asyncio.to_thread(item_index.search, profile.interests, CANDIDATES_PER_INTEREST)
        cand.update(int(x) for x in ids.ravel() if x >= 0)
        sims, hit_ids = await asyncio.to_thread(inter_index.search, profile.interests, NEIGHBOUR_HITS)
        flat = [(int(h), float(s)) for h, s in zip(hit_ids.ravel(), sims.ravel(), strict=True) if h >= 0]
        owners = await store.interaction_members([h for h, _ in flat])
        hm = np.array([owners.get(h, -1) for h, _ in flat], np.int64)
        hs = np.array([s for _, s in flat], np.float64)
        others = sorted({int(m) for m in hm.tolist() if m >= 0 and m != member_id})
        engaged: dict[int, set[int]] = {}
        for m, item_id, _w in await store.engaged_items(guild_id, others, before=now):
            engaged.setdefault(m, set()).add(item_id)
        neigh = neighbour_scores(hm, hs, engaged, member_id)
        cand.update(sorted(neigh, key=neigh.get, reverse=True)[:CANDIDATES_PER_INTEREST])
    cand.update(it.id for it in await store.recent_items(guild_id, FRESH_CANDIDATES, before=now))
    cand.update(sorted(stats.trending, key=stats.trending.get, reverse=True)[:POPULAR_CANDIDATES])
    cand.update(sorted(stats.popularity, key=stats.popularity.get, reverse=True)[:POPULAR_CANDIDATES])
    cand.update(stats.most_active(POPULAR_CANDIDATES))
    cand -= seen

    # 3. filters
    items = await store.get_items(cand)
    visible = await visible_channels(store, guild_id, member_id)
    guild = await store.get_guild(guild_id) or {}
    nsfw_ok = bool(guild.get("nsfw_allowed"))
    nsfw_channels = {c["id"] for c in await store.channels(guild_id) if c["nsfw"]}
    opted = await store.opted_out_ids(guild_id)
    keep = [
        it for it in items.values()
        if it.guild_id == guild_id
        and (it.channel_id is None or it.channel_id in visible)
        and it.author_id != member_id
        and it.author_id not in opted
        and it.created_at <= now
        and (nsfw_ok or not (it.nsfw or it.channel_id in nsfw_channels))
    ]
    if not keep:
        return []
    keep.sort(key=lambda it: it.id)

    # 4. rank
    cvecs_map = await asyncio.to_thread(item_index.vectors, [it.id for it in keep])
    cvecs = np.vstack([cvecs_map.get(it.id, np.zeros(dim, np.float32)) for it in keep])
    created = np.array([it.created_at for it in keep])
    active = np.array([max(it.created_at, min(stats.last_active.get(it.id, 0.0), now)) for it in keep])
    acts = [i.created_at for i in history if i.kind != "recommended"]
    x = feature_matrix(
        content=profile.similarity(cvecs),
        neighbour=np.array([neigh.get(it.id, 0.0) for it in keep]),
        age_s=now - created,
        newer_count=count_greater(created, created),
        idle_s=now - active,
        busier_count=count_greater(active, active),
        created=created,
        last_seen=max(acts) if acts else None,
        popularity=np.array([stats.popularity.get(it.id, 0) for it in keep]),
        trending=np.array([stats.trending.get(it.id, 0) for it in keep]),
        rating=np.array([it.rating for it in keep]),
    )
    logits = ranker.score(x)
    pool = np.argsort(-logits, kind="stable")[:MMR_POOL]
    order = [int(pool[j]) for j in mmr(logits[pool], cvecs[pool], k, settings.mmr_lambda)]

    # 5. reasons
    picks: list[Pick] = []
    engaged_items = await store.get_items({i.item_id for i in used if i.item_id is not None})
    hv_used = hv
    for j in order:
        it = keep[j]
        if len(used) and np.any(cvecs[j]):
            sims = hv_used @ cvecs[j] * np.sign([max(i.weight, 0) for i in used])
            best = used[int(np.argmax(sims))] if np.max(sims) > 0 else None
        else:
            best = None
        if best is not None:
            reason = reason_for(best, engaged_items.get(best.item_id) if best.item_id is not None else None)
        elif stats.popularity.get(it.id, 0) > 0:
            reason = "popular in this server lately"
        else:
            reason = "new in this server"
        picks.append(Pick(item=it, score=float(1 / (1 + np.exp(-logits[j]))), reason=reason))
    return picks
