"""Picks for a member now, their feedback on a pick, and the daily-post subscription.

Shared by the Discord cogs (``/recommend now|subscribe|unsubscribe``, the 👍 / 👎 / Not interested
buttons under picks and stories) and the console (``/recommend``, ``/rate``). Never imports discord:
the bot's live permission check comes in as a plain predicate on channel ids.

- :func:`now` — a member's picks as :class:`~campfire.features.types.Pick` values: the picks the
  daily post gave them today when it did (so ``/recommend`` and the digest agree all day), else the
  same ranking the digest runs, on the same clock (:func:`clock`).
- :func:`feedback` / :func:`set_feedback` — 👍 / 👎 / Not interested, replacing the member's earlier
  feedback on the item (SQL and FAISS move together) and moving the item's rating by the change.
- :func:`subscribe` / :func:`unsubscribe` — the daily post's subscription (refused after opt-out).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from campfire.features.recording import upsert_member
from campfire.features.text import item_link, item_title
from campfire.features.types import (
    FeedbackOutcome,
    GuildSettings,
    Member,
    MemberRecord,
    Pick,
)

if TYPE_CHECKING:
    from campfire.app import App
    from recsys.store import Item

#: Interaction kinds that make up a member's feedback on an item: a later one replaces an earlier one.
FEEDBACK_KINDS = ("rated_up", "rated_down", "dismissed")
#: Change of an item's stored rating for each feedback kind (the popularity prior reads it).
RATING_DELTA = {"rated_up": 1.0, "rated_down": -1.0, "dismissed": 0.0}
#: Width of :attr:`Pick.title` (front ends clip further).
TITLE_WIDTH = 200


#: Seconds the ranking clock is rounded up to, so picks asked for a moment apart rank on one clock.
CLOCK_S = 60.0


def pick_kind(item: Any) -> str:
    """What a pick is (``item`` as :class:`recsys.store.Item`): ``conversation`` (meta.conversation),
    ``thread`` (meta.thread), ``story``, ``catalogue`` (an imported entry) or ``message``."""
    meta = item.meta or {}
    if item.kind == "story":
        return "story"
    if item.kind == "imported":
        return "catalogue"
    if meta.get("conversation") and not meta.get("monologue"):  # a monologue is one member's message
        return "conversation"
    return "thread" if meta.get("thread") else "message"


def to_pick(ranked: Any, message_ids: Sequence[int] = ()) -> Pick:
    """A recommender pick (``recsys.service.Pick``: ``item``, ``score``, ``reason``) as front ends see
    it; ``message_ids``: the messages it covers (``Store.conversation_message_ids``)."""
    item = ranked.item
    kind = pick_kind(item)
    participants = int((item.meta or {}).get("participants") or 0) if kind in ("conversation", "thread") else 0
    return Pick(item_id=item.id, title=item_title(item, TITLE_WIDTH), link=item_link(item), kind=kind,
                     score=float(ranked.score), reason=ranked.reason or "", participants=participants,
                     message_ids=tuple(int(i) for i in message_ids))


async def to_picks(app: App, ranked: Sequence[Any]) -> list[Pick]:
    """:func:`to_pick` for many, with the messages each covers read in one go."""
    ids: Mapping[int, list[int]] = await app.store.conversation_message_ids({p.item.id for p in ranked}) if ranked else {}
    return [to_pick(p, ids.get(p.item.id, ())) for p in ranked]


def clock(now: float | None = None) -> float:
    """The ranking clock for picks asked at ``now`` (UNIX s, default the current time): rounded up to
    the next multiple of :data:`CLOCK_S`, so ``/recommend`` and a digest run a moment apart rank with the
    same freshness, and feedback given a moment ago already counts."""
    now = time.time() if now is None else float(now)
    return now - now % CLOCK_S + (CLOCK_S if now % CLOCK_S else 0.0)


# ---- now ------------------------------------------------------------------------------------------
async def now(
    app: App, member: Member, *, can_view: Callable[[int], bool] | None = None, k: int | None = None
) -> list[Pick]:
    """Up to ``k`` (default ``recsys.picks_per_member``) picks for ``member`` in ``member.guild_id``,
    best first; ``[]`` when there are none yet. Nothing is recorded (a preview).

    A :class:`~campfire.features.types.MemberRecord` (the member as the front end sees them now,
    with their roles) is stored first — unless they opted out of recording — so the recommender's
    visibility filter sees what they may view now. ``can_view(channel_id) -> bool``: the front
    end's live check (e.g. Discord permissions); picks from channels it refuses are dropped (items
    outside any channel are kept)."""
    from recsys.guild_ranker import load_ranker

    if isinstance(member, MemberRecord):
        await upsert_member(app, member)
    ranked = await _sent_today(app, member.guild_id, member.id)
    if ranked is None:
        await load_ranker(app.recommender, member.guild_id)
        ranked = await app.recommender.recommend(member.guild_id, member.id, k=k, now=clock())
    elif k is not None:
        ranked = ranked[:k]
    if can_view is not None:
        ranked = [p for p in ranked if p.item.channel_id is None or can_view(p.item.channel_id)]
    return await to_picks(app, ranked)


async def _sent_today(app: App, guild_id: int, member_id: int) -> list[Any] | None:
    """The picks the member's daily post gave them today (guild-local date), best first, without those
    they have given feedback on or engaged with since (their feedback changed them), screened for what
    they may see now (``recsys.audience.screen_recorded``); None when they got no daily post today, or
    none of its picks is left."""
    from campfire.features.digest import local_date
    from recsys.audience import screen_recorded
    from recsys.service import Pick as RankedPick

    store = app.store
    row = await store.get_guild(guild_id)
    if row is None:
        return None
    sent = (await store.recommendations_on(guild_id, local_date(app, GuildSettings.from_row(row, app.settings.digest,
                                                                                             guild_id)))).get(member_id)
    if not sent:
        return None
    touched = {i.item_id for i in await store.interactions(guild_id, member_id) if i.kind != "recommended"}
    items = await store.get_items([i for i, _, _ in sent if i not in touched])
    ranked = [RankedPick(item=items[i], score=s, reason=r) for i, s, r in sent if i in items]
    return (await screen_recorded(store, guild_id, {member_id: ranked}, None)).get(member_id) or None


# ---- feedback ------------------------------------------------------------------------------------
async def feedback(
    app: App, guild_id: int, member_id: int, item_id: int, kind: str, *, source_id: int | None = None
) -> FeedbackOutcome:
    """Member ``member_id``'s ``kind`` (one of :data:`FEEDBACK_KINDS`) on item ``item_id`` of
    ``guild_id`` (see :func:`set_feedback`). Returns ``gone`` when the item is no longer stored or
    is another guild's, ``opted_out`` when the member opted out of recording, else ``kept``.
    Raises ``ValueError`` for an unknown ``kind``."""
    if kind not in FEEDBACK_KINDS:
        raise ValueError(f"unknown feedback kind {kind!r}")
    item = await app.store.get_item(item_id)
    if item is None or item.guild_id != guild_id:
        return "gone"
    return "kept" if await set_feedback(app, item, member_id, kind, source_id=source_id) else "opted_out"


async def set_feedback(app: App, item: Item, member_id: int, kind: str, *, source_id: int | None = None) -> bool:
    """Record ``kind`` (one of :data:`FEEDBACK_KINDS`) by a member on ``item`` (a stored
    ``recsys.store.Item``), replacing the member's earlier feedback on it (a 👎 after a 👍 leaves only
    the 👎), and move ``item.rating`` by the change (:data:`RATING_DELTA`). ``source_id``: the
    message the feedback was given on, if any.

    Returns False when nothing was recorded (the member opted out of recording); True otherwise,
    including when the same feedback was already there (nothing changes then). The earlier rows go
    through ``Recommender.remove_interactions`` (SQL rows, stored vectors and FAISS ids together).
    Raises ``ValueError`` for an unknown ``kind``."""
    if kind not in FEEDBACK_KINDS:
        raise ValueError(f"unknown feedback kind {kind!r}")
    store, rec, guild_id = app.store, app.recommender, item.guild_id
    if await store.is_opted_out(member_id):
        return False
    before = [i for i in await store.interactions(guild_id, member_id) if i.item_id == item.id and i.kind in FEEDBACK_KINDS]
    if len(before) == 1 and before[0].kind == kind:
        return True  # the same rating again: nothing changes
    if before:
        await rec.remove_interactions(guild_id, member_id, item_id=item.id, kinds=FEEDBACK_KINDS)
    about = f"{item.title}\n{item.text}" if item.title else item.text
    ids = await rec.record(
        [{"guild_id": guild_id, "member_id": member_id, "item_id": item.id, "kind": kind, "text": about[:1000],
          "source_id": source_id}]
    )
    delta = RATING_DELTA[kind] - sum(RATING_DELTA[i.kind] for i in before)
    if delta:
        await store.add_rating(item.id, delta)
    return bool(ids)


# ---- subscription --------------------------------------------------------------------------------
async def subscribe(app: App, member: Member) -> GuildSettings | None:
    """Subscribe ``member`` to their guild's daily post (storing them first: name, and roles for a
    :class:`~campfire.features.types.MemberRecord`). Returns the guild's settings (when and where
    the post goes: ``digest_time`` in ``timezone``, ``digest_channel_id`` or DMs), or None when the
    member opted out of recording (nothing changes)."""
    store = app.store
    if not await upsert_member(app, member):
        return None
    await store.set_subscribed(member.guild_id, member.id, True)
    return GuildSettings.from_row(await store.get_guild(member.guild_id), app.settings.digest, member.guild_id)


async def unsubscribe(app: App, guild_id: int, member_id: int) -> None:
    """No more daily picks for the member in ``guild_id`` (nothing happens when they were not subscribed)."""
    await app.store.set_subscribed(guild_id, member_id, False)


# ---- whose picks, where (front ends without Discord: the console) --------------------------------
async def find_member(app: App, guild_id: int, name: str) -> Member | None:
    """A member of ``guild_id`` by display name (case-insensitive, a leading ``@`` ignored) or id;
    None when there is none."""
    found = await app.store.find_members(name.strip().lstrip("@"), guild_id)
    return Member.from_row(found[0]) if found else None


async def active_members(app: App, guild_id: int, *, min_interactions: int = 3, limit: int = 5) -> list[Member]:
    """Up to ``limit`` members of ``guild_id`` with at least ``min_interactions`` interactions (bots
    and opted-out members left out), by id."""
    return [Member.from_row(m) for m in (await app.store.members_with_interactions(guild_id, min_interactions))[:limit]]


async def interaction_count(app: App, guild_id: int, member_id: int) -> int:
    """How many interactions of the member in ``guild_id`` the recommender holds."""
    return len(await app.store.interactions(guild_id, member_id))


async def choose_guild(app: App, guild_id: int | None, *, fallback_id: int, fallback_name: str) -> tuple[GuildSettings, int]:
    """The guild to act in and its member count: ``guild_id``; else the first stored guild (not the
    opt-out placeholder 0, not ``fallback_id``); else ``fallback_id`` (created, named
    ``fallback_name``, on first use). Raises ValueError naming the stored guilds for an unknown
    ``guild_id``."""
    store, defaults = app.store, app.settings.digest
    if guild_id is None:
        stored = [g["id"] for g in await store.list_guilds() if g["id"] not in (0, fallback_id)]
        guild_id = stored[0] if stored else fallback_id
    row = await store.get_guild(guild_id)
    if row is None:
        if guild_id != fallback_id:
            known = ", ".join(str(g["id"]) for g in await store.list_guilds() if g["id"]) or "none yet"
            raise ValueError(f"unknown guild {guild_id} (guilds in the store: {known})")
        await store.upsert_guild(guild_id, fallback_name)
        row = await store.get_guild(guild_id)
    return GuildSettings.from_row(row, defaults, guild_id), await store.member_count(guild_id)
