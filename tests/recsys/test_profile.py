"""Profiles from old history, on real all-MiniLM-L6-v2 vectors of real Beer Stack Exchange questions
(../shared/data/recsys/se_beer, CC BY-SA 3.0, beer.stackexchange.com)."""

from __future__ import annotations

import warnings

import numpy as np

from recsys.profile import build_profile, relative_decay
from tests.recsys.test_recommend import se_beer

YEAR = 365.0


def _vectors(embedder, tag: str, n: int, exclude: tuple[str, ...] = ()) -> np.ndarray:
    return embedder.encode([r["title"] for r in se_beer(tag, n, exclude=exclude)])


def test_years_old_history_keeps_a_profile_and_relative_recency(embedder):
    hops = _vectors(embedder, "hops", 4)
    history = _vectors(embedder, "history", 4, exclude=("hops",))
    vecs = np.vstack([hops, history])
    weights = np.ones(len(vecs))
    # the hops interactions are the member's latest, 8 years ago; the history ones 90 days before that
    ages = np.r_[np.full(4, 8 * YEAR), np.full(4, 8 * YEAR + 90)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "invalid value encountered in divide" must not come back
        prof = build_profile(vecs, weights, ages, half_life_days=14.0, max_interests=1)
    assert not prof.cold
    assert np.all(np.isfinite(prof.interests)) and np.all(np.isfinite(prof.shares))
    assert abs(float(np.linalg.norm(prof.interests[0])) - 1.0) < 1e-5
    # relative recency still matters: the profile leans to what the member did last
    sims = prof.similarity(vecs)
    assert sims[:4].mean() > sims[4:].mean() + 0.1
    # the same history seen today gives the same profile (decay is measured from the latest interaction)
    fresh = build_profile(vecs, weights, ages - 8 * YEAR, half_life_days=14.0, max_interests=1)
    np.testing.assert_allclose(prof.interests, fresh.interests, atol=1e-6)


def test_old_down_ratings_and_multi_interest_stay_finite(embedder):
    vecs = np.vstack([_vectors(embedder, "hops", 6), _vectors(embedder, "glassware", 6, exclude=("hops",)),
                      _vectors(embedder, "history", 2, exclude=("hops", "glassware"))])
    weights = np.r_[np.ones(12), -1.0, -1.0]
    ages = np.r_[np.full(12, 20 * YEAR), np.full(2, 3 * YEAR)]  # the down-ratings are much newer
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prof = build_profile(vecs, weights, ages, half_life_days=14.0, max_interests=3)
    assert len(prof.interests) == 2 and prof.negative is not None
    assert np.all(np.isfinite(prof.interests)) and np.all(np.isfinite(prof.negative))
    assert abs(float(prof.shares.sum()) - 1.0) < 1e-5
    assert np.all(np.isfinite(prof.similarity(vecs)))


def test_relative_decay():
    d = relative_decay(np.array([1000.0, 1014.0, 1028.0, np.inf]), 14.0)
    np.testing.assert_allclose(d, [1.0, 0.5, 0.25, 0.25])
    assert relative_decay(np.zeros(0), 14.0).shape == (0,)
