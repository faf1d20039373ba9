"""Conversations for the chat history of databases from before schema 4 (issue 11).

Schema 4 turned every stored message item into a chat line, but a guild's lines were only grouped
into conversations when a sync touched their channel (an import, or a live message there — and a
live sync reads only the recent window), so an old guild's history stayed single lines. Schema 5
queues every guild whose lines were never synced (``conversation_backfill``);
:func:`backfill_conversations`, called once by ``Recommender.start``, syncs each queued guild's
every channel (:func:`recsys.conversation_sync.sync_conversations`: the builder runs in a worker
thread for large channels, the new conversation items are embedded by the usual queue) and takes it
off the queue, so it runs once per guild whatever happens to the process later.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from recsys.conversation_sync import SyncReport, sync_conversations

if TYPE_CHECKING:
    from recsys.service import Recommender

__all__ = ["backfill_conversations"]

log = logging.getLogger(__name__)


async def backfill_conversations(recommender: Recommender) -> SyncReport:
    """Build the conversations of every guild queued for a backfill and take it off the queue;
    returns the summed :class:`~recsys.conversation_sync.SyncReport` (all zero when none was queued).
    A guild that fails stays queued (tried again on the next start) and the error is raised."""
    store = recommender.store
    total = SyncReport()
    for guild_id in await store.backfill_pending():
        report = await sync_conversations(recommender, guild_id)
        await store.backfill_done(guild_id)
        log.info("guild %d: %d conversation(s) built from %d older chat line(s) in %.1f s", guild_id,
                 report.conversations, report.lines, report.seconds)
        for name in ("channels", "lines", "conversations", "created", "updated", "reembedded", "dissolved", "seconds"):
            setattr(total, name, getattr(total, name) + getattr(report, name))
    return total
