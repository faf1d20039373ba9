"""The daily post's ranking: each subscribed member's picks for one guild and one guild-local date.

:func:`daily_picks` ranks every member due in one batched pass (:meth:`Recommender.recommend_many`)
and records the picks in ``recommendations_sent`` — so a member never gets the same item twice, and
re-running the digest on the same date returns what was already sent. When a guild is due, its
local date and timezone, marking it posted and the retry policy live in
:mod:`campfire.features.digest`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date as date_cls
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from recsys.audience import screen_recorded
from recsys.guild_ranker import load_ranker

if TYPE_CHECKING:
    from recsys.service import Pick, Recommender
    from recsys.store import Store

MIN_INTERACTIONS = 3  # --all-members: members with at least this many interactions
MAX_ITEM_SHARE = 0.05  # one item goes to at most this share of a digest's members (never fewer than 10; issue 11)
# Large digests search FAISS shallower (cost grows with k): nearest items / interactions per interest
# vector once more than SHALLOW_ABOVE members are due (below that, recommend's 200 / 100). On the real
# ubuntu_irc guild (437 members) depth 50 cut distinct picks 368 -> 309 and catalogue picks 2.4% -> 0.5%.
FAISS_DEPTH = 50
SHALLOW_ABOVE = 2000


@dataclass
class MemberPicks:
    """One member's ranked picks (``recsys.service.Pick``: item, score, reason) in a digest;
    ``member`` is the display name (the user id when unknown)."""

    guild_id: int
    member_id: int
    member: str
    picks: list[Pick] = field(default_factory=list)


def end_of_day_utc(date: str) -> float:
    """The last moment (UNIX s) of ``date`` (YYYY-MM-DD) in UTC. Raises ValueError for a bad date."""
    d = date_cls.fromisoformat(date)
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp() + 86400.0 - 1e-3


async def daily_picks(
    recommender: Recommender,
    guild_id: int,
    date: str,
    *,
    dry_run: bool,
    all_members: bool = False,
    k: int | None = None,
    now: float | None = None,
    guild: Mapping[str, Any] | None = None,
    audience: int | None = None,
) -> list[MemberPicks]:
    """Top-``k`` picks (default ``recsys.picks_per_member``) with reasons for every subscribed,
    not opted-out member of ``guild_id`` on the guild-local ``date`` (YYYY-MM-DD).

    ``all_members`` (only with ``dry_run``) adds every member (not a bot, not opted out) with at
    least :data:`MIN_INTERACTIONS` interactions. Unless ``dry_run``, the picks are recorded in
    ``recommendations_sent``; an item already sent to a member is never picked for them again, no
    item goes to more than ``MAX_ITEM_SHARE`` of the members (at least 10; members take turns in an
    order that changes every day), and a member who already got picks on ``date`` gets the same
    picks back (nothing new is recorded). Members with no pick are left out.

    ``now`` (UNIX s): the recommender's clock — the caller passes the end of ``date`` in the guild's
    timezone, or the current time when that is earlier; default: the same in UTC. ``guild``: the
    guild row when the caller has read it (not read again). ``audience``: who reads the post
    (:mod:`recsys.audience`): None — each member their own picks (DMs); a channel id — everyone who can
    view that channel (picks and quoted reasons only from what all of them can view; picks recorded
    earlier that day are screened the same way). Raises ValueError for a bad date or ``all_members``
    without ``dry_run``."""
    if all_members and not dry_run:
        raise ValueError("--all-members is only allowed with --dry-run (picks go to subscribed members only)")
    try:
        end = end_of_day_utc(date)
    except ValueError:
        raise ValueError(f"date must be YYYY-MM-DD, got {date!r}") from None
    store: Store = recommender.store
    k = k or recommender.settings.recsys.picks_per_member
    now = min(time.time(), end) if now is None else float(now)

    await load_ranker(recommender, guild_id)  # the guild's own ranker when it has one (recsys.guild_ranker)
    async with recommender.exclusive():  # a member forgotten meanwhile waits, then leaves nothing behind
        members = {m["user_id"]: m for m in await store.subscribed_members(guild_id)}
        if all_members:
            for m in await store.members_with_interactions(guild_id, MIN_INTERACTIONS):
                members.setdefault(m["user_id"], m)
        already = await store.recommendations_on(guild_id, date)
        # members are served in a different order each day: under the per-item cap, who comes first
        # gets first pick of the most wanted items
        todo = sorted((m for m in members if m not in already), key=lambda m: _daily_order(date, m))
        fresh = await recommender.recommend_many(
            guild_id, todo, k=k, now=now, exclude_sent=True, max_item_share=MAX_ITEM_SHARE,
            depth=FAISS_DEPTH if len(todo) > SHALLOW_ABOVE else None, guild=guild, audience=audience,
        )
        recorded = await store.get_items({i for m in members if m in already for i, _, _ in already[m]})
        again = await screen_recorded(store, guild_id, {m: _recorded_picks(recorded, already[m])
                                                        for m in members if m in already}, audience)
        out: list[MemberPicks] = []
        for member_id, m in sorted(members.items()):
            name = m.get("display_name") or str(member_id)
            picks = again.get(member_id, []) if member_id in already else fresh.get(member_id, [])
            if picks:
                out.append(MemberPicks(guild_id, member_id, name, picks))
        if not dry_run and fresh:
            await store.record_digest(
                guild_id,
                {m: [(p.item.id, float(p.score), p.reason, p.reason_item_id) for p in picks] for m, picks in fresh.items()},
                date,
            )
    return out


def _daily_order(date: str, member_id: int) -> bytes:
    """A member's place in ``date``'s digest: a hash of both, stable across runs and processes."""
    return hashlib.blake2b(f"{date}:{member_id}".encode(), digest_size=8).digest()


def _recorded_picks(items: dict[int, Any], rows: list[tuple[int, float, str]]) -> list[Pick]:
    from recsys.service import Pick

    return [Pick(item=items[i], score=s, reason=r) for i, s, r in rows if i in items]
