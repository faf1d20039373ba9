"""The daily personalised post: who gets picks, which picks, and when a guild is due.

* :func:`daily_picks` computes each subscribed member's top-K picks (with reasons) for one guild
  and one guild-local date, and records them in ``recommendations_sent`` — so a member never gets
  the same item twice, and re-running the digest on the same date returns what was already sent.
* :func:`due_guilds` / :func:`mark_posted` are the clock the Discord daily loop runs on.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import date as date_cls
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from campfire.config import DigestSettings
    from recsys.service import Pick, Recommender
    from recsys.store import Store

log = logging.getLogger(__name__)

MIN_INTERACTIONS = 3  # --all-members: members with at least this many interactions
MAX_ITEM_SHARE = 0.1  # one item goes to at most this share of a digest's members (never fewer than 10)
# Large digests search FAISS shallower (cost grows with k): nearest items / interactions per interest
# vector once more than SHALLOW_ABOVE members are due (below that, recommend's 200 / 100). On the real
# ubuntu_irc guild (437 members) depth 50 cut distinct picks 368 -> 309 and catalogue picks 2.4% -> 0.5%.
FAISS_DEPTH = 50
SHALLOW_ABOVE = 2000


@dataclass
class MemberPicks:
    """One member's picks in a digest; ``member`` is the display name (the user id when unknown)."""

    guild_id: int
    member_id: int
    member: str
    picks: list[Pick] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """``{"guild_id", "member_id", "member", "picks": [{"item_id", "title", "reason", "score"}]}``;
        ``item_id`` is the Discord message id for imported messages, ``title`` the item's title or
        the start of its text."""
        return {
            "guild_id": self.guild_id,
            "member_id": self.member_id,
            "member": self.member,
            "picks": [
                {"item_id": p.item.id, "title": pick_title(p.item), "reason": p.reason, "score": round(float(p.score), 4)}
                for p in self.picks
            ],
        }


def pick_title(item: Any, width: int = 80) -> str:
    """An item's title, or the first line of its text cut to ``width`` characters."""
    title = (item.title or "").strip()
    if title:
        return title
    first = " ".join((item.text or "").split())
    return first if len(first) <= width else first[: width - 1].rstrip() + "…"


def guild_zone(guild: dict[str, Any] | None, defaults: DigestSettings) -> ZoneInfo:
    """The guild's IANA timezone (its own setting, else ``digest.default_timezone``); an unknown
    stored name falls back to the default with a warning."""
    name = (guild or {}).get("timezone") or defaults.default_timezone
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("guild %s has an unknown timezone %r; using %s", (guild or {}).get("id"), name,
                    defaults.default_timezone)
        return ZoneInfo(defaults.default_timezone)


def local_date(guild: dict[str, Any] | None, defaults: DigestSettings, now_utc: datetime | None = None) -> str:
    """Today's date (YYYY-MM-DD) in the guild's timezone."""
    now_utc = now_utc or datetime.now(timezone.utc)
    return now_utc.astimezone(guild_zone(guild, defaults)).date().isoformat()


def _end_of_day(date: str, zone: ZoneInfo) -> float:
    d = date_cls.fromisoformat(date)
    return datetime(d.year, d.month, d.day, tzinfo=zone).timestamp() + 86400.0 - 1e-3


async def daily_picks(
    recommender: Recommender,
    guild_id: int,
    date: str,
    *,
    dry_run: bool,
    all_members: bool = False,
    k: int | None = None,
) -> list[MemberPicks]:
    """Top-``k`` picks (default ``recsys.picks_per_member``) with reasons for every subscribed,
    not opted-out member of ``guild_id`` on the guild-local ``date`` (YYYY-MM-DD).

    ``all_members`` (only with ``dry_run``) adds every member (not a bot, not opted out) with at
    least 3 interactions. Unless ``dry_run``, the picks are recorded in ``recommendations_sent``;
    an item already sent to a member is never picked for them again, no item goes to more than
    ``MAX_ITEM_SHARE`` of the members (at least 10; members take turns in an order that changes
    every day), and a member who already got
    picks on ``date`` gets the same picks back (nothing new is recorded). Members with no pick are
    left out. The recommender's clock is the end of ``date`` in the guild's timezone, or now when
    that is earlier. Raises ValueError for a bad date, ``all_members`` without ``dry_run`` or an
    unknown guild. All members are ranked in one batched pass (:meth:`Recommender.recommend_many`).
    """
    from campfire.config import DigestSettings

    if all_members and not dry_run:
        raise ValueError("--all-members is only allowed with --dry-run (picks go to subscribed members only)")
    try:
        date_cls.fromisoformat(date)
    except ValueError:
        raise ValueError(f"date must be YYYY-MM-DD, got {date!r}") from None
    store: Store = recommender.store
    guild = await store.get_guild(guild_id)
    if guild is None:
        raise ValueError(f"unknown guild {guild_id}")
    k = k or recommender.settings.recsys.picks_per_member
    defaults = getattr(recommender.settings, "digest", None) or DigestSettings()
    now = min(time.time(), _end_of_day(date, guild_zone(guild, defaults)))

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
            depth=FAISS_DEPTH if len(todo) > SHALLOW_ABOVE else None,
        )
        recorded = await store.get_items({i for m in members if m in already for i, _, _ in already[m]})
        out: list[MemberPicks] = []
        for member_id, m in sorted(members.items()):
            name = m.get("display_name") or str(member_id)
            picks = _recorded_picks(recorded, already[member_id]) if member_id in already else fresh.get(member_id, [])
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


def _due_at(guild: dict[str, Any], defaults: DigestSettings) -> tuple[int, int]:
    hhmm = guild.get("digest_time") or defaults.default_time
    try:
        hh, mm = (int(x) for x in str(hhmm).split(":"))
        if 0 <= hh < 24 and 0 <= mm < 60:
            return hh, mm
    except ValueError:
        pass
    log.warning("guild %s has a bad digest time %r; using %s", guild.get("id"), hhmm, defaults.default_time)
    hh, mm = (int(x) for x in defaults.default_time.split(":"))
    return hh, mm


async def due_guilds(store: Store, now_utc: datetime, defaults: DigestSettings) -> list[tuple[int, str]]:
    """``(guild_id, local_date)`` of every guild whose daily post is due at ``now_utc`` (aware
    datetime): its local time (``digest_time`` in ``timezone``, else the ``digest`` defaults) has
    come today and it has not posted on that local date (``last_digest_date``). A bot restarted
    later the same day therefore catches up once; the day after, the guild is due again at its
    time. Naive ``now_utc`` is taken as UTC. The opt-out placeholder guild (id 0) is never due."""
    if now_utc.tzinfo is None:
        now_utc = now_utc.replace(tzinfo=timezone.utc)
    due: list[tuple[int, str]] = []
    for g in await store.list_guilds():
        if g["id"] == 0:
            continue
        local = now_utc.astimezone(guild_zone(g, defaults))
        hh, mm = _due_at(g, defaults)
        if (local.hour, local.minute) < (hh, mm):
            continue
        today = local.date().isoformat()
        if g.get("last_digest_date") != today:
            due.append((g["id"], today))
    return due


async def mark_posted(store: Store, guild_id: int, local_date: str) -> None:
    """Remember that the guild's daily post for ``local_date`` (YYYY-MM-DD) went out."""
    date_cls.fromisoformat(local_date)  # ValueError on a bad date
    await store.update_guild(guild_id, last_digest_date=local_date)

