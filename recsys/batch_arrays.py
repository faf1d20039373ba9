"""Array helpers of the batched ranking (:mod:`recsys.batch`): profiles for many members at once,
the neighbourhood table, visibility classes, and sorted-key lookups. All blocking numpy/scipy work
(run in a worker thread); shapes are given per function (M members, n item-table rows, dim)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from recsys.eligibility import (
    candidate_mask,
    member_item_rows,
    rejected_stories,
    rows_of,
)
from recsys.pipeline import (
    NOT_PROFILE,
    GuildStats,
    profile_interactions,
    visible_from_snapshot,
)
from recsys.profile import MIN_PER_INTEREST, Profile, build_profile
from recsys.store import Interaction

if TYPE_CHECKING:
    from campfire.config import RecsysSettings
    from recsys.index import VectorIndex


def in_sorted(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (any shape) found in the sorted 1-d ``keys``: (bool mask, index into keys)."""
    if len(keys) == 0:
        return np.zeros(values.shape, bool), np.zeros(values.shape, np.int64)
    j = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
    return keys[j] == values, j


def key_slice(keys: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, slice]:
    """The part of the sorted ``keys`` in ``[lo, hi)`` (one chunk's members) and its slice."""
    at = slice(int(np.searchsorted(keys, lo)), int(np.searchsorted(keys, hi)))
    return keys[at], at


def profiles(
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
        enough = len(used) >= 2 * MIN_PER_INTEREST and sum(i.weight > 0 for i in used) >= 2 * MIN_PER_INTEREST
        if max_interests > 1 and enough:
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


def neighbour_table(
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


def visibility(
    guild_id: int, members: dict[int, dict], channels: list[dict], member_ids: list[int], chan: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which of the channels ``chan (c,)`` (-1: none, always visible) each member may view, by
    class: members with the same roles (and not named in any channel's snapshot) share a class.
    Returns ``(visible (classes, c) bool, class (M,))``."""
    named = set()
    for ch in channels:
        named.update(ch["visibility"].get("members", []))
        named.update(ch["visibility"].get("denied_members", []))
    classes: dict[tuple, int] = {}
    rows: list[np.ndarray] = []
    of = np.zeros(len(member_ids), np.int64)
    for b, m in enumerate(member_ids):
        member = members.get(m)
        roles = tuple(member["role_ids"]) if member else ()
        key = (roles, m) if m in named else (roles,)
        c = classes.get(key)
        if c is None:
            c = classes[key] = len(rows)
            visible = visible_from_snapshot(guild_id, member, m, channels)
            rows.append((chan == -1) | np.isin(chan, np.array(sorted(visible), np.int64)))
        of[b] = c
    return (np.vstack(rows) if rows else np.zeros((0, len(chan)), bool)), of


def _unit(m: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(m, axis=-1, keepdims=True)
    return (m / np.where(n > 0, n, 1)).astype(np.float32)


@dataclass
class ColumnBase:
    """What :func:`recsys.batch_rank._columns` derives from a guild's snapshot independently of the
    members and of ``now`` (cached in the snapshot, :mod:`recsys.snapshot`, for the ``stats`` it was
    made with). Columns ``(n,)`` over the item table; interactions by member."""

    stats: GuildStats  # derived with this GuildStats object (compared by identity)
    ok_static: np.ndarray  # a candidate, no opted-out author, not low-substance, not a rejected story
    conv: np.ndarray  # conversation_id (-1 = none)
    last_active: np.ndarray  # rolled up into conversations (roll_up)
    popularity: np.ndarray
    trending: np.ndarray
    code: dict[int, int]  # member -> code (every member with an interaction)
    pair_code: np.ndarray  # (P,) positive engagements (code, item id), sorted unique ...
    pair_item: np.ndarray
    pair_first: np.ndarray  # ... with the time of the earliest one (UNIX s)
    e_member: np.ndarray  # engaged (code, row) pairs of every engagement (conversations included)
    e_rows: np.ndarray
    inter_ids: np.ndarray  # every interaction id, sorted, and its owner's code
    inter_code: np.ndarray
    chan_ids: np.ndarray  # np.unique of the channel column and each row's index into it
    chan_of: np.ndarray
    history: dict[int, list[Interaction]] = field(default_factory=dict)  # member -> interactions, oldest first


def column_base(
    table: dict[str, np.ndarray], interactions: list[Interaction], opted: set[int], story_ids: frozenset[int],
    stats: GuildStats,
) -> ColumnBase:
    """The :class:`ColumnBase` of a guild's item ``table`` (``Store.item_columns``) and ``interactions``."""
    ids = table["id"]
    id_list = ids.tolist()
    conv = table.get("conversation_id", np.full(len(ids), -1, np.int64))
    ok = ~np.isin(table["author_id"], np.array(sorted(opted), np.int64))
    ok &= ~np.isin(ids, np.fromiter(stats.low_substance, np.int64, len(stats.low_substance)))  # recsys.substance
    ok &= candidate_mask(ids, conv)  # recsys.eligibility: a message inside a conversation is represented by it
    rated_down = {i.item_id for i in interactions if i.kind == "rated_down"}
    ok &= ~rejected_stories(story_ids, rated_down, ids, table["rating"])
    history: dict[int, list[Interaction]] = {}
    for i in interactions:
        history.setdefault(i.member_id, []).append(i)
    code = {m: c for c, m in enumerate(sorted(history))}
    first: dict[tuple[int, int], float] = {}
    for i in interactions:
        if i.item_id is not None and i.weight > 0 and i.kind not in NOT_PROFILE:
            key = (code[i.member_id], i.item_id)
            first[key] = min(first.get(key, np.inf), i.created_at)
    keys = sorted(first)
    pairs = np.array(keys, np.int64).reshape(-1, 2)
    e_member, e_rows = engaged_rows(ids, conv, pairs[:, 0], pairs[:, 1])
    inter_ids = np.array(sorted(i.id for i in interactions), np.int64)
    owner = {i.id: code[i.member_id] for i in interactions}
    last_active, popularity, trending = roll_up(ids, conv, (
        np.array([stats.last_active.get(i, 0.0) for i in id_list], np.float64),
        np.array([stats.popularity.get(i, 0) for i in id_list], np.float64),
        np.array([stats.trending.get(i, 0) for i in id_list], np.float64)))
    chan_ids, chan_of = np.unique(table["channel_id"], return_inverse=True)
    return ColumnBase(
        stats=stats, ok_static=ok, conv=conv, last_active=last_active, popularity=popularity, trending=trending,
        code=code, pair_code=pairs[:, 0].copy(), pair_item=pairs[:, 1].copy(),
        pair_first=np.array([first[k] for k in keys], np.float64), e_member=e_member, e_rows=e_rows,
        inter_ids=inter_ids, inter_code=np.array([owner[i] for i in inter_ids.tolist()], np.int64),
        chan_ids=chan_ids, chan_of=chan_of.reshape(-1), history=history,
    )


def engaged_rows(ids: np.ndarray, conv: np.ndarray, codes: np.ndarray, item_ids: np.ndarray):
    """Positive engagements ``(code, item id)`` as sorted unique ``(code, row)`` arrays, engaging with a
    message inside a conversation engaging with the conversation too."""
    e_member, e_rows = member_item_rows(ids, conv, codes, item_ids)
    e_key = np.unique(e_member * max(len(ids), 1) + e_rows)
    return e_key // max(len(ids), 1), e_key % max(len(ids), 1)


def roll_up(
    ids: np.ndarray, conv: np.ndarray, cols: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(last_active, popularity, trending)``, each ``(n,)``, with each conversation's messages' own
    added to the conversation's row: its latest activity (max) and its engagement counts (sums) —
    a conversation is as alive and as well received as its messages."""
    last, pop, trend = (c.copy() for c in cols)
    inner = np.flatnonzero((conv >= 0) & (conv != ids))
    crow = rows_of(ids, conv[inner])
    src, dst = inner[crow >= 0], crow[crow >= 0]
    np.maximum.at(last, dst, cols[0][src])
    np.add.at(pop, dst, cols[1][src])
    np.add.at(trend, dst, cols[2][src])
    return last, pop, trend
