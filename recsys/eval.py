"""Offline evaluation (``campfire eval``): Campfire's ranker against four baselines, same run, same split.

Input: the se_beer format (:mod:`recsys.eval_data`); replay state and inputs: :mod:`recsys.eval_history`.

Protocols
- ``time`` (default; what a daily digest faces): for every user with ≥ 3 interactions, hold out the
  last one (time t). History is every interaction of every user strictly before t; candidates are
  all items created at or before t the user had not interacted with.
- ``static`` (the literature's leave-last-out, e.g. Rendle et al. 2009's protocol without time):
  history is every interaction except the held-out ones; candidates are all items the user had not
  interacted with; "now" is the latest timestamp in the file.

Metrics (per held-out interaction, averaged): Recall@K (hit in the top K), NDCG@K
(``1 / log2(rank + 1)`` within the top K, one relevant item), MRR (``1 / rank`` over the full
ranking), and catalogue coverage (distinct items in anyone's top K ÷ all items). Ties are broken by
one fixed random permutation of the items, the same for every system.

Systems
- ``campfire``: the production ranking path — :func:`recsys.pipeline.row_features` /
  :func:`~recsys.pipeline.rank_rows` / :func:`~recsys.pipeline.choose_rows` (MMR), a batch of one,
  with the inputs production passes (content via ``recsys.profile.build_profile``, neighbourhood via
  ``recsys.rank.neighbour_scores``, freshness, popularity, trending, the items' ratings and the
  guild's pace) — with a logistic-regression ranker
  (``recsys.rank.fit_ranker``) refitted for each held-out interaction on examples made only from
  interactions before t (each event: the chosen item against every other candidate at that moment,
  a conditional logit);
  the whole candidate set is scored (production adds a FAISS candidate stage before this).
- ``newest``: newest first. ``popularity``: most interactions in history.
- ``item_knn``: item–item cosine over co-occurrence in history, summed over the user's items.
- ``content``: cosine to the mean embedding of the user's history.
"""

from __future__ import annotations

import bisect
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.eval_data import EvalInputError, load_dataset, item_vectors
from recsys.eval_history import History
from recsys.pipeline import DEFAULT_MAX_INTERESTS, choose_rows, order_rows, rank_rows, row_features
from recsys.rank import FEATURES, Ranker, fit_ranker

if TYPE_CHECKING:
    from recsys.embed import Embedder

__all__ = ["PROTOCOLS", "SYSTEMS", "EvalInputError", "evaluate", "format_table", "load_dataset", "main"]

SYSTEMS = ("campfire", "newest", "popularity", "item_knn", "content")
PROTOCOLS = ("time", "static")
# Negatives per training event: None = every candidate the member could have been shown (the exact
# softmax; best on se_beer). An int samples HARD_NEGATIVES of the HARD_POOL newest plus uniform ones.
NEGATIVES: int | None = None
HARD_NEGATIVES = 10
HARD_POOL = 30
MIN_POSITIVES = 30  # training events needed before the ranker is fitted; before that: freshness only
REFIT_GROWTH = 1.2  # refit when the training set has grown by 20 %
SEED = 20260401
LISTWISE = True  # conditional logit (softmax per event) rather than pointwise logistic regression
# Freshness-only ranker used while fewer than MIN_POSITIVES training events exist (no fitting on the future).
PRIOR_RANKER = Ranker(
    weights=tuple(-1.0 if f == "log_rank" else 0.0 for f in FEATURES), bias=0.0,
    mean=(0.0,) * len(FEATURES), std=(1.0,) * len(FEATURES),
)


def _rank_of(scores: np.ndarray, tiebreak: np.ndarray, target_pos: int) -> tuple[int, np.ndarray]:
    """1-based rank of ``target_pos`` and the order (descending score, ties by ``tiebreak``)."""
    order = np.lexsort((tiebreak, -np.asarray(scores, np.float64)))
    rank = int(np.flatnonzero(order == target_pos)[0]) + 1
    return rank, order


class _Run:
    """One evaluation: the replay (:class:`History`), the ranker's training rows and each system's
    results ``(rank of the held-out item, top-k item indices)``."""

    def __init__(self, ds, vecs: np.ndarray, *, k: int, protocol: str, half_life_days: float, max_interests: int,
                 mmr_lambda: float):
        self.ds, self.vecs, self.k, self.protocol = ds, vecs, k, protocol
        self.profile_args = {"half_life_days": half_life_days, "max_interests": max_interests}
        self.mmr_lambda = mmr_lambda
        self.rng = np.random.default_rng(SEED)
        self.tiebreak = self.rng.permutation(len(ds.item_ids)).astype(np.float64)
        self.hist = History(ds, vecs)
        self.xs: list[np.ndarray] = []
        self.ys: list[np.ndarray] = []
        self.gs: list[np.ndarray] = []
        self.row_ts: list[float] = []
        self.ranker: Ranker = PRIOR_RANKER
        self.fitted_on = 0
        self.results: dict[str, list[tuple[int, np.ndarray]]] = {s: [] for s in SYSTEMS}
        self.missing = 0

    def training_event(self, e: int) -> None:
        """One training example: the chosen item against every other candidate at that moment."""
        ds = self.ds
        u, i, now = int(ds.users[e]), int(ds.items[e]), float(ds.ts[e])
        pool = np.flatnonzero(ds.created <= now)
        pool = pool[~np.isin(pool, list(self.hist.seen(u)))]
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

    def score_holdout(self, e: int, now: float) -> None:
        """Rank every candidate for the held-out interaction ``e`` with every system."""
        ds = self.ds
        u, target = int(ds.users[e]), int(ds.items[e])
        cands = np.flatnonzero(ds.created <= now) if self.protocol == "time" else np.arange(len(ds.item_ids))
        cands = cands[~np.isin(cands, list(self.hist.seen(u)))]
        pos = np.flatnonzero(cands == target)
        if len(pos) == 0:  # never a candidate (cannot happen with well-formed data): a miss for all
            self.missing += 1
            for s in SYSTEMS:
                self.results[s].append((10**9, np.zeros(0, np.int64)))
            return
        p, tb = int(pos[0]), self.tiebreak[cands]
        self.results["campfire"].append(self._campfire(u, cands[np.argsort(tb, kind="stable")], target, now))
        scores = self.hist.baseline_scores(u, cands)
        for s in SYSTEMS[1:]:
            rank, o = _rank_of(scores[s], tb, p)
            self.results[s].append((rank, cands[o[:self.k]]))

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
        """The protocol: ``time`` scores each held-out interaction at its moment, with everything
        before it; ``static`` trains on everything else and scores all at the last timestamp."""
        ds, held = self.ds, set(holdouts)
        if self.protocol == "time":
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
                "ndcg": round(float(np.sum(np.where(ranks <= k, 1.0 / np.log2(ranks + 1), 0.0)) / n), 4),
                "mrr": round(float(np.sum(1.0 / ranks) / n), 4),
                "coverage": round(len(covered) / max(m, 1), 4),
            }
        return systems


def _holdouts(ds) -> list[int]:
    """The held-out interaction of every user with ≥ 3: their last by time (file order breaks ties)."""
    per_user: dict[int, list[int]] = defaultdict(list)
    for e in range(len(ds.ts)):
        per_user[int(ds.users[e])].append(e)
    return sorted(evs[-1] for evs in per_user.values() if len(evs) >= 3)


def evaluate(
    interactions_csv: str | Path,
    items_jsonl: str | Path,
    *,
    k: int = 10,
    protocol: str = "time",
    embedder: Embedder | None = None,
    half_life_days: float = 14.0,
    max_interests: int = DEFAULT_MAX_INTERESTS,
    mmr_lambda: float = 0.7,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the evaluation; returns ``{"k", "protocol", "users", "items", "systems": {name: {"recall",
    "ndcg", "mrr", "coverage"}}}`` (the ``campfire eval --json`` object). ``embedder`` defaults to the
    packaged all-MiniLM-L6-v2. ``details`` (optional dict) receives the last fitted ranker's weights,
    timings and the count of held-out interactions whose item was not a candidate.
    Raises :class:`EvalInputError` on unreadable input and ``ValueError`` on a bad ``k``/``protocol``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if k < 1:
        raise ValueError("k must be at least 1")
    t0 = time.perf_counter()
    ds = load_dataset(interactions_csv, items_jsonl)
    if embedder is None:
        from recsys.embed import Embedder

        embedder = Embedder()
    vecs = item_vectors(ds, items_jsonl, embedder)
    t_embed = time.perf_counter() - t0
    holdouts = _holdouts(ds)
    run = _Run(ds, vecs, k=k, protocol=protocol, half_life_days=half_life_days, max_interests=max_interests,
               mmr_lambda=mmr_lambda)
    run.replay(holdouts)
    systems = run.metrics(len(holdouts))
    if details is not None:
        ranker = run.ranker
        details.update(
            ranker=ranker.as_dict(),
            ranker_params={"weights": ranker.weights, "bias": ranker.bias, "mean": ranker.mean, "std": ranker.std},
            ranker_fit_rows=run.fitted_on,
            embed_s=round(t_embed, 2),
            total_s=round(time.perf_counter() - t0, 2),
            holdouts_not_candidates=run.missing,
            ranks={sname: [r for r, _ in run.results[sname]] for sname in SYSTEMS},
            features=list(FEATURES),
        )
    return {"k": k, "protocol": protocol, "users": len(holdouts), "items": len(ds.item_ids), "systems": systems}


def format_table(result: dict[str, Any]) -> str:
    """The result as an aligned text table, systems as rows, best value per metric marked with *."""
    k = result["k"]
    cols = [("recall", f"Recall@{k}"), ("ndcg", f"NDCG@{k}"), ("mrr", "MRR"), ("coverage", "Coverage")]
    systems = result["systems"]
    best = {c: max(v[c] for v in systems.values()) for c, _ in cols}
    lines = [
        f"protocol={result['protocol']}  users={result['users']}  items={result['items']}  k={k}",
        f"{'system':<12}" + "".join(f"{h:>12}" for _, h in cols),
    ]
    for name, v in systems.items():
        cells = "".join(f"{(('*' if v[c] == best[c] else '') + format(v[c], '.4f')):>12}" for c, _ in cols)
        lines.append(f"{name:<12}{cells}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recsys.eval --interactions CSV --items JSONL [--k] [--protocol] [--json]`` (dev entry;
    the ``campfire eval`` command calls :func:`evaluate` and :func:`format_table`)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m recsys.eval")
    ap.add_argument("--interactions", required=True)
    ap.add_argument("--items", required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--protocol", choices=PROTOCOLS + ("both",), default="time")
    ap.add_argument("--interests", type=int, default=DEFAULT_MAX_INTERESTS)
    ap.add_argument("--half-life", type=float, default=14.0)
    ap.add_argument("--mmr-lambda", type=float, default=0.7)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--print-ranker", action="store_true")
    a = ap.parse_args(argv)
    from recsys.embed import Embedder

    emb = Embedder()
    for proto in PROTOCOLS if a.protocol == "both" else (a.protocol,):
        det: dict[str, Any] = {}
        res = evaluate(a.interactions, a.items, k=a.k, protocol=proto, embedder=emb, max_interests=a.interests,
                       half_life_days=a.half_life, mmr_lambda=a.mmr_lambda, details=det)
        print(json.dumps(res) if a.json else format_table(res))
        if a.print_ranker:
            print(json.dumps(det))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
