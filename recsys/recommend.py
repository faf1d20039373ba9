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
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from recsys.embed import embedding_text
from recsys.profile import Profile, build_profile
from recsys.rank import TRENDING_WINDOW_S, Ranker, count_greater_rows, feature_matrix, mmr_rows, neighbour_scores
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
NOT_PROFILE = {"recommended", "viewed"}
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


def _about(inter: Interaction, quote: str | None, names: Collection[str] = ()) -> str:
    """The text a reason quotes for ``inter``: what the member wrote/asked, else ``quote`` (its item's
    title or text), leading addressees among ``names`` dropped (:func:`recsys.embed.embedding_text`),
    whitespace collapsed."""
    if inter.kind in ("authored", "requested") and inter.text:
        about = inter.text
    elif quote is not None:
        about = quote
    else:
        about = inter.text
    return " ".join(embedding_text(about or "", names).split())


def _quoted_item(inter: Interaction) -> int | None:
    """The item :func:`_about` quotes for ``inter`` (not the member's own words), if any."""
    return None if inter.kind in ("authored", "requested") and inter.text else inter.item_id


def reason_for(inter: Interaction, quote: str | None, names: Collection[str] = ()) -> str:
    """One line naming the interaction: "because you replied to: <title or first words>" (whitespace
    and newlines collapsed, the quote cut to 80 characters); ``quote``: its item's title or text;
    ``names``: the guild's member display names, lower-case (addressees are not quoted)."""
    verb = _VERBS.get(inter.kind, "you engaged with")
    about = _about(inter, quote, names)
    if len(about) > 80:
        about = about[:77].rstrip() + "…"
    return f"because {verb}: {about}"


def pick_reason(
    used: list[Interaction], hv: np.ndarray, vec: np.ndarray, quotes: Mapping[int, str], popular: bool
) -> str:
    """The reason for one pick with vector ``vec (dim,)``: :func:`pick_reasons` for one pick."""
    return pick_reasons(used, hv, np.asarray(vec)[None], quotes, [popular])[0][0]


def pick_reasons(
    used: list[Interaction], hv: np.ndarray, vecs: np.ndarray, quotes: Mapping[int, str], popular: list[bool],
    names: Collection[str] = (),
) -> list[tuple[str, int | None]]:
    """Reasons for one member's picks: :func:`reasons_many` for one member."""
    return reasons_many([(used, hv, np.atleast_2d(vecs), popular)], quotes, names)[0]


def reasons_many(
    members: list[tuple[list[Interaction], np.ndarray, np.ndarray, list[bool]]], quotes: Mapping[int, str],
    names: Collection[str] = (),
) -> list[list[tuple[str, int | None]]]:
    """Reasons for the picks of many members, all at once. Per member ``(used, hv, vecs, popular)``:
    its profile interactions ``used`` with their vectors ``hv (n, dim)``, its picks' vectors
    ``vecs (k, dim)`` (2-D, the same ``dim`` for every member) and whether each pick is popular.
    A pick's reason quotes the member's positive interaction nearest to it, among the *substantive*
    ones (quoted text of at least ``MIN_REASON_CHARS`` characters) when the member has any, if its
    cosine reaches ``MIN_REASON_SIMILARITY``; else "popular in this server lately" / "new in this server".
    ``quotes``: item id -> its title or text (:meth:`Store.item_quotes`); ``names``: the guild's member
    display names, lower-case (a quote does not start with whom it addressed). Returns one list per
    member of ``(reason, quoted item)``: the item whose title or text is quoted, ``None`` when the
    quote is the member's own words or there is none."""
    dim = members[0][2].shape[1] if members else 0
    used = [i for u, _, _, _ in members for i in u]
    u_quote = [quotes.get(i.item_id) if i.item_id is not None else None for i in used]
    u_n = np.array([len(u) for u, _, _, _ in members], np.int64)
    u_seg = np.repeat(np.arange(len(members)), u_n)
    positive = np.array([i.weight > 0 for i in used], bool)
    long_ = np.array([len(_about(i, q, names)) >= MIN_REASON_CHARS for i, q in zip(used, u_quote, strict=True)], bool)
    # the substantive positive interactions when a member has any, else all its positive ones
    has_long = np.bincount(u_seg[positive & long_], minlength=len(members)) > 0
    eligible = positive & (long_ | ~has_long[u_seg])
    p_n = np.array([len(v) for _, _, v, _ in members], np.int64)
    pv = np.concatenate([v for _, _, v, _ in members] or [np.zeros((0, dim))]).astype(np.float32)
    hv = np.concatenate([h.reshape(-1, dim) for _, h, _, _ in members] or [np.zeros((0, dim))]).astype(np.float32)
    # every (pick, interaction of the same member) pair, pairs of a pick contiguous
    p_seg = np.repeat(np.arange(len(members)), p_n)
    per = u_n[p_seg]
    pair_p = np.repeat(np.arange(len(pv)), per)
    u_start = np.cumsum(u_n) - u_n
    pair_u = np.repeat(u_start[p_seg], per) + (np.arange(len(pair_p)) - np.repeat(np.cumsum(per) - per, per))
    sims = np.empty(len(pair_p), np.float32)
    for s in range(0, len(pair_p), 65536):
        t = slice(s, s + 65536)
        sims[t] = np.einsum("nd,nd->n", hv[pair_u[t]], pv[pair_p[t]])
    sims = np.where(eligible[pair_u] & np.any(pv != 0, axis=1)[pair_p], sims, -np.inf)
    best_u = np.full(len(pv), -1, np.int64)
    if len(pair_p):
        order = np.lexsort((-sims, pair_p))  # per pick, best first; ties: the earlier interaction
        first = order[np.r_[0, np.flatnonzero(np.diff(pair_p[order])) + 1]]
        ok = sims[first] >= MIN_REASON_SIMILARITY
        best_u[pair_p[first[ok]]] = pair_u[first[ok]]
    out: list[list[str]] = []
    c = 0
    for _, _, _, popular in members:
        reasons = []
        for flag in popular:
            u = best_u[c]
            if u >= 0:
                reasons.append((reason_for(used[u], u_quote[u], names), _quoted_item(used[u])))
            else:
                reasons.append(("popular in this server lately" if flag else "new in this server", None))
            c += 1
        out.append(reasons)
    return out


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


def active_time(created: np.ndarray, last_active: np.ndarray, now: float) -> np.ndarray:
    """An item's last activity: its creation or its latest interaction up to ``now``."""
    return np.maximum(created, np.minimum(last_active, now))


def rank_rows(
    ranker: Ranker, *, valid: np.ndarray, content: np.ndarray, neighbour: np.ndarray, created: np.ndarray,
    active: np.ndarray, popularity: np.ndarray, trending: np.ndarray, rating: np.ndarray, last_seen: np.ndarray,
    now: float, rate: float,
) -> np.ndarray:
    """Step 4's scores for a batch of members: every argument ``(B, L)`` (row b: member b's
    candidates, ``valid`` marking the real ones; ``created`` / ``active`` UNIX s), ``last_seen (B, 1)``
    (the member's latest interaction, ``-inf`` for none). Returns ranker logits ``(B, L) float64``,
    ``-inf`` where not valid. Ranks (newer / busier counts) are within each row's valid candidates."""
    x = feature_matrix(
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
    return np.where(valid, ranker.score(x), -np.inf)


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


def order_rows(logits: np.ndarray) -> np.ndarray:
    """Columns of ``logits (B, L)`` by descending value, ties by column: ``(B, L) int64``."""
    return np.argsort(-logits, axis=1, kind="stable")


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
) -> list[Pick]:
    """Top ``k`` picks for ``member_id`` in ``guild_id`` at ``now`` (UNIX s). See the module doc;
    :func:`recsys.batch.recommend_many` is the same ranking for many members at once. ``names``: the
    guild's member display names, lower-case, for the reasons' quotes (read from the store when
    ``None``; the facade keeps them cached)."""
    item_index = indexes.get(guild_id, "item")
    inter_index = indexes.get(guild_id, "interaction")
    window_start = now - settings.repeat_window_days * 86400.0

    # 1. profile
    history = [i for i in await store.interactions(guild_id, member_id) if i.created_at <= now]
    seen = seen_items(history, window_start)
    seen |= await (store.recommended_item_ids(guild_id, member_id) if exclude_sent
                   else store.recommended_since(guild_id, member_id, window_start))
    prof_rows = profile_interactions(history)
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
    profile = await asyncio.to_thread(  # k-means over a long history: off the loop
        build_profile,
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
        neigh = await asyncio.to_thread(neighbour_scores, hm, hs, engaged, member_id)
        cand.update(sorted(neigh, key=lambda i: (-neigh[i], i))[:CANDIDATES_PER_INTEREST])
    cand.update(await guild_candidates(store, stats, guild_id, now))
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
    cvecs, _ = await asyncio.to_thread(item_index.matrix, [it.id for it in keep])
    logits, order = await asyncio.to_thread(
        _rank_one, ranker, keep, cvecs, profile, neigh, stats, latest_activity(history), now, k, settings.mmr_lambda
    )

    # 5. reasons
    quotes = await store.item_quotes({i.item_id for i in used if i.item_id is not None})
    names = frozenset(await store.member_names(guild_id)) if names is None else names
    popular = [stats.popularity.get(keep[j].id, 0) > 0 for j in order]
    reasons = await asyncio.to_thread(pick_reasons, used, hv, cvecs[order], quotes, popular, names)
    return [
        Pick(item=keep[j], score=float(1 / (1 + np.exp(-logits[j]))), reason=r, reason_item_id=src)
        for j, (r, src) in zip(order, reasons, strict=True)
    ]


def _rank_one(
    ranker: Ranker, keep: list[Item], cvecs: np.ndarray, profile: Profile, neigh: dict[int, float], stats: GuildStats,
    last_seen: float | None, now: float, k: int, lam: float,
) -> tuple[np.ndarray, list[int]]:
    """Step 4 for one member (a batch of one, as :func:`recsys.batch.recommend_many` ranks many):
    logits ``(n,)`` for ``keep`` (vectors ``cvecs (n, dim)``) and the chosen indices into ``keep``."""
    created = np.array([[it.created_at for it in keep]], np.float64)
    last_active = np.array([[stats.last_active.get(it.id, 0.0) for it in keep]], np.float64)
    valid = np.ones(created.shape, bool)
    logits = rank_rows(
        ranker, valid=valid, content=profile.similarity(cvecs)[None],
        neighbour=np.array([[neigh.get(it.id, 0.0) for it in keep]], np.float64),
        created=created, active=active_time(created, last_active, now),
        popularity=np.array([[stats.popularity.get(it.id, 0) for it in keep]], np.float64),
        trending=np.array([[stats.trending.get(it.id, 0) for it in keep]], np.float64),
        rating=np.array([[it.rating for it in keep]], np.float64),
        last_seen=np.array([[last_seen if last_seen is not None else -np.inf]]), now=now, rate=stats.rate,
    )
    _, picks = choose_rows(logits, valid, lambda idx: cvecs[idx], k, lam)
    return logits[0], [int(j) for j in picks[0] if j >= 0]


async def guild_candidates(store: Store, stats: GuildStats, guild_id: int, now: float) -> set[int]:
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
