"""A member's taste as up to three interest vectors, from what they did.

Each interaction contributes its vector (the item engaged with, or the interaction's own text)
weighted by kind (``store.DEFAULT_WEIGHTS``: authored 1.0, replied 0.8, reacted 0.6, requested 1.0,
rated up 1.5, rated down −1.0, clicked 0.8, …) and by exponential time decay
``0.5 ** (age_days / half_life_days)``, measured from the member's latest interaction (so a member
inactive for years keeps their profile; see :func:`relative_decay`). Negative weights (down-ratings, dismissals) form a centroid
that is subtracted from every interest, pushing similar items away. With enough history the
positive interactions are clustered (weighted spherical k-means) into up to ``max_interests``
centroids so one loud topic does not drown the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEGATIVE_PULL = 0.5  # how hard the down-rated centroid pushes each interest away
MIN_PER_INTEREST = 5  # positive interactions needed per extra interest centroid


@dataclass
class Profile:
    """``interests``: ``(m, dim) float32`` L2-normalised, m in 0..3 (0 = cold start);
    ``shares``: ``(m,)`` share of the member's decayed positive weight per interest (sums to 1);
    ``negative``: ``(dim,)`` L2-normalised centroid of down-rated things, or ``None``."""

    interests: np.ndarray
    shares: np.ndarray
    negative: np.ndarray | None = None

    @property
    def cold(self) -> bool:
        return len(self.interests) == 0

    def similarity(self, vectors: np.ndarray) -> np.ndarray:
        """Content similarity of ``vectors (n, dim)`` to this profile: ``(n,) float32``, the best
        interest's cosine minus ``NEGATIVE_PULL`` × cosine to the negative centroid; zeros when cold
        (:func:`similarity_rows` with one row)."""
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        if self.cold or len(vectors) == 0:
            return np.zeros(len(vectors), np.float32)
        dim = vectors.shape[1]
        neg = self.negative if self.negative is not None else np.zeros(dim, np.float32)
        return similarity_rows(vectors[None], self.interests[None], np.ones((1, len(self.interests)), bool),
                               neg[None], np.array([self.negative is not None]))[0]


def similarity_rows(
    vectors: np.ndarray, interests: np.ndarray, has_interest: np.ndarray, negative: np.ndarray, has_negative: np.ndarray
) -> np.ndarray:
    """:meth:`Profile.similarity` for a batch of members: ``vectors (B, L, dim)`` float32 (row b: the
    candidates of member b), ``interests (B, I, dim)`` with ``has_interest (B, I)`` bool marking the real
    ones, ``negative (B, dim)`` with ``has_negative (B,)`` bool. Returns ``(B, L) float32``; zeros for a
    member with no interest (cold start)."""
    sims = np.matmul(vectors, np.swapaxes(interests, 1, 2))  # (B, L, I)
    best = np.where(has_interest[:, None, :], sims, -np.inf).max(axis=2, initial=-np.inf)
    if has_negative.any():
        pull = np.matmul(vectors, negative[:, :, None])[:, :, 0]
        best = np.where(has_negative[:, None], best - NEGATIVE_PULL * pull, best)
    cold = ~has_interest.any(axis=1)
    return np.where(cold[:, None], 0.0, best).astype(np.float32)


def decayed_weights(weights: np.ndarray, ages_days: np.ndarray, half_life_days: float) -> np.ndarray:
    """``weights × 0.5 ** (age / half_life)`` (ages in days, clipped at 0).

    Absolute decay: interactions a few years old underflow to 0 here; :func:`build_profile` uses
    :func:`relative_decay` instead."""
    ages = np.clip(np.asarray(ages_days, np.float64), 0, None)
    return np.asarray(weights, np.float64) * np.power(0.5, ages / float(half_life_days))


def relative_decay(ages_days: np.ndarray, half_life_days: float) -> np.ndarray:
    """Decay factors ``0.5 ** ((age − min age) / half_life)`` in (0, 1], ``(n,) float64``: the decay is
    measured from the member's latest interaction, not from now, so relative recency still orders a
    member's history but an inactive member keeps a profile (the newest interaction weighs 1; nothing
    underflows to an all-zero, NaN profile). Profiles are scale-free (centroids are L2-normalised,
    shares sum to 1), so this equals decaying from now wherever that does not underflow. Ages in days,
    clipped at 0; non-finite ages count as the oldest."""
    ages = np.clip(np.asarray(ages_days, np.float64), 0, None)
    if len(ages) == 0:
        return ages
    finite = np.isfinite(ages)
    if not finite.any():
        return np.ones(len(ages))
    ages = np.where(finite, ages, ages[finite].max())
    return np.power(0.5, (ages - ages.min()) / float(half_life_days))


def _normalise(m: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(m, axis=-1, keepdims=True)
    return (m / np.where(n > 0, n, 1)).astype(np.float32)


def build_profile(
    vectors: np.ndarray,
    weights: np.ndarray,
    ages_days: np.ndarray,
    *,
    half_life_days: float = 14.0,
    max_interests: int = 1,
) -> Profile:
    """Profile from ``vectors (n, dim)`` (L2-normalised), kind ``weights (n,)`` and ``ages_days (n,)``.

    ``max_interests``: 1 = a single weighted centroid; up to 3 clusters once there are
    ``MIN_PER_INTEREST`` positive interactions per cluster. (Offline on se_beer the single
    centroid and three interests are compared by ``recsys.eval``; see ``recsys.recommend.DEFAULT_MAX_INTERESTS``.)
    """
    vectors = np.asarray(vectors, np.float32)
    dim = vectors.shape[1] if vectors.ndim == 2 else 0
    if len(vectors) == 0:
        return Profile(np.zeros((0, dim), np.float32), np.zeros(0, np.float32))
    raw = np.nan_to_num(np.asarray(weights, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    ages = np.asarray(ages_days, np.float64)
    pos, neg = raw > 0, raw < 0
    # each side decays from its own latest interaction: its newest row weighs |kind weight|, never 0
    negative = None
    if neg.any():
        nw = -raw[neg] * relative_decay(ages[neg], half_life_days)
        negative = _normalise((nw[:, None] * vectors[neg]).sum(0))
    if not pos.any():
        return Profile(np.zeros((0, dim), np.float32), np.zeros(0, np.float32), negative)
    pv, pw = vectors[pos], raw[pos] * relative_decay(ages[pos], half_life_days)
    k = int(min(max_interests, max(1, len(pv) // MIN_PER_INTEREST)))
    labels = _spherical_kmeans(pv, pw, k) if k > 1 else np.zeros(len(pv), int)
    cents, shares = [], []
    for c in range(k):
        sel = labels == c
        if not sel.any():
            continue
        cents.append((pw[sel, None] * pv[sel]).sum(0))
        shares.append(pw[sel].sum())
    interests = _normalise(np.vstack(cents))
    shares_arr = np.asarray(shares, np.float32) / float(np.sum(shares))
    return Profile(interests, shares_arr, negative)


def _spherical_kmeans(x: np.ndarray, w: np.ndarray, k: int, iters: int = 10) -> np.ndarray:
    """Weighted spherical k-means; deterministic farthest-point initialisation from the heaviest row."""
    centres = [x[int(np.argmax(w))]]
    for _ in range(1, k):
        sim = np.max(x @ np.vstack(centres).T, axis=1)
        centres.append(x[int(np.argmin(sim))])
    c = np.vstack(centres)
    labels = np.zeros(len(x), int)
    for _ in range(iters):
        new = np.argmax(x @ c.T, axis=1)
        if _ > 0 and np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            sel = labels == j
            if sel.any():
                c[j] = (w[sel, None] * x[sel]).sum(0)
        c = _normalise(c)
    return labels
