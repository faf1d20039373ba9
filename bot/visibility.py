"""Who may view a channel, Discord side: the permission snapshots the recorder stores
(:func:`visibility_snapshot`), the members of private threads (:class:`ThreadMembers`), and the live
check ``/recommend`` applies on top of the stored rule (:func:`live_view_check`).

One rule for both (``recsys.storage.guilds`` applies the stored side):

- a channel: Discord's ``permissions_for`` (overwrites and administrator included);
- a public thread: its parent's;
- a private thread (``ChannelType.private_thread``): only its members and those who may manage
  threads in the parent (``manage_threads``; administrators have it) — and only while they can view
  the parent. Discord's ``Thread.permissions_for`` copies the parent's permissions, so it cannot be
  used for these. Members come from the gateway (THREAD_MEMBERS_UPDATE: ``on_thread_member_join`` /
  ``on_raw_thread_member_remove``, which need the members intent Campfire asks for) and are fetched
  (``GET /channels/{id}/thread-members``) when a private thread is first seen. Until a fetch succeeded
  the membership is *unknown*: the snapshot says so (``members_known: false``) and lists the members
  the gateway reported, and the store adds the thread's participants (its authors and repliers) — so
  an unknown thread is shown to nobody but them and its managers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import discord

log = logging.getLogger(__name__)

#: The store's channel kind of a private thread (the importer's name for DiscordChatExporter's
#: ``GuildPrivateThread`` too): ``recsys.storage.guilds`` never treats one as public.
PRIVATE_THREAD_KIND = "private_thread"
#: The snapshot of a thread Discord will not show the bot (gone, or no longer visible to it): private,
#: members unknown — so only its participants see what was recorded of it.
UNKNOWN_PRIVATE_THREAD: dict[str, Any] = {"public": False, "thread": "private", "roles": [], "members": [],
                                          "denied_members": [], "members_known": False}
#: Thread members per page of ``GET /channels/{id}/thread-members`` (Discord's maximum).
MEMBERS_PAGE = 100


def is_private_thread(channel: Any) -> bool:
    """Whether ``channel`` is a private thread (type 12)."""
    return isinstance(channel, discord.Thread) and channel.is_private()


def _is_member_target(target: Any) -> bool:
    return isinstance(target, (discord.Member, discord.User)) or (
        isinstance(target, discord.Object) and target.type in (discord.Member, discord.User)
    )


def channel_snapshot(channel: discord.abc.GuildChannel) -> dict[str, Any]:
    """Who may view a (non-thread) channel: ``{"public": bool, "roles": [role ids], "members": [member
    ids allowed by an overwrite], "denied_members": [member ids denied by one]}``."""
    guild = channel.guild
    public = channel.permissions_for(guild.default_role).view_channel
    roles = sorted(r.id for r in guild.roles if channel.permissions_for(r).view_channel)
    members, denied = [], []
    for target, overwrite in channel.overwrites.items():
        if not _is_member_target(target):
            continue
        allow, deny = overwrite.pair()
        if allow.view_channel:
            members.append(target.id)
        elif deny.view_channel:
            denied.append(target.id)
    return {"public": bool(public), "roles": roles, "members": sorted(members), "denied_members": sorted(denied)}


def thread_managers(parent: Any) -> tuple[list[int], list[int]]:
    """``(role ids, member ids)`` who may view ``parent`` and manage its threads (so see its private
    threads): roles by ``permissions_for(role)``, members by their own overwrite on the parent."""
    if parent is None:
        return [], []
    guild = parent.guild
    roles = sorted(r.id for r in guild.roles
                   if (p := parent.permissions_for(r)).view_channel and p.manage_threads)
    members = []
    for target, overwrite in parent.overwrites.items():
        if isinstance(target, discord.Member) and overwrite.pair()[0].manage_threads:
            perms = parent.permissions_for(target)
            if perms.view_channel and perms.manage_threads:
                members.append(target.id)
    return roles, sorted(members)


def private_thread_snapshot(thread: discord.Thread, members: Iterable[int] | None, *,
                            cached: Iterable[int] = (), left: Iterable[int] = ()) -> dict[str, Any]:
    """A private thread's snapshot: ``{"public": false, "thread": "private", "roles": [roles that
    manage threads in the parent], "members": [thread members and member managers], "denied_members":
    [...], "members_known": bool}``. ``members``: the whole membership (None: unknown — then
    ``cached``, the members the gateway reported, are listed, ``left`` those it saw leave are denied,
    and the store adds the thread's participants)."""
    roles, managers = thread_managers(thread.parent)
    known = members is not None
    listed = set(members) if members is not None else set(cached) - set(left)
    return {"public": False, "thread": "private", "roles": roles, "members": sorted(listed | set(managers)),
            "denied_members": [] if known else sorted(set(left) - set(managers)), "members_known": known}


class ThreadMembers:
    """Members of the private threads the bot sees. ``members(thread_id)`` is the whole membership
    once fetched (kept current by join / remove events) and None before; ``cached`` / ``left`` what
    the gateway reported meanwhile. Events that arrive during a fetch are applied after it."""

    def __init__(self) -> None:
        self._known: dict[int, set[int]] = {}
        self._cached: dict[int, set[int]] = {}
        self._left: dict[int, set[int]] = {}
        self._during: dict[int, list[tuple[int, bool]]] = {}  # thread -> events seen while fetching

    def members(self, thread_id: int) -> set[int] | None:
        """The whole membership of the thread, or None when unknown."""
        known = self._known.get(thread_id)
        return set(known) if known is not None else None

    def cached(self, thread_id: int) -> set[int]:
        return set(self._cached.get(thread_id, ()))

    def left(self, thread_id: int) -> set[int]:
        return set(self._left.get(thread_id, ()))

    def changed(self, thread_id: int, member_id: int, *, joined: bool) -> None:
        """A member joined (``joined``) or left the thread (a gateway event)."""
        if thread_id in self._during:
            self._during[thread_id].append((member_id, joined))
        cached, left = self._cached.setdefault(thread_id, set()), self._left.setdefault(thread_id, set())
        (cached.add if joined else cached.discard)(member_id)
        (left.discard if joined else left.add)(member_id)
        known = self._known.get(thread_id)
        if known is not None:
            (known.add if joined else known.discard)(member_id)

    def forget(self, thread_id: int | None = None) -> None:
        """Drop what is known of one thread (deleted), or of all (a reconnect may have missed events)."""
        for d in (self._known, self._cached, self._left):
            if thread_id is None:
                d.clear()
            else:
                d.pop(thread_id, None)

    def fetching(self, thread_id: int) -> bool:
        return thread_id in self._during

    async def fetch(self, thread: discord.Thread) -> bool:
        """Fetch the thread's whole membership from Discord (paged, :data:`MEMBERS_PAGE` at a time).
        Returns whether it is now known; a failure (no permission, Discord down) leaves it unknown
        and is logged, never raised. The bot itself is not counted."""
        if thread.id in self._during:
            return False
        self._during[thread.id] = []
        try:
            ids = await fetch_member_ids(thread)
        except Exception as err:  # noqa: BLE001 — a failed look-up (403, Discord down) must not break recording
            log.warning("members of private thread %s unknown (%s: %s)", thread.id, type(err).__name__, err)
            return False
        finally:
            during = self._during.pop(thread.id, [])
        me = thread.guild.me.id if thread.guild.me is not None else None
        self._known[thread.id] = {m for m in ids if m != me}
        for member_id, joined in during:
            self.changed(thread.id, member_id, joined=joined)
        return True

    def snapshot(self, thread: discord.Thread) -> dict[str, Any]:
        """The private thread's snapshot as known now (:func:`private_thread_snapshot`)."""
        cached = self.cached(thread.id) | {m.id for m in thread.members}
        return private_thread_snapshot(thread, self.members(thread.id), cached=cached, left=self.left(thread.id))


async def fetch_member_ids(thread: discord.Thread) -> list[int]:
    """Every member id of ``thread`` from Discord (``GET /channels/{id}/thread-members``, paged by
    ``after``). Raises ``discord.HTTPException`` when Discord refuses."""
    http = thread._state.http
    page = await http.get_thread_members(thread.id)
    ids = [int(m["user_id"]) for m in page if "user_id" in m]
    while len(page) >= MEMBERS_PAGE:
        route = discord.http.Route("GET", "/channels/{channel_id}/thread-members", channel_id=thread.id)
        page = await http.request(route, params={"limit": MEMBERS_PAGE, "after": max(ids)})
        ids += [int(m["user_id"]) for m in page if "user_id" in m]
    return ids


def visibility_snapshot(channel: Any, threads: ThreadMembers | None = None) -> dict[str, Any]:
    """Who may view ``channel`` (see the module doc): a private thread's snapshot from ``threads``
    (membership unknown without it), a public thread's parent's (marked ``"thread": "public"``), else
    the channel's own."""
    if is_private_thread(channel):
        return (threads or ThreadMembers()).snapshot(channel)
    if isinstance(channel, discord.Thread):
        parent = channel.parent
        return {**(channel_snapshot(parent) if parent is not None else UNKNOWN_PRIVATE_THREAD), "thread": "public"}
    return channel_snapshot(channel)


def can_view_private_thread(thread: discord.Thread, member: discord.Member, threads: ThreadMembers | None) -> bool:
    """The live rule for a private thread: the member views the parent and manages threads there, or
    is a member. When the membership is unknown and the gateway named them neither member nor leaver,
    True: the stored rule (participants only) has already decided."""
    parent = thread.parent
    if parent is None:
        return False
    perms = parent.permissions_for(member)
    if not perms.view_channel:
        return False
    if perms.manage_threads:
        return True
    known = threads.members(thread.id) if threads is not None else None
    if known is not None:
        return member.id in known
    if thread.get_member(member.id) is not None or (threads is not None and member.id in threads.cached(thread.id)):
        return True
    return threads is None or member.id not in threads.left(thread.id)


def live_view_check(guild: discord.Guild | None, member: object,
                    threads: ThreadMembers | None = None) -> Callable[[int], bool]:
    """``channel_id -> bool`` with Discord's permissions when the channel is in the cache (a private
    thread by :func:`can_view_private_thread`); True otherwise (the recommender has already filtered
    with the stored snapshot)."""

    def can_view(channel_id: int) -> bool:
        if guild is None or not isinstance(member, discord.Member):
            return True
        channel = guild.get_channel_or_thread(channel_id)
        if channel is None:
            return True
        if is_private_thread(channel):
            return can_view_private_thread(channel, member, threads)  # type: ignore[arg-type]
        return channel.permissions_for(member).view_channel

    return can_view
