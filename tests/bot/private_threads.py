"""Private threads (type 12) for the bot tests, made the way Discord makes them: THREAD_CREATE and
THREAD_MEMBERS_UPDATE gateway events parsed by discord.py's own state, and the thread-members REST
endpoint (``GET /channels/{id}/thread-members``, which dpytest lacks) answered like Discord would —
or refusing, as when the bot may not list them."""

from __future__ import annotations

from typing import Any

import discord
import discord.ext.test as dpytest

from bot.testing.discord_http import snowflake


def _member_payload(thread_id: int, member: Any) -> dict[str, Any]:
    return {"id": str(thread_id), "user_id": str(member.id), "join_timestamp": discord.utils.utcnow().isoformat(),
            "flags": 0}


def answer_thread_members(h: Any, monkeypatch: Any, roster: list[Any] | None) -> None:
    """Discord's answer to ``GET /channels/{id}/thread-members``: the members in ``roster`` (the
    test edits the list as members join and leave), or — ``roster`` None — a 403."""

    async def get_thread_members(channel_id: Any) -> list[dict[str, Any]]:
        if roster is None:
            raise discord.Forbidden(type("R", (), {"status": 403, "reason": "Forbidden"})(), "Missing Access")
        return [_member_payload(int(channel_id), m) for m in roster]

    monkeypatch.setattr(h.bot.http, "get_thread_members", get_thread_members)


async def open_private_thread(h: Any, parent: discord.TextChannel, owner: Any, name: str = "secret plans") -> discord.Thread:
    """A new private thread in ``parent`` owned by ``owner`` (gateway THREAD_CREATE, ``newly_created``)."""
    data = {"id": str(snowflake()), "guild_id": str(h.guild.id), "parent_id": str(parent.id),
            "owner_id": str(owner.id), "name": name, "type": 12, "message_count": 0, "member_count": 1,
            "rate_limit_per_user": 0, "flags": 0, "newly_created": True,
            "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "locked": False, "invitable": False,
                                "archive_timestamp": discord.utils.utcnow().isoformat()}}
    h.state.parse_thread_create(data)
    await dpytest.run_all_events()
    thread = h.guild.get_thread(int(data["id"]))
    assert thread is not None and thread.is_private()
    return thread


async def members_update(h: Any, thread: discord.Thread, *, added: tuple = (), removed: tuple = ()) -> None:
    """Gateway THREAD_MEMBERS_UPDATE: ``added`` members joined, ``removed`` left."""
    h.state.parse_thread_members_update({
        "id": str(thread.id), "guild_id": str(h.guild.id), "member_count": len(thread.members) + len(added),
        "added_members": [_member_payload(thread.id, m) for m in added],
        "removed_member_ids": [str(m.id) for m in removed],
    })
    await dpytest.run_all_events()
