"""The daily post: which guilds are due, the run (a dry run, or real and recorded), marking a guild
posted, and the retry policy. Ranking stays in :mod:`recsys.digest`; sending (a channel, a thread or
DMs) is the front end's. Never imports discord.

One daily post reads its guild's row once: :func:`due` reads every guild's settings typed
(:class:`~campfire.features.types.GuildSettings`) and they are passed down — to the ranking (the
guild's NSFW setting), to the front end (the digest channel) and to :func:`mark_posted`.

The picks are chosen for who reads them (:class:`Audience`): in a channel post, only picks, titles,
links and quoted reasons every reader of that channel can see; in a DM, what that member can see.

Retry policy (:func:`post`): a guild is due from its local ``digest_time`` until it is marked posted
for that local date. A failure before any message went out leaves it due, so the next tick retries;
once part of the post is out it is marked posted even when the rest fails — never a second post on
the same day. A bot restarted later the same day therefore catches up once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sized
from dataclasses import dataclass, replace
from datetime import date as date_cls
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from campfire import ops
from campfire.features.guilds import parse_hhmm, zone
from campfire.features.picks import clock, to_pick
from campfire.features.types import DigestDue, DigestRun, GuildSettings, MemberPicks

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from campfire.app import App

log = logging.getLogger(__name__)

#: The store's placeholder guild for opted-out members' state: never a digest guild.
PLACEHOLDER_GUILD = 0


@dataclass(frozen=True)
class Audience:
    """Who reads a message of picks. ``channel_id`` None: the member alone (a DM, an ephemeral reply);
    else everyone who can view that channel (a daily post there, or its thread). Whatever the
    message shows — pick titles, links, quoted reasons — must be visible to every reader, so a
    channel audience gets picks only from channels all its readers can view and reasons that quote
    nothing from elsewhere (:mod:`recsys.audience`)."""

    channel_id: int | None = None


def guild_zone(app: App, guild: GuildSettings) -> ZoneInfo:
    """The guild's timezone; a stored name no longer valid falls back to ``digest.default_timezone``."""
    return zone(guild.timezone, app.settings.digest.default_timezone)


def local_date(app: App, guild: GuildSettings, now_utc: datetime | None = None) -> str:
    """The date (YYYY-MM-DD) in the guild's timezone at ``now_utc`` (aware; default: now)."""
    now_utc = now_utc or datetime.now(timezone.utc)
    return now_utc.astimezone(guild_zone(app, guild)).date().isoformat()


def _due_at(app: App, guild: GuildSettings) -> tuple[int, int]:
    """(hour, minute) of the guild's daily post; a stored time no longer valid falls back to the default."""
    try:
        hhmm = parse_hhmm(guild.digest_time)
    except ValueError:
        log.warning("guild %s has a bad digest time %r; using %s", guild.id, guild.digest_time,
                    app.settings.digest.default_time)
        hhmm = app.settings.digest.default_time
    hh, mm = hhmm.split(":")
    return int(hh), int(mm)


async def guilds(app: App) -> list[GuildSettings]:
    """Every guild in the store (not the opt-out placeholder), typed, by id."""
    defaults = app.settings.digest
    return [GuildSettings.from_row(g, defaults) for g in await app.store.list_guilds() if g["id"] != PLACEHOLDER_GUILD]


async def due(app: App, now_utc: datetime) -> list[DigestDue]:
    """Every guild whose daily post is due at ``now_utc`` (aware; naive is taken as UTC): its local
    time (``digest_time`` in ``timezone``) has come today and it has not posted on that local date
    (``last_digest_date``). Each guild's settings are read once, here."""
    if now_utc.tzinfo is None:
        now_utc = now_utc.replace(tzinfo=timezone.utc)
    out: list[DigestDue] = []
    for g in await guilds(app):
        local = now_utc.astimezone(guild_zone(app, g))
        if (local.hour, local.minute) < _due_at(app, g):
            continue
        today = local.date().isoformat()
        if g.last_digest_date != today:
            out.append(DigestDue(g, today))
    return out


def _clock(app: App, guild: GuildSettings, date: str) -> float:
    """The ranking's clock for ``date``: the end of that day in the guild's timezone, or now when
    earlier (rounded as ``/recommend``'s, :func:`campfire.features.picks.clock`)."""
    d = date_cls.fromisoformat(date)
    end = datetime(d.year, d.month, d.day, tzinfo=guild_zone(app, guild)).timestamp() + 86400.0 - 1e-3
    return min(clock(), end)


async def run(
    app: App,
    guild: int | GuildSettings,
    date: str | None = None,
    *,
    dry_run: bool,
    all_members: bool = False,
    k: int | None = None,
    present: Callable[[int], bool] | None = None,
    audience: Audience | None = None,
) -> DigestRun:
    """Each subscribed member's picks in ``guild`` (an id — its row is then read once — or the
    settings already read) for the guild-local ``date`` (YYYY-MM-DD; default today there).

    ``dry_run``: nothing is recorded. Otherwise the picks are recorded as sent (a member never gets
    the same item twice; a re-run on the same date gives the same picks back). ``all_members``
    (dry runs only) adds every member with ≥ 3 interactions. ``k``: picks per member (default
    ``recsys.picks_per_member``). ``present(member_id) -> bool``: the front end's check that a
    member is still there (members it refuses are left out of the result; their picks are still
    recorded). ``audience``: who will read the picks (:class:`Audience`;
    default :func:`post_audience`, where the guild's post goes) — a channel's readers get only picks
    and quotes they can all see. Raises ValueError for an unknown guild id, a bad date, or
    ``all_members`` without ``dry_run``."""
    from recsys.digest import daily_picks

    if not isinstance(guild, GuildSettings):
        row = await app.store.get_guild(guild)
        if row is None or guild == PLACEHOLDER_GUILD:
            raise ValueError(f"unknown guild {guild}")
        guild = GuildSettings.from_row(row, app.settings.digest)
    date = date or local_date(app, guild)
    try:
        now = _clock(app, guild, date)
    except ValueError:
        raise ValueError(f"date must be YYYY-MM-DD, got {date!r}") from None
    t0 = time.perf_counter()
    audience = audience or post_audience(guild)
    ranked = await daily_picks(app.recommender, guild.id, date, dry_run=dry_run, all_members=all_members, k=k,
                               now=now, guild={"id": guild.id, "nsfw_allowed": guild.nsfw_allowed},
                               audience=audience.channel_id)
    ranked = [mp for mp in ranked if present is None or present(mp.member_id)]
    covers = await app.store.conversation_message_ids({p.item.id for mp in ranked for p in mp.picks})
    picks = tuple(
        MemberPicks(mp.guild_id, mp.member_id, mp.member, tuple(to_pick(p, covers.get(p.item.id, ())) for p in mp.picks))
        for mp in ranked
    )
    return DigestRun(guild=guild, date=date, picks=picks, dry_run=dry_run, took_s=time.perf_counter() - t0)


def post_audience(guild: GuildSettings) -> Audience:
    """Who reads the guild's daily post as its settings say: the digest channel's readers, or each
    member alone (DMs) when it has none. A front end that sends elsewhere passes its own."""
    return Audience(guild.digest_channel_id)


async def mark_posted(app: App, guild_id: int, date: str) -> None:
    """Remember that the guild's daily post for its local ``date`` (YYYY-MM-DD) went out: the guild
    is not due again that day. Raises ValueError for a bad date."""
    date_cls.fromisoformat(date)
    await app.store.update_guild(guild_id, last_digest_date=date)


async def post(
    app: App,
    due_post: DigestDue,
    deliver: Callable[[DigestRun], Awaitable[str]],
    *,
    sent: Sized,
    present: Callable[[int], bool] | None = None,
    audience: Audience | None = None,
) -> DigestRun:
    """One guild's daily post: :func:`run` (recorded), ``deliver(run)`` — the front end's sending,
    returning where the picks went (``channel`` | ``thread`` | ``dm``; not called when nobody has a
    pick: ``none``) — then :func:`mark_posted`. Returns the run with ``where`` set.

    ``sent``: the front end's list of messages sent so far (it appends as it goes). When ``deliver``
    raises, the guild is marked posted if ``sent`` is not empty (part of the post is out: never
    twice a day) and stays due otherwise (the next tick retries); the exception propagates.
    ``audience``: where ``deliver`` will send (default :func:`post_audience`): a channel's readers
    get only picks and quotes they can all see, a member alone what they can see."""
    guild, date = due_post.guild, due_post.date
    result = await run(app, guild, date, dry_run=False, present=present, audience=audience)
    ops.observe_digest(seconds=result.took_s, members=len(result.picks), picks=result.pick_count)
    where = "none"
    try:
        if result.picks:
            where = await deliver(result)
    except Exception:
        ops.observe_digest(seconds=0.0, outcome="error")
        if len(sent):
            await mark_posted(app, guild.id, date)
            log.warning("daily post for guild %s on %s stopped after %d message(s); not retried today",
                        guild.id, date, len(sent))
        raise
    await mark_posted(app, guild.id, date)
    log.info("daily post for guild %s on %s: %d members, %s", guild.id, date, len(result.picks), where)
    await refit_ranker(app, guild.id)
    return replace(result, where=where)


async def refit_ranker(app: App, guild_id: int) -> None:
    """Once the post is out: refit the guild's own ranker (at most daily; kept only when it beats the
    default on the held-out slice, :func:`recsys.guild_ranker.refit`, fitted in a worker thread). It
    ranks from then on (members keep the picks their post gave them today); a failed fit is logged
    and leaves the ranker as it was."""
    from recsys.guild_ranker import refit

    try:
        await refit(app.recommender, guild_id)
    except Exception:
        log.exception("refitting guild %s's ranker failed; its ranker is unchanged", guild_id)

