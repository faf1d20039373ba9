"""Offline evaluation (``campfire eval``): Campfire's ranker against five baselines, same run, same split.

Input: the se_beer format (:mod:`recsys.eval_data`); the replay: :mod:`recsys.eval_run`; its state
and every system's inputs: :mod:`recsys.eval_history`.

Protocols
- ``others`` (default; what a recommendation is): for every user with ≥ 3 interactions, hold out
  their last interaction with an item *someone else authored* (on Stack Exchange: their last answer
  to another member's question; time t). History is every interaction of every user strictly before
  t; candidates are all items created at or before t that the user neither authored nor interacted
  with — for every system. The ranker trains only on such interactions too.
- ``time``: hold out each user's last interaction, whatever it was (on se_beer 31 % of them are the
  user asking their own new question, which "newest first" ranks first); candidates are all items
  created at or before t the user had not interacted with.
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
  ``recsys.rank.neighbour_scores``, freshness, popularity and answeredness, trending, the items'
  ratings and the guild's pace) — with a conditional-logit ranker (``recsys.rank.fit_ranker``)
  refitted as history grows on examples made only from interactions before t (each event: the
  chosen item against every other candidate at that moment); the whole candidate set is scored
  (production adds a FAISS candidate stage before this).
- ``newest``: newest first. ``popularity``: most interactions in history.
- ``item_knn``: item–item cosine over co-occurrence in history, summed over the user's items.
- ``content``: cosine to the mean embedding of the user's history.
- ``content_recent``: cosine to the exponentially time-decayed mean of the user's history
  embeddings; its half-life is the best of :data:`recsys.eval_run.HALF_LIVES` by NDCG@K on the
  training events before t (a validation slice inside the history, never the held-out ones).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.eval_data import EvalInputError, item_vectors, load_dataset
from recsys.eval_run import HALF_LIVES, SYSTEMS, Run
from recsys.pipeline import DEFAULT_MAX_INTERESTS
from recsys.rank import FEATURES

if TYPE_CHECKING:
    from recsys.embed import Embedder

__all__ = ["PROTOCOLS", "SYSTEMS", "EvalInputError", "evaluate", "format_table", "load_dataset", "main"]

PROTOCOLS = ("others", "time", "static")


def holdouts(ds, protocol: str) -> list[int]:
    """Event indices held out, one per user with ≥ 3 interactions (events are in time order, file
    order breaking ties): under ``others`` their last interaction with an item someone else
    authored (users with none are left out), otherwise their last interaction."""
    author = ds.author if ds.author is not None else np.full(len(ds.item_ids), -1, np.int64)
    per_user: dict[int, list[int]] = defaultdict(list)
    for e in range(len(ds.ts)):
        per_user[int(ds.users[e])].append(e)
    out = []
    for u, evs in per_user.items():
        if len(evs) < 3:
            continue
        if protocol == "others":
            evs = [e for e in evs if author[ds.items[e]] != u]
        if evs:
            out.append(evs[-1])
    return sorted(out)


def evaluate(
    interactions_csv: str | Path,
    items_jsonl: str | Path,
    *,
    k: int = 10,
    protocol: str = "others",
    embedder: Embedder | None = None,
    half_life_days: float = 14.0,
    max_interests: int = DEFAULT_MAX_INTERESTS,
    mmr_lambda: float = 0.7,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the evaluation; returns ``{"k", "protocol", "users", "items", "systems": {name: {"recall",
    "ndcg", "mrr", "coverage"}}}`` (the ``campfire eval --json`` object). ``embedder`` defaults to the
    packaged all-MiniLM-L6-v2. ``details`` (optional dict) receives the last fitted ranker's weights,
    timings, the count of held-out interactions whose item was not a candidate, the held-out event
    indices, each system's ranks and top k (item indices), content_recent's half-life per held-out
    interaction and, when it holds ``keep_candidates=True`` on the way in, every system's candidate
    set per held-out interaction (item indices).
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
    held = holdouts(ds, protocol)
    if not held:
        raise EvalInputError(f"{interactions_csv}: no user has 3 interactions or more"
                             + (" with one on an item someone else wrote" if protocol == "others" else "")
                             + ": nothing to hold out and evaluate")
    run = Run(ds, vecs, k=k, protocol=protocol, half_life_days=half_life_days, max_interests=max_interests,
              mmr_lambda=mmr_lambda, keep_candidates=details is not None and bool(details.get("keep_candidates")))
    run.replay(held)
    systems = run.metrics(len(held))
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
            top={sname: [top.tolist() for _, top in run.results[sname]] for sname in SYSTEMS},
            holdouts=held,
            candidates=run.candidates,
            half_lives=run.half_lives_used,
            half_life_grid=list(HALF_LIVES),
            features=list(FEATURES),
        )
    return {"k": k, "protocol": protocol, "users": len(held), "items": len(ds.item_ids),
            "skipped_rows": ds.skipped_rows, "systems": systems}


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
    ap.add_argument("--protocol", choices=PROTOCOLS + ("all",), default="others")
    ap.add_argument("--interests", type=int, default=DEFAULT_MAX_INTERESTS)
    ap.add_argument("--half-life", type=float, default=14.0)
    ap.add_argument("--mmr-lambda", type=float, default=0.7)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--print-ranker", action="store_true")
    a = ap.parse_args(argv)
    from recsys.embed import Embedder

    emb = Embedder()
    for proto in PROTOCOLS if a.protocol == "all" else (a.protocol,):
        det: dict[str, Any] = {}
        res = evaluate(a.interactions, a.items, k=a.k, protocol=proto, embedder=emb, max_interests=a.interests,
                       half_life_days=a.half_life, mmr_lambda=a.mmr_lambda, details=det)
        print(json.dumps(res) if a.json else format_table(res))
        if a.print_ranker:
            print(json.dumps(det))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
