"""Who may be recommended what, decided before any ranking — the one place ``/recommend``, the daily
digest (:mod:`recsys.batch_rank`) and ``campfire eval``'s production path take it from.

An item is a **candidate** when it stands for itself: ``conversation_id`` is -1 (a line no
conversation holds, a story, a catalogue entry) or its own id (a conversation or thread item);
a message inside a conversation is represented by its conversation (:func:`candidate_mask`).

A candidate is **never** recommended to a member who

* authored it (``author_id``; the batch filter checks it per row),
* is one of its ``item_members`` — took part in the conversation or was addressed in it (@mention,
  "nick:", a reply, or their name anywhere in one of its lines, which IRC and Discord clients alert
  on: :func:`recsys.conversations_text.mentioned_ids`) — they saw it (:func:`excluded_keys`, from
  ``Store.item_member_pairs``),
* interacted with it, or with any message inside it: the member's interactions' item ids are mapped
  through ``conversation_id`` to the conversation (:func:`excluded_keys`),

and never to anyone when it is

* deleted or forgotten (already gone from the store, so never in the item table),
* low-substance (:mod:`recsys.substance`: greetings, thanks, bot triggers, bare links / GIFs),
* a generated story somebody rated down (a ``rated_down`` interaction, or a stored rating < 0:
  :func:`rejected_stories`). Stories that failed the generation quality gate are never stored.

A story's requester is its author and holds its ``requested`` interaction, so both rules above keep
their own story from them. Shapes: ``n`` item-table rows (``Store.item_columns``, sorted by id),
``M`` members of a batch; keys are ``member index × n + item row`` (int64, sorted, unique).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["candidate_mask", "excluded_keys", "member_item_rows", "rejected_stories", "rows_of"]


def rows_of(ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """Rows of the sorted item table ``ids`` for ``item_ids`` (any shape); -1 where absent."""
    item_ids = np.asarray(item_ids, np.int64)
    if len(ids) == 0:
        return np.full(item_ids.shape, -1, np.int64)
    p = np.minimum(np.searchsorted(ids, item_ids), len(ids) - 1)
    return np.where(ids[p] == item_ids, p, -1)


def candidate_mask(ids: np.ndarray, conversation_id: np.ndarray) -> np.ndarray:
    """``(n,) bool``: the rows that may be recommended at all (``conversation_id`` -1 or the row's
    own id; ``ids``/``conversation_id`` as ``Store.item_columns``)."""
    conv = np.asarray(conversation_id, np.int64)
    return (conv == -1) | (conv == np.asarray(ids, np.int64))


def member_item_rows(
    ids: np.ndarray, conversation_id: np.ndarray, member: np.ndarray, item_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(member, item id)`` pairs (equal-length arrays) as ``(member, row)`` pairs of the item table,
    each message inside a conversation adding its conversation's row too; ids not in the table
    (deleted, another guild's) are dropped. Returns int64 arrays (not de-duplicated)."""
    member = np.asarray(member, np.int64)
    rows = rows_of(ids, item_ids)
    keep = rows >= 0
    member, rows = member[keep], rows[keep]
    conv = np.asarray(conversation_id, np.int64)[rows]
    inside = (conv >= 0) & (conv != np.asarray(ids, np.int64)[rows])
    crow = rows_of(ids, conv[inside])
    ok = crow >= 0
    return np.concatenate([member, member[inside][ok]]), np.concatenate([rows, crow[ok]])


def excluded_keys(
    ids: np.ndarray,
    conversation_id: np.ndarray,
    member_ids: Sequence[int],
    seen: Sequence[Iterable[int]],
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """What each of ``member_ids`` must not be recommended, as sorted unique keys ``b × n + row``
    (b: the member's index in ``member_ids``): the item ids in ``seen[b]`` (their interactions, items
    sent to them) and, from ``pairs`` (``Store.item_member_pairs``: member ids and item ids sorted
    by member), the items they took part in or were addressed by — every one mapped through
    ``conversation_id`` to its conversation as well (:func:`member_item_rows`)."""
    n = len(ids)
    b_parts: list[np.ndarray] = []
    i_parts: list[np.ndarray] = []
    for b, its in enumerate(seen):
        arr = np.fromiter((int(i) for i in its), np.int64)
        if len(arr):
            b_parts.append(np.full(len(arr), b, np.int64))
            i_parts.append(arr)
    if pairs is not None and len(pairs[0]):
        pm, pi = np.asarray(pairs[0], np.int64), np.asarray(pairs[1], np.int64)
        mids = np.asarray(member_ids, np.int64)
        lo, hi = np.searchsorted(pm, mids, "left"), np.searchsorted(pm, mids, "right")
        lens = hi - lo
        if lens.sum():
            offs = np.repeat(lo - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))
            b_parts.append(np.repeat(np.arange(len(mids)), lens))
            i_parts.append(pi[offs])
    if not b_parts or n == 0:
        return np.zeros(0, np.int64)
    b, rows = member_item_rows(ids, conversation_id, np.concatenate(b_parts), np.concatenate(i_parts))
    return np.unique(b * n + rows)


def rejected_stories(story_ids: Iterable[int], rated_down: Iterable[int], ids: np.ndarray, rating: np.ndarray) -> np.ndarray:
    """``(n,) bool``: the rows of stories (``story_ids``) nobody may be recommended — somebody rated
    them down (their item id is in ``rated_down``, the items of ``rated_down`` interactions) or their
    stored ``rating`` is below 0."""
    out = np.zeros(len(ids), bool)
    stories = rows_of(ids, np.fromiter((int(i) for i in story_ids), np.int64))
    stories = stories[stories >= 0]
    if not len(stories):
        return out
    down = np.zeros(len(ids), bool)
    rows = rows_of(ids, np.fromiter((int(i) for i in rated_down), np.int64))
    down[rows[rows >= 0]] = True
    out[stories] = down[stories] | (np.asarray(rating, np.float64)[stories] < 0)
    return out
