"""Offline evaluation (``campfire eval``): Campfire's ranker against four baselines, same run, same split.

Input (the se_beer format): ``interactions.csv`` with ``user_id, question_id, kind, timestamp``
(ISO 8601 or UNIX seconds) and ``items.jsonl`` with ``question_id, title, tags, body_text, created``.
Kinds ``ask``/``answer`` map to Campfire's ``authored``/``replied`` (their profile weights); any of
Campfire's own kinds may be used directly.

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
- ``campfire``: the production ranking code (``recsys.profile.build_profile``,
  ``recsys.rank.neighbour_scores``/``feature_matrix``/``mmr``) with a logistic-regression ranker
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
import csv
import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.embed import embedding_text
from recsys.profile import build_profile
from recsys.rank import (
    FEATURES,
    TRENDING_WINDOW_S,
    Ranker,
    count_greater,
    feature_matrix,
    fit_ranker,
    mmr,
    neighbour_scores,
)
from recsys.recommend import DEFAULT_MAX_INTERESTS, MMR_POOL, NEIGHBOUR_HITS
from recsys.store import DEFAULT_WEIGHTS

if TYPE_CHECKING:
    from recsys.embed import Embedder

log = logging.getLogger(__name__)

SYSTEMS = ("campfire", "newest", "popularity", "item_knn", "content")
PROTOCOLS = ("time", "static")
KIND_MAP = {"ask": "authored", "answer": "replied", "question": "authored", "comment": "replied"}
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

_vector_cache: dict[tuple[str, int, float, str], np.ndarray] = {}


class EvalInputError(ValueError):
    """The interactions or items file is missing or malformed (one line naming file and row)."""


@dataclass
class Dataset:
    item_ids: list[str]  # external ids, row order = item index
    texts: list[str]
    created: np.ndarray  # (M,) UNIX s
    users: np.ndarray  # (E,) user index per event, events sorted by time
    items: np.ndarray  # (E,) item index per event
    kinds: list[str]  # (E,) Campfire kinds
    weights: np.ndarray  # (E,) profile weights
    ts: np.ndarray  # (E,) UNIX s
    n_users: int


def _parse_time(value: str, where: str) -> float:
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise EvalInputError(f"{where}: cannot read time {value!r} (ISO 8601 or UNIX seconds)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def load_dataset(interactions_csv: str | Path, items_jsonl: str | Path) -> Dataset:
    """Read the two files. Raises :class:`EvalInputError` naming the file and line of a bad row."""
    items_path, inter_path = Path(items_jsonl), Path(interactions_csv)
    for p in (items_path, inter_path):
        if not p.is_file():
            raise EvalInputError(f"file not found: {p}")
    ids: list[str] = []
    texts: list[str] = []
    created: list[float] = []
    index: dict[str, int] = {}
    with items_path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                qid = str(row.get("question_id", row.get("item_id", row.get("id"))))
                title, body = row.get("title") or "", row.get("body_text") or row.get("text") or ""
                when = _parse_time(str(row.get("created", row.get("created_at"))), f"{items_path}:{n}")
            except (json.JSONDecodeError, AttributeError) as err:
                raise EvalInputError(f"{items_path}:{n}: not a JSON object ({err})") from None
            if qid in index or qid == "None":
                continue
            index[qid] = len(ids)
            ids.append(qid)
            texts.append(f"{title}\n{body}" if title else body)
            created.append(when)
    events: list[tuple[float, int, str, int, str]] = []
    user_index: dict[str, int] = {}
    with inter_path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        need = {"user_id", "question_id", "timestamp"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise EvalInputError(f"{inter_path}: needs columns {', '.join(sorted(need))} (has {reader.fieldnames})")
        for n, row in enumerate(reader, 2):
            qid = str(row["question_id"])
            if qid not in index:
                continue  # an interaction on an item not in the catalogue
            kind = KIND_MAP.get((row.get("kind") or "").strip(), (row.get("kind") or "").strip() or "reacted")
            if kind not in DEFAULT_WEIGHTS:
                raise EvalInputError(f"{inter_path}:{n}: unknown kind {row.get('kind')!r}")
            uid = user_index.setdefault(str(row["user_id"]), len(user_index))
            events.append((_parse_time(row["timestamp"], f"{inter_path}:{n}"), n, kind, uid, qid))
    events.sort()
    return Dataset(
        item_ids=ids,
        texts=texts,
        created=np.array(created, np.float64),
        users=np.array([e[3] for e in events], np.int64),
        items=np.array([index[e[4]] for e in events], np.int64),
        kinds=[e[2] for e in events],
        weights=np.array([DEFAULT_WEIGHTS[e[2]] for e in events], np.float64),
        ts=np.array([e[0] for e in events], np.float64),
        n_users=len(user_index),
    )


def item_vectors(ds: Dataset, items_jsonl: str | Path, embedder: Embedder) -> np.ndarray:
    """``(M, dim) float32`` L2-normalised item vectors, embedded once per file and model per process."""
    p = Path(items_jsonl).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime, embedder.key)
    if key not in _vector_cache:  # prepared as production prepares item texts (no member names here)
        _vector_cache[key] = embedder.encode([embedding_text(t) for t in ds.texts])
    return _vector_cache[key]


class _History:
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

    # -- Campfire: the production features and ranker ------------------------------------------
    def campfire_features(
        self, u: int, cands: np.ndarray, now: float, *, half_life_days: float, max_interests: int,
        pool: np.ndarray | None = None,
    ) -> np.ndarray:
        ds = self.ds
        evs = self.user_events.get(u, [])
        prof = build_profile(
            self.vecs[ds.items[evs]] if evs else np.zeros((0, self.vecs.shape[1]), np.float32),
            ds.weights[evs],
            (now - ds.ts[evs]) / 86400.0,
            half_life_days=half_life_days,
            max_interests=max_interests,
        )
        neigh: dict[int, float] = {}
        if not prof.cold and self.ev_items:
            # the interaction index, exact search: every interaction's vector is its item's vector here
            sims_items = prof.interests @ self.vecs.T  # (m, M)
            ev_items = np.asarray(self.ev_items)
            sims = sims_items[:, ev_items]  # (m, E)
            top = min(NEIGHBOUR_HITS, sims.shape[1])
            hit = np.argpartition(-sims, top - 1, axis=1)[:, :top]
            users = np.asarray(self.ev_users)[hit].ravel()
            neigh = neighbour_scores(users, sims[np.arange(len(sims))[:, None], hit].ravel(), self.engaged, u)
        created = ds.created[cands]
        last = self.last_active[cands]
        ref = cands if pool is None else pool  # ranks are among everything the member could be shown
        newer = count_greater(ds.created[ref], created)
        busier = count_greater(self.last_active[ref], last)
        return feature_matrix(
            content=prof.similarity(self.vecs[cands]),
            neighbour=np.array([neigh.get(int(c), 0.0) for c in cands]),
            age_s=now - created,
            newer_count=newer,
            idle_s=now - last,
            busier_count=busier,
            created=created,
            last_seen=float(ds.ts[evs[-1]]) if evs else None,
            popularity=self.pop_others[cands],
            trending=self.trending(cands, now),
        )

    # -- baselines ---------------------------------------------------------------------------
    def baseline_scores(self, u: int, cands: np.ndarray) -> dict[str, np.ndarray]:
        ds = self.ds
        hist = sorted(self.seen(u))
        out = {"newest": ds.created[cands], "popularity": self.pop_all[cands]}
        if hist:
            co = self.ui[:, cands].T @ self.ui[:, hist]  # (C, H) co-occurrence counts
            norm = np.sqrt(np.outer(self.pop_all[cands], self.pop_all[hist]))
            out["item_knn"] = np.divide(co, norm, out=np.zeros_like(co, dtype=np.float64), where=norm > 0).sum(1)
            mean = self.vecs[hist].mean(0)
            out["content"] = self.vecs[cands] @ mean
        else:
            out["item_knn"] = np.zeros(len(cands))
            out["content"] = np.zeros(len(cands))
        return out


def _rank_of(scores: np.ndarray, tiebreak: np.ndarray, target_pos: int) -> tuple[int, np.ndarray]:
    """1-based rank of ``target_pos`` and the order (descending score, ties by ``tiebreak``)."""
    order = np.lexsort((tiebreak, -np.asarray(scores, np.float64)))
    rank = int(np.flatnonzero(order == target_pos)[0]) + 1
    return rank, order


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
    m = len(ds.item_ids)
    rng = np.random.default_rng(SEED)
    tiebreak_all = rng.permutation(m).astype(np.float64)

    # held-out interaction per user with >= 3: the last by time (file order breaks ties)
    per_user: dict[int, list[int]] = defaultdict(list)
    for e in range(len(ds.ts)):
        per_user[int(ds.users[e])].append(e)
    holdouts = sorted(evs[-1] for evs in per_user.values() if len(evs) >= 3)
    held = set(holdouts)

    hist = _History(ds, vecs)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    gs: list[np.ndarray] = []
    row_ts: list[float] = []
    ranker: Ranker = PRIOR_RANKER
    fitted_on = 0

    def training_event(e: int) -> None:
        u, i, now = int(ds.users[e]), int(ds.items[e]), float(ds.ts[e])
        pool = np.flatnonzero(ds.created <= now)
        seen = hist.seen(u)
        pool = pool[~np.isin(pool, list(seen))]
        full = pool
        pool = pool[pool != i]
        if len(pool) == 0:
            return
        if NEGATIVES is None:  # every candidate: the exact softmax over what could have been shown
            neg = pool
        else:
            neg = _sample_negatives(pool)
        cands = np.concatenate([[i], neg]).astype(np.int64)
        xs.append(hist.campfire_features(u, cands, now, half_life_days=half_life_days, max_interests=max_interests,
                                         pool=full))
        ys.append(np.r_[1.0, np.zeros(len(neg))])
        gs.append(np.full(len(cands), len(gs)))
        row_ts.append(now)

    def _sample_negatives(pool: np.ndarray) -> np.ndarray:
        newest = pool[np.argsort(-ds.created[pool], kind="stable")[:HARD_POOL]]
        hard = rng.choice(newest, size=min(HARD_NEGATIVES, len(newest)), replace=False)
        rest = pool[~np.isin(pool, hard)]
        easy = rng.choice(rest, size=min(NEGATIVES - len(hard), len(rest)), replace=False)
        return np.concatenate([hard, easy]).astype(np.int64)

    def current_ranker(before: float) -> Ranker:
        nonlocal ranker, fitted_on
        n = bisect.bisect_left(row_ts, before)
        if n < MIN_POSITIVES:
            return PRIOR_RANKER
        if n >= fitted_on * REFIT_GROWTH or ranker is PRIOR_RANKER:
            ranker = fit_ranker(np.vstack(xs[:n]), np.concatenate(ys[:n]), np.concatenate(gs[:n]) if LISTWISE else None)
            fitted_on = n
        return ranker

    results: dict[str, list[tuple[int, np.ndarray]]] = {s: [] for s in SYSTEMS}
    missing = 0

    def score_holdout(e: int, now: float) -> None:
        nonlocal missing
        u, target = int(ds.users[e]), int(ds.items[e])
        seen = hist.seen(u)
        cands = np.flatnonzero(ds.created <= now) if protocol == "time" else np.arange(m)
        cands = cands[~np.isin(cands, list(seen))]
        pos = np.flatnonzero(cands == target)
        if len(pos) == 0:  # never a candidate (cannot happen with well-formed data): a miss for all
            missing += 1
            for s in SYSTEMS:
                results[s].append((10**9, np.zeros(0, np.int64)))
            return
        p, tb = int(pos[0]), tiebreak_all[cands]
        scores = hist.baseline_scores(u, cands)
        x = hist.campfire_features(u, cands, now, half_life_days=half_life_days, max_interests=max_interests)
        logits = current_ranker(now).score(x)
        order = np.lexsort((tb, -logits))
        head = order[:MMR_POOL]
        picked = [int(head[j]) for j in mmr(logits[head], vecs[cands[head]], min(k, len(head)), mmr_lambda)]
        rest = [int(j) for j in order if j not in set(picked)]
        final = np.array(picked + rest)
        results["campfire"].append((int(np.flatnonzero(final == p)[0]) + 1, cands[final[:k]]))
        for s in SYSTEMS[1:]:
            rank, o = _rank_of(scores[s], tb, p)
            results[s].append((rank, cands[o[:k]]))

    if protocol == "time":
        for e in range(len(ds.ts)):
            if e in held:
                score_holdout(e, float(ds.ts[e]))
            training_event(e)
            hist.add(e)
    else:
        for e in range(len(ds.ts)):
            if e not in held:
                training_event(e)
                hist.add(e)
        now = float(ds.ts.max())
        for e in holdouts:
            score_holdout(e, now)

    systems: dict[str, dict[str, float]] = {}
    n = max(len(holdouts), 1)
    for s in SYSTEMS:
        ranks = np.array([r for r, _ in results[s]], np.float64)
        covered = set()
        for _, top in results[s]:
            covered.update(top.tolist())
        systems[s] = {
            "recall": round(float(np.sum(ranks <= k) / n), 4),
            "ndcg": round(float(np.sum(np.where(ranks <= k, 1.0 / np.log2(ranks + 1), 0.0)) / n), 4),
            "mrr": round(float(np.sum(1.0 / ranks) / n), 4),
            "coverage": round(len(covered) / max(m, 1), 4),
        }
    if details is not None:
        details.update(
            ranker=ranker.as_dict(),
            ranker_params={"weights": ranker.weights, "bias": ranker.bias, "mean": ranker.mean, "std": ranker.std},
            ranker_fit_rows=fitted_on,
            embed_s=round(t_embed, 2),
            total_s=round(time.perf_counter() - t0, 2),
            holdouts_not_candidates=missing,
            ranks={sname: [r for r, _ in results[sname]] for sname in SYSTEMS},
            features=list(FEATURES),
        )
    return {"k": k, "protocol": protocol, "users": len(holdouts), "items": m, "systems": systems}


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
