"""Who reads a message of picks, and so what may be written into it.

A message of picks has an *audience*: ``None`` — the member alone (a DM, an ephemeral reply) — or a
channel id: everyone who can view that channel reads every pick in it (a daily post there, or the
thread under it). Whatever is written into the message must be visible to every reader:

- **Picks.** The pick's title is the start of its text and its link names its channel, so for a
  channel audience a pick is only taken from a channel *every* reader of the post can view
  (:func:`shared_channels`; items outside any channel — catalogue entries — are fine). Picks are
  chosen among those (the ranking runs on them), so a member still gets ``k`` picks when there are
  enough. For the member alone: the channels they can view (the ranking's own filter).
- **Reasons.** A reason quotes an interaction ("because you wrote about: …"). It may quote only an
  interaction whose item is in such a channel (:func:`quote_masks`): for a channel audience one every
  reader can view — never the member's words from a channel others cannot see, nor a short message
  whose channel was not kept; for the member alone one they can view now (their own short messages
  too). Otherwise the pick's reason quotes nothing (:data:`recsys.reasons.NEUTRAL_REASON`).

Readers of a channel are the guild's stored members who may view it, plus — when it is open to
members with no role — any member who joins later with none (a "bare" reader). The store's rule
decides who may view what (:func:`recsys.pipeline.visible_from_snapshot`: snapshot, roles, private
threads, a thread's parent); a channel without a snapshot is read by everyone known.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.pipeline import profile_interactions, visible_from_snapshot
from recsys.reasons import NEUTRAL_REASON, reason_for

if TYPE_CHECKING:
    from recsys.pipeline import Pick
    from recsys.store import Interaction, Store

BARE_READER = -1  # the member id of a reader with no role and no overwrite


def _classes(guild_id: int, members: Mapping[int, dict], channels: list[dict]) -> dict[tuple, Any]:
    """One representative reader per visibility class: key (roles, id when named in a snapshot) ->
    (member id, member row); the bare reader included."""
    named: set[int] = set()
    for ch in channels:
        named.update(ch["visibility"].get("members", []))
        named.update(ch["visibility"].get("denied_members", []))
    out: dict[tuple, Any] = {((), None): (BARE_READER, None)}
    for m, row in members.items():
        roles = tuple(sorted(row.get("role_ids") or ()))
        out.setdefault((roles, m if m in named else None), (m, row))
    return out


def shared_channels(guild_id: int, members: Mapping[int, dict], channels: list[dict], channel_id: int) -> set[int]:
    """Ids of the ``channels`` (rows as ``Store.channels``) that every reader of ``channel_id`` may
    view (``members``: the guild's member rows by id, as ``Store.members``). A channel unknown to
    the store counts as read by everyone known."""
    known = any(ch["id"] == channel_id for ch in channels)
    shared: set[int] | None = None
    for m, row in _classes(guild_id, members, channels).values():
        visible = visible_from_snapshot(guild_id, row, m, channels)
        if known and channel_id not in visible:
            continue  # not a reader
        shared = visible if shared is None else shared & visible
    return shared or set()


async def audience_channels(store: Store, guild_id: int, channel_id: int) -> set[int]:
    """:func:`shared_channels` read from the store."""
    members = {m["user_id"]: m for m in await store.members(guild_id)}
    return shared_channels(guild_id, members, await store.channels(guild_id), channel_id)


def quote_masks(
    guild_id: int, used_by: Sequence[tuple[int, list[Interaction]]], table: Mapping[str, np.ndarray],
    members: Mapping[int, dict], channels: list[dict], shared: set[int] | None,
) -> list[np.ndarray]:
    """Per ``(member id, profile interactions)``: which interactions a reason may quote (bool per
    interaction). ``table``: the guild's item columns (``Store.item_columns``: ``id`` sorted,
    ``channel_id`` -1 for none); ``shared``: the channel audience's :func:`shared_channels`, or None
    for the member alone (then the channels each member may view, from ``members`` / ``channels``)."""
    if not used_by:
        return []
    ids, chan = table["id"], table["channel_id"]
    n = np.array([len(u) for _, u in used_by], np.int64)
    iid = np.fromiter((-2 if i.item_id is None else i.item_id for _, u in used_by for i in u), np.int64, int(n.sum()))
    if len(ids):  # each interaction's item channel: -1 none, -3 the item is not stored
        pos = np.minimum(np.searchsorted(ids, iid), len(ids) - 1)
        found = (iid >= 0) & (ids[pos] == iid)
        ch = np.where(found, chan[pos], -3)
    else:
        found, ch = np.zeros(len(iid), bool), np.full(len(iid), -3, np.int64)
    if shared is not None:
        ok = found & ((ch == -1) | np.isin(ch, np.fromiter(shared, np.int64, len(shared))))
    else:  # per visibility class (roles, and the member when a snapshot names them): what it may view
        named = {m for c in channels for key in ("members", "denied_members") for m in c["visibility"].get(key, [])}
        classes: dict[tuple, int] = {}
        rows: list[np.ndarray] = []
        uniq, inv = np.unique(ch, return_inverse=True)
        of = np.empty(len(used_by), np.int64)
        for b, (m, _) in enumerate(used_by):
            row = members.get(m)
            key = (tuple(sorted((row or {}).get("role_ids") or ())), m if m in named else None)
            if key not in classes:
                classes[key] = len(rows)
                visible = visible_from_snapshot(guild_id, row, m, channels)
                rows.append(np.isin(uniq, np.fromiter(visible, np.int64, len(visible))))
            of[b] = classes[key]
        can = np.vstack(rows) if rows else np.zeros((0, len(uniq)), bool)
        ok = (iid == -2) | (found & ((ch == -1) | can[np.repeat(of, n), inv.reshape(-1)]))
    return np.split(ok, np.cumsum(n)[:-1])


async def screen_recorded(
    store: Store, guild_id: int, picks: dict[int, list[Pick]], audience: int | None
) -> dict[int, list[Pick]]:
    """Picks recorded earlier (a digest re-run on the same date), made fit for ``audience``: picks
    from channels the audience may not see dropped, and a quoting reason kept only when it is one
    a reason for this audience could give (it quotes an interaction :func:`quote_masks` allows);
    otherwise :data:`~recsys.reasons.NEUTRAL_REASON`. Members left with no pick are left out."""
    if not picks:
        return picks
    members = {m["user_id"]: m for m in await store.members(guild_id)}
    channels = await store.channels(guild_id)
    table = await store.item_columns(guild_id)
    shared = shared_channels(guild_id, members, channels, audience) if audience is not None else None
    names = frozenset((m.get("display_name") or "").lower() for m in members.values()) - {""}
    out: dict[int, list[Pick]] = {}
    for m, rows in picks.items():
        pickable = shared if shared is not None else visible_from_snapshot(guild_id, members.get(m), m, channels)
        rows = [p for p in rows if p.item.channel_id is None or p.item.channel_id in pickable]
        quoting = [p for p in rows if p.reason.startswith("because ")]
        allowed: set[str] = set()
        if quoting:
            used = profile_interactions(await store.interactions(guild_id, m))
            [mask] = quote_masks(guild_id, [(m, used)], table, members, channels, shared)
            quotes = await store.item_quotes({i.item_id for i in used if i.item_id is not None})
            allowed = {reason_for(i, quotes.get(i.item_id) if i.item_id is not None else None, names)
                       for i, ok in zip(used, mask, strict=True) if ok}
        rows = [p if not p.reason.startswith("because ") or p.reason in allowed else replace(p, reason=NEUTRAL_REASON)
                for p in rows]
        if rows:
            out[m] = rows
    return out
