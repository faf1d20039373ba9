"""The SQLite store: the one place that owns Campfire's SQL (aiosqlite, WAL) — this facade and its
parts in :mod:`recsys.storage`.

Ids are Discord snowflakes (guild, channel, user, message) where Discord has them; stories and
catalogue entries get snowflake-shaped ids from :func:`new_id`, so every item id fits FAISS's int64.
Times are UNIX seconds (float, UTC). Upserts are keyed by those ids, so importing the same export
twice changes nothing. Opted-out members are never recorded (enforced here, not by callers).

Layout (each part a small class over the one connection of :class:`~recsys.storage.core.StoreCore`):

==========================  =================================================================
``storage/schema.py``       kinds, default weights, migrations (``PRAGMA user_version``)
``storage/rows.py``         :class:`Item`, :class:`Interaction`, :func:`new_id`, vector blobs
``storage/core.py``         open / close / migrate / :meth:`Store.transaction` / ``count``
``storage/guilds.py``       guild settings (dicts), channels and their visibility snapshots
``storage/members.py``      members, subscriptions, opt-outs
``storage/content.py``      items (rows, quotes, columns for batched ranking)
``storage/interactions.py`` interactions and the aggregates ranking reads
``storage/embeddings.py``   stored vectors
``storage/sent.py``         recommendations sent in digests
``storage/privacy.py``      forget / export a user
``storage/conversations.py`` chat lines, conversation links, item members
``storage/rankers.py``      per-guild fitted rankers (``guild_rankers``)
==========================  =================================================================
"""

from __future__ import annotations

from recsys.storage.content import ContentStore
from recsys.storage.conversations import ConversationStore
from recsys.storage.embeddings import EmbeddingStore
from recsys.storage.guilds import GuildStore, channels_visible_to
from recsys.storage.interactions import InteractionStore
from recsys.storage.members import MemberStore
from recsys.storage.privacy import FORGOTTEN_REASON, PrivacyStore
from recsys.storage.rankers import RankerStore
from recsys.storage.rows import (
    OFF_LOOP_ROWS,
    Interaction,
    Item,
    blob_to_vector,
    new_id,
    vector_to_blob,
)
from recsys.storage.schema import (
    _MIGRATIONS,
    DEFAULT_WEIGHTS,
    INTERACTION_KINDS,
    ITEM_KINDS,
    SCHEMA_VERSION,
)
from recsys.storage.schema import split_sql as _split_sql
from recsys.storage.sent import SentStore

__all__ = [
    "DEFAULT_WEIGHTS", "FORGOTTEN_REASON", "INTERACTION_KINDS", "ITEM_KINDS", "OFF_LOOP_ROWS", "SCHEMA_VERSION",
    "Interaction", "Item", "Store", "blob_to_vector", "channels_visible_to", "new_id", "vector_to_blob",
    "_MIGRATIONS", "_split_sql",
]


class Store(GuildStore, MemberStore, ContentStore, InteractionStore, EmbeddingStore, SentStore, PrivacyStore,
            ConversationStore, RankerStore):
    """Async access to ``campfire.db``. Open with ``async with await Store.open(path) as store``
    or ``async with Store.connect(path) as store``.

    One connection (aiosqlite runs it on its own thread, so SQL never blocks the event loop);
    writes are grouped with :meth:`transaction` where several must land together. The methods come
    from the parts listed in the module docstring; each part only adds methods over the shared
    connection (one level of mixing, no overriding).
    """
