"""How well :func:`recsys.conversations.build_conversations` finds conversations
(``python -m bench.conversations [--json] [FILES…]``).

Data: the ``ubuntu_irc`` exports of ``../shared/data/chat/`` — real #ubuntu IRC logs whose last ~200
lines carry human-annotated reply links (``type: "Reply"`` + ``reference.messageId``; Kummerfeld et
al., ACL 2019, "A Large-Scale Corpus for Conversation Disentanglement", CC BY 4.0). Each file is read
with the importer's reader (:func:`recsys.dce.read_export`), every ``reference`` is removed from the
input (``reply_to=None``), conversations are built, and the annotated links score them:

* **link recall**: share of annotated links (both messages in the file) whose two messages land in
  the same conversation;
* **pairwise precision / recall / F1** over the annotated span (from the first annotated line to the
  end of the file): the pairs of lines put in one conversation, against the pairs in one connected
  component of the annotated reply graph (a line outside every conversation is alone); precision is
  what a builder that merges everything cannot fake;
* conversation sizes (lines: mean, median, max) and the share of lines in conversations.

Two trivial builders are scored the same way so that merging is never mistaken for skill:
``gap`` (every run of lines with no pause over ``GAP_S`` is one conversation) and ``none`` (no
conversations). Figures are per file and overall (links and pairs summed over files).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from recsys.conversations import GAP_S, ChatLine, build_conversations
from recsys.dce import CONTENT_TYPES, read_export

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "chat" / "ubuntu_irc"

Builder = Callable[[Sequence[ChatLine], dict[int, str]], list[tuple[int, ...]]]


def load(path: Path) -> tuple[list[ChatLine], dict[int, str], list[tuple[int, int]]]:
    """``(lines without their references, member id -> name, annotated links (message, target))``
    of one export; bots' lines and non-content messages left out."""
    exp = read_export(path)
    names = {mid: name for mid, (name, _bot, _roles) in exp.members.items()}
    msgs = [m for m in exp.messages if m.type in CONTENT_TYPES and m.author_id not in exp.bots]
    ids = {m.id for m in msgs}
    links = [(m.id, m.reply_to) for m in msgs if m.reply_to in ids and m.reply_to != m.id]
    lines = [ChatLine(m.id, exp.channel_id, m.author_id, m.created_at, m.text, None, m.mention_ids) for m in msgs]
    return lines, names, links


def campfire(lines: Sequence[ChatLine], names: dict[int, str]) -> list[tuple[int, ...]]:
    return [c.message_ids for c in build_conversations(lines, names)]


def by_gap(lines: Sequence[ChatLine], names: dict[int, str]) -> list[tuple[int, ...]]:
    """Trivial: consecutive lines no more than ``GAP_S`` apart are one conversation."""
    groups: list[list[int]] = []
    last = None
    for ln in sorted(lines, key=lambda ln: (ln.created_at, ln.id)):
        if last is None or ln.created_at - last > GAP_S:
            groups.append([])
        groups[-1].append(ln.id)
        last = ln.created_at
    return [tuple(g) for g in groups if len(g) >= 2]


def nothing(lines: Sequence[ChatLine], names: dict[int, str]) -> list[tuple[int, ...]]:
    """Trivial: no conversations."""
    return []


BUILDERS: dict[str, Builder] = {"campfire": campfire, "gap": by_gap, "none": nothing}


def _components(ids: Sequence[int], links: Sequence[tuple[int, int]]) -> dict[int, int]:
    parent = {i: i for i in ids}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in links:
        if a in parent and b in parent:
            parent[find(a)] = find(b)
    return {i: find(i) for i in ids}


def _pairs(label: dict[int, int]) -> int:
    sizes: dict[int, int] = {}
    for v in label.values():
        sizes[v] = sizes.get(v, 0) + 1
    return sum(n * (n - 1) // 2 for n in sizes.values())


def score(lines: Sequence[ChatLine], links: Sequence[tuple[int, int]], groups: Sequence[Sequence[int]]) -> dict:
    """Counts and figures of one builder's ``groups`` (message ids) on one file."""
    conv = {i: g[0] for g in groups for i in g}
    kept = sum(1 for a, b in links if a in conv and conv[a] == conv.get(b))
    order = sorted(lines, key=lambda ln: (ln.created_at, ln.id))
    linked = {a for a, _ in links}
    start = next(k for k, ln in enumerate(order) if ln.id in linked)
    span = [ln.id for ln in order[start:]]
    gold = _components(span, links)
    pred = {i: conv.get(i, -i) for i in span}
    both = {i: (gold[i], pred[i]) for i in span}
    sizes = [len(g) for g in groups]
    return {"links": len(links), "links_kept": kept, "pairs_gold": _pairs(gold), "pairs_pred": _pairs(pred),
            "pairs_both": _pairs(both), "lines": len(lines), "lines_in": len(conv), "sizes": sizes}


def figures(c: dict) -> dict:
    """Rates from summed counts: link recall, pairwise precision / recall / F1, sizes, lines covered."""
    p = c["pairs_both"] / c["pairs_pred"] if c["pairs_pred"] else 0.0
    r = c["pairs_both"] / c["pairs_gold"] if c["pairs_gold"] else 0.0
    sizes = c["sizes"]
    return {"link_recall": round(c["links_kept"] / max(1, c["links"]), 3), "pair_precision": round(p, 3),
            "pair_recall": round(r, 3), "pair_f1": round(2 * p * r / (p + r), 3) if p + r else 0.0,
            "conversations": len(sizes), "size_mean": round(statistics.fmean(sizes), 1) if sizes else 0.0,
            "size_median": statistics.median(sizes) if sizes else 0, "size_max": max(sizes, default=0),
            "lines_in_conversations": round(c["lines_in"] / max(1, c["lines"]), 3), "links": c["links"]}


def run(paths: Sequence[Path]) -> dict:
    """``{"files": {name: {builder: figures}}, "overall": {builder: figures}, "seconds": {builder: s}}``."""
    out: dict = {"files": {}, "overall": {}, "seconds": {}}
    totals: dict[str, dict] = {}
    for path in paths:
        lines, names, links = load(path)
        out["files"][path.name] = {}
        for name, build in BUILDERS.items():
            t0 = time.perf_counter()
            groups = build(lines, names)
            out["seconds"][name] = out["seconds"].get(name, 0.0) + time.perf_counter() - t0
            counts = score(lines, links, groups)
            out["files"][path.name][name] = figures(counts)
            total = totals.setdefault(name, {k: ([] if k == "sizes" else 0) for k in counts})
            for k, v in counts.items():
                total[k] += v
    out["overall"] = {name: figures(c) for name, c in totals.items()}
    out["seconds"] = {k: round(v, 3) for k, v in out["seconds"].items()}
    return out


def _table(rows: dict[str, dict]) -> str:
    cols = ["link_recall", "pair_precision", "pair_recall", "pair_f1", "conversations", "size_mean", "size_median",
            "size_max", "lines_in_conversations"]
    head = f"{'':>10} " + " ".join(f"{c[:14]:>14}" for c in cols)
    return "\n".join([head] + [f"{name:>10} " + " ".join(f"{f[c]:>14}" for c in cols) for name, f in rows.items()])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="DCE exports with Reply links (default: every ubuntu_irc file)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    paths = args.files or sorted(DATA.glob("*.json"))
    if not paths:
        print(f"no exports in {DATA}", file=sys.stderr)
        return 2
    result = run(paths)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for name, rows in result["files"].items():
        print(f"{name} ({rows['campfire']['links']} annotated links)\n{_table(rows)}\n")
    print(f"overall ({result['overall']['campfire']['links']} annotated links)\n{_table(result['overall'])}")
    print(f"build time (s, all files): {result['seconds']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
