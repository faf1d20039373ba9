"""A member's feedback on an item (👍 / 👎 / Not interested), shared by the Discord bot's buttons
(``bot.views``) and the console's ``/rate``: one implementation, no discord import.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recsys.service import Recommender
    from recsys.store import Item, Store

#: Interaction kinds that make up a member's feedback on an item: a later one replaces an earlier one.
FEEDBACK_KINDS = ("rated_up", "rated_down", "dismissed")
#: Change of an item's stored rating for each feedback kind (the popularity prior reads it).
RATING_DELTA = {"rated_up": 1.0, "rated_down": -1.0, "dismissed": 0.0}


async def set_feedback(
    store: Store, recommender: Recommender, item: Item, guild_id: int, member_id: int, kind: str, *, source_id: int | None = None
) -> bool:
    """Record ``kind`` (one of :data:`FEEDBACK_KINDS`) by a member on ``item``, replacing the member's
    earlier feedback on it (a 👎 after a 👍 leaves only the 👎). Adjusts ``item.rating`` by the change
    (:data:`RATING_DELTA`).

    Returns False when nothing was recorded (the member opted out of recording); True otherwise,
    including when the same feedback was already there (nothing changes then). The earlier rows are
    deleted from the store (``Store.remove_interactions``; their stored vectors go by trigger) and
    from the guild's FAISS interaction index (``Recommender.indexes``, in a worker thread).
    Raises ``ValueError`` for an unknown ``kind``.
    """
    if kind not in FEEDBACK_KINDS:
        raise ValueError(f"unknown feedback kind {kind!r}")
    if await store.is_opted_out(member_id):
        return False
    before = [i for i in await store.interactions(guild_id, member_id) if i.item_id == item.id and i.kind in FEEDBACK_KINDS]
    if len(before) == 1 and before[0].kind == kind:
        return True  # the same rating again: nothing changes
    if before:
        await store.remove_interactions(guild_id, member_id, item_id=item.id, kinds=FEEDBACK_KINDS)
        index = recommender.indexes.get(guild_id, "interaction")
        await asyncio.to_thread(index.remove, [i.id for i in before])
    about = f"{item.title}\n{item.text}" if item.title else item.text
    ids = await recommender.record(
        [{"guild_id": guild_id, "member_id": member_id, "item_id": item.id, "kind": kind, "text": about[:1000],
          "source_id": source_id}]
    )
    delta = RATING_DELTA[kind] - sum(RATING_DELTA[i.kind] for i in before)
    if delta:
        await store.add_rating(item.id, delta)
    return bool(ids)
