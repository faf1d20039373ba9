"""The daily digest's ranking: :func:`recommend_many`, :func:`recsys.recommend.recommend` for every
member of a guild in one batched pass.

Guild-wide work is done once — interactions, sent items, permission snapshots, opt-outs and the
item table (as columns) loaded once; one FAISS batch search of the item index and one of the
interaction index for every interest vector of every member; neighbourhood scores for all members
as one sparse table. Members are then ranked ``CHUNK`` at a time as ``(members, candidates)`` arrays:
the filters, the ranker's features, the scores and MMR are array operations over the whole chunk
(:func:`recsys.recommend.rank_rows` / :func:`recsys.recommend.choose_rows`, the very functions the
single-member path calls with one row). Everything but the store reads runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from recsys.profile import MIN_PER_INTEREST, Profile, build_profile, similarity_rows
from recsys.recommend import (
    CANDIDATES_PER_INTEREST,
    DEFAULT_MAX_INTERESTS,
    NEIGHBOUR_HITS,
    NOT_PROFILE,
    GuildStats,
    Pick,
    active_time,
    choose_rows,
    guild_candidates,
    latest_activity,
    order_rows,
    profile_interactions,
    rank_rows,
    reasons_many,
    seen_items,
    visible_from_snapshot,
)
from recsys.store import Interaction, Item, Store

if TYPE_CHECKING:
    from campfire.config import RecsysSettings
    from recsys.index import IndexSet, VectorIndex
    from recsys.rank import Ranker

log = logging.getLogger(__name__)

MIN_ITEM_CAP = 10  # recommend_many's per-item cap is never below this many members
# Members ranked together: a chunk's arrays are CHUNK × candidates (≈ 600) × 10 features float64
# (≈ 6 MB), plus the vectors of its personal candidates and MMR pools (≈ 30 MB at 384-d); 128
# already amortises numpy's per-call cost. Chunks are scored by SCORING_THREADS worker threads.
CHUNK = 128
SCORING_THREADS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))


@dataclass
class _Loaded:
    """What the store gave for one guild (read on the event loop, ranked in a worker thread)."""

    interactions: list[Interaction]
    table: dict[str, np.ndarray]  # Store.item_columns
    members: dict[int, dict]
    channels: list[dict]
    nsfw_ok: bool
    opted: set[int]
    sent_by: dict[int, set[int]]
    shared: set[int]  # candidates every member gets (newest, trending, popular, active)


@dataclass
class _Ranked:
    picked: dict[int, list[tuple[int, float]]]  # member -> (item-table row, logit), best first
    used_by: dict[int, tuple[list[Interaction], np.ndarray]]  # member -> profile rows and their vectors
    cvec: dict[int, np.ndarray]  # item-table row -> vector, for every picked row
    popular: np.ndarray  # (n_items,) bool: engaged with by others


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
    """:func:`recsys.recommend.recommend` for many members of one guild at once (the daily digest):
    member id -> top ``k`` picks (members with none left out), the same ranking semantics (scores
    agree to float32 rounding).

    ``max_item_share`` (e.g. 0.1): no item goes to more than ``max(MIN_ITEM_CAP, share × members)``
    members; members are served in order of ``member_ids`` and one whose best items are full gets
    their next best, so one item cannot dominate a whole guild's digest. ``None``: no cap (then each
    member's picks equal :func:`recommend`'s). ``per_interest`` / ``neighbour_hits``: FAISS depth per
    interest vector in the item / interaction index (a digest may search shallower to save time:
    FAISS cost grows with k; the defaults are :func:`recommend`'s)."""
    if not member_ids:
        return {}
    t0 = time.perf_counter()
    window_start = now - settings.repeat_window_days * 86400.0
    guild = await store.get_guild(guild_id) or {}
    loaded = _Loaded(
        interactions=await store.interactions(guild_id),
        table=await store.item_columns(guild_id),
        members={m["user_id"]: m for m in await store.members(guild_id)},
        channels=await store.channels(guild_id),
        nsfw_ok=bool(guild.get("nsfw_allowed")),
        opted=await store.opted_out_ids(guild_id),
        sent_by=await store.recommended_by_member(guild_id, None if exclude_sent else window_start),
        shared=await guild_candidates(store, stats, guild_id, now),
    )
    t1 = time.perf_counter()
    if not len(loaded.table["id"]):
        return {}
    ranked = await asyncio.to_thread(
        _rank_many, loaded, indexes.get(guild_id, "item"), indexes.get(guild_id, "interaction"), settings, ranker,
        stats, guild_id, list(member_ids), k=k, now=now, window_start=window_start, max_interests=max_interests,
        max_item_share=max_item_share, per_interest=per_interest, neighbour_hits=neighbour_hits,
    )
    t2 = time.perf_counter()
    ids = loaded.table["id"]
    items = await store.get_items({int(ids[p]) for rows in ranked.picked.values() for p, _ in rows})
    quotes = await store.item_quotes(
        {i.item_id for used, _ in ranked.used_by.values() for i in used if i.item_id is not None}
    )
    t3 = time.perf_counter()
    out = await asyncio.to_thread(_with_reasons, ranked, ids, items, quotes, loaded.members)
    log.debug("recommend_many: %d members, loads %.2fs, ranking %.2fs, items %.2fs, reasons %.2fs", len(member_ids),
              t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3)
    return out


def _with_reasons(
    ranked: _Ranked, ids: np.ndarray, items: dict[int, Item], quotes: dict[int, str], members: dict[int, dict]
) -> dict[int, list[Pick]]:
    chosen = {m: [(p, lg) for p, lg in rows if int(ids[p]) in items] for m, rows in ranked.picked.items()}
    chosen = {m: rows for m, rows in chosen.items() if rows}
    reasons = reasons_many(
        [(*ranked.used_by[m], np.array([ranked.cvec[p] for p, _ in rows]), [bool(ranked.popular[p]) for p, _ in rows])
         for m, rows in chosen.items()],
        quotes,
        frozenset((m.get("display_name") or "").lower() for m in members.values()) - {""},
    )
    return {
        m: [Pick(item=items[int(ids[p])], score=float(1 / (1 + np.exp(-lg))), reason=r, reason_item_id=src)
            for (p, lg), (r, src) in zip(rows, why, strict=True)]
        for (m, rows), why in zip(chosen.items(), reasons, strict=True)
    }


def _rows_of(ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """Rows of the sorted item table ``ids`` for ``item_ids`` (any shape); -1 where absent."""
    item_ids = np.asarray(item_ids, np.int64)
    if len(ids) == 0:
        return np.full(item_ids.shape, -1, np.int64)
    p = np.minimum(np.searchsorted(ids, item_ids), len(ids) - 1)
    return np.where(ids[p] == item_ids, p, -1)


def _in_sorted(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (any shape) found in the sorted 1-d ``keys``: (bool mask, index into keys)."""
    if len(keys) == 0:
        return np.zeros(values.shape, bool), np.zeros(values.shape, np.int64)
    j = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
    return keys[j] == values, j


def _slice(keys: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, slice]:
    """The part of the sorted ``keys`` in ``[lo, hi)`` (one chunk's members) and its slice."""
    at = slice(int(np.searchsorted(keys, lo)), int(np.searchsorted(keys, hi)))
    return keys[at], at


def _rank_many(
    loaded: _Loaded, item_index: VectorIndex, inter_index: VectorIndex, settings: RecsysSettings, ranker: Ranker,
    stats: GuildStats, guild_id: int, member_ids: list[int], *, k: int, now: float, window_start: float,
    max_interests: int, max_item_share: float | None, per_interest: int, neighbour_hits: int,
) -> _Ranked:
    """Everything of :func:`recommend_many` between the store reads and the reasons (blocking)."""
    phases: list[tuple[str, float]] = [("start", time.perf_counter())]
    dim = item_index.dim
    table = loaded.table
    ids = table["id"]
    n_rows = len(ids)
    n_members = len(member_ids)
    index_of = {m: b for b, m in enumerate(member_ids)}

    owner_of = {i.id: i.member_id for i in loaded.interactions}  # every interaction in the index
    inters = [i for i in loaded.interactions if i.created_at <= now]
    history: dict[int, list[Interaction]] = {}
    for i in inters:
        if i.member_id in index_of:
            history.setdefault(i.member_id, []).append(i)

    # item-table columns every member shares
    created = table["created_at"]
    active = active_time(created, np.array([stats.last_active.get(i, 0.0) for i in ids.tolist()], np.float64), now)
    popularity = np.array([stats.popularity.get(i, 0) for i in ids.tolist()], np.float64)
    trending = np.array([stats.trending.get(i, 0) for i in ids.tolist()], np.float64)
    chan = table["channel_id"]
    author = table["author_id"]
    ok_all = (created <= now) & ~np.isin(author, np.array(sorted(loaded.opted), np.int64))
    if not loaded.nsfw_ok:
        nsfw_channels = np.array(sorted(c["id"] for c in loaded.channels if c["nsfw"]), np.int64)
        ok_all &= ~table["nsfw"] & ~np.isin(chan, nsfw_channels)
    shared_rows = np.unique(_rows_of(ids, np.array(sorted(loaded.shared), np.int64)))
    shared_rows = shared_rows[shared_rows >= 0]
    # positive engagements as a CSR matrix member code -> item rows (the neighbourhood signal)
    code = {m: c for c, m in enumerate(sorted(set(owner_of.values())))}
    pairs = np.array(sorted({(code[i.member_id], i.item_id) for i in inters
                             if i.item_id is not None and i.weight > 0 and i.kind not in NOT_PROFILE
                             and i.created_at < now}), np.int64).reshape(-1, 2)
    e_rows = _rows_of(ids, pairs[:, 1])
    e_member, e_rows = pairs[:, 0][e_rows >= 0], e_rows[e_rows >= 0]
    indptr = np.searchsorted(e_member, np.arange(len(code) + 1))
    phases.append(("columns", time.perf_counter()))

    profiles, used_by = _profiles(member_ids, history, item_index, inter_index, settings, now, max_interests, dim)
    phases.append(("profiles", time.perf_counter()))

    # one FAISS batch search per index for every interest vector of every member
    n_int = np.array([len(profiles[m].interests) for m in member_ids], np.int64)
    q_member = np.repeat(np.arange(n_members), n_int)
    q_slot = np.arange(len(q_member)) - np.repeat(np.cumsum(n_int) - n_int, n_int)
    slots = max(int(n_int.max(initial=0)), 1)
    interests = np.zeros((n_members, slots, dim), np.float32)
    has_interest = np.zeros((n_members, slots), bool)
    hits = np.full((n_members, slots, per_interest), -1, np.int64)
    nb_key, nb_val = np.zeros(0, np.int64), np.zeros(0, np.float64)
    top_nb = np.full((n_members, per_interest), -1, np.int64)
    if len(q_member):
        qm = np.vstack([profiles[m].interests for m in member_ids if len(profiles[m].interests)])
        interests[q_member, q_slot] = qm
        has_interest[q_member, q_slot] = True
        _, item_hits = item_index.search(qm, per_interest)
        hits[q_member, q_slot] = _rows_of(ids, item_hits)
        phases.append(("item search", time.perf_counter()))
        inter_sims, inter_hits = inter_index.search(qm, neighbour_hits)
        phases.append(("interaction search", time.perf_counter()))
        inter_ids = np.array(sorted(owner_of), np.int64)
        inter_code = np.array([code[owner_of[i]] for i in inter_ids.tolist()], np.int64)
        at = _rows_of(inter_ids, inter_hits)
        hit_owner = np.where(at >= 0, inter_code[np.maximum(at, 0)], -1) if len(inter_ids) else np.full_like(at, -1)
        self_code = np.array([code.get(m, -2) for m in member_ids], np.int64)
        nb_key, nb_val = _neighbour_table(q_member, hit_owner, inter_sims, self_code, indptr, e_rows, n_rows)
        # each member's best neighbourhood items (by score, then id: rows are in id order) are candidates too
        nb_member, nb_row = nb_key // max(n_rows, 1), nb_key % max(n_rows, 1)
        order = np.lexsort((-nb_val, nb_member))  # stable: ties stay in row order
        nb_member, nb_row = nb_member[order], nb_row[order]
        rank = np.arange(len(order)) - np.searchsorted(nb_member, nb_member)
        top = rank < per_interest
        top_nb[nb_member[top], rank[top]] = nb_row[top]
    negative = np.zeros((n_members, dim), np.float32)
    has_negative = np.zeros(n_members, bool)
    for b, m in enumerate(member_ids):
        if profiles[m].negative is not None:
            negative[b] = profiles[m].negative
            has_negative[b] = True
    phases.append(("neighbours", time.perf_counter()))

    personal = np.concatenate([hits.reshape(n_members, -1), top_nb], axis=1)
    union = np.union1d(shared_rows, personal[personal >= 0])
    cvec_all = np.zeros((n_rows, dim), np.float32)
    cvec_all[union] = item_index.matrix(ids[union])[0]
    # what each member must not get again: their interactions (and sent items) as sorted keys member × row
    seen_member: list[int] = []
    seen_item: list[int] = []
    for b, m in enumerate(member_ids):
        its = seen_items(history.get(m, []), window_start) | loaded.sent_by.get(m, set())
        seen_member += [b] * len(its)
        seen_item += its
    seen_rows = _rows_of(ids, np.array(seen_item, np.int64))
    seen_key = np.unique(np.array(seen_member, np.int64)[seen_rows >= 0] * n_rows + seen_rows[seen_rows >= 0])
    chan_ids, chan_of = np.unique(chan, return_inverse=True)
    visibility, vis_class = _visibility(guild_id, loaded, member_ids, chan_ids)
    mids = np.array(member_ids, np.int64)
    seen_at = [latest_activity(history.get(m, [])) for m in member_ids]
    last_seen = np.array([-np.inf if t is None else t for t in seen_at], np.float64)
    phases.append(("vectors", time.perf_counter()))

    shared_vecs = cvec_all[shared_rows][None]  # (1, S, dim): every member's shared candidates
    lam = settings.mmr_lambda

    def score(b0: int, b1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Members ``b0:b1``: their candidates' item rows, valid mask, logits and order, all ``(B, L)``."""
        nb = b1 - b0
        # candidates: shared then personal, content by one matmul each (no (members, S, dim) copy),
        # then each row sorted by item row (the single-member path's order) and de-duplicated
        mine = personal[b0:b1]
        profile_args = (interests[b0:b1], has_interest[b0:b1], negative[b0:b1], has_negative[b0:b1])
        content = np.concatenate([similarity_rows(shared_vecs, *profile_args),
                                  similarity_rows(cvec_all[np.maximum(mine, 0)], *profile_args)], axis=1)
        raw = np.concatenate([np.broadcast_to(shared_rows, (nb, len(shared_rows))), np.where(mine < 0, n_rows, mine)],
                             axis=1)
        perm = np.argsort(raw, axis=1)
        raw = np.take_along_axis(raw, perm, axis=1)
        content = np.take_along_axis(content, perm, axis=1)
        valid = raw < n_rows
        valid[:, 1:] &= raw[:, 1:] != raw[:, :-1]
        pos = np.where(valid, raw, 0)
        key = np.arange(b0, b1)[:, None] * n_rows + pos
        lo_hi = (b0 * n_rows, b1 * n_rows)
        seen, _ = _in_sorted(_slice(seen_key, *lo_hi)[0], key)
        valid &= ok_all[pos] & visibility[vis_class[b0:b1, None], chan_of[pos]] & (author[pos] != mids[b0:b1, None])
        valid &= ~seen
        keys, at = _slice(nb_key, *lo_hi)
        found, j = _in_sorted(keys, key)
        logits = rank_rows(
            ranker, valid=valid, content=content, neighbour=np.where(found, nb_val[at][j] if len(keys) else 0.0, 0.0),
            created=created[pos], active=active[pos], popularity=popularity[pos], trending=trending[pos],
            rating=table["rating"][pos], last_seen=last_seen[b0:b1, None], now=now, rate=stats.rate,
        )
        return pos, valid, logits, order_rows(logits)

    # scoring is independent per chunk (worker threads, numpy releases the GIL); choosing is in
    # member order, because of the per-item cap
    cap = max(MIN_ITEM_CAP, int(np.ceil(max_item_share * n_members))) if max_item_share is not None else None
    given = np.zeros(n_rows, np.int64)
    picked: dict[int, list[tuple[int, float]]] = {}
    cvec_picked: dict[int, np.ndarray] = {}
    bounds = [(b0, min(n_members, b0 + CHUNK)) for b0 in range(0, n_members, CHUNK)]
    with ThreadPoolExecutor(max_workers=SCORING_THREADS) as pool_:
        ahead = [pool_.submit(score, *bounds[c]) for c in range(min(len(bounds), SCORING_THREADS + 1))]
        for c, (b0, _b1) in enumerate(bounds):
            pos, valid, logits, order = ahead[c].result()
            ahead[c] = None  # free the chunk once chosen
            if c + SCORING_THREADS + 1 < len(bounds):
                ahead.append(pool_.submit(score, *bounds[c + SCORING_THREADS + 1]))
            nb = len(pos)

            def choose(r0: int, pos=pos, valid=valid, logits=logits, order=order) -> tuple[np.ndarray, np.ndarray]:
                """MMR picks for rows ``r0:`` of the chunk, items already given to ``cap`` members left out."""
                free = valid[r0:] & (given[pos[r0:]] < cap) if cap is not None else valid[r0:]
                at = np.arange(nb - r0)[:, None]
                return choose_rows(logits[r0:], free, lambda idx: cvec_all[pos[r0:][at, idx]], k, lam, order[r0:])

            pool, picks = choose(0)
            filled: set[int] = set()  # items that reached the cap since the picks were chosen
            for r in range(nb):
                if filled and not filled.isdisjoint(pos[r, pool[r][pool[r] >= 0]].tolist()):
                    # some of this member's best went to `cap` members meanwhile: choose again for the
                    # rest of the chunk (items fill rarely: at most picks / cap times in a digest)
                    pool[r:], picks[r:] = choose(r)
                    filled.clear()
                sel = picks[r][picks[r] >= 0]
                if not len(sel):
                    continue
                rows = pos[r, sel]
                picked[member_ids[b0 + r]] = list(zip(rows.tolist(), logits[r, sel].tolist(), strict=True))
                for p in rows.tolist():
                    cvec_picked[p] = cvec_all[p]
                    given[p] += 1
                    if cap is not None and given[p] >= cap:
                        filled.add(p)
    phases.append(("rank", time.perf_counter()))
    log.debug("recommend_many ranking: %d members, %s", n_members,
              ", ".join(f"{b[0]} {b[1] - a[1]:.2f}s" for a, b in zip(phases, phases[1:], strict=False)))
    return _Ranked(picked, used_by, cvec_picked, popularity > 0)


def _profiles(
    member_ids: list[int], history: dict[int, list[Interaction]], item_index: VectorIndex,
    inter_index: VectorIndex, settings: RecsysSettings, now: float, max_interests: int, dim: int,
) -> tuple[dict[int, Profile], dict[int, tuple[list[Interaction], np.ndarray]]]:
    """Every member's profile: the vector of the item each interaction engaged with, else the
    interaction's own; single-centroid profiles built together (:func:`_single_profiles`), members
    with enough history for several interests through :func:`build_profile`."""
    prof_rows = {m: profile_interactions(history.get(m, [])) for m in member_ids}
    need_items = sorted({i.item_id for rows in prof_rows.values() for i in rows if i.item_id is not None})
    item_vecs, present = item_index.matrix(need_items)
    item_at = {iid: r for r, iid in enumerate(need_items) if present[r]}
    need_inter = sorted({i.id for rows in prof_rows.values() for i in rows if item_at.get(i.item_id) is None})
    inter_vecs, present = inter_index.matrix(need_inter)
    inter_at = {iid: r + len(need_items) for r, iid in enumerate(need_inter) if present[r]}
    every = np.vstack([item_vecs, inter_vecs])
    profiles: dict[int, Profile] = {}
    used_by: dict[int, tuple[list[Interaction], np.ndarray]] = {}
    single: list[int] = []
    for m in member_ids:
        used, at = [], []
        for i in prof_rows[m]:
            r = item_at.get(i.item_id) if i.item_id is not None else None
            r = r if r is not None else inter_at.get(i.id)
            if r is not None:
                used.append(i)
                at.append(r)
        hv = every[at] if at else np.zeros((0, dim), np.float32)
        used_by[m] = (used, hv)
        if max_interests > 1 and sum(i.weight > 0 for i in used) >= 2 * MIN_PER_INTEREST:
            profiles[m] = build_profile(hv, np.array([i.weight for i in used]),
                                        np.array([(now - i.created_at) / 86400.0 for i in used]),
                                        half_life_days=settings.half_life_days, max_interests=max_interests)
        else:
            single.append(m)
    profiles.update(_single_profiles(single, used_by, now, settings.half_life_days, dim))
    return profiles, used_by


def _single_profiles(
    member_ids: list[int], used_by: dict[int, tuple[list[Interaction], np.ndarray]], now: float,
    half_life_days: float, dim: int,
) -> dict[int, Profile]:
    """Single-centroid profiles (as :func:`build_profile` with one interest) for many members at once:
    decay relative to each member's own latest positive / negative interaction, every centroid by one
    sparse (members × rows) product (``scipy.sparse``)."""
    empty = Profile(np.zeros((0, dim), np.float32), np.zeros(0, np.float32))
    counts = np.array([len(used_by[m][0]) for m in member_ids], np.int64)
    out = {m: empty for m, c in zip(member_ids, counts.tolist(), strict=True) if c == 0}
    busy = [m for m, c in zip(member_ids, counts.tolist(), strict=True) if c]
    if not busy:
        return out
    n = counts[counts > 0]
    starts = np.cumsum(n) - n
    seg = np.repeat(np.arange(len(busy)), n)
    x = np.vstack([used_by[m][1] for m in busy]).astype(np.float32)
    w = np.array([i.weight for m in busy for i in used_by[m][0]], np.float64)
    ages = np.clip(np.array([(now - i.created_at) / 86400.0 for m in busy for i in used_by[m][0]], np.float64), 0, None)
    centroid, has = {}, {}
    for sign, mask in ((1, w > 0), (-1, w < 0)):
        newest = np.minimum.reduceat(np.where(mask, ages, np.inf), starts)
        decay = np.power(0.5, (ages - np.where(np.isfinite(newest), newest, 0.0)[seg]) / float(half_life_days))
        dw = np.where(mask, np.abs(w) * decay, 0.0)
        weights = sparse.csr_matrix((dw, (seg, np.arange(len(seg)))), shape=(len(busy), len(seg)))
        centroid[sign] = _unit(np.asarray(weights @ x.astype(np.float64)))
        has[sign] = np.add.reduceat(mask.astype(np.int64), starts) > 0
    for r, m in enumerate(busy):
        negative = centroid[-1][r] if has[-1][r] else None
        if has[1][r]:
            out[m] = Profile(centroid[1][r : r + 1], np.ones(1, np.float32), negative)
        else:
            out[m] = Profile(np.zeros((0, dim), np.float32), np.zeros(0, np.float32), negative)
    return out


def _neighbour_table(
    q_member: np.ndarray, hit_code: np.ndarray, hit_sims: np.ndarray, self_code: np.ndarray, indptr: np.ndarray,
    e_rows: np.ndarray, n_rows: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`recsys.rank.neighbour_scores` for every member at once. ``q_member (Q,)``: the member
    (index) behind each interest vector; ``hit_code``/``hit_sims`` ``(Q, h)``: the member codes and
    cosines of its nearest interactions; ``self_code (M,)``: each member's own code; ``indptr``/
    ``e_rows``: a CSR of each code's positively engaged item rows. Each neighbour weighs its best
    similarity (shares per member sum to 1) and counts an item once. Returns ``(keys, scores)``, keys
    ``member index × n_rows + item row`` sorted."""
    n_codes = len(indptr) - 1
    seg = np.repeat(q_member, hit_code.shape[1])
    hc, hs = hit_code.ravel(), hit_sims.ravel().astype(np.float64)
    ok = (hc >= 0) & (hc != self_code[seg]) & (hs > 0)
    if not ok.any() or n_codes == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    pair = seg[ok] * n_codes + hc[ok]
    order = np.argsort(pair, kind="stable")
    pair, hs = pair[order], hs[ok][order]
    starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    best = np.maximum.reduceat(hs, starts)
    member, nb = pair[starts] // n_codes, pair[starts] % n_codes
    total = np.bincount(member, weights=best, minlength=len(self_code))
    lens = indptr[nb + 1] - indptr[nb]
    n = int(lens.sum())
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    offs = np.repeat(indptr[nb] - (np.cumsum(lens) - lens), lens) + np.arange(n)
    keys, where = np.unique(np.repeat(member, lens) * n_rows + e_rows[offs], return_inverse=True)
    return keys, np.bincount(where, weights=np.repeat(best / total[member], lens), minlength=len(keys))


def _visibility(
    guild_id: int, loaded: _Loaded, member_ids: list[int], chan: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which of the channels ``chan (c,)`` (-1: none, always visible) each member may view, by
    class: members with the same roles (and not named in any channel's snapshot) share a class.
    Returns ``(visible (classes, c) bool, class (M,))``."""
    named = set()
    for ch in loaded.channels:
        named.update(ch["visibility"].get("members", []))
        named.update(ch["visibility"].get("denied_members", []))
    classes: dict[tuple, int] = {}
    rows: list[np.ndarray] = []
    of = np.zeros(len(member_ids), np.int64)
    for b, m in enumerate(member_ids):
        member = loaded.members.get(m)
        roles = tuple(member["role_ids"]) if member else ()
        key = (roles, m) if m in named else (roles,)
        c = classes.get(key)
        if c is None:
            c = classes[key] = len(rows)
            visible = visible_from_snapshot(guild_id, member, m, loaded.channels)
            rows.append((chan == -1) | np.isin(chan, np.array(sorted(visible), np.int64)))
        of[b] = c
    return (np.vstack(rows) if rows else np.zeros((0, len(chan)), bool)), of


def _unit(m: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(m, axis=-1, keepdims=True)
    return (m / np.where(n > 0, n, 1)).astype(np.float32)
