"""What a dry-run digest hands out, read against issue 11's targets (``python -m bench.digest_quality``).

Input: a data dir with imported exports (``campfire import PATH --data-dir DIR``) and the JSON of
``campfire digest --dry-run --all-members --json --data-dir DIR`` (a file, or run here with ``--run``).
Computed from the JSON and the store (``campfire.db``, read only):

- ``own_message_picks``: picks that cover a message of the member's own (the pick's ``message_ids``
  against ``chat_lines.author_id``, or an item they authored) — target 0;
- ``conversation_share``: of the chat picks (kind ``conversation`` / ``thread`` / ``message``), the
  share that are conversations or threads with ≥ 2 participants — target ≥ 90%;
- ``low_substance_share``: picks whose text, or whose title, is low-substance
  (:func:`recsys.substance.is_low_substance`: greetings, thanks, bot triggers, bare links) — target ≤ 2%;
- ``max_item_share``: the largest share of members' lists one item is in — target ≤ 5%;
- ``bot_picks``: picks covering a line of a bot (members flagged bot, or authors answering ``!``
  triggers: :func:`recsys.conversations.bot_authors` over the stored lines) whose other lines are all
  low-substance — a trigger and its factoid answer; ``monologue_picks``: one member's lines typed in
  a row, picked as one item;

then prints 20 members' picks (title and reason) for a person to read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHAT_KINDS = ("conversation", "thread", "message")
TARGETS = {"own_message_picks": ("==", 0), "conversation_share": (">=", 0.9), "low_substance_share": ("<=", 0.02),
           "max_item_share": ("<=", 0.05)}


async def measure(data_dir: Path, doc: list[dict[str, Any]]) -> dict[str, Any]:
    """The four figures (module docstring) for the digest JSON ``doc`` of the data dir ``data_dir``."""
    from campfire.config import Settings
    from recsys.conversations import ChatLine, bot_authors
    from recsys.store import Store
    from recsys.substance import is_low_substance

    settings = Settings(data_dir=data_dir)
    async with Store.connect(settings.db_path) as store:
        picks = [(mp["guild_id"], mp["member_id"], p) for mp in doc for p in mp["picks"]]
        items = await store.get_items({p["item_id"] for _, _, p in picks})
        authors: dict[int, int] = {}
        texts: dict[int, str] = {}
        bots: set[int] = set()
        for gid in {g for g, _, _ in picks}:
            bots |= await store.bot_ids(gid) if hasattr(store, "bot_ids") else set()
            for channel in await store.chat_channels(gid):
                lines = await store.chat_lines(gid, channel)
                authors.update({ln["message_id"]: ln["author_id"] for ln in lines})
                texts.update({ln["message_id"]: ln["text"] for ln in lines})
                bots |= bot_authors([ChatLine(ln["message_id"], channel, ln["author_id"], ln["created_at"], ln["text"])
                                     for ln in lines])
    own = low = chat = convs = bot = mono = 0
    kinds: Counter[str] = Counter()
    per_item: Counter[int] = Counter()
    for _, member, p in picks:
        item = items.get(p["item_id"])
        kinds[p.get("kind", "?")] += 1
        per_item[p["item_id"]] += 1
        covered = p.get("message_ids") or []
        if any(authors.get(m) == member for m in covered) or (item is not None and item.author_id == member):
            own += 1
        if item is not None and (is_low_substance(item.text) or (item.title and is_low_substance(item.title))):
            low += 1
        if any(authors.get(m) in bots for m in covered):
            bot += all(is_low_substance(texts.get(m, "")) for m in covered if authors.get(m) not in bots)
        mono += bool(item is not None and (item.meta or {}).get("monologue"))
        if p.get("kind") in CHAT_KINDS:
            chat += 1
            convs += p["kind"] in ("conversation", "thread") and p.get("participants", 0) >= 2
    members = len(doc)
    return {
        "members": members, "picks": len(picks), "kinds": dict(kinds), "distinct_items": len(per_item),
        "own_message_picks": own,
        "conversation_share": round(convs / chat, 4) if chat else None,
        "low_substance_share": round(low / len(picks), 4) if picks else None,
        "max_item_share": round(max(per_item.values()) / members, 4) if members else None,
        "max_item_members": max(per_item.values(), default=0),
        "bot_picks": bot, "monologue_picks": mono, "bots": len(bots),
    }


def verdict(result: dict[str, Any]) -> dict[str, bool | None]:
    """Each target of :data:`TARGETS` met (None when there was nothing to measure)."""
    ops = {"==": lambda a, b: a == b, ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b}
    return {name: None if result[name] is None else ops[op](result[name], bound) for name, (op, bound) in TARGETS.items()}


def sample(doc: list[dict[str, Any]], n: int = 20) -> str:
    """``n`` members' picks (evenly spread over the list), one line each: title — reason."""
    if n <= 0:
        return ""
    step = max(1, len(doc) // n)
    lines = []
    for mp in doc[::step][:n]:
        lines.append(f"## {mp['member']} ({mp['member_id']})")
        for p in mp["picks"]:
            people = f", {p.get('participants')} participants" if p.get("kind") in ("conversation", "thread") else ""
            lines.append(f"  - [{p.get('kind', '?')}{people}] {p['title']}\n      {p['reason']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.digest_quality", description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="the data dir the exports were imported into")
    ap.add_argument("--json", help="the output of `campfire digest --dry-run --all-members --json` (default: --run)")
    ap.add_argument("--run", action="store_true", help="run that digest here first (a dry run: nothing recorded)")
    ap.add_argument("--sample", type=int, default=20, help="members whose picks are printed for a human read")
    a = ap.parse_args(argv)
    if a.json:
        doc = json.loads(Path(a.json).read_text())
    else:
        out = subprocess.run([sys.executable, "-m", "campfire.cli", "digest", "--dry-run", "--all-members", "--json",
                              "--data-dir", a.data_dir], check=True, capture_output=True, text=True).stdout
        doc = json.loads(out)
    result = asyncio.run(measure(Path(a.data_dir), doc))
    print(json.dumps({"digest_quality": result, "targets_met": verdict(result)}, indent=2))
    print(sample(doc, a.sample))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
