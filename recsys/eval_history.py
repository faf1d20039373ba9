"""``campfire eval``'s replay state: the interactions seen so far and, per held-out interaction, the
inputs of Campfire's production ranking (:func:`recsys.pipeline.rank_rows`) and the baselines' scores."""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Any

import numpy as np

from recsys.eval_data import Dataset
from recsys.pipeline import NEIGHBOUR_HITS, RATE_ITEMS, active_time, activity_rate
from recsys.profile import build_profile, relative_decay
from recsys.rank import TRENDING_WINDOW_S, neighbour_scores


class History:
    """Interactions seen so far (a time prefix, or the static training set), with the aggregates every
    system needs. ``add`` keeps them incremental so replaying the file in time order is cheap."""

    def __init__(self, ds: Dataset, vecs: np.ndarray):
        self.ds, self.vecs = ds, vecs
        m = len(ds.item_ids)
        self.ui = np.zeros((ds.n_users, m), np.float32)
        self.pop_all = np.zeros(m, np.float64)
        self.pop_others = np.zeros(m, np.float64)
        self.last_active = ds.created.copy()  # creation or latest interaction so far
        self.other_times: list[list[float]] = [[] for _ in range(m)]
        self.user_events: dict[int, list[int]] = defaultdict(list)
        self.engaged: dict[int, set[int]] = defaultdict(set)
        self.ev_items: list[int] = []
        self.ev_users: list[int] = []
        self.ev_weights: list[float] = []
        self.created_sorted = np.sort(ds.created)
        self.rating = ds.rating if ds.rating is not None else np.zeros(m, np.float64)

    def add(self, e: int) -> None:
        ds = self.ds
        u, i = int(ds.users[e]), int(ds.items[e])
        self.ui[u, i] = 1.0
        self.pop_all[i] += 1
        self.last_active[i] = max(self.last_active[i], ds.ts[e])
        if ds.kinds[e] != "authored":
            self.pop_others[i] += 1
            self.other_times[i].append(ds.ts[e])
        self.user_events[u].append(e)
        if ds.weights[e] > 0:
            self.engaged[u].add(i)
        self.ev_items.append(i)
        self.ev_users.append(u)
        self.ev_weights.append(float(ds.weights[e]))

    def seen(self, u: int) -> set[int]:
        return {int(self.ds.items[e]) for e in self.user_events.get(u, ())}

    def trending(self, cands: np.ndarray, now: float) -> np.ndarray:
        lo = now - TRENDING_WINDOW_S
        return np.array(
            [bisect.bisect_right(self.other_times[c], now) - bisect.bisect_left(self.other_times[c], lo) for c in cands],
            np.float64,
        )

    # -- Campfire: the production pipeline's inputs ---------------------------------------------
    def rate(self, now: float) -> float:
        """The guild's pace at ``now`` as production measures it (:func:`recsys.pipeline.activity_rate`
        over the newest ``RATE_ITEMS`` items created by then)."""
        hi = int(np.searchsorted(self.created_sorted, now, side="right"))
        return activity_rate(self.created_sorted[max(0, hi - RATE_ITEMS):hi].tolist())

    def campfire_inputs(
        self, u: int, cands: np.ndarray, now: float, *, half_life_days: float, max_interests: int,
    ) -> dict[str, Any]:
        """The keyword arguments of :func:`recsys.pipeline.rank_rows` / :func:`row_features` for member
        ``u`` and candidates ``cands (L,)`` at ``now``, as a batch of one ``(1, L)``: the same inputs
        production passes (content, neighbourhood, created, active, popularity, trending, rating,
        last_seen, the guild's rate)."""
        ds = self.ds
        evs = self.user_events.get(u, [])
        prof = build_profile(
            self.vecs[ds.items[evs]] if evs else np.zeros((0, self.vecs.shape[1]), np.float32),
            ds.weights[evs],
            (now - ds.ts[evs]) / 86400.0,
            half_life_days=half_life_days,
            max_interests=max_interests,
        )
        neigh = self._neighbours(prof, u)
        created = ds.created[cands]
        return {
            "valid": np.ones((1, len(cands)), bool),
            "content": prof.similarity(self.vecs[cands])[None],
            "neighbour": np.array([[neigh.get(int(c), 0.0) for c in cands]], np.float64),
            "created": created[None],
            "active": active_time(created, self.last_active[cands], now)[None],
            "popularity": self.pop_others[cands][None],
            "trending": self.trending(cands, now)[None],
            "rating": self.rating[cands][None],
            "last_seen": np.array([[float(ds.ts[evs[-1]]) if evs else -np.inf]]),
            "now": now,
            "rate": self.rate(now),
        }

    def _neighbours(self, prof, u: int) -> dict[int, float]:
        """:func:`recsys.rank.neighbour_scores` over the interaction index, exact search: every
        interaction's vector is its item's vector here."""
        if prof.cold or not self.ev_items:
            return {}
        sims_items = prof.interests @ self.vecs.T  # (m, M)
        sims = sims_items[:, np.asarray(self.ev_items)]  # (m, E)
        top = min(NEIGHBOUR_HITS, sims.shape[1])
        hit = np.argpartition(-sims, top - 1, axis=1)[:, :top]
        users = np.asarray(self.ev_users)[hit].ravel()
        return neighbour_scores(users, sims[np.arange(len(sims))[:, None], hit].ravel(), self.engaged, u)

    # -- baselines ---------------------------------------------------------------------------
    def baseline_scores(self, u: int, cands: np.ndarray, half_life_days: float) -> dict[str, np.ndarray]:
        """Every baseline's scores ``(C,)`` of ``cands`` for user ``u`` from the history so far:
        ``newest`` (creation time), ``popularity`` (interactions so far), ``item_knn`` (item–item
        cosine over the user–item co-occurrence matrix, summed over the user's items; Sarwar et al.
        2001), ``content`` (cosine to the mean embedding of the user's items) and ``content_recent``
        (cosine to their mean decayed by ``0.5 ** (age / half_life_days)``, age from the user's latest
        interaction: :func:`recsys.profile.relative_decay`)."""
        ds = self.ds
        hist = sorted(self.seen(u))
        out = {"newest": ds.created[cands], "popularity": self.pop_all[cands]}
        if hist:
            co = self.ui[:, cands].T @ self.ui[:, hist]  # (C, H) co-occurrence counts
            norm = np.sqrt(np.outer(self.pop_all[cands], self.pop_all[hist]))
            out["item_knn"] = np.divide(co, norm, out=np.zeros_like(co, dtype=np.float64), where=norm > 0).sum(1)
            out["content"] = self.vecs[cands] @ self.vecs[hist].mean(0)
            out["content_recent"] = self.content_recent(u, cands, (half_life_days,))[0]
        else:
            for name in ("item_knn", "content", "content_recent"):
                out[name] = np.zeros(len(cands))
        return out

    def content_recent(self, u: int, cands: np.ndarray, half_lives: tuple[float, ...]) -> np.ndarray:
        """``content_recent`` scores ``(len(half_lives), C)``: cosine of each candidate to the user's
        history embeddings averaged with weights ``0.5 ** (age_days / half_life)`` (each item at its
        latest interaction; ages relative to the newest one). Zeros without history."""
        ds = self.ds
        evs = self.user_events.get(u, [])
        if not evs:
            return np.zeros((len(half_lives), len(cands)))
        ages = (float(ds.ts[evs[-1]]) - ds.ts[evs]) / 86400.0
        w = np.stack([relative_decay(ages, h) for h in half_lives])  # (H, E)
        means = w @ self.vecs[ds.items[evs]].astype(np.float64)  # (H, dim)
        return means @ self.vecs[cands].T.astype(np.float64)
