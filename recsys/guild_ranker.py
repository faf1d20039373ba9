"""A guild's own ranker: fitted on its history, kept only when it beats the default on a held-out slice.

:func:`refit` (the daily digest calls it at most once a day; the fit runs in a worker thread):

1. **Events** — the guild's positive engagements (``reacted``, ``replied``, ``rated_up``, ``clicked``…;
   not a member's own items, nor ``authored`` / ``requested`` / ``recommended`` / ``viewed``), each
   mapped to the item that would be recommended (a message inside a conversation → the conversation,
   :func:`recsys.eligibility.member_item_rows`), first engagement per member and item, time order,
   at most :data:`MAX_EVENTS` (the newest).
2. **Candidates** per event at its time ``t``: the engaged item and up to :data:`NEGATIVES` other
   candidates that existed at ``t`` (the newest :data:`RECENT_POOL` of them — what production ranks
   first — plus random older ones), never the member's own or one they engaged with before ``t``.
3. **Features** as production computes them (:func:`recsys.pipeline.row_features`, every
   :data:`recsys.rank.FEATURES` input) from what was known at ``t``: profile similarity (the member's
   earlier engagements' item vectors), neighbourhood (the share of members who co-engaged with the
   member before ``t`` who engaged with the candidate), age and idle ranks at the guild's pace,
   popularity and trending counts, rating.
4. **Fit** a conditional logit (:func:`recsys.rank.fit_ranker`) on the events before the held-out
   slice (the last :data:`HOLDOUT_SHARE` of events by time) and compute NDCG@10 of the positive among
   its candidates on the slice for it and for the default (:data:`recsys.rank.DEFAULT_RANKER`). It is
   stored (``guild_rankers``) and used only when it wins by :data:`MIN_GAIN`; otherwise the default
   ranks (a stored ranker that no longer wins is dropped).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.eligibility import candidate_mask, member_item_rows
from recsys.pipeline import NOT_PROFILE, RATE_ITEMS, activity_rate, row_features
from recsys.rank import DEFAULT_RANKER, FEATURES, TRENDING_WINDOW_S, Ranker, fit_ranker

if TYPE_CHECKING:
    from recsys.service import Recommender
    from recsys.store import Interaction

log = logging.getLogger(__name__)

NOT_EVENTS = NOT_PROFILE | {"authored", "requested"}  # a member's own words are not engagement with others'
MAX_EVENTS = 4000  # the newest engagements fitted on (fit ≈ 1 s on one core)
MIN_EVENTS = 50  # fewer: no fit (too little history to judge on a held-out slice)
MIN_HELDOUT = 15  # events in the held-out slice, at least
HOLDOUT_SHARE = 0.2  # the last fifth of events by time is held out
NEGATIVES = 30  # other candidates per event
RECENT_POOL = 200  # negatives come mostly from the newest candidates at the event's time (production's FRESH_CANDIDATES)
MIN_GAIN = 0.02  # the guild's ranker replaces the default only with a held-out NDCG@10 ≥ 2% higher
REFIT_S = 20 * 3600.0  # refit at most this often (the daily digest)
NDCG_K = 10


@dataclass(frozen=True)
class FitReport:
    """What :func:`refit` did: ``kept`` — the guild's own ranker is stored and used now; ``reason``
    (``fitted`` | ``default wins`` | ``too little history`` | ``recent``); held-out NDCG@10 of each
    ranker (None without a fit); event counts."""

    kept: bool
    reason: str
    default_ndcg: float | None = None
    guild_ndcg: float | None = None
    train_events: int = 0
    heldout_events: int = 0
    weights: dict[str, float] = field(default_factory=dict)


def ranker_to_json(ranker: Ranker) -> dict[str, Any]:
    return {"features": list(FEATURES), "weights": list(ranker.weights), "bias": ranker.bias,
            "mean": list(ranker.mean), "std": list(ranker.std)}


def ranker_from_json(data: dict[str, Any]) -> Ranker | None:
    """The stored ranker, or None when it was fitted on other features (the feature set changed since)."""
    if list(data.get("features", [])) != list(FEATURES):
        return None
    return Ranker(tuple(data["weights"]), float(data["bias"]), tuple(data["mean"]), tuple(data["std"]))


async def load_ranker(recommender: Recommender, guild_id: int) -> Ranker:
    """The ranker ``guild_id`` is ranked with, read from ``guild_rankers`` once and kept in
    ``recommender.rankers`` (the default when the guild has none)."""
    ranker = recommender.rankers.get(guild_id)
    if ranker is None:
        row = await recommender.store.guild_ranker(guild_id)
        ranker = (ranker_from_json(row["weights"]) if row else None) or DEFAULT_RANKER
        recommender.rankers[guild_id] = ranker
    return ranker


async def refit(recommender: Recommender, guild_id: int, now: float | None = None, *, force: bool = False) -> FitReport:
    """Fit ``guild_id``'s ranker on its history up to ``now`` (UNIX s) and keep it only when it beats
    the default on the held-out slice (module docstring). Skipped (``recent``) when the stored one is
    younger than :data:`REFIT_S` unless ``force``. Store reads on the event loop; the fit in a worker thread."""
    store = recommender.store
    now = time.time() if now is None else float(now)
    row = await store.guild_ranker(guild_id)
    if row is not None and not force and now - row["fitted_at"] < REFIT_S:
        return FitReport(True, "recent", row["metrics"].get("default_ndcg"), row["metrics"].get("guild_ndcg"))
    table = await store.item_columns(guild_id)
    interactions = [i for i in await store.interactions(guild_id) if i.created_at <= now]
    index = recommender.indexes.get(guild_id, "item")

    def fit() -> tuple[Ranker | None, FitReport]:
        vectors, present = index.matrix(table["id"])  # FAISS reads off the event loop too
        return fit_and_compare(table, interactions, np.where(present[:, None], vectors, 0).astype(np.float32),
                               DEFAULT_RANKER, now)

    ranker, report = await asyncio.to_thread(fit)
    if ranker is not None:
        await store.save_guild_ranker(guild_id, ranker_to_json(ranker), now, {
            "default_ndcg": report.default_ndcg, "guild_ndcg": report.guild_ndcg,
            "train_events": report.train_events, "heldout_events": report.heldout_events})
        recommender.rankers[guild_id] = ranker
    else:
        await store.delete_guild_ranker(guild_id)
        recommender.rankers[guild_id] = DEFAULT_RANKER
    log.info("guild %s ranker: %s (held-out NDCG@10 default %s, guild %s; %d/%d events)", guild_id, report.reason,
             report.default_ndcg, report.guild_ndcg, report.train_events, report.heldout_events)
    return report


def fit_and_compare(
    table: dict[str, np.ndarray], interactions: list[Interaction], vectors: np.ndarray, default: Ranker, now: float,
    *, seed: int = 0,
) -> tuple[Ranker | None, FitReport]:
    """The blocking fit (module docstring, steps 1-4): ``table`` as ``Store.item_columns``,
    ``vectors (n, dim)`` the item table's vectors (zeros where missing). Returns ``(the guild's ranker
    when it wins, else None; the report)``."""
    ex = build_examples(table, interactions, vectors, now, seed=seed)
    if ex is None:
        return None, FitReport(False, "too little history")
    x, valid, times = ex
    cut = int(np.floor(len(times) * (1 - HOLDOUT_SHARE)))
    if len(times) - cut < MIN_HELDOUT:
        return None, FitReport(False, "too little history", train_events=cut, heldout_events=len(times) - cut)
    tr_x, tr_v = x[:cut], valid[:cut]
    y = np.zeros(tr_v.shape)
    y[:, 0] = 1.0
    groups = np.repeat(np.arange(cut), tr_v.sum(axis=1))
    try:
        fitted = fit_ranker(tr_x[tr_v], y[tr_v], groups)
    except (ValueError, np.linalg.LinAlgError):
        return None, FitReport(False, "too little history", train_events=cut, heldout_events=len(times) - cut)
    d_ndcg, g_ndcg = (heldout_ndcg(r, x[cut:], valid[cut:]) for r in (default, fitted))
    wins = g_ndcg >= d_ndcg * (1 + MIN_GAIN) and g_ndcg > d_ndcg
    report = FitReport(wins, "fitted" if wins else "default wins", d_ndcg, g_ndcg, cut, len(times) - cut,
                       fitted.as_dict())
    return (fitted if wins else None), report


def heldout_ndcg(ranker: Ranker, x: np.ndarray, valid: np.ndarray) -> float:
    """Mean NDCG@10 of column 0 (the engaged item) among each row's valid candidates, scored by
    ``ranker``; a tie counts against it (a constant score earns nothing). ``x (E, L, F)``, ``valid (E, L)``."""
    s = np.where(valid, ranker.score(x), -np.inf)
    rank = ((s[:, 1:] >= s[:, :1]) & valid[:, 1:]).sum(axis=1)  # candidates scored at least as high
    return float(np.mean(np.where(rank < NDCG_K, 1.0 / np.log2(rank + 2.0), 0.0)))


def _events(table, interactions, now):
    """Step 1: ``(member, row, time)`` arrays of first engagements, time order (the newest MAX_EVENTS)."""
    ids, author = table["id"], table["author_id"]
    conv = table.get("conversation_id", np.full(len(ids), -1, np.int64))
    pos = [i for i in interactions if i.item_id is not None and i.weight > 0 and i.kind not in NOT_EVENTS
           and i.created_at <= now]
    pos.sort(key=lambda i: (i.created_at, i.id))
    m = np.array([i.member_id for i in pos], np.int64)
    t = np.array([i.created_at for i in pos], np.float64)
    b, rows = member_item_rows(ids, conv, np.arange(len(pos)), np.array([i.item_id for i in pos], np.int64))
    target = np.full(len(pos), -1, np.int64)
    target[b] = rows  # the conversation's row (added second) wins over the message's own
    ok = (target >= 0) & candidate_mask(ids, conv)[np.maximum(target, 0)] & (author[np.maximum(target, 0)] != m)
    seen: set[tuple[int, int]] = set()
    keep = []
    for e in np.flatnonzero(ok).tolist():
        key = (int(m[e]), int(target[e]))
        if key not in seen:
            seen.add(key)
            keep.append(e)
    keep = np.array(keep[-MAX_EVENTS:], np.int64)
    return m[keep], target[keep], t[keep]


def build_examples(
    table: dict[str, np.ndarray], interactions: list[Interaction], vectors: np.ndarray, now: float, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Steps 1-3: ``(x (E, 1 + NEGATIVES, F), valid (E, 1 + NEGATIVES), event times (E,))`` — column 0
    the engaged item — or None with fewer than :data:`MIN_EVENTS` events."""
    ev_m, ev_row, ev_t = _events(table, interactions, now)
    if len(ev_t) < MIN_EVENTS:
        return None
    ids, created, author = table["id"], table["created_at"], table["author_id"]
    conv = table.get("conversation_id", np.full(len(ids), -1, np.int64))
    ctx = _Context(table, interactions, vectors, conv)
    rng = np.random.default_rng(seed)
    by_created = np.argsort(created, kind="stable")
    cand = candidate_mask(ids, conv)[by_created]
    created_sorted = created[by_created]
    L = 1 + NEGATIVES
    pos = np.zeros((len(ev_t), L), np.int64)
    valid = np.zeros((len(ev_t), L), bool)
    for e, (m, row, t) in enumerate(zip(ev_m.tolist(), ev_row.tolist(), ev_t.tolist(), strict=True)):
        n_at = int(np.searchsorted(created_sorted, t, "right"))
        upto = by_created[:n_at][cand[:n_at]]  # candidates that existed at t, oldest first
        engaged = ctx.engaged_before(m, t)
        recent = upto[-RECENT_POOL:]
        older = upto[:-RECENT_POOL]
        extra = rng.choice(older, min(len(older), NEGATIVES // 3), replace=False) if len(older) else older
        pool = np.concatenate([recent[::-1], extra])
        pool = pool[(pool != row) & (author[pool] != m) & ~np.isin(pool, engaged)]
        pick = rng.permutation(len(pool))[:NEGATIVES] if len(pool) > NEGATIVES else np.arange(len(pool))
        pos[e, 0], valid[e, 0] = row, True
        pos[e, 1 : 1 + len(pick)] = pool[pick]
        valid[e, 1 : 1 + len(pick)] = True
    return ctx.features(ev_m, ev_t, pos, valid, created), valid, ev_t


class _Context:
    """Per-member and per-item histories for features at an event's time (step 3)."""

    def __init__(self, table, interactions, vectors, conv):
        ids = table["id"]
        self.vectors, self.rating, self.ids = vectors, table["rating"], ids
        rows_all = [i for i in interactions if i.item_id is not None]
        b, rows = member_item_rows(ids, conv, np.arange(len(rows_all)), np.array([i.item_id for i in rows_all], np.int64))
        author = table["author_id"]
        self.by_member: dict[int, list[tuple[float, int, int]]] = {}  # member -> (time, row, positive)
        # row -> (time, member): positive engagements by others than its author (Store.engagement_counts)
        self.by_row: dict[int, list[tuple[float, int]]] = {}
        active: dict[int, list[float]] = {}  # row -> times of any interaction but `recommended` (Store.last_activity)
        for k, r in zip(b.tolist(), rows.tolist(), strict=True):
            i = rows_all[k]
            if i.kind != "recommended":
                active.setdefault(r, []).append(i.created_at)
            if i.kind in NOT_PROFILE or i.weight == 0:
                continue
            self.by_member.setdefault(i.member_id, []).append((i.created_at, r, int(i.weight > 0)))
            if i.weight > 0 and i.kind != "authored" and i.member_id != author[r]:
                self.by_row.setdefault(r, []).append((i.created_at, i.member_id))
        for v in (*self.by_member.values(), *self.by_row.values()):
            v.sort()
        self.row_times = {r: np.array([x[0] for x in v]) for r, v in self.by_row.items()}
        self.active_times = {r: np.sort(np.array(v)) for r, v in active.items()}
        self.created_sorted = np.sort(table["created_at"])

    def engaged_before(self, m: int, t: float) -> np.ndarray:
        return np.array([r for at, r, _ in self.by_member.get(m, ()) if at < t], np.int64)

    def _neighbours(self, m: int, t: float) -> set[int]:
        out: set[int] = set()
        for at, r, p in self.by_member.get(m, ()):
            if at < t and p:
                out.update(o for ot, o in self.by_row.get(r, ()) if ot < t and o != m)
        return out

    def features(self, ev_m, ev_t, pos, valid, created) -> np.ndarray:
        """``(E, L, F)`` via :func:`recsys.pipeline.row_features`, one call per event (its own clock)."""
        out = np.zeros((*pos.shape, len(FEATURES)))
        for e, (m, t) in enumerate(zip(ev_m.tolist(), ev_t.tolist(), strict=True)):
            past = [(r, p) for at, r, p in self.by_member.get(m, ()) if at < t]
            prof = np.zeros(self.vectors.shape[1], np.float64)
            for r, p in past:
                prof += self.vectors[r] if p else 0.0
            norm = np.linalg.norm(prof)
            rows = pos[e]
            content = self.vectors[rows] @ (prof / norm) if norm > 0 else np.zeros(len(rows))
            nbrs = self._neighbours(m, t)
            pop, trend, active, nb = (np.zeros(len(rows)) for _ in range(4))
            for j, r in enumerate(rows.tolist()):
                acts = self.active_times.get(r)
                if acts is not None:
                    k = int(np.searchsorted(acts, t, "left"))
                    active[j] = acts[k - 1] if k else 0.0
                times = self.row_times.get(r)
                if times is None:
                    continue
                k = int(np.searchsorted(times, t, "left"))
                pop[j] = k
                trend[j] = k - int(np.searchsorted(times, t - TRENDING_WINDOW_S, "left"))
                if nbrs:
                    nb[j] = len({o for ot, o in self.by_row[r][:k]} & nbrs) / len(nbrs)
            upto = self.created_sorted[: np.searchsorted(self.created_sorted, t, "right")][-RATE_ITEMS:]
            rate = activity_rate(upto.tolist())
            seen = max((at for at, _, _ in self.by_member.get(m, ()) if at < t), default=-np.inf)
            out[e] = row_features(
                valid=valid[e][None], content=content[None], neighbour=nb[None], created=created[rows][None],
                active=np.maximum(created[rows], active)[None], popularity=pop[None], trending=trend[None],
                rating=self.rating[rows][None], last_seen=np.array([[seen]]), now=t, rate=rate,
            )[0]
        return out
