"""Bots among a guild's chat authors (issue 11): members Discord flags as bots, and authors whose
lines answer ``!`` triggers (IRC factoid bots, never flagged: :func:`recsys.conversations.bot_authors`).
A bot is never a conversation's participant, its lines never title one, and its lines are never
items of their own (a factoid answer repeats the channel's wiki; the trigger is a command)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from recsys.conversations import ChatLine, bot_authors

if TYPE_CHECKING:
    from recsys.store import Item, Store

__all__ = ["OFF_LOOP_LINES", "bot_items", "guild_bots"]

log = logging.getLogger(__name__)

OFF_LOOP_LINES = 300  # lines above which the trigger count runs in a worker thread


async def guild_bots(store: Store, guild_id: int, chat: Sequence[ChatLine]) -> frozenset[int]:
    """Members of ``guild_id`` flagged bot, and the authors of ``chat`` answering ``!`` triggers —
    flagged from now on (``members.is_bot``), so a later window with too few of their lines to tell
    still knows them (and no digest is computed for them)."""
    flagged = await store.bot_ids(guild_id)
    found = await asyncio.to_thread(bot_authors, chat) if len(chat) > OFF_LOOP_LINES else bot_authors(chat)
    if found - flagged:
        await store.flag_bots(guild_id, found - flagged)
        log.info("guild %d: %d member(s) answer bot triggers and are treated as bots", guild_id, len(found - flagged))
    return frozenset(flagged | found)


def bot_items(lines: Mapping[int, Mapping[str, Any]], existing: Mapping[int, Item], bots: frozenset[int],
              keep: set[int]) -> list[int]:
    """Ids of the plain message items (not conversations, threads or ``keep``) among ``lines``
    (message id -> chat line) written by ``bots``: to remove."""
    return sorted(m for m, ln in lines.items() if ln["author_id"] in bots and m in existing and m not in keep
                  and not existing[m].meta.get("conversation") and not existing[m].meta.get("thread"))
