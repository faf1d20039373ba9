"""``bench.eval_ceiling`` on the real se_beer excerpt (tests/fixtures/se_beer_excerpt: Beer Stack
Exchange, CC BY-SA 3.0, beer.stackexchange.com) with the real embedder: its replay is ``campfire
eval``'s, and each ceiling holds what it claims."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.eval_ceiling import ceilings, measure, stable_rank
from recsys.eval import evaluate
from recsys.eval_data import EvalInputError
from recsys.eval_run import rank_of

EXCERPT = Path(__file__).resolve().parents[1] / "fixtures" / "se_beer_excerpt"
FILES = (EXCERPT / "interactions.csv", EXCERPT / "items.jsonl")


@pytest.fixture(scope="module")
def both(embedder):
    return measure(*FILES, boot=200, search=200, embedder=embedder), evaluate(*FILES, embedder=embedder)


def test_its_replay_is_campfire_evals(both):
    res, ev = both
    assert res["users"] == ev["users"] > 0
    assert res["systems"] == {name: v["ndcg"] for name, v in ev["systems"].items()}
    best = max((n for n in ev["systems"] if n != "campfire"), key=lambda n: ev["systems"][n]["ndcg"])
    assert res["best_baseline"] == best
    lo, hi = res["ratio_ci95"]
    assert lo <= hi


def test_ceilings_bound_what_they_say(both):
    res, _ = both
    c = res["ceilings"]
    # the search starts from the fitted logit and keeps only steps that do not lose
    assert c["direct_in_sample"] >= c["logit_in_sample"]
    # per member the better of two lists is never worse than newest-first alone
    assert c["best_of_newest_active"] >= res["systems"]["newest"]
    for name, v in c.items():
        assert 0.0 <= v <= 1.0
        assert res["ceiling_ratios"][name] == pytest.approx(v / res["systems"][res["best_baseline"]], abs=1e-3)


def test_a_feature_that_names_the_item_reaches_one_and_ties_keep_order():
    rng = np.random.default_rng(0)
    x, pos = [], []
    for _ in range(20):
        f = rng.normal(size=(15, 3))
        p = int(rng.integers(15))
        f[:, 1] = 0.0
        f[p, 1] = 1.0
        x.append(f)
        pos.append(p)
    assert ceilings(x, pos, k=1, search=0, seed=0)["logit_in_sample"] == 1.0
    assert stable_rank(np.array([0.5, 0.9, 0.5, 0.5]), 2) == 3  # the tie at 0 comes first
    assert stable_rank(np.array([0.5, 0.9, 0.5, 0.5]), 0) == 2
    tied = np.array([0.5, 0.9, 0.5, 0.5, 0.1, 0.9])
    assert [stable_rank(tied, p) for p in range(6)] == [rank_of(tied, np.arange(6.0), p)[0] for p in range(6)]


def test_an_export_with_nobody_to_hold_out_is_a_clear_error(tmp_path, embedder):
    csv_path = tmp_path / "interactions.csv"
    csv_path.write_text("user_id,question_id,kind,timestamp\n7,1,ask,2014-01-21T20:26:05\n")
    with pytest.raises(EvalInputError, match="no member can be held out"):
        measure(csv_path, FILES[1], embedder=embedder)
