"""Chat: which persona speaks in a channel, what the conversation so far is, and the streamed reply.

Front ends turn the messages they can see into plain :class:`~campfire.features.types.ChatLine`
records (oldest first, ending with the member's message); :func:`conversation` picks the memory —
the reply chain, the thread, the DM, or in a channel the recent exchange between that member and
Campfire — and returns :class:`model.prompts.Turn` objects; the console keeps its session's turns::

    persona = await chat.persona(app, guild_id=..., channel_id=..., parent_id=...)
    turns = chat.conversation(lines, member_id=..., scope="channel", limit=app.settings.chat.history_messages)
    async with contextlib.aclosing(chat.reply(app, persona, turns, member_id=...)) as deltas:
        async for delta in deltas: ...

The reply always ends on a complete sentence (:mod:`model.chat`); a message in a language the
server's model cannot write (``generator.languages``) gets, in that language, an honest sentence
saying so and what an admin can do (:func:`decline`), without calling the generator.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from campfire import ops
from campfire.features.types import ChatLine

if TYPE_CHECKING:
    from campfire.app import App
    from model.prompts import Turn

#: Where a conversation happens: a reply chain, a thread, a DM, or a channel (mention without reply).
ChatScope = Literal["chain", "thread", "dm", "channel"]

#: What a member is told when the server's model cannot write their language (by language code).
DECLINES: dict[str, str] = {
    "zh": ("抱歉，这个服务器的模型写不好中文，所以我没法用中文好好回答你。服务器管理员可以换用多语言模型"
           "（例如用 `campfire model pull` 准备 Qwen2.5 指令模型），并在 config.toml 的 `generator.languages` "
           "里加上 \"zh\"（见 README）。现在可以先用英文问我。"),
    "en": ("Sorry, this server's model cannot write English well, so I can't answer you properly. A server "
           "admin can switch to a multilingual model (for example a Qwen2.5 instruct model, via "
           "`campfire model pull`) and add \"en\" to `generator.languages` in config.toml (see the README)."),
}


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


def exchange(lines: Sequence[ChatLine], member_id: int) -> list[ChatLine]:
    """The lines of a channel's recent messages (oldest first) that are the exchange between member
    ``member_id`` and Campfire: the member's messages that mention Campfire or reply to it, Campfire's
    replies to those, and Campfire's messages right after a kept one (a long reply sent in parts).
    Everything said by or to other members is left out."""
    kept: list[ChatLine] = []
    member_ids: set[int] = set()
    bot_ids: set[int] = set()
    previous_kept_bot = False
    for line in lines:
        if line.from_bot:
            keep = line.reply_to_id in member_ids if line.reply_to_id else previous_kept_bot
            if keep:
                bot_ids.add(line.id)
        elif line.author_id == member_id:
            keep = line.addressed or line.reply_to_id in bot_ids
            if keep:
                member_ids.add(line.id)
        else:
            keep = False
        if keep:
            kept.append(line)
        previous_kept_bot = keep and line.from_bot
    return kept


def conversation(lines: Sequence[ChatLine], *, member_id: int, scope: ChatScope, limit: int) -> list[Turn]:
    """The turns to answer the last of ``lines`` (the member's new message) with, oldest first:
    up to ``limit`` earlier lines — all of them for a reply chain, a thread or a DM; only the
    :func:`exchange` with ``member_id`` in a channel — then the new message. Consecutive Campfire
    lines (one long reply sent in parts) become one assistant turn; empty lines are skipped. The
    token budget is applied later (:func:`model.prompts.build_chat_messages`). Always ends with a
    user turn (``"Hello!"`` when the new message has no text)."""
    from model.prompts import Turn

    if not lines:
        raise ValueError("There is no message to reply to.")
    *earlier, current = lines
    if scope == "channel":
        earlier = exchange(earlier, member_id)
    out: list[Turn] = []
    recent = earlier[-limit:] if limit > 0 else []
    for line in [*recent, current]:
        if not line.text.strip():
            continue
        if line.from_bot:
            if out and out[-1].role == "assistant":
                out[-1] = Turn(role="assistant", content=out[-1].content + "\n" + line.text)
            else:
                out.append(Turn(role="assistant", content=line.text))
        else:
            out.append(Turn(role="user", content=line.text, name=line.author_name or None))
    if not out or out[-1].role != "user":
        out.append(Turn(role="user", content="Hello!", name=current.author_name or None))
    return out


def languages(app: App) -> list[str]:
    """The languages the server's model writes well (:func:`model.languages.languages_of`:
    ``generator.languages``, else detected from the prepared model; ``["en"]`` for SmolLM2)."""
    from model.languages import languages_of

    return list(languages_of(app.settings))


def decline(app: App, turns: Sequence[Turn]) -> str | None:
    """The sentence (in the member's language) saying the server's model cannot write the language of
    the latest turn, or None when it can (language by :func:`model.prompts.detect_language`;
    :data:`DECLINES` has English and Chinese)."""
    from model.prompts import detect_language

    if not turns:
        return None
    language = detect_language(turns[-1].content)
    return None if language in languages(app) else DECLINES.get(language)


async def reply(
    app: App,
    persona: str,
    turns: list[Turn],
    *,
    member_id: int | None = None,
    on_queued: Callable[[int], Awaitable[None] | None] | None = None,
    stats: dict[str, Any] | None = None,
) -> AsyncIterator[str]:
    """Stream the assistant's reply to the last of ``turns`` as text deltas, with the app's chat
    settings (history, token budget, reply length, temperature) and token counter
    (:func:`model.chat.stream_reply`: the text ends on a complete sentence; an empty or unfinished
    reply yields an apology). A message in a language the model cannot write gets :func:`decline`'s
    sentence as the one delta, without calling the generator. ``member_id`` is passed to the
    generator as the OpenAI ``user``; ``on_queued(position)`` (1 = next) is called while the request
    waits for a slot (chat is served before waiting stories). ``stats``, when given, is filled as
    :func:`model.chat.stream_reply` does (``finish_reason`` ``declined`` for a declined message) plus
    ``total_s``. Raises :class:`model.errors.GeneratorUnavailable` when the app has no generator, the
    client's other ``GeneratorError`` subclasses, and ``ValueError`` for no turns. Close it with
    ``contextlib.aclosing`` when stopping early."""
    from contextlib import aclosing

    from model.chat import stream_reply
    from model.errors import GeneratorUnavailable

    if not turns:
        raise ValueError("There is no message to reply to.")
    stats = stats if stats is not None else {}
    if (sentence := decline(app, turns)) is not None:
        stats.update(finish_reason="declined", trimmed=False, completion_tokens=0, total_s=0.0)
        yield sentence
        return
    if app.generator is None:
        raise GeneratorUnavailable("The writing engine is not running in this session.")
    t0, first = time.perf_counter(), None
    try:
        async with aclosing(stream_reply(
            app.generator, persona=persona, turns=turns, chat=app.settings.chat, counter=app.counter,
            user=str(member_id) if member_id is not None else None, on_queued=on_queued, stats=stats,
        )) as deltas:
            async for delta in deltas:
                first = first if first is not None else time.perf_counter() - t0
                yield delta
    except Exception as err:
        ops.observe_generation("chat", outcome=ops.outcome_of(err))
        raise
    total = time.perf_counter() - t0
    tokens = int(stats.get("completion_tokens") or 0)
    stats["total_s"] = total
    ops.observe_generation("chat", ttft_s=first, total_s=total, completion_tokens=tokens)
