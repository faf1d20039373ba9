"""Messages deleted on Discord, as exports show them (the import side; the bot removes a message
live on ``on_raw_message_delete``).

An export covers its channel from ``dateRange.after`` to the earlier of ``dateRange.before`` and
``exportedAt``: a message of that channel created in that span and absent from the export was
deleted before the export was made — *if* the export is newer than what showed the message. So for
a message Campfire holds and an export that lacks it:

* the export has ``exportedAt`` T and the message was last seen before T (in an export dated
  earlier — ``meta["exported_at"]`` of its item — or live, at its creation): deleted, removed
  through the :class:`Recommender` (the item with everyone's interactions on it, the author's
  interactions the message produced, their vectors and FAISS ids);
* seen in an export dated T or later: the given export is the older one, nothing to do;
* otherwise (no ``exportedAt`` on one side) Campfire cannot tell which copy is newer: the message
  is kept and the run prints one line per channel offering ``campfire import --replace-channel``;
* with ``--replace-channel`` the export is the channel's whole truth from ``after`` to ``before``
  (to its newest message when the range is open and it has no ``exportedAt``): every message of
  the channel held for that span and absent from it is removed.

An export with an unreadable message id, date range or ``exportedAt`` proves nothing and removes
nothing. Within one run, copies of a channel are imported oldest ``exportedAt`` first (undated
first), so a newer copy always has the last word; across runs, import older exports first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recsys.dce import _Export, peek_header

if TYPE_CHECKING:
    from recsys.service import Recommender


@dataclass
class _Copy:
    """One export of a channel read in this run: the span it covers (UNIX s, ``lo`` exclusive)."""

    path: Path
    exported_at: float | None
    lo: float
    hi: float
    ids: set[int]
    usable: bool


@dataclass
class _Known:
    """A message of a channel exported more than once in this run: ``seen`` is the latest
    ``exportedAt`` of a copy holding it (``None``: only undated copies)."""

    created_at: float
    author_id: int
    seen: float | None


@dataclass
class _Disagreement:
    lacking: list[Path] = field(default_factory=list)
    messages: set[int] = field(default_factory=set)
    name: str = ""


def order_files(files: list[Path]) -> tuple[list[Path], dict[int, list[Path]]]:
    """``files`` with each channel's copies in ``exportedAt`` order (undated first, then oldest),
    channels where their first file was; and channel id -> its files, for channels given more than
    once. Reads headers only."""
    headers = [peek_header(f) for f in files]
    first: dict[int, int] = {}
    by_channel: dict[int, list[Path]] = {}
    for i, (f, (cid, _)) in enumerate(zip(files, headers)):
        if cid is not None:
            first.setdefault(cid, i)
            by_channel.setdefault(cid, []).append(f)

    def key(i: int) -> tuple[int, int, float, int]:
        cid, stamp = headers[i]
        group = first[cid] if cid is not None else i
        return group, stamp is not None, stamp or 0.0, i

    order = sorted(range(len(files)), key=key)
    return [files[i] for i in order], {c: fs for c, fs in by_channel.items() if len(fs) > 1}


class DeletionCheck:
    """What a run of :func:`recsys.ingest.import_exports` learns about deleted messages: call
    :meth:`before_write` for each export (removes what it proves deleted, returns how many), then
    :meth:`after_write`; :meth:`notes` gives the "cannot tell" lines at the end."""

    def __init__(self, recommender: Recommender, repeated: set[int], *, replace: bool = False):
        self.rec = recommender
        self.repeated = repeated  # channels exported more than once in this run
        self.replace = replace
        self._tables: dict[int, dict[str, np.ndarray]] = {}  # guild -> item columns before the run
        self._known: dict[int, dict[int, _Known]] = {}
        self._copies: dict[int, list[_Copy]] = {}
        self._gone: set[int] = set()
        self._disagree: dict[int, _Disagreement] = {}

    def _span(self, exp: _Export) -> tuple[float, float]:
        lo = exp.after if exp.after is not None else -math.inf
        newest = max((m.created_at for m in exp.messages), default=-math.inf)
        hi = exp.before if exp.before is not None else math.inf
        if exp.exported_at is not None:
            hi = min(hi, exp.exported_at)
        elif not (self.replace and exp.before is not None):
            hi = min(hi, newest)  # an undated copy is known to cover no further than its newest message
        return lo, hi

    async def before_write(self, exp: _Export) -> int:
        """Remove the messages ``exp`` proves deleted (see the module docstring); returns how many
        were removed. Call before writing ``exp``'s rows."""
        gid, cid = exp.guild_id, exp.channel_id
        if gid not in self._tables:
            self._tables[gid] = await self.rec.store.item_columns(gid)
        if not (exp.complete and exp.range_known):
            return 0
        lo, hi = self._span(exp)
        self._compare_copies(exp, lo, hi)
        table = self._tables[gid]
        ids, created = table["id"], table["created_at"]
        hit = (table["channel_id"] == cid) & (created > lo) & (created <= hi) & (ids != cid)
        lines = await self.rec.store.chat_line_ids(gid, cid, lo, hi)  # short messages are chat lines only
        candidates = {int(i) for i in ids[hit]} | {
            i for i, k in self._known.get(cid, {}).items() if lo < k.created_at <= hi} | (set(lines) - {cid})
        candidates -= exp.present | self._gone
        if not candidates:
            return 0
        items = await self.rec.store.get_items(candidates)
        doomed: list[tuple[int, int | None]] = []
        for mid in sorted(candidates):
            item, known = items.get(mid), self._known.get(cid, {}).get(mid)
            if item is not None and (item.kind != "message" or item.channel_id != cid or item.meta.get("thread")):
                continue
            if item is None and known is None and mid in lines:  # a chat line alone (a short message)
                if self.replace or self._deleted(exp, mid, None, _Known(lines[mid][1], lines[mid][0], None)):
                    doomed.append((mid, lines[mid][0]))
            elif self.replace or self._deleted(exp, mid, item, known):
                doomed.append((mid, item.author_id if item is not None else known.author_id if known else None))
        return await self._remove(gid, cid, doomed)

    def _deleted(self, exp: _Export, mid: int, item, known: _Known | None) -> bool:
        """Whether ``exp`` (lacking the message) is newer than every sighting of it; notes the
        channel when that cannot be told."""
        seen = [s for s in ((item.meta.get("exported_at") if item is not None else None),
                            known.seen if known is not None else None) if s is not None]
        if item is not None and "source" not in item.meta:
            seen.append(item.created_at)  # captured live by the bot: it existed then
        if item is None and known is not None and mid not in self._known.get(exp.channel_id, {}):
            seen.append(known.created_at)  # a stored chat line with no item: it existed when written
        if exp.exported_at is not None and seen:
            return max(seen) < exp.exported_at
        self._note(exp, exp.path, mid)
        return False

    def _compare_copies(self, exp: _Export, lo: float, hi: float) -> None:
        """Messages of ``exp`` missing from an earlier copy of the channel in this run that covers
        them: with an undated copy on either side, which is newer cannot be told."""
        for copy in self._copies.get(exp.channel_id, []):
            if not copy.usable or (copy.exported_at is not None and exp.exported_at is not None):
                continue
            for m in exp.messages:
                if copy.lo < m.created_at <= copy.hi and m.id not in copy.ids:
                    self._note(exp, copy.path, m.id)

    def _note(self, exp: _Export, lacking: Path, mid: int) -> None:
        d = self._disagree.setdefault(exp.channel_id, _Disagreement(name=exp.channel_name))
        if lacking not in d.lacking:
            d.lacking.append(lacking)
        d.messages.add(mid)

    async def _remove(self, gid: int, cid: int, doomed: list[tuple[int, int | None]]) -> int:
        removed = 0
        for mid, author in doomed:
            gone = await self.rec.remove_item(mid)
            if author is not None:
                gone = bool(await self.rec.remove_interactions(gid, author, source_id=mid)) or gone
            removed += gone
            self._gone.add(mid)
            self._known.get(cid, {}).pop(mid, None)
        if doomed:  # their chat lines too; the importer rebuilds the channel's conversations after the write
            await self.rec.store.delete_chat_lines([mid for mid, _ in doomed])
        return removed

    def after_write(self, exp: _Export) -> None:
        """Remember ``exp`` when its channel has another copy in this run."""
        cid = exp.channel_id
        if cid not in self.repeated:
            return
        lo, hi = self._span(exp)
        self._copies.setdefault(cid, []).append(
            _Copy(exp.path, exp.exported_at, lo, hi, set(exp.present), exp.complete and exp.range_known))
        known = self._known.setdefault(cid, {})
        for m in exp.messages:
            old = known.get(m.id)
            seen = exp.exported_at
            if old is not None and old.seen is not None:
                seen = old.seen if seen is None else max(seen, old.seen)
            known[m.id] = _Known(m.created_at, m.author_id, seen)

    def notes(self) -> list[str]:
        """One line per channel whose copies disagree without ``exportedAt`` to order them."""
        out = []
        for cid, d in self._disagree.items():
            lacking = d.lacking[0]
            more = f" (and {len(d.lacking) - 1} more)" if len(d.lacking) > 1 else ""
            n = len(d.messages)
            out.append(
                f"#{d.name or cid} ({cid}): {n} message{'s are' if n != 1 else ' is'} missing from {lacking}{more} "
                f"but present in another copy; without exportedAt on both, Campfire cannot tell which copy is "
                f"newer and keeps {'them' if n != 1 else 'it'}. If that file shows the channel as it is now, run: "
                f"campfire import --replace-channel \"{lacking}\"")
        return out
