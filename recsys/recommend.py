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
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from recsys.profile import MIN_PER_INTEREST, Profile, build_profile
from recsys.rank import TRENDING_WINDOW_S, Ranker, count_greater, feature_matrix, mmr, neighbour_scores
from recsys.store import Interaction, Item, Store, channels_visible_to

if TYPE_CHECKING:
    from campfire.config import RecsysSettings
    from recsys.index import IndexSet

log = logging.getLogger(__name__)

CANDIDATES_PER_INTEREST = 200
NEIGHBOUR_HITS = 100
FRESH_CANDIDATES = 200  # newest items always compete (freshness dominates in live communities)
POPULAR_CANDIDATES = 100  # most engaged-with, trending and most recently active items
MMR_POOL = 50  # best-scored candidates MMR chooses from
MIN_ITEM_CAP = 10  # recommend_many's per-item cap is never below this many members
# Up to 3 interest centroids: on se_beer/time NDCG@10 0.7245 vs 0.7233 for one centroid (static: 0.0304
# vs 0.0311) — within noise, kept for the protocol a digest faces (`python -m recsys.eval --interests 1|3`).
DEFAULT_MAX_INTERESTS = 3
STATS_TTL_S = 60.0
RATE_ITEMS = 1000  # newest items the guild's pace (GuildStats.rate) is measured over
MIN_REASON_CHARS = 20  # a reason quotes an interaction at least this long when the member has one
# Cosine (all-MiniLM-L6-v2) below which the nearest interaction does not explain a pick: unrelated
# sentences mostly score under ~0.2 with this model, so quoting one as "because you wrote about"
# would mislead; the pick is then explained by what drove it instead (popular / new).
MIN_REASON_SIMILARITY = 0.3
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
    rate: float = 0.0  # the guild's recent pace: items per second over its newest RATE_ITEMS items
    at: float = field(default_factory=time.monotonic)

    def most_active(self, n: int) -> list[int]:
        return sorted(self.last_active, key=self.last_active.get, reverse=True)[:n]


async def load_stats(store: Store, guild_id: int, now: float) -> GuildStats:
    recent = [it.created_at for it in await store.recent_items(guild_id, RATE_ITEMS, before=now)]
    return GuildStats(
        popularity=await store.engagement_counts(guild_id),
        trending=await store.engagement_counts(guild_id, since=now - TRENDING_WINDOW_S),
        last_active=await store.last_activity(guild_id),
        now=now,
        rate=activity_rate(recent),
    )


def activity_rate(created: list[float]) -> float:
    """Items per second over the span of ``created`` (UNIX s; the guild's newest items); 0 with < 2."""
    if len(created) < 2:
        return 0.0
    return (len(created) - 1) / max(max(created) - min(created), 1.0)


def _about(inter: Interaction, item: Item | None) -> str:
    """The text a reason quotes for ``inter``: what the member wrote/asked, else the item's title or text."""
    if inter.kind in ("authored", "requested") and inter.text:
        about = inter.text
    elif item is not None:
        about = item.title or item.text
    else:
        about = inter.text
    return " ".join((about or "").split())


def reason_for(inter: Interaction, item: Item | None) -> str:
    """One line naming the interaction: "because you replied to: <title or first words>" (whitespace
    and newlines collapsed, the quote cut to 80 characters)."""
    verb = _VERBS.get(inter.kind, "you engaged with")
    about = _about(inter, item)
    if len(about) > 80:
        about = about[:77].rstrip() + "…"
    return f"because {verb}: {about}"


def pick_reason(
    used: list[Interaction], hv: np.ndarray, vec: np.ndarray, engaged_items: dict[int, Item], popular: bool
) -> str:
    """The reason for a pick with vector ``vec (dim,)``: the member's positive interaction (rows of
    ``hv (n, dim)``, one per ``used``) nearest to it, among the *substantive* ones (quoted text of at
    least ``MIN_REASON_CHARS`` characters) when the member has any, if its cosine reaches
    ``MIN_REASON_SIMILARITY``; else "popular in this server lately" / "new in this server"."""
    best = None
    if len(used) and np.any(vec):
        sims = hv @ vec
        items = [engaged_items.get(i.item_id) if i.item_id is not None else None for i in used]
        positive = np.array([i.weight > 0 for i in used])
        long_ = np.array([len(_about(i, it)) >= MIN_REASON_CHARS for i, it in zip(used, items, strict=True)])
        for mask in (positive & long_, positive):
            if mask.any():
                cand = np.where(mask, sims, -np.inf)
                j = int(np.argmax(cand))
                if cand[j] >= MIN_REASON_SIMILARITY:
                    best = (used[j], items[j])
                break
    if best is not None:
        return reason_for(*best)
    return "popular in this server lately" if popular else "new in this server"


async def visible_channels(store: Store, guild_id: int, member_id: int) -> set[int]:
    """Channels the member may view; a thread or forum post also needs its parent visible."""
    member = await store.get_member(guild_id, member_id)
    return visible_from_snapshot(guild_id, member, member_id, await store.channels(guild_id))


def _eligible(
    it: Item, guild_id: int, member_id: int, visible: set[int], opted: set[int], nsfw_ok: bool,
    nsfw_channels: set[int], now: float,
) -> bool:
    """The filters of step 3 for one candidate item."""
    return (
        it.guild_id == guild_id
        and (it.channel_id is None or it.channel_id in visible)
        and it.author_id != member_id
        and it.author_id not in opted
        and it.created_at <= now
        and (nsfw_ok or not (it.nsfw or it.channel_id in nsfw_channels))
    )


def _features(
    keep: list[Item], cvecs: np.ndarray, profile: Profile, neigh: dict[int, float], stats: GuildStats,
    last_seen: float | None, now: float,
) -> np.ndarray:
    """Step 4's feature matrix ``(n, len(FEATURES))`` for the filtered candidates ``keep`` (vectors ``cvecs``)."""
    created = np.array([it.created_at for it in keep], np.float64)
    return _feature_arrays(
        content=profile.similarity(cvecs),
        neighbour=np.array([neigh.get(it.id, 0.0) for it in keep], np.float64),
        created=created,
        active=_active(created, np.array([stats.last_active.get(it.id, 0.0) for it in keep], np.float64), now),
        popularity=np.array([stats.popularity.get(it.id, 0) for it in keep], np.float64),
        trending=np.array([stats.trending.get(it.id, 0) for it in keep], np.float64),
        rating=np.array([it.rating for it in keep], np.float64),
        last_seen=last_seen, now=now, rate=stats.rate,
    )


def _active(created: np.ndarray, last_active: np.ndarray, now: float) -> np.ndarray:
    """An item's last activity: its creation or its latest interaction up to ``now``."""
    return np.maximum(created, np.minimum(last_active, now))


def _feature_arrays(
    *, content: np.ndarray, neighbour: np.ndarray, created: np.ndarray, active: np.ndarray, popularity: np.ndarray,
    trending: np.ndarray, rating: np.ndarray, last_seen: float | None, now: float, rate: float,
) -> np.ndarray:
    return feature_matrix(
        content=content,
        neighbour=neighbour,
        age_s=now - created,
        newer_count=count_greater(created, created),
        idle_s=now - active,
        busier_count=count_greater(active, active),
        created=created,
        last_seen=last_seen,
        popularity=popularity,
        trending=trending,
        rating=rating,
        rate=rate,
    )


def _choose(logits: np.ndarray, cvecs: np.ndarray, k: int, lam: float, blocked: np.ndarray | None = None) -> list[int]:
    """Step 4's MMR over the ``MMR_POOL`` best-scored rows (skipping ``blocked`` rows); row indices."""
    order = np.argsort(-logits, kind="stable")
    if blocked is not None:
        order = order[~blocked[order]]
    pool = order[:MMR_POOL]
    return [int(pool[j]) for j in mmr(logits[pool], cvecs[pool], k, lam)]


def _profile_rows(history: list[Interaction]) -> list[Interaction]:
    return [i for i in history if i.kind not in _NOT_PROFILE and i.weight != 0]


def _seen(history: list[Interaction], window_start: float) -> set[int]:
    return {i.item_id for i in history
            if i.item_id is not None and (i.kind != "recommended" or i.created_at >= window_start)}


def _last_seen(history: list[Interaction]) -> float | None:
    acts = [i.created_at for i in history if i.kind != "recommended"]
    return max(acts) if acts else None


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
    """Top ``k`` picks for ``member_id`` in ``guild_id`` at ``now`` (UNIX s). See the module doc;
    :func:`recommend_many` is the same ranking for many members at once."""
    item_index = indexes.get(guild_id, "item")
    inter_index = indexes.get(guild_id, "interaction")
    window_start = now - settings.repeat_window_days * 86400.0

    # 1. profile
    history = [i for i in await store.interactions(guild_id, member_id) if i.created_at <= now]
    seen = _seen(history, window_start)
    seen |= await (store.recommended_item_ids(guild_id, member_id) if exclude_sent
                   else store.recommended_since(guild_id, member_id, window_start))
    prof_rows = _profile_rows(history)
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
        cand.update(sorted(neigh, key=lambda i: (-neigh[i], i))[:CANDIDATES_PER_INTEREST])
    cand.update(await _guild_candidates(store, stats, guild_id, now))
    cand -= seen

    # 3. filters
    items = await store.get_items(cand)
    visible = await visible_channels(store, guild_id, member_id)
    guild = await store.get_guild(guild_id) or {}
    nsfw_ok = bool(guild.get("nsfw_allowed"))
    nsfw_channels = {c["id"] for c in await store.channels(guild_id) if c["nsfw"]}
    opted = await store.opted_out_ids(guild_id)
    keep = [it for it in items.values() if _eligible(it, guild_id, member_id, visible, opted, nsfw_ok, nsfw_channels, now)]
    if not keep:
        return []
    keep.sort(key=lambda it: it.id)

    # 4. rank
    cvecs_map = await asyncio.to_thread(item_index.vectors, [it.id for it in keep])
    cvecs = np.vstack([cvecs_map.get(it.id, np.zeros(dim, np.float32)) for it in keep])
    logits = ranker.score(_features(keep, cvecs, profile, neigh, stats, _last_seen(history), now))
    order = _choose(logits, cvecs, k, settings.mmr_lambda)

    # 5. reasons
    engaged_items = await store.get_items({i.item_id for i in used if i.item_id is not None})
    return [
        Pick(item=keep[j], score=float(1 / (1 + np.exp(-logits[j]))),
             reason=pick_reason(used, hv, cvecs[j], engaged_items, stats.popularity.get(keep[j].id, 0) > 0))
        for j in order
    ]


async def _guild_candidates(store: Store, stats: GuildStats, guild_id: int, now: float) -> set[int]:
    """Candidates every member gets: the newest, trending, most engaged-with and most recently active items."""
    cand = {it.id for it in await store.recent_items(guild_id, FRESH_CANDIDATES, before=now)}
    cand.update(sorted(stats.trending, key=stats.trending.get, reverse=True)[:POPULAR_CANDIDATES])
    cand.update(sorted(stats.popularity, key=stats.popularity.get, reverse=True)[:POPULAR_CANDIDATES])
    cand.update(stats.most_active(POPULAR_CANDIDATES))
    return cand


def visible_from_snapshot(guild_id: int, member: dict | None, member_id: int, channels: list[dict]) -> set[int]:
    """Channels the member may view, from rows already loaded (``member`` as :meth:`Store.members`,
    ``channels`` as :meth:`Store.channels`; a digest loads them once per guild): the store's rule
    (:func:`recsys.store.channels_visible_to`), and a thread or forum post also needs its parent."""
    visible = channels_visible_to(guild_id, member, member_id, channels)
    parents = {ch["id"]: ch["parent_id"] for ch in channels}
    return {c for c in visible if parents.get(c) is None or parents[c] in visible or parents[c] not in parents}


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
) -> dict[int, list[Pick]]:
    """:func:`recommend` for many members of one guild at once (the daily digest): member id ->
    top ``k`` picks (members with none left out), same ranking semantics, with guild-wide work done
    once — interactions, sent items, permission snapshots, opt-outs and the item table (columns)
    loaded once; single-centroid profiles built vectorised (multi-interest members through
    :func:`build_profile`); one FAISS batch search of the item index and one of the interaction index
    for all interest vectors; candidates, filters, neighbourhood scores and features as numpy arrays
    over the item table; MMR per member over its ``MMR_POOL`` best candidates.

    ``max_item_share`` (e.g. 0.1): no item goes to more than ``max(MIN_ITEM_CAP, share × members)``
    members; members are served in order of ``member_ids`` and one whose best items are full gets
    their next best, so one item cannot dominate a whole guild's digest. ``None``: no cap (then each
    member's picks equal :func:`recommend`'s). ``per_interest`` / ``neighbour_hits``: FAISS depth per
    interest vector in the item / interaction index (a digest may search shallower to save time:
    FAISS cost grows with k; the defaults are :func:`recommend`'s)."""
    item_index = indexes.get(guild_id, "item")
    inter_index = indexes.get(guild_id, "interaction")
    window_start = now - settings.repeat_window_days * 86400.0
    dim = indexes.dim
    wanted = set(member_ids)
    phases: list[tuple[str, float]] = [("start", time.perf_counter())]

    # guild-wide loads
    all_inter = await store.interactions(guild_id)
    owner_of = {i.id: i.member_id for i in all_inter}  # every interaction in the index, as interaction_members
    all_inter = [i for i in all_inter if i.created_at <= now]
    history: dict[int, list[Interaction]] = {}
    for i in all_inter:
        if i.member_id in wanted:
            history.setdefault(i.member_id, []).append(i)
    phases.append(("loads", time.perf_counter()))
    table = await store.item_columns(guild_id)
    ids = table["id"]
    members = {m["user_id"]: m for m in await store.members(guild_id)}
    channels = await store.channels(guild_id)
    guild = await store.get_guild(guild_id) or {}
    nsfw_ok = bool(guild.get("nsfw_allowed"))
    nsfw_channels = {c["id"] for c in channels if c["nsfw"]}
    opted = await store.opted_out_ids(guild_id)
    sent_by = await store.recommended_by_member(guild_id, None if exclude_sent else window_start)

    def pos_of(item_ids: np.ndarray) -> np.ndarray:
        """Rows of the item table for ``item_ids`` (those not in it dropped)."""
        item_ids = np.asarray(item_ids, np.int64)
        p = np.searchsorted(ids, item_ids)
        p = np.minimum(p, max(len(ids) - 1, 0))
        return p[(len(ids) > 0) & (ids[p] == item_ids)] if len(ids) else np.zeros(0, np.int64)

    phases.append(("sent+members", time.perf_counter()))
    # item-table columns every member shares
    created = table["created_at"]
    last_active = np.array([stats.last_active.get(int(i), 0.0) for i in ids.tolist()], np.float64)
    active = _active(created, last_active, now)
    popularity = np.array([stats.popularity.get(int(i), 0) for i in ids.tolist()], np.float64)
    trending = np.array([stats.trending.get(int(i), 0) for i in ids.tolist()], np.float64)
    chan = table["channel_id"]
    ok_all = (created <= now) & ~np.isin(table["author_id"], np.array(sorted(opted), np.int64))
    if not nsfw_ok:
        ok_all &= ~table["nsfw"] & ~np.isin(chan, np.array(sorted(nsfw_channels), np.int64))
    shared_pos = pos_of(np.array(sorted(await _guild_candidates(store, stats, guild_id, now)), np.int64))
    # positive engagements as a CSR matrix member code -> item rows (the neighbourhood signal)
    code = {m: c for c, m in enumerate(sorted(set(owner_of.values())))}  # every member behind an interaction
    in_table = set(ids.tolist())
    pairs = sorted({(code[i.member_id], i.item_id) for i in all_inter
                    if i.item_id is not None and i.weight > 0 and i.kind not in _NOT_PROFILE and i.created_at < now
                    and i.item_id in in_table})
    e_member = np.array([p[0] for p in pairs], np.int64)
    e_pos = np.searchsorted(ids, np.array([p[1] for p in pairs], np.int64)) if pairs else np.zeros(0, np.int64)
    indptr = np.searchsorted(e_member, np.arange(len(code) + 1)) if pairs else np.zeros(len(code) + 1, np.int64)

    phases.append(("columns", time.perf_counter()))
    # profiles: vectors of every item and interaction the members' profiles use, fetched once
    prof_rows = {m: _profile_rows(history.get(m, [])) for m in member_ids}
    need_items = {i.item_id for rows in prof_rows.values() for i in rows if i.item_id is not None}
    item_vecs = await asyncio.to_thread(item_index.vectors, need_items)
    need_inter = [i.id for rows in prof_rows.values() for i in rows if i.item_id is None or i.item_id not in item_vecs]
    inter_vecs = await asyncio.to_thread(inter_index.vectors, need_inter)
    profiles: dict[int, Profile] = {}
    used_by: dict[int, tuple[list[Interaction], np.ndarray]] = {}
    single: list[int] = []
    for m in member_ids:
        used = []
        vecs = []
        for i in prof_rows[m]:
            v = item_vecs.get(i.item_id) if i.item_id is not None else None
            v = v if v is not None else inter_vecs.get(i.id)
            if v is not None:
                used.append(i)
                vecs.append(v)
        hv = np.vstack(vecs) if vecs else np.zeros((0, dim), np.float32)
        used_by[m] = (used, hv)
        n_pos = sum(i.weight > 0 for i in used)
        if max_interests > 1 and n_pos >= 2 * MIN_PER_INTEREST:
            profiles[m] = build_profile(hv, np.array([i.weight for i in used]),
                                        np.array([(now - i.created_at) / 86400.0 for i in used]),
                                        half_life_days=settings.half_life_days, max_interests=max_interests)
        else:
            single.append(m)
    profiles.update(_single_profiles(single, used_by, now, settings.half_life_days, dim))

    phases.append(("profiles", time.perf_counter()))
    # one FAISS batch search per index for every interest vector of every member
    rows_of: dict[int, slice] = {}
    q: list[np.ndarray] = []
    at = 0
    for m in member_ids:
        n = len(profiles[m].interests)
        if n:
            rows_of[m] = slice(at, at + n)
            q.append(profiles[m].interests)
            at += n
    if q:
        qm = np.vstack(q)
        _, item_hits = await asyncio.to_thread(item_index.search, qm, per_interest)
        inter_sims, inter_hits = await asyncio.to_thread(inter_index.search, qm, neighbour_hits)
        hit_owner = np.array([code.get(owner_of.get(int(h), -1), -1) for h in inter_hits.ravel().tolist()],
                             np.int64).reshape(inter_hits.shape)

    phases.append(("faiss", time.perf_counter()))
    # per member: candidates and neighbourhood scores (rows of the item table)
    cands: dict[int, np.ndarray] = {}
    neighs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for m in member_ids:
        parts = [shared_pos]
        npos, nval = np.zeros(0, np.int64), np.zeros(0, np.float64)
        if m in rows_of:
            r = rows_of[m]
            parts.append(pos_of(item_hits[r].ravel()))
            npos, nval = _neighbour_rows(hit_owner[r].ravel(), inter_sims[r].ravel(), code.get(m, -2), indptr, e_pos)
            top = np.lexsort((ids[npos], -nval))[:per_interest]
            parts.append(npos[top])
        cands[m] = np.unique(np.concatenate(parts))
        neighs[m] = (npos, nval)
    phases.append(("candidates", time.perf_counter()))
    union = np.unique(np.concatenate(list(cands.values()))) if cands else np.zeros(0, np.int64)
    vec_map = await asyncio.to_thread(item_index.vectors, ids[union].tolist())
    cvec_all = np.zeros((len(ids), dim), np.float32)
    for p in union.tolist():
        v = vec_map.get(int(ids[p]))
        if v is not None:
            cvec_all[p] = v

    phases.append(("vectors", time.perf_counter()))
    # rank, cap, MMR, reasons
    cap = None
    if max_item_share is not None:
        cap = max(MIN_ITEM_CAP, int(np.ceil(max_item_share * len(member_ids))))
    given = np.zeros(len(ids), np.int64)
    chan_codes, chan_of = np.unique(chan, return_inverse=True)
    visible_cache: dict[tuple, np.ndarray] = {}
    picked: dict[int, list[tuple[int, float, int]]] = {}
    for m in member_ids:
        hist = history.get(m, [])
        member = members.get(m)
        roles = tuple(member["role_ids"]) if member else ()
        key = (roles, m) if _names_member(channels, m) else (roles,)
        vis = visible_cache.get(key)
        if vis is None:
            visible = visible_from_snapshot(guild_id, member, m, channels)
            vis = visible_cache[key] = (chan_codes == -1) | np.isin(chan_codes, np.array(sorted(visible), np.int64))
        pos = cands[m]
        seen = _seen(hist, window_start) | sent_by.get(m, set())
        if seen:
            pos = pos[~np.isin(ids[pos], np.array(sorted(seen), np.int64))]
        pos = pos[ok_all[pos] & vis[chan_of[pos]] & (table["author_id"][pos] != m)]
        if not len(pos):
            continue
        cvecs = cvec_all[pos]
        neighbour = np.zeros(len(pos))
        npos, nval = neighs[m]
        if len(npos):
            at_ = np.searchsorted(pos, npos)
            hit = (at_ < len(pos)) & (pos[np.minimum(at_, len(pos) - 1)] == npos)
            neighbour[at_[hit]] = nval[hit]
        x = _feature_arrays(
            content=profiles[m].similarity(cvecs), neighbour=neighbour, created=created[pos], active=active[pos],
            popularity=popularity[pos], trending=trending[pos], rating=table["rating"][pos],
            last_seen=_last_seen(hist), now=now, rate=stats.rate,
        )
        logits = ranker.score(x)
        blocked = given[pos] >= cap if cap is not None else None
        order = _choose(logits, cvecs, k, settings.mmr_lambda, blocked)
        picked[m] = [(int(pos[j]), float(logits[j])) for j in order]
        for j in order:
            given[pos[j]] += 1

    phases.append(("rank", time.perf_counter()))
    items = await store.get_items({int(ids[p]) for rows in picked.values() for p, _ in rows})
    engaged_items = await store.get_items(need_items)
    out: dict[int, list[Pick]] = {}
    for m, rows in picked.items():
        used, hv = used_by[m]
        picks = [
            Pick(item=items[int(ids[p])], score=float(1 / (1 + np.exp(-lg))),
                 reason=pick_reason(used, hv, cvec_all[p], engaged_items, popularity[p] > 0))
            for p, lg in rows if int(ids[p]) in items
        ]
        if picks:
            out[m] = picks
    phases.append(("reasons", time.perf_counter()))
    log.debug("recommend_many: %d members, %s", len(member_ids),
              ", ".join(f"{b[0]} {b[1] - a[1]:.2f}s" for a, b in zip(phases, phases[1:])))
    return out


def _neighbour_rows(
    hit_code: np.ndarray, hit_sims: np.ndarray, self_code: int, indptr: np.ndarray, e_pos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`recsys.rank.neighbour_scores` on arrays: ``hit_code``/``hit_sims`` the member codes and
    similarities of the nearest interactions; ``indptr``/``e_pos`` a CSR of each member's positively
    engaged item rows. Returns ``(rows, scores)``, each neighbour weighing its best similarity and
    counting an item once."""
    ok = (hit_code >= 0) & (hit_code != self_code) & (hit_sims > 0)
    if not ok.any():
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    hc, hs = hit_code[ok], hit_sims[ok].astype(np.float64)
    nb, inv = np.unique(hc, return_inverse=True)
    best = np.zeros(len(nb))
    np.maximum.at(best, inv, hs)
    total = best.sum()
    starts, lens = indptr[nb], indptr[nb + 1] - indptr[nb]
    n = int(lens.sum())
    if n == 0 or total <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    offs = np.repeat(starts - np.r_[0, np.cumsum(lens)[:-1]], lens) + np.arange(n)
    rows, where = np.unique(e_pos[offs], return_inverse=True)
    return rows, np.bincount(where, weights=np.repeat(best / total, lens), minlength=len(rows))


def _names_member(channels: list[dict], member_id: int) -> bool:
    """Whether any channel's snapshot names the member (then their visibility is not just their roles')."""
    return any(member_id in ch["visibility"].get("members", []) or member_id in ch["visibility"].get("denied_members", [])
               for ch in channels)


def _single_profiles(
    member_ids: list[int], used_by: dict[int, tuple[list[Interaction], np.ndarray]], now: float,
    half_life_days: float, dim: int,
) -> dict[int, Profile]:
    """Single-centroid profiles (as :func:`build_profile` with one interest) for many members at once:
    all rows stacked, decay relative to each member's own latest positive / negative interaction,
    centroids by one segmented sum (``np.add.at``)."""
    out: dict[int, Profile] = {}
    if not member_ids:
        return out
    vecs = [used_by[m][1] for m in member_ids]
    seg = np.repeat(np.arange(len(member_ids)), [len(v) for v in vecs])
    if len(seg) == 0:
        return {m: Profile(np.zeros((0, dim), np.float32), np.zeros(0, np.float32)) for m in member_ids}
    x = np.vstack(vecs).astype(np.float32)
    w = np.concatenate([[i.weight for i in used_by[m][0]] for m in member_ids]).astype(np.float64)
    ages = np.clip(np.concatenate([[(now - i.created_at) / 86400.0 for i in used_by[m][0]] for m in member_ids]), 0, None)
    g = len(member_ids)
    sums = {}
    for sign, mask in ((1, w > 0), (-1, w < 0)):
        min_age = np.full(g, np.inf)
        np.minimum.at(min_age, seg[mask], ages[mask])
        dw = np.where(mask, np.abs(w) * np.power(0.5, (ages - np.where(np.isfinite(min_age), min_age, 0)[seg])
                                                 / float(half_life_days)), 0.0)
        acc = np.zeros((g, dim), np.float64)
        np.add.at(acc, seg, dw[:, None] * x)
        sums[sign] = (acc, np.bincount(seg[mask], minlength=g) > 0)
    pos, has_pos = sums[1]
    neg, has_neg = sums[-1]
    pos_n = _unit(pos)
    neg_n = _unit(neg)
    for r, m in enumerate(member_ids):
        negative = neg_n[r] if has_neg[r] else None
        if has_pos[r]:
            out[m] = Profile(pos_n[r : r + 1], np.ones(1, np.float32), negative)
        else:
            out[m] = Profile(np.zeros((0, dim), np.float32), np.zeros(0, np.float32), negative)
    return out


def _unit(m: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(m, axis=-1, keepdims=True)
    return (m / np.where(n > 0, n, 1)).astype(np.float32)
