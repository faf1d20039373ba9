"""``campfire eval``'s replay (:class:`Run`): the protocols' candidate sets, the ranker's training
events and validation, and every system's result per held-out interaction. :mod:`recsys.eval` runs it."""

from __future__ import annotations

import bisect

import numpy as np

from recsys.eval_data import Dataset
from recsys.eval_history import History
from recsys.pipeline import choose_rows, order_rows, rank_rows, row_features
from recsys.rank import FEATURES, Ranker, fit_ranker

SYSTEMS = ("campfire", "newest", "popularity", "item_knn", "content", "content_recent")
BASELINES = SYSTEMS[1:]
# Negatives per training event: None = every candidate the member could have been shown (the exact
# softmax; best on se_beer). An int samples HARD_NEGATIVES of the HARD_POOL newest plus uniform ones.
NEGATIVES: int | None = None
HARD_NEGATIVES = 10
HARD_POOL = 30
MIN_POSITIVES = 30  # training events needed before the ranker is fitted; before that: freshness only
REFIT_GROWTH = 1.2  # refit when the training set has grown by 20 %
SEED = 20260401
LISTWISE = True  # conditional logit (softmax per event) rather than pointwise logistic regression
# content_recent's half-life (days) is the best of these by NDCG@k on the validation events before t
HALF_LIVES = (1.0, 7.0, 30.0, 90.0, 365.0, 3650.0)
# Freshness-only ranker used while fewer than MIN_POSITIVES training events exist (no fitting on the future).
PRIOR_RANKER = Ranker(
    weights=tuple(-1.0 if f == "log_rank" else 0.0 for f in FEATURES), bias=0.0,
    mean=(0.0,) * len(FEATURES), std=(1.0,) * len(FEATURES),
)


def rank_of(scores: np.ndarray, tiebreak: np.ndarray, target_pos: int) -> tuple[int, np.ndarray]:
    """1-based rank of ``target_pos`` and the order (descending score, ties by ``tiebreak``)."""
    order = np.lexsort((tiebreak, -np.asarray(scores, np.float64)))
    rank = int(np.flatnonzero(order == target_pos)[0]) + 1
    return rank, order


def ndcg_at(rank: np.ndarray | int, k: int) -> np.ndarray:
    """NDCG@k of one relevant item at 1-based ``rank``: ``1 / log2(rank + 1)`` within the top k, else 0."""
    r = np.asarray(rank, np.float64)
    return np.where(r <= k, 1.0 / np.log2(r + 1), 0.0)


class Run:
    """One evaluation: the replay (:class:`History`), the ranker's training rows, content_recent's
    validation and each system's results ``(rank of the held-out item, top-k item indices)``.
    ``candidates[s]`` keeps, per held-out interaction, the candidate set system ``s`` ranked."""

    def __init__(self, ds: Dataset, vecs: np.ndarray, *, k: int, protocol: str, half_life_days: float,
                 max_interests: int, mmr_lambda: float, keep_candidates: bool = False):
        self.ds, self.vecs, self.k, self.protocol = ds, vecs, k, protocol
        self.author = ds.author if ds.author is not None else np.full(len(ds.item_ids), -1, np.int64)
        self.profile_args = {"half_life_days": half_life_days, "max_interests": max_interests}
        self.mmr_lambda = mmr_lambda
        self.rng = np.random.default_rng(SEED)
        self.tiebreak = self.rng.permutation(len(ds.item_ids)).astype(np.float64)
        self.hist = History(ds, vecs)
        self.xs: list[np.ndarray] = []
        self.ys: list[np.ndarray] = []
        self.gs: list[np.ndarray] = []
        self.row_ts: list[float] = []
        self.val_gain: list[np.ndarray] = []  # per training event: content_recent's NDCG@k per half-life
        self.ranker: Ranker = PRIOR_RANKER
        self.fitted_on = 0
        self.results: dict[str, list[tuple[int, np.ndarray]]] = {s: [] for s in SYSTEMS}
        self.candidates: dict[str, list[np.ndarray]] | None = {s: [] for s in SYSTEMS} if keep_candidates else None
        self.half_lives_used: list[float] = []
        self.missing = 0

    def counts(self, e: int) -> bool:
        """Whether event ``e`` is a recommendation the protocol scores and trains on: under ``others``
        only interactions with an item someone else authored; every interaction otherwise."""
        return self.protocol != "others" or self.author[int(self.ds.items[e])] != int(self.ds.users[e])

    def pool(self, u: int, now: float | None) -> np.ndarray:
        """User ``u``'s candidates: items created by ``now`` (every item when None) they have not
        interacted with; under ``others`` never an item they authored."""
        ds = self.ds
        cands = np.flatnonzero(ds.created <= now) if now is not None else np.arange(len(ds.item_ids))
        cands = cands[~np.isin(cands, list(self.hist.seen(u)))]
        if self.protocol == "others":
            cands = cands[self.author[cands] != u]
        return cands

    def training_event(self, e: int) -> None:
        """One training example: the chosen item against every other candidate at that moment; and
        content_recent's validation gain per half-life on it."""
        ds = self.ds
        u, i, now = int(ds.users[e]), int(ds.items[e]), float(ds.ts[e])
        if not self.counts(e):
            return
        pool = self.pool(u, now)
        pool = pool[pool != i]
        if len(pool) == 0:
            return
        neg = pool if NEGATIVES is None else self._sample_negatives(pool)
        cands = np.concatenate([[i], neg]).astype(np.int64)
        # ranks (newer / busier counts) are among the row's candidates: with NEGATIVES None, everything
        # the member could be shown, as in production
        self.xs.append(row_features(**self.hist.campfire_inputs(u, cands, now, **self.profile_args))[0])
        self.ys.append(np.r_[1.0, np.zeros(len(neg))])
        self.gs.append(np.full(len(cands), len(self.gs)))
        self.row_ts.append(now)
        sc = self.hist.content_recent(u, cands, HALF_LIVES)  # (H, C); the chosen item is column 0
        tb = self.tiebreak[cands]
        ranks = [rank_of(row, tb, 0)[0] if self.hist.user_events.get(u) else 10**9 for row in sc]
        self.val_gain.append(ndcg_at(np.array(ranks), self.k))

    def _sample_negatives(self, pool: np.ndarray) -> np.ndarray:
        newest = pool[np.argsort(-self.ds.created[pool], kind="stable")[:HARD_POOL]]
        hard = self.rng.choice(newest, size=min(HARD_NEGATIVES, len(newest)), replace=False)
        rest = pool[~np.isin(pool, hard)]
        easy = self.rng.choice(rest, size=min(NEGATIVES - len(hard), len(rest)), replace=False)
        return np.concatenate([hard, easy]).astype(np.int64)

    def current_ranker(self, before: float) -> Ranker:
        """The ranker fitted on training events strictly before ``before`` (refitted as they grow)."""
        n = bisect.bisect_left(self.row_ts, before)
        if n < MIN_POSITIVES:
            return PRIOR_RANKER
        if n >= self.fitted_on * REFIT_GROWTH or self.ranker is PRIOR_RANKER:
            groups = np.concatenate(self.gs[:n]) if LISTWISE else None
            self.ranker = fit_ranker(np.vstack(self.xs[:n]), np.concatenate(self.ys[:n]), groups)
            self.fitted_on = n
        return self.ranker

    def half_life(self, before: float) -> float:
        """content_recent's half-life: the best of :data:`HALF_LIVES` by mean NDCG@k over the
        validation (training) events strictly before ``before``; the longest while there are none."""
        n = bisect.bisect_left(self.row_ts, before)
        if n == 0:
            return HALF_LIVES[-1]
        gain = np.sum(self.val_gain[:n], axis=0)
        return HALF_LIVES[int(np.argmax(gain))]  # ties: the first (shortest) best

    def score_holdout(self, e: int, now: float) -> None:
        """Rank every candidate for the held-out interaction ``e`` with every system."""
        ds = self.ds
        u, target = int(ds.users[e]), int(ds.items[e])
        cands = self.pool(u, now if self.protocol != "static" else None)
        pos = np.flatnonzero(cands == target)
        if len(pos) == 0:  # never a candidate (cannot happen with well-formed data): a miss for all
            self.missing += 1
            for s in SYSTEMS:
                self.results[s].append((10**9, np.zeros(0, np.int64)))
            return
        p, tb = int(pos[0]), self.tiebreak[cands]
        in_tb_order = cands[np.argsort(tb, kind="stable")]
        self.results["campfire"].append(self._campfire(u, in_tb_order, target, now))
        half_life = self.half_life(now)
        self.half_lives_used.append(half_life)
        scores = self.hist.baseline_scores(u, cands, half_life)
        for s in BASELINES:
            rank, o = rank_of(scores[s], tb, p)
            self.results[s].append((rank, cands[o[:self.k]]))
        if self.candidates is not None:
            self.candidates["campfire"].append(in_tb_order)
            for s in BASELINES:
                self.candidates[s].append(cands)

    def _campfire(self, u: int, cands: np.ndarray, target: int, now: float) -> tuple[int, np.ndarray]:
        """Campfire through the production path, a batch of one: :func:`rank_rows`, then
        :func:`choose_rows` (MMR over the best ``MMR_POOL``) for the top k, the rest by logit. ``cands``
        are in tie-break order (production breaks ties by column)."""
        inputs = self.hist.campfire_inputs(u, cands, now, **self.profile_args)
        logits = rank_rows(self.current_ranker(now), **inputs)
        order = order_rows(logits)
        _, picks = choose_rows(logits, inputs["valid"], lambda idx: self.vecs[cands[idx]], self.k, self.mmr_lambda,
                               order)
        picked = [int(j) for j in picks[0] if j >= 0]
        chosen = set(picked)
        final = np.array(picked + [int(j) for j in order[0] if int(j) not in chosen])
        return int(np.flatnonzero(cands[final] == target)[0]) + 1, cands[final[:self.k]]

    def replay(self, holdouts: list[int]) -> None:
        """The protocol: ``time`` and ``others`` score each held-out interaction at its moment, with
        everything before it; ``static`` trains on everything else and scores all at the last timestamp."""
        ds, held = self.ds, set(holdouts)
        if self.protocol != "static":
            for e in range(len(ds.ts)):
                if e in held:
                    self.score_holdout(e, float(ds.ts[e]))
                self.training_event(e)
                self.hist.add(e)
            return
        for e in range(len(ds.ts)):
            if e not in held:
                self.training_event(e)
                self.hist.add(e)
        now = float(ds.ts.max())
        for e in holdouts:
            self.score_holdout(e, now)

    def metrics(self, n_holdouts: int) -> dict[str, dict[str, float]]:
        """Recall@k, NDCG@k, MRR and coverage per system."""
        k, n, m = self.k, max(n_holdouts, 1), len(self.ds.item_ids)
        systems: dict[str, dict[str, float]] = {}
        for s in SYSTEMS:
            ranks = np.array([r for r, _ in self.results[s]], np.float64)
            covered: set[int] = set()
            for _, top in self.results[s]:
                covered.update(top.tolist())
            systems[s] = {
                "recall": round(float(np.sum(ranks <= k) / n), 4),
                "ndcg": round(float(np.sum(ndcg_at(ranks, k)) / n), 4),
                "mrr": round(float(np.sum(1.0 / ranks) / n), 4),
                "coverage": round(len(covered) / max(m, 1), 4),
            }
        return systems
