"""The blocking part of :func:`recsys.batch.recommend_many` (run in a worker thread): from the store
reads (:class:`Loaded`) to each member's chosen item-table rows (:class:`Ranked`).

Steps: the item-table columns every member shares (:func:`_columns`); profiles; one FAISS batch
search per index and the neighbourhood table (:func:`_search`); what each member must not get
(:mod:`recsys.eligibility`: candidates only, never their own, their conversations, what they saw or
were sent); then chunks of ``chunk`` members scored in worker threads (:func:`_score`; members with no
profile get :func:`cold_start_scores`, ties broken by :func:`tiebreak_keys`) and chosen with MMR in
member order (:func:`_choose`, which applies the per-item cap); each member's picks are then shown
best score first.
Shapes: M members, n item-table rows (sorted by item id), dim the embedding size.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from recsys.batch_arrays import (
    ColumnBase,
    column_base,
    engaged_rows,
    in_sorted,
    key_slice,
    neighbour_table,
    profiles,
    rows_of,
    visibility,
)
from recsys.eligibility import excluded_keys
from recsys.pipeline import (
    GuildStats,
    active_time,
    choose_rows,
    latest_activity,
    order_rows,
    rank_rows,
    seen_items,
)
from recsys.profile import similarity_rows
from recsys.store import Interaction

if TYPE_CHECKING:
    from campfire.config import RecsysSettings
    from recsys.index import VectorIndex
    from recsys.rank import Ranker

log = logging.getLogger(__name__)

MIN_ITEM_CAP = 10  # recommend_many's per-item cap is never below this many members
SCORING_THREADS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))


@dataclass
class Loaded:
    """What the store gave for one guild (read on the event loop, ranked in a worker thread)."""

    interactions: list[Interaction]
    table: dict[str, np.ndarray]  # Store.item_columns
    members: dict[int, dict]
    channels: list[dict]
    nsfw_ok: bool
    opted: set[int]
    sent_by: dict[int, set[int]]
    shared: set[int]  # candidates every member gets (newest, trending, popular, active)
    pairs: tuple[np.ndarray, np.ndarray] | None = None  # Store.item_member_pairs (recsys.eligibility)
    story_ids: frozenset[int] = frozenset()  # the guild's generated stories (a rated-down one is no candidate)
    derived: dict = field(default_factory=dict)  # the snapshot's cache of column_base (recsys.snapshot)


@dataclass
class Ranked:
    picked: dict[int, list[tuple[int, float]]]  # member -> (item-table row, logit), best first
    used_by: dict[int, tuple[list[Interaction], np.ndarray]]  # member -> profile rows and their vectors
    cvec: dict[int, np.ndarray]  # item-table row -> vector, for every picked row
    popular: np.ndarray  # (n_items,) bool: engaged with by others


@dataclass
class _Columns:
    """Item-table columns every member shares, each ``(n,)``, and the guild's engagement CSR."""

    ids: np.ndarray
    created: np.ndarray
    active: np.ndarray
    popularity: np.ndarray
    trending: np.ndarray
    rating: np.ndarray
    chan: np.ndarray
    author: np.ndarray
    ok_all: np.ndarray  # a candidate (recsys.eligibility), not in the future, no opted-out author, NSFW allowed
    conversation: np.ndarray  # a conversation or thread item (its conversation_id is its own id)
    shared_rows: np.ndarray  # rows every member gets as candidates
    base: ColumnBase  # the snapshot's member- and now-independent part (codes, interaction owners, channels)
    indptr: np.ndarray  # CSR: code -> its positively engaged item rows
    e_rows: np.ndarray


@dataclass
class _Search:
    """Per-member results of the FAISS searches: interest vectors ``(M, slots, dim)``, personal
    candidate rows ``(M, P)`` (-1 = none) and the neighbourhood table (sorted keys member × n + row)."""

    interests: np.ndarray
    has_interest: np.ndarray
    negative: np.ndarray
    has_negative: np.ndarray
    personal: np.ndarray
    nb_key: np.ndarray
    nb_val: np.ndarray


def rank_many(
    loaded: Loaded, item_index: VectorIndex, inter_index: VectorIndex, settings: RecsysSettings, ranker: Ranker,
    stats: GuildStats, guild_id: int, member_ids: list[int], *, k: int, now: float, window_start: float,
    max_interests: int, max_item_share: float | None, per_interest: int, neighbour_hits: int, chunk: int,
) -> Ranked:
    """Everything of :func:`recsys.batch.recommend_many` between the store reads and the reasons (blocking)."""
    t0 = time.perf_counter()
    cols = _columns(loaded, stats, now)
    history = {m: rows for m in dict.fromkeys(member_ids)
               if (rows := [i for i in cols.base.history.get(m, ()) if i.created_at <= now])}
    profs, used_by = profiles(member_ids, history, item_index, inter_index, settings, now, max_interests, item_index.dim)
    found = _search(cols, profs, member_ids, item_index, inter_index, per_interest, neighbour_hits)
    union = np.union1d(cols.shared_rows, found.personal[found.personal >= 0])
    cvec_all = np.zeros((len(cols.ids), item_index.dim), np.float32)
    cvec_all[union] = item_index.matrix(cols.ids[union])[0]
    conv = loaded.table.get("conversation_id", np.full(len(cols.ids), -1, np.int64))
    seen_key = excluded_keys(cols.ids, conv, member_ids,
                             [seen_items(history.get(m, []), window_start) | loaded.sent_by.get(m, set())
                              for m in member_ids], loaded.pairs)
    chan_ids, chan_of = cols.base.chan_ids, cols.base.chan_of
    vis, vis_class = visibility(guild_id, loaded.members, loaded.channels, member_ids, chan_ids)
    seen_at = [latest_activity(history.get(m, [])) for m in member_ids]
    last_seen = np.array([-np.inf if t is None else t for t in seen_at], np.float64)
    t1 = time.perf_counter()

    def score(b0: int, b1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Members ``b0:b1``: their candidates' item rows, valid mask, logits and order, all ``(B, L)``."""
        seen = _slice_seen(seen_key, b0, b1, len(cols.ids))
        visible = lambda pos: vis[vis_class[b0:b1, None], chan_of[pos]]
        return _score(cols, found, cvec_all, ranker, b0, b1, seen, visible, np.array(member_ids[b0:b1], np.int64),
                      last_seen[b0:b1, None], now, stats.rate)

    picked, cvec_picked = _choose(score, cvec_all, member_ids, len(cols.ids), k=k, lam=settings.mmr_lambda,
                                  max_item_share=max_item_share, chunk=chunk)
    log.debug("recommend_many ranking: %d members, prepare %.2fs, rank %.2fs", len(member_ids), t1 - t0,
              time.perf_counter() - t1)
    return Ranked(picked, used_by, cvec_picked, cols.popularity > 0)


def _columns(loaded: Loaded, stats: GuildStats, now: float) -> _Columns:
    """The item-table columns every member shares and the guild's positive engagements as a CSR
    (member code -> item rows; the neighbourhood signal): the snapshot's :class:`ColumnBase` (made
    once per snapshot and stats) finished for ``now``, the guild's NSFW rule and shared candidates."""
    got = loaded.derived.get("base")
    base = got if got is not None and got.stats is stats else None
    if base is None:
        base = loaded.derived["base"] = column_base(loaded.table, loaded.interactions, loaded.opted,
                                                    loaded.story_ids, stats)
    table = loaded.table
    ids, created, chan = table["id"], table["created_at"], table["channel_id"]
    ok_all = base.ok_static & (created <= now)
    if not loaded.nsfw_ok:
        nsfw_channels = np.array(sorted(c["id"] for c in loaded.channels if c["nsfw"]), np.int64)
        ok_all &= ~table["nsfw"] & ~np.isin(chan, nsfw_channels)
    shared_rows = np.unique(rows_of(ids, np.array(sorted(loaded.shared), np.int64)))
    e_member, e_rows = base.e_member, base.e_rows
    if len(base.pair_first) and base.pair_first.max() >= now:  # engagements after now do not count
        before = base.pair_first < now
        e_member, e_rows = engaged_rows(ids, base.conv, base.pair_code[before], base.pair_item[before])
    return _Columns(
        ids=ids, created=created, active=active_time(created, base.last_active, now), popularity=base.popularity,
        trending=base.trending, rating=table["rating"], chan=chan, author=table["author_id"], ok_all=ok_all,
        shared_rows=shared_rows[shared_rows >= 0], conversation=base.conv == ids, base=base,
        indptr=np.searchsorted(e_member, np.arange(len(base.code) + 1)), e_rows=e_rows,
    )


def _search(
    cols: _Columns, profs: dict, member_ids: list[int], item_index: VectorIndex, inter_index: VectorIndex,
    per_interest: int, neighbour_hits: int,
) -> _Search:
    """One FAISS batch search per index for every interest vector of every member; the neighbourhood
    table; each member's best neighbourhood items (by score, then id) as personal candidates too."""
    dim, n_members, n_rows = item_index.dim, len(member_ids), len(cols.ids)
    n_int = np.array([len(profs[m].interests) for m in member_ids], np.int64)
    q_member = np.repeat(np.arange(n_members), n_int)
    q_slot = np.arange(len(q_member)) - np.repeat(np.cumsum(n_int) - n_int, n_int)
    slots = max(int(n_int.max(initial=0)), 1)
    out = _Search(np.zeros((n_members, slots, dim), np.float32), np.zeros((n_members, slots), bool),
                  np.zeros((n_members, dim), np.float32), np.zeros(n_members, bool), np.zeros((n_members, 0), np.int64),
                  np.zeros(0, np.int64), np.zeros(0, np.float64))
    hits = np.full((n_members, slots, per_interest), -1, np.int64)
    top_nb = np.full((n_members, per_interest), -1, np.int64)
    if len(q_member):
        qm = np.vstack([profs[m].interests for m in member_ids if len(profs[m].interests)])
        out.interests[q_member, q_slot] = qm
        out.has_interest[q_member, q_slot] = True
        hits[q_member, q_slot] = rows_of(cols.ids, item_index.search(qm, per_interest)[1])
        inter_sims, inter_hits = inter_index.search(qm, neighbour_hits)
        inter_ids, inter_code = cols.base.inter_ids, cols.base.inter_code
        at = rows_of(inter_ids, inter_hits)
        hit_owner = np.where(at >= 0, inter_code[np.maximum(at, 0)], -1) if len(inter_ids) else np.full_like(at, -1)
        self_code = np.array([cols.base.code.get(m, -2) for m in member_ids], np.int64)
        out.nb_key, out.nb_val = neighbour_table(q_member, hit_owner, inter_sims, self_code, cols.indptr, cols.e_rows,
                                                 n_rows)
        nb_member, nb_row = out.nb_key // max(n_rows, 1), out.nb_key % max(n_rows, 1)
        order = np.lexsort((-out.nb_val, nb_member))  # stable: ties stay in row order
        nb_member, nb_row = nb_member[order], nb_row[order]
        rank = np.arange(len(order)) - np.searchsorted(nb_member, nb_member)
        top = rank < per_interest
        top_nb[nb_member[top], rank[top]] = nb_row[top]
    for b, m in enumerate(member_ids):
        if profs[m].negative is not None:
            out.negative[b] = profs[m].negative
            out.has_negative[b] = True
    out.personal = np.concatenate([hits.reshape(n_members, -1), top_nb], axis=1)
    return out


def _slice_seen(seen_key: np.ndarray, b0: int, b1: int, n_rows: int):
    """A test ``key (B, L) -> seen (B, L) bool`` for members ``b0:b1`` against the excluded keys
    (:func:`recsys.eligibility.excluded_keys`)."""
    keys = key_slice(seen_key, b0 * n_rows, b1 * n_rows)[0]
    return lambda key: in_sorted(keys, key)[0]


def _score(
    cols: _Columns, found: _Search, cvec_all: np.ndarray, ranker: Ranker, b0: int, b1: int, seen, visible,
    mids: np.ndarray, last_seen: np.ndarray, now: float, rate: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Members ``b0:b1``: candidates (shared then personal; content by one matmul each, no
    (members, S, dim) copy), each row sorted by item row and de-duplicated, filtered (step 3) and
    scored (step 4). Returns ``(pos, valid, logits, order)``, all ``(B, L)``."""
    nb, n_rows = b1 - b0, len(cols.ids)
    mine = found.personal[b0:b1]
    profile_args = (found.interests[b0:b1], found.has_interest[b0:b1], found.negative[b0:b1],
                    found.has_negative[b0:b1])
    content = np.concatenate([similarity_rows(cvec_all[cols.shared_rows][None], *profile_args),
                              similarity_rows(cvec_all[np.maximum(mine, 0)], *profile_args)], axis=1)
    raw = np.concatenate([np.broadcast_to(cols.shared_rows, (nb, len(cols.shared_rows))),
                          np.where(mine < 0, n_rows, mine)], axis=1)
    perm = np.argsort(raw, axis=1)
    raw = np.take_along_axis(raw, perm, axis=1)
    content = np.take_along_axis(content, perm, axis=1)
    valid = raw < n_rows
    valid[:, 1:] &= raw[:, 1:] != raw[:, :-1]
    pos = np.where(valid, raw, 0)
    key = np.arange(b0, b1)[:, None] * n_rows + pos
    valid &= cols.ok_all[pos] & visible(pos) & (cols.author[pos] != mids[:, None])
    valid &= ~seen(key)
    keys, at = key_slice(found.nb_key, b0 * n_rows, b1 * n_rows)
    hit, j = in_sorted(keys, key)
    logits = rank_rows(
        ranker, valid=valid, content=content, neighbour=np.where(hit, found.nb_val[at][j] if len(keys) else 0.0, 0.0),
        created=cols.created[pos], active=cols.active[pos], popularity=cols.popularity[pos],
        trending=cols.trending[pos], rating=cols.rating[pos], last_seen=last_seen, now=now, rate=rate,
    )
    # the conversation is the unit worth opening: a question with its answers over a lone line
    logits = logits + np.where(valid & cols.conversation[pos], CONVERSATION_LOGIT, 0.0)
    cold = ~found.has_interest[b0:b1].any(axis=1) & ~found.has_negative[b0:b1]
    if cold.any():  # no profile: the guild's well-received recent conversations
        newest = float(cols.created[cols.created <= now].max(initial=now))
        scores = cold_start_scores(cols.popularity[pos[cold]], cols.rating[pos[cold]], cols.created[pos[cold]],
                                   cols.conversation[pos[cold]], newest)
        logits[cold] = np.where(valid[cold], scores, -np.inf)
    return pos, valid, logits, order_rows(logits, tiebreak_keys(mids[:, None], cols.ids[pos], int(now // 86400)))


# Logit added to a conversation or thread over a lone line (about e² ≈ 7× the odds): on the 7 ubuntu_irc
# exports (bench/digest_quality.py) lone lines are mostly halves of exchanges the builder could not
# link ("Not necessarily. I've done it before…"); without it 37% of chat picks were conversations.
CONVERSATION_LOGIT = 2.0
COLD_HALF_LIFE_DAYS = 14.0  # cold start: an item's standing halves every two weeks before the guild's newest item
CONVERSATION_BONUS = 1.0  # cold start: a conversation (a question with its answers) over a lone line


def cold_start_scores(
    popularity: np.ndarray, rating: np.ndarray, created: np.ndarray, conversation: np.ndarray, newest: float
) -> np.ndarray:
    """Logits for a member with no profile (any equal shapes): how well received an item is —
    ``log1p(popularity)`` (positive interactions by others) + ``sign(rating)·log1p(|rating|)`` +
    :data:`CONVERSATION_BONUS` for a conversation — decayed by its age before the guild's ``newest``
    item (UNIX s; half-life :data:`COLD_HALF_LIFE_DAYS`, so an archive's last weeks count as recent),
    plus a small recency term that orders items nobody engaged with yet, newest first."""
    age_days = np.clip((newest - np.asarray(created, np.float64)) / 86400.0, 0, None)
    decay = np.power(0.5, age_days / COLD_HALF_LIFE_DAYS)
    rating = np.asarray(rating, np.float64)
    received = (np.log1p(np.asarray(popularity, np.float64)) + np.sign(rating) * np.log1p(np.abs(rating))
                + CONVERSATION_BONUS * np.asarray(conversation, np.float64))
    return received * decay + 0.01 * decay


def _choose(
    score, cvec_all: np.ndarray, member_ids: list[int], n_rows: int, *, k: int, lam: float,
    max_item_share: float | None, chunk: int,
) -> tuple[dict[int, list[tuple[int, float]]], dict[int, np.ndarray]]:
    """MMR picks per member: chunks scored ahead in worker threads (numpy releases the GIL), chosen in
    member order because of the per-item cap. Returns (member -> (row, logit) best first, row -> vector)."""
    n_members = len(member_ids)
    cap = max(MIN_ITEM_CAP, int(np.floor(max_item_share * n_members + 1e-9))) if max_item_share is not None else None
    given = np.zeros(n_rows, np.int64)
    picked: dict[int, list[tuple[int, float]]] = {}
    cvec_picked: dict[int, np.ndarray] = {}
    bounds = [(b0, min(n_members, b0 + chunk)) for b0 in range(0, n_members, chunk)]
    with ThreadPoolExecutor(max_workers=SCORING_THREADS) as pool_:
        ahead = [pool_.submit(score, *bounds[c]) for c in range(min(len(bounds), SCORING_THREADS + 1))]
        for c, (b0, _b1) in enumerate(bounds):
            pos, valid, logits, order = ahead[c].result()
            ahead[c] = None  # free the chunk once chosen
            if c + SCORING_THREADS + 1 < len(bounds):
                ahead.append(pool_.submit(score, *bounds[c + SCORING_THREADS + 1]))
            nb = len(pos)
            rank = np.empty_like(order)  # each column's place in the member's score order
            np.put_along_axis(rank, order, np.broadcast_to(np.arange(order.shape[1]), order.shape), axis=1)

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
                sel = sel[np.argsort(rank[r, sel], kind="stable")]  # shown best score first (ties: tie-break)
                rows = pos[r, sel]  # distinct rows (a member's candidates are de-duplicated)
                picked[member_ids[b0 + r]] = list(zip(rows.tolist(), logits[r, sel].tolist(), strict=True))
                given[rows] += 1
                if cap is not None:
                    filled.update(rows[given[rows] >= cap].tolist())
    for p in np.flatnonzero(given).tolist():
        cvec_picked[p] = cvec_all[p]
    return picked, cvec_picked


def tiebreak_keys(member_ids: np.ndarray, item_ids: np.ndarray, day: int) -> np.ndarray:
    """Deterministic tie-break keys ``(B, L) uint64`` for ``member_ids (B, 1)`` × ``item_ids (B, L)`` on
    ``day`` (days since the epoch): a splitmix64 hash (Steele et al. 2014) of the three, so equal
    scores are ordered the same way all day for a member (/recommend and the digest agree) but not
    always by item id across members and days."""
    with np.errstate(over="ignore"):
        x = (np.asarray(item_ids, np.int64).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
             ^ np.asarray(member_ids, np.int64).astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
             ^ np.uint64(day & 0xFFFFFFFF) * np.uint64(0x94D049BB133111EB))
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))
