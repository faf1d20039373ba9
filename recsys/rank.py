"""Ranking features, the small learned ranker, and MMR re-ranking — shared by production
(``recsys.recommend``) and offline evaluation (``recsys.eval``), so both rank with the same code.

Features per candidate item (see :func:`feature_matrix`):

==================  =========================================================================
``content``         cosine of the item to the member's profile (best interest − down-rated pull)
``neighbour``       share of the member's nearest neighbours (by interaction vectors) who engaged
                    with the item, in [0, 1]
``log_age``         log1p(item age in minutes)
``log_rank``        log1p(how many of the member's candidates are newer than it — or, when more, how
                    many the guild would have produced since at its recent rate: ``age × rate``)
``log_idle``        log1p(minutes since the item's last activity: creation or any interaction)
``idle_rank``       log1p(how many of the member's candidates were active more recently, or ``idle × rate``)
``unseen``          1 if the item was created after the member's last interaction (new to them), else 0
``popularity``      log1p(positive interactions by others, all time before now)
``trending``        log1p(positive interactions by others in the last 7 days)
``rating``          sign(rating) · log1p(|rating|) (story 👍/👎, catalogue ratings)
``unanswered``      1 if nobody but its author has engaged with the item yet (popularity 0), else 0:
                    answeredness, the "unanswered questions" signal (se_beer, ``others``
                    protocol: Campfire's NDCG@10 0.5715 → 0.5775 with it)
==================  =========================================================================

The ranker is a logistic regression (L2-regularised, Newton/IRLS on standardised features, plain
numpy) fitted on (member, item) events with sampled negatives; :data:`DEFAULT_RANKER` holds weights
fitted offline by ``recsys.eval`` on se_beer's ``others`` protocol and is used until a guild has its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURES = (
    "content", "neighbour", "log_age", "log_rank", "log_idle", "idle_rank", "unseen", "popularity", "trending",
    "rating", "unanswered",
)
TRENDING_WINDOW_S = 7 * 86400.0


def feature_matrix(
    *,
    content: np.ndarray,
    neighbour: np.ndarray,
    age_s: np.ndarray,
    newer_count: np.ndarray,
    idle_s: np.ndarray,
    created: np.ndarray,
    busier_count: np.ndarray,
    last_seen: float | np.ndarray | None,
    popularity: np.ndarray,
    trending: np.ndarray,
    rating: np.ndarray | None = None,
    rate: float = 0.0,
) -> np.ndarray:
    """Stack raw per-candidate signals (all of one shape: ``(n,)`` for one member, ``(B, L)`` for a
    batch of members; ages and idle times in seconds, ``created`` UNIX s; ``last_seen``: the member's
    latest interaction time, ``None`` when they have none, or ``(B, 1)`` with ``-inf`` for none) into
    ``(..., len(FEATURES)) float64``.

    ``rate`` (items per second, the guild's recent activity; 0 = off) makes the rank features relative
    to the guild's pace: an item's rank is at least ``age × rate``, the items the guild would have
    produced since. In an active guild that is about the rank itself; in a guild whose newest item is
    years old, "the newest" is no longer fresh, so freshness stops deciding and personal signals do."""
    content = np.asarray(content, np.float64)
    rating = np.zeros(content.shape) if rating is None else np.asarray(rating, np.float64)
    newer_count = np.asarray(newer_count, np.float64)
    busier_count = np.asarray(busier_count, np.float64)
    if rate > 0:
        newer_count = np.maximum(newer_count, np.clip(np.asarray(age_s, np.float64), 0, None) * rate)
        busier_count = np.maximum(busier_count, np.clip(np.asarray(idle_s, np.float64), 0, None) * rate)
    seen = -np.inf if last_seen is None else np.asarray(last_seen, np.float64)
    return np.stack(
        np.broadcast_arrays(
            content,
            np.asarray(neighbour, np.float64),
            np.log1p(np.clip(np.asarray(age_s, np.float64), 0, None) / 60.0),
            np.log1p(np.clip(newer_count, 0, None)),
            np.log1p(np.clip(np.asarray(idle_s, np.float64), 0, None) / 60.0),
            np.log1p(np.clip(busier_count, 0, None)),
            (np.asarray(created, np.float64) > seen).astype(np.float64),
            np.log1p(np.asarray(popularity, np.float64)),
            np.log1p(np.asarray(trending, np.float64)),
            np.sign(rating) * np.log1p(np.abs(rating)),
            (np.asarray(popularity, np.float64) <= 0).astype(np.float64),
        ),
        axis=-1,
    )


@dataclass(frozen=True)
class Ranker:
    """Logistic-regression scorer: ``score(X) = ((X − mean) / std) · weights + bias`` (a logit)."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def score(self, x: np.ndarray) -> np.ndarray:
        """Logits ``(...)`` for features ``(..., len(FEATURES))`` (e.g. ``(n, F)`` -> ``(n,)``)."""
        z = (np.asarray(x, np.float64) - np.asarray(self.mean)) / np.asarray(self.std)
        return z @ np.asarray(self.weights) + self.bias

    def as_dict(self) -> dict[str, float]:
        return dict(zip(FEATURES, self.weights, strict=True)) | {"bias": self.bias}


def fit_ranker(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, *, l2: float = 1.0, iters: int = 30
) -> Ranker:
    """Fit the ranker on ``x (n, F)`` with labels ``y (n,)`` in {0, 1} by Newton's method with an L2
    penalty ``l2`` on the (standardised) weights.

    Without ``groups``: logistic regression (pointwise). With ``groups (n,)`` (one id per training
    event, rows of a group contiguous, one positive each): a conditional logit — the softmax of the
    positive among its group's candidates is maximised (McFadden 1973; a listwise ranking loss), which
    learns what separates the chosen item from the alternatives shown at the same moment; the bias is
    then 0. Raises ``ValueError`` when both classes are not present."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if len(x) == 0 or y.min() == y.max():
        raise ValueError("fit_ranker needs both positive and negative examples")
    mean = x.mean(0)
    std = x.std(0)
    std = np.where(std > 1e-9, std, 1.0)
    z = (x - mean) / std
    if groups is None:
        z = np.column_stack([z, np.ones(len(x))])
    f = z.shape[1]
    beta = np.zeros(f)
    reg = np.full(f, l2)
    if groups is None:
        reg[-1] = 0.0
    else:
        g = np.asarray(groups)
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        seg = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(g)]))
    def loss_grad_hess(beta: np.ndarray, need_hess: bool = True):
        s = z @ beta
        if groups is None:
            p = 1.0 / (1.0 + np.exp(-np.clip(s, -30, 30)))
            nll = -np.sum(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))
            hess = (z * (p * (1 - p))[:, None]).T @ z if need_hess else None
        else:
            mx = np.maximum.reduceat(s, starts)
            e = np.exp(s - mx[seg])
            den = np.add.reduceat(e, starts)
            p = e / den[seg]
            nll = -np.sum(y * (s - mx[seg] - np.log(den[seg])))
            if need_hess:
                zbar = np.add.reduceat(z * p[:, None], starts)  # (G, f) expected features per group
                hess = (z * p[:, None]).T @ z - zbar.T @ zbar
            else:
                hess = None
        loss = nll + 0.5 * np.sum(reg * beta**2)
        return loss, z.T @ (p - y) + reg * beta, hess

    loss, grad, hess = loss_grad_hess(beta)
    for _ in range(iters):
        step = np.linalg.solve(hess + np.diag(reg + 1e-9), grad)
        t = 1.0
        while t > 1e-4:  # backtracking: Newton may overshoot far from the optimum
            cand = beta - t * step
            new_loss = loss_grad_hess(cand, need_hess=False)[0]
            if new_loss <= loss:
                break
            t *= 0.5
        beta = cand
        if abs(loss - new_loss) < 1e-9 * max(1.0, abs(loss)) or np.abs(t * step).max() < 1e-7:
            break
        loss, grad, hess = loss_grad_hess(beta)
    w = beta[:-1] if groups is None else beta
    bias = float(beta[-1]) if groups is None else 0.0
    return Ranker(tuple(w.tolist()), bias, tuple(mean.tolist()), tuple(std.tolist()))


# Fitted by `recsys.eval` (conditional logit, `others` protocol, se_beer: every answer to someone else's
# question before the last held-out one; `python -m recsys.eval --protocol others --print-ranker`), used
# for guilds without a ranker of their own (recsys.guild_ranker). `rating` is se_beer's question score.
DEFAULT_RANKER = Ranker(
    weights=(0.5354, -0.1045, -0.1486, -0.3603, -0.1163, -0.7326, 0.5151, 0.2468, 0.001502, 0.3275, 0.3195),
    bias=0.0,
    mean=(0.2342, 0.01242, 12.76, 5.497, 12.55, 5.313, 0.3795, 1.02, 0.04172, 1.955, 0.07019),
    std=(0.198, 0.0181, 1.659, 0.8999, 1.743, 1.009, 0.4853, 0.4895, 0.1987, 0.6841, 0.2555),
)


def count_greater(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each of ``values (n,)``, how many of ``reference (m,)`` are strictly greater: ``(n,) int64``
    (0 = the newest / most recently active of the reference set)."""
    srt = np.sort(np.asarray(reference, np.float64))
    return len(srt) - np.searchsorted(srt, np.asarray(values, np.float64), side="right")


def count_greater_rows(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """:func:`count_greater` of each row against itself, for a batch: ``values (B, L)``, ``valid (B, L)``
    bool -> ``(B, L) int64``, how many *valid* entries of the same row are strictly greater (entries
    that are not valid count as nothing; their own results are meaningless)."""
    v = np.where(valid, np.asarray(values, np.float64), -np.inf)
    if v.size == 0:
        return np.zeros(v.shape, np.int64)
    order = np.argsort(-v, axis=1)  # descending, invalid (-inf) last; ties in any order
    sv = np.take_along_axis(v, order, axis=1)
    new = np.ones(v.shape, bool)
    new[:, 1:] = sv[:, 1:] != sv[:, :-1]
    # the first position of each run of equal values = how many are strictly greater
    first = np.maximum.accumulate(np.where(new, np.arange(v.shape[1]), 0), axis=1)
    out = np.empty(v.shape, np.int64)
    np.put_along_axis(out, order, first, axis=1)
    return out


def neighbour_scores(
    hit_members: np.ndarray, hit_sims: np.ndarray, engaged: dict[int, set[int]], member_id: int
) -> dict[int, float]:
    """Neighbourhood signal. ``hit_members``/``hit_sims`` ``(h,)``: the members behind the interactions
    nearest to this member's interests and their cosine similarities; ``engaged``: member -> items
    they engaged with positively. Each other member weighs their best positive similarity; an item's
    score is the weight share of neighbours who engaged with it, in [0, 1]."""
    best: dict[int, float] = {}
    for m, s in zip(np.asarray(hit_members).tolist(), np.asarray(hit_sims).tolist(), strict=True):
        if m == member_id or m < 0 or not s > 0:
            continue
        if s > best.get(m, 0.0):
            best[m] = s
    total = sum(best.values())
    if total <= 0:
        return {}
    out: dict[int, float] = {}
    for m, w in best.items():
        for item in engaged.get(m, ()):
            out[item] = out.get(item, 0.0) + w / total
    return out


def mmr(relevance: np.ndarray, vectors: np.ndarray, k: int, lam: float) -> list[int]:
    """Maximal Marginal Relevance (Carbonell & Goldstein, 1998) for one list: :func:`mmr_rows` with
    one row, every entry valid. ``relevance (n,)``, ``vectors (n, dim)`` L2-normalised; returns ≤ k
    row indices."""
    n = len(relevance)
    if n == 0 or k <= 0:
        return []
    rows = mmr_rows(np.asarray(relevance)[None], np.asarray(vectors)[None], np.ones((1, n), bool), k, lam)[0]
    return rows[rows >= 0].tolist()


def mmr_rows(relevance: np.ndarray, vectors: np.ndarray, valid: np.ndarray, k: int, lam: float) -> np.ndarray:
    """Maximal Marginal Relevance (Carbonell & Goldstein, 1998) for a batch of lists at once: per
    row, greedily pick the valid entry maximising ``lam · relevance − (1 − lam) · max cosine to the
    entries already picked``. ``relevance (B, n)`` is min-max scaled to [0, 1] over each row's valid
    entries first; ``vectors (B, n, dim)`` L2-normalised float32; ``valid (B, n)`` bool. Returns
    ``(B, min(k, n)) int64`` entry indices in pick order, ``-1`` once a row has no valid entry left."""
    rel = np.asarray(relevance, np.float64)
    b, n = rel.shape
    kk = max(0, min(k, n))
    out = np.full((b, kk), -1, np.int64)
    if b == 0 or kk == 0:
        return out
    lo = np.where(valid, rel, np.inf).min(axis=1, keepdims=True)
    hi = np.where(valid, rel, -np.inf).max(axis=1, keepdims=True)
    span = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(span > 0, (rel - lo) / np.where(span > 0, span, 1.0), 1.0)
    if lam >= 1.0:
        order = np.argsort(-np.where(valid, rel, -np.inf), axis=1, kind="stable")[:, :kk]
        return np.where(np.take_along_axis(valid, order, axis=1), order, -1)
    vectors = np.asarray(vectors, np.float32)
    rows = np.arange(b)
    available = np.array(valid, bool)
    max_sim = np.full((b, n), -np.inf)
    for t in range(kk):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        val = np.where(available, lam * rel - (1 - lam) * penalty, -np.inf)
        j = np.argmax(val, axis=1)
        has = available[rows, j]
        out[:, t] = np.where(has, j, -1)
        available[rows, j] = False
        sims = np.matmul(vectors, vectors[rows, j][:, :, None])[:, :, 0]
        max_sim = np.where(has[:, None], np.maximum(max_sim, sims), max_sim)
    return out
