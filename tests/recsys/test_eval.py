"""Offline evaluation on the real se_beer data (Beer Stack Exchange, CC BY-SA 3.0) with the real embedder."""

from __future__ import annotations

import json

import pytest

from recsys.eval import SYSTEMS, EvalInputError, evaluate, format_table
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def results(embedder):
    folder = shared_data("recsys", "se_beer")
    args = (folder / "interactions.csv", folder / "items.jsonl")
    return {p: evaluate(*args, k=10, protocol=p, embedder=embedder) for p in ("time", "static")}


def test_json_shape_and_ranges(results):
    for protocol, r in results.items():
        assert set(r) == {"k", "protocol", "users", "items", "systems"}
        assert (r["k"], r["protocol"], r["users"], r["items"]) == (10, protocol, 163, 663)
        assert list(r["systems"]) == list(SYSTEMS)
        for name, m in r["systems"].items():
            assert set(m) == {"recall", "ndcg", "mrr", "coverage"}, name
            assert all(0.0 <= v <= 1.0 for v in m.values()), (name, m)
            assert m["ndcg"] <= m["recall"] + 1e-9
        json.dumps(r)


def test_newest_dominates_se_beer_and_campfire_beats_every_baseline_over_time(results):
    s = results["time"]["systems"]
    # the community's character, as measured when the task was filed (newest ≈ 0.72, popularity/item-kNN < 0.1)
    assert 0.65 < s["newest"]["ndcg"] < 0.78
    assert s["popularity"]["ndcg"] < 0.1 and s["item_knn"]["ndcg"] < 0.1
    for name in SYSTEMS[1:]:
        assert s["campfire"]["ndcg"] > s[name]["ndcg"], (name, s)
        assert s["campfire"]["recall"] >= s[name]["recall"], (name, s)


def test_table_lists_all_five_systems(results):
    for protocol, r in results.items():
        table = format_table(r)
        assert f"protocol={protocol}" in table and "NDCG@10" in table and "Recall@10" in table
        for name in SYSTEMS:
            assert any(line.startswith(name) for line in table.splitlines()), name


def test_bad_input_is_a_clear_error(tmp_path, embedder):
    items = tmp_path / "items.jsonl"
    items.write_text('{"question_id": "1", "title": "t", "body_text": "b", "created": "2015-01-01T00:00:00"}\n{oops\n')
    inter = tmp_path / "interactions.csv"
    inter.write_text("user_id,question_id,kind,timestamp\n1,1,ask,2015-01-01T00:00:00\n")
    with pytest.raises(EvalInputError, match=r"items.jsonl:2"):
        evaluate(inter, items, embedder=embedder)
    with pytest.raises(EvalInputError, match="file not found"):
        evaluate(tmp_path / "missing.csv", items, embedder=embedder)
    with pytest.raises(ValueError, match="protocol"):
        evaluate(inter, items, protocol="random", embedder=embedder)
