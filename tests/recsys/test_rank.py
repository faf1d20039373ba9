"""The row-batched ranking helpers the single-member path and the digest share (plain numpy)."""

from __future__ import annotations

import numpy as np

from recsys.rank import (
    DEFAULT_RANKER,
    FEATURES,
    count_greater,
    count_greater_rows,
    feature_matrix,
    mmr,
    mmr_rows,
)


def greedy_mmr(rel: list[float], vecs: np.ndarray, k: int, lam: float) -> list[int]:
    """MMR written out plainly (Carbonell & Goldstein 1998), relevance min-max scaled."""
    lo, hi = min(rel), max(rel)
    scaled = [(r - lo) / (hi - lo) if hi > lo else 1.0 for r in rel]
    chosen: list[int] = []
    while len(chosen) < min(k, len(rel)):
        def value(i: int) -> float:
            penalty = max((float(vecs[i] @ vecs[j]) for j in chosen), default=0.0)
            return lam * scaled[i] - (1 - lam) * penalty
        chosen.append(max((i for i in range(len(rel)) if i not in chosen), key=lambda i: (value(i), -i)))
    return chosen


def test_count_greater_rows_matches_count_greater_per_row_with_ties_and_gaps():
    rng = np.random.default_rng(3)
    values = rng.integers(0, 6, (5, 12)).astype(float)  # many ties
    valid = rng.random((5, 12)) > 0.3
    got = count_greater_rows(values, valid)
    for r in range(5):
        ref = values[r][valid[r]]
        assert got[r][valid[r]].tolist() == count_greater(ref, ref).tolist()


def test_mmr_rows_matches_plain_mmr_and_skips_invalid_entries():
    rng = np.random.default_rng(4)
    vecs = rng.normal(size=(3, 9, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=2, keepdims=True)
    vecs[0, 1] = vecs[0, 0]  # a duplicate: MMR must not take both first
    rel = rng.random((3, 9))
    rel[0, :2] = (1.0, 0.95)  # the best two are the same vector
    valid = np.ones((3, 9), bool)
    valid[2, 4:] = False  # row 2 has only 4 candidates
    got = mmr_rows(rel, vecs, valid, 5, 0.6)
    for r in range(3):
        idx = np.flatnonzero(valid[r])
        expect = [int(idx[i]) for i in greedy_mmr(rel[r, idx].tolist(), vecs[r, idx], 5, 0.6)]
        assert [int(x) for x in got[r] if x >= 0] == expect
    assert got[2].tolist()[4:] == [-1]  # fewer candidates than k
    assert 1 not in got[0, :2].tolist()
    assert mmr(rel[1], vecs[1], 5, 0.6) == got[1].tolist()
    assert mmr(rel[1], vecs[1], 3, 1.0) == np.argsort(-rel[1], kind="stable")[:3].tolist()


def test_feature_matrix_of_a_batch_equals_each_row_alone():
    rng = np.random.default_rng(5)
    shape = (3, 7)
    cols = {name: rng.random(shape) * scale for name, scale in
            (("content", 1), ("neighbour", 1), ("age_s", 1e6), ("newer_count", 50), ("idle_s", 1e6),
             ("busier_count", 50), ("popularity", 9), ("trending", 3), ("rating", 4))}
    created = 1e9 + rng.random(shape) * 1e6
    last_seen = np.array([[1e9 + 5e5], [-np.inf], [2e9]])
    cols["popularity"] = np.floor(cols["popularity"])  # counts, some 0: unanswered
    batch = feature_matrix(**cols, created=created, last_seen=last_seen, rate=0.01)
    assert batch.shape == (3, 7, len(FEATURES))
    for r in range(3):
        one = feature_matrix(**{k: v[r] for k, v in cols.items()}, created=created[r],
                             last_seen=None if np.isneginf(last_seen[r, 0]) else float(last_seen[r, 0]), rate=0.01)
        np.testing.assert_array_equal(batch[r], one)
    assert batch[1, :, 6].all() and not batch[2, :, 6].any()  # "unseen": never / all before last seen
    unanswered = batch[..., FEATURES.index("unanswered")]
    assert unanswered.any() and not unanswered.all()
    np.testing.assert_array_equal(unanswered, cols["popularity"] == 0)  # nobody but the author engaged yet
    np.testing.assert_allclose(batch[..., FEATURES.index("popularity")], np.log1p(cols["popularity"]))


def test_default_ranker_covers_every_feature_and_prefers_unanswered_fresh_items():
    assert len(DEFAULT_RANKER.weights) == len(DEFAULT_RANKER.mean) == len(DEFAULT_RANKER.std) == len(FEATURES)
    w = DEFAULT_RANKER.as_dict()
    # fitted on se_beer's `others` protocol: similar, unanswered, newer items score higher
    assert w["content"] > 0 and w["unanswered"] > 0 and w["log_rank"] < 0
