"""What both importers (:mod:`recsys.ingest` for DCE exports, :mod:`recsys.catalogue` for JSON-lines
catalogues) share: the report, the progress bars and the batched writes through the facade."""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from recsys.store import Item

if TYPE_CHECKING:
    from recsys.service import Recommender

log = logging.getLogger(__name__)

WRITE_BATCH = 512  # items / interactions handed to the facade at once (embedded in its batches)


@dataclass
class ImportReport:
    """What an import did. ``items``, ``interactions`` and ``members`` count rows that are new
    (a repeated import reports 0); ``messages`` counts messages read; ``removed`` messages the
    exports show were deleted on Discord (removed with their interactions and vectors); ``errors``
    holds one line per file, catalogue line, message or field that could not be imported (each
    once); ``notes`` lines that need the admin's decision but cost nothing (copies of a channel
    that disagree without ``exportedAt``); ``conversations`` the conversations the imported channels
    hold after it (``recsys.conversation_sync``; new conversation items are also counted in ``items``);
    ``seconds`` is wall time."""

    files: int = 0
    messages: int = 0
    items: int = 0
    interactions: int = 0
    members: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)  # files deliberately not imported (e.g. DMs)
    guild_ids: list[int] = field(default_factory=list)
    unit: str = "message(s)"  # what ``messages`` counts: "message(s)" (exports) or "entries" (catalogues)
    removed: int = 0
    notes: list[str] = field(default_factory=list)
    conversations: int = 0

    def summary(self) -> str:
        s = (f"{self.files} file(s), {self.messages} {self.unit} read: {self.items} new item(s), "
             f"{self.interactions} new interaction(s), {self.members} new member(s) in {self.seconds:.1f} s")
        if self.conversations:
            s += f"; {self.conversations} conversation(s)"
        if self.removed:
            s += f"; {self.removed} deleted message(s) removed"
        if self.errors:
            s += f"; {len(self.errors)} error(s)"
        return s


# ---- writing --------------------------------------------------------------------------------------
def _progress(total: int | None, desc: str, unit: str, enabled: bool):
    """A tqdm bar on stderr. ``total`` must be known up front (``None``: a count and a rate, no
    percentage), so a bar never goes backwards."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled, leave=False,
                dynamic_ncols=True)


async def _write_items(recommender: Recommender, items: list[Item]) -> int:
    """Hand new or changed items to the facade (which re-embeds changed text); unchanged ones cost
    nothing. Returns how many were new."""
    existing = await recommender.store.get_items([it.id for it in items])
    todo: list[Item] = []
    for it in items:
        old = existing.get(it.id)
        if old is not None:
            if old.meta.get("thread") and not it.meta.get("thread"):
                continue  # a thread started from this message owns the id (Discord reuses it)
            if old.meta.get("conversation"):
                continue  # the opener of a conversation: recsys.conversation_sync owns the item
            if old.meta.get("exported_at") is not None and it.meta.get("source") == "discord":
                # the latest export that showed the message (recsys.ingest_sync), whatever the order
                it.meta["exported_at"] = max(old.meta["exported_at"], it.meta.get("exported_at") or 0.0)
            if (old.text, old.title, old.rating, old.meta, old.url, old.tags) == (it.text, it.title, it.rating, it.meta, it.url, it.tags):
                continue
        todo.append(it)
    added = 0
    for i in range(0, len(todo), WRITE_BATCH):
        batch = todo[i : i + WRITE_BATCH]
        added += await recommender.add_items(batch)
    return added


async def _flush(recommender: Recommender, bar) -> None:
    """Wait for the facade's embedding queue, counting texts embedded on ``bar`` (no total: how
    many texts a run embeds is only known once every file is read)."""
    queued = recommender.pending()
    start = bar.n
    task = asyncio.ensure_future(recommender.flush())
    while not task.done():
        await asyncio.wait({task}, timeout=0.5)
        bar.n = start + max(0, queued - recommender.pending())
        bar.refresh()
    await task
    bar.n = start + queued
    bar.refresh()


async def _record(recommender: Recommender, rows: list[dict[str, Any]]) -> int:
    n = 0
    for i in range(0, len(rows), WRITE_BATCH):
        n += len(await recommender.record(rows[i : i + WRITE_BATCH]))
    return n
