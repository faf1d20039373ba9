"""Chat: which persona speaks in a channel, and the streamed reply to a conversation.

Front ends turn what was said into plain :class:`model.prompts.Turn` objects (oldest first, ending
with the member's message) — the bot from Discord reply chains and threads, the console from its
session — then::

    persona = await chat.persona(app, guild_id=..., channel_id=..., parent_id=...)
    async with contextlib.aclosing(chat.reply(app, persona, turns, member_id=...)) as deltas:
        async for delta in deltas: ...
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from campfire import ops

if TYPE_CHECKING:
    from campfire.app import App
    from model.prompts import Turn


async def persona(app: App, *, guild_id: int | None, channel_id: int | None = None, parent_id: int | None = None) -> str:
    """The persona (a system-prompt paragraph) for a conversation: the channel's own, else (in a
    thread) its parent channel's, else the guild's, else ``chat.persona``. ``guild_id`` None (a DM)
    always gets ``chat.persona``. At most three primary-key reads."""
    if guild_id is not None:
        for cid in (channel_id, parent_id):
            if cid:
                row = await app.store.get_channel(cid)
                if row and row.get("persona"):
                    return str(row["persona"])
        guild = await app.store.get_guild(guild_id)
        if guild and guild.get("persona"):
            return str(guild["persona"])
    return app.settings.chat.persona


async def reply(
    app: App,
    persona: str,
    turns: list[Turn],
    *,
    member_id: int | None = None,
    on_queued: Callable[[int], Awaitable[None] | None] | None = None,
) -> AsyncIterator[str]:
    """Stream the assistant's reply to the last of ``turns`` as text deltas, with the app's chat
    settings (history, token budget, reply length, temperature) and token counter
    (:func:`model.chat.stream_reply`; a second empty reply yields its apology). ``member_id`` is
    passed to the generator as the OpenAI ``user``; ``on_queued(position)`` (1 = next) is called
    while the request waits for a slot. Raises :class:`model.errors.GeneratorUnavailable` when the
    app has no generator, the client's other ``GeneratorError`` subclasses, and ``ValueError`` for
    no turns. Close it with ``contextlib.aclosing`` when stopping early."""
    from contextlib import aclosing

    from model.chat import stream_reply
    from model.errors import GeneratorUnavailable

    if app.generator is None:
        raise GeneratorUnavailable("The writing engine is not running in this session.")
    t0, first, tokens = time.perf_counter(), None, 0
    try:
        async with aclosing(stream_reply(
            app.generator, persona=persona, turns=turns, chat=app.settings.chat, counter=app.counter,
            user=str(member_id) if member_id is not None else None, on_queued=on_queued,
        )) as deltas:
            async for delta in deltas:
                first = first if first is not None else time.perf_counter() - t0
                tokens += 1  # one streamed delta ≈ one token (the server streams per token)
                yield delta
    except Exception as err:
        ops.observe_generation("chat", outcome=ops.outcome_of(err))
        raise
    ops.observe_generation("chat", ttft_s=first, total_s=time.perf_counter() - t0, completion_tokens=tokens)
