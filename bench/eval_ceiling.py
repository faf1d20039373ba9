"""How far can Campfire's ranker beat the best baseline on this export? (``python -m bench.eval_ceiling``)

``campfire eval`` says where Campfire stands; this says what its ranker *could* reach on the same
export, so that a target such as "NDCG@10 ≥ 1.1 × the best baseline" can be judged reachable or not
before anyone tunes for it. One replay of :class:`recsys.eval_run.Run` (the ``others`` protocol by
default), which also records, per held-out interaction, the ranker's features of every candidate at
that moment (:func:`recsys.pipeline.row_features`, the production inputs). Then:

1. ``campfire`` and the baselines, as ``campfire eval`` prints them, and Campfire ÷ the best
   baseline with a 95 % percentile-bootstrap interval over the held-out members (Efron 1979;
   ``--boot`` resamples, seeded): how much of the difference is the sample.
2. Ceilings of the ranker family, each *fitted on the held-out interactions themselves* (cheating on
   purpose: no honest refit of a linear ranker over :data:`recsys.rank.FEATURES` can score above
   them, up to the search's reach):
   - ``logit_in_sample``: the conditional logit (:func:`recsys.rank.fit_ranker`, McFadden 1973) fitted
     on the held-out events, ranking them without MMR;
   - ``direct_in_sample``: a seeded random coordinate search over the same linear weights that
     maximises the held-out NDCG@k itself (``--search`` steps, from the fitted logit);
   - ``best_of_newest_active``: per held-out interaction the better of newest-first and
     most-recently-active first (an oracle that knows which list each member browses).
3. Campfire without MMR (the same replay, the ranker's own order at each moment): what the
   diversity of the top k costs the metric.

Read the ratios (÷ the best baseline), not the absolutes. The CPU time is one ``campfire eval`` plus a
few seconds.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from recsys.eval import holdouts  # noqa: E402
from recsys.eval_data import EvalInputError, item_vectors, load_dataset  # noqa: E402
from recsys.eval_run import BASELINES, Run, ndcg_at  # noqa: E402
from recsys.pipeline import DEFAULT_MAX_INTERESTS, rank_rows, row_features  # noqa: E402
from recsys.rank import fit_ranker  # noqa: E402

if TYPE_CHECKING:
    from recsys.embed import Embedder

ROOT = Path(__file__).resolve().parent.parent
SE_BEER = ROOT.parent / "shared" / "data" / "recsys" / "se_beer"


class CeilingRun(Run):
    """:class:`Run` that keeps, per held-out interaction, the features ``(C, F)`` of its candidates
    (in tie-break order, as Campfire ranks them), the held-out item's position among them, and its
    1-based ranks by newest-first and by most-recent activity (ties by that order)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.held_x: list[np.ndarray] = []
        self.held_pos: list[int] = []
        self.newest_rank: list[int] = []
        self.active_rank: list[int] = []
        self.no_mmr_rank: list[int] = []

    def _campfire(self, u: int, cands: np.ndarray, target: int, now: float) -> tuple[int, np.ndarray]:
        inputs = self.hist.campfire_inputs(u, cands, now, **self.profile_args)
        pos = int(np.flatnonzero(cands == target)[0])
        self.held_x.append(row_features(**inputs)[0])
        self.held_pos.append(pos)
        self.newest_rank.append(stable_rank(inputs["created"][0], pos))
        self.active_rank.append(stable_rank(inputs["active"][0], pos))
        self.no_mmr_rank.append(stable_rank(rank_rows(self.current_ranker(now), **inputs)[0], pos))
        return super()._campfire(u, cands, target, now)


def stable_rank(scores: np.ndarray, pos: int) -> int:
    """1-based rank of ``scores[pos]`` by descending score, ties by position: the rank
    :func:`recsys.eval_run.rank_of` gives with the positions as tie-break, counted in O(n) instead of a
    sort (the direct search ranks every held-out member thousands of times)."""
    s = np.asarray(scores, np.float64)
    return int(np.sum(s > s[pos]) + np.sum(s[:pos] == s[pos]) + 1)


def linear_ndcg(z: list[np.ndarray], pos: list[int], w: np.ndarray, k: int) -> float:
    """Mean NDCG@k of the linear scores ``z_i @ w`` (one relevant item per row at ``pos``)."""
    ranks = [stable_rank(zi @ w, p) for zi, p in zip(z, pos, strict=True)]
    return float(np.mean(ndcg_at(np.array(ranks), k)))


def ceilings(x: list[np.ndarray], pos: list[int], k: int, search: int, seed: int) -> dict[str, float]:
    """``logit_in_sample`` and ``direct_in_sample`` (module docstring) over held-out features ``x``."""
    groups = np.concatenate([np.full(len(xi), g) for g, xi in enumerate(x)])
    y = np.concatenate([(np.arange(len(xi)) == p).astype(np.float64) for xi, p in zip(x, pos, strict=True)])
    fitted = fit_ranker(np.vstack(x), y, groups)
    mean, std = np.asarray(fitted.mean), np.asarray(fitted.std)
    z = [(xi - mean) / std for xi in x]
    w = np.asarray(fitted.weights)
    logit = best = linear_ndcg(z, pos, w, k)
    rng = np.random.default_rng(seed)
    for _ in range(search):
        step = rng.normal(0.0, 0.15, len(w)) * (rng.random(len(w)) < 0.3)
        value = linear_ndcg(z, pos, w + step, k)
        if value >= best:
            best, w = value, w + step
    return {"logit_in_sample": round(logit, 4), "direct_in_sample": round(best, 4)}


def bootstrap_ratio(gain: np.ndarray, base: np.ndarray, n: int, seed: int) -> list[float]:
    """95 % percentile-bootstrap interval of ``mean(gain) / mean(base)`` over resampled members."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(gain), (n, len(gain)))
    ratios = gain[idx].mean(1) / np.maximum(base[idx].mean(1), 1e-12)
    return [round(float(v), 3) for v in np.percentile(ratios, [2.5, 97.5])]


def measure(interactions: Path, items: Path, *, k: int = 10, protocol: str = "others", boot: int = 5000,
            search: int = 3000, seed: int = 20261202, embedder: Embedder | None = None) -> dict:
    """Run the replay and every figure of the module docstring; returns the ``--json`` object.
    ``embedder`` defaults to the packaged all-MiniLM-L6-v2. Raises
    :class:`recsys.eval_data.EvalInputError` on unreadable input."""
    if embedder is None:
        from recsys.embed import Embedder

        embedder = Embedder()
    ds = load_dataset(interactions, items)
    vecs = item_vectors(ds, items, embedder)
    held = holdouts(ds, protocol)
    if not held:
        raise EvalInputError(f"{interactions}: no member can be held out under --protocol {protocol} "
                             "(each needs 3 interactions or more): nothing to measure")
    run = CeilingRun(ds, vecs, k=k, protocol=protocol, half_life_days=14.0, max_interests=DEFAULT_MAX_INTERESTS,
                     mmr_lambda=0.7)
    run.replay(held)
    systems = run.metrics(len(held))
    best = max(BASELINES, key=lambda s: systems[s]["ndcg"])
    gains = {s: ndcg_at(np.array([r for r, _ in run.results[s]], np.float64), k) for s in ("campfire", best)}
    no_mmr = float(ndcg_at(np.array(run.no_mmr_rank), k).mean())
    oracle = ndcg_at(np.minimum(run.newest_rank, run.active_rank), k).mean()
    base = systems[best]["ndcg"]
    ceil = ceilings(run.held_x, run.held_pos, k, search, seed)
    ceil["best_of_newest_active"] = round(float(oracle), 4)
    return {
        "k": k, "protocol": protocol, "users": len(held), "best_baseline": best,
        "systems": {s: v["ndcg"] for s, v in systems.items()},
        "ratio": round(systems["campfire"]["ndcg"] / base, 3),
        "ratio_ci95": bootstrap_ratio(gains["campfire"], gains[best], boot, seed),
        "campfire_without_mmr": round(no_mmr, 4),
        "ceilings": ceil,
        "ceiling_ratios": {name: round(v / base, 3) for name, v in ceil.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.eval_ceiling", description=__doc__.split("\n")[0])
    ap.add_argument("--interactions", type=Path, default=SE_BEER / "interactions.csv")
    ap.add_argument("--items", type=Path, default=SE_BEER / "items.jsonl")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--protocol", choices=("others", "time", "static"), default="others")
    ap.add_argument("--boot", type=int, default=5000, help="bootstrap resamples (default 5000)")
    ap.add_argument("--search", type=int, default=3000, help="direct-search steps (default 3000)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.k < 1 or a.boot < 1 or a.search < 0:
        ap.error("--k and --boot must be at least 1, --search at least 0")
    try:
        res = measure(a.interactions, a.items, k=a.k, protocol=a.protocol, boot=a.boot, search=a.search)
    except EvalInputError as exc:
        ap.error(str(exc))
    if a.json:
        print(json.dumps(res))
        return 0
    print(f"protocol={res['protocol']}  held-out members={res['users']}  NDCG@{res['k']}")
    for name, v in res["systems"].items():
        print(f"  {name:<32}{v:.4f}")
    lo, hi = res["ratio_ci95"]
    print(f"campfire ÷ {res['best_baseline']}: {res['ratio']:.3f} (95% bootstrap {lo:.3f}–{hi:.3f})")
    print(f"  {'campfire without MMR':<32}{res['campfire_without_mmr']:.4f}")
    for name, v in res["ceilings"].items():
        label = f"ceiling {name}"
        print(f"  {label:<32}{v:.4f}  ({res['ceiling_ratios'][name]:.3f} × {res['best_baseline']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
