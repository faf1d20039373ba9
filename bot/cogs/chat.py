"""The chat assistant: answers when mentioned, in DMs, when a member replies to it, and in threads it
started.

Flow (one message): should we answer? → per-member cooldown → memory (the thread's recent messages,
the reply chain, the DM's recent messages, or in a channel the member's recent exchange with Campfire;
at most ``chat.history_messages`` messages, trimmed to the token budget by ``model.prompts``) →
persona and streamed reply from :mod:`campfire.features.chat` (chat is served before waiting stories;
the reply ends on a complete sentence) → :class:`bot.messages.StreamingReply` edits the reply at most
once per ``chat.edit_interval_s`` and continues in a new message before 2,000 characters. Typing is shown
until the first message; when the generator is saturated the member sees their queue position.
Every message allows a ping of the member being answered only (never @everyone, @here or roles).
Message contents are logged at DEBUG only.
"""

from __future__ import annotations

import asyncio
import logging
import re
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.errors import generator_message, new_error_id
from bot.messages import StreamingReply
from campfire.features import chat
from campfire.features.types import ChatLine

if TYPE_CHECKING:
    from bot.app import CampfireBotMixin

log = logging.getLogger(__name__)

QUEUE_TEXT = "⏳ Lots of people are talking to me right now: you're #{position} in line. I'll answer here as soon as I can."
UNAVAILABLE_TEXT = "I can't chat right now: my writing engine isn't running. Please try again later."
CHANNEL_SCAN = 100  # recent channel messages read for a member's exchange with Campfire (one API page)
CHAT_TYPES = (discord.MessageType.default, discord.MessageType.reply)


def _cooldown_key(message: discord.Message) -> tuple[int, int]:
    return (message.channel.id, message.author.id)


def answer_mentions(member: discord.abc.User) -> discord.AllowedMentions:
    """The only pings a reply may make: the member being answered (never @everyone/@here/roles)."""
    return discord.AllowedMentions(everyone=False, roles=False, users=[member], replied_user=True)


def readable_content(message: discord.Message, bot_id: int) -> str:
    """A message's text as the model should read it: the bot's own mention removed, other member,
    role and channel mentions as ``@name``/``#name``; ``(an attachment)`` for a message with only files."""
    text = re.sub(rf"<@!?{bot_id}>", "", message.content)
    for user in message.mentions:
        text = re.sub(rf"<@!?{user.id}>", "@" + user.display_name, text)
    for role in message.role_mentions:
        text = text.replace(f"<@&{role.id}>", "@" + role.name)
    for channel in message.channel_mentions:
        text = text.replace(f"<#{channel.id}>", "#" + getattr(channel, "name", str(channel.id)))
    text = text.strip()
    if not text and message.attachments:
        text = "(an attachment: " + ", ".join(a.filename for a in message.attachments) + ")"
    return text


class Chat(commands.Cog):
    """The chat listener. ``bot.app.generator`` may be None (then members get a kind message)."""

    def __init__(self, bot: CampfireBotMixin) -> None:
        self.bot = bot
        self.app = bot.app
        self.settings = bot.app.settings
        per = self.settings.discord.cooldown_message_s
        self._cooldown = commands.CooldownMapping.from_cooldown(1, per, _cooldown_key) if per > 0 else None

    # ---- deciding ------------------------------------------------------------------------------
    @property
    def me(self) -> discord.ClientUser | None:
        return self.bot.user  # type: ignore[attr-defined,no-any-return]

    async def resolve_reference(self, message: discord.Message) -> discord.Message | None:
        """The message ``message`` replies to (from the cache, else fetched), or None."""
        ref = message.reference
        if ref is None or ref.message_id is None:
            return None
        if isinstance(ref.resolved, discord.Message):
            return ref.resolved
        if ref.cached_message is not None:
            return ref.cached_message
        cached = self.bot._connection._get_message(ref.message_id)  # type: ignore[attr-defined]
        if cached is not None:
            return cached
        channel = message.channel
        if ref.channel_id != channel.id:
            channel = self.bot.get_channel(ref.channel_id) or channel  # type: ignore[attr-defined]
        try:
            return await channel.fetch_message(ref.message_id)  # type: ignore[union-attr]
        except (discord.NotFound, discord.Forbidden, discord.HTTPException):
            return None

    async def should_answer(self, message: discord.Message) -> bool:
        """True for a member's message that mentions the bot, is a DM, replies to the bot, or is in
        a thread the bot started. Bots (itself included) and system messages are ignored."""
        me = self.me
        if me is None or message.author.bot or message.author.id == me.id:
            return False
        if message.type not in CHAT_TYPES:
            return False
        if message.guild is None:
            return True
        if any(user.id == me.id for user in message.mentions):
            return True
        channel = message.channel
        if isinstance(channel, discord.Thread) and channel.owner_id == me.id:
            return True
        if message.reference is not None:
            replied = await self.resolve_reference(message)
            return replied is not None and replied.author.id == me.id
        return False

    def on_cooldown(self, message: discord.Message) -> float:
        """Seconds left of the member's cooldown in this channel (0 = may be answered; counts it)."""
        if self._cooldown is None:
            return 0.0
        bucket = self._cooldown.get_bucket(message)
        return (bucket.update_rate_limit() or 0.0) if bucket is not None else 0.0

    # ---- memory --------------------------------------------------------------------------------
    async def _recent(self, channel: Any, before: discord.Message, limit: int) -> list[discord.Message]:
        """Up to ``limit`` messages of ``channel`` before ``before``, oldest first ([] when unreadable)."""
        try:
            older = [m async for m in channel.history(limit=limit, before=before)]
        except discord.HTTPException:
            return []
        return sorted(older, key=lambda m: m.id)  # snowflakes sort by time (Discord sends newest first)

    async def history(self, message: discord.Message) -> tuple[list[discord.Message], chat.ChatScope]:
        """Earlier messages of the conversation, oldest first, and where it happens: the thread's
        recent messages in a thread; the reply chain above ``message`` when it is a reply; the DM's
        recent messages in a DM; else (a mention in a channel) the channel's last
        :data:`CHANNEL_SCAN` messages, of which :func:`campfire.features.chat.conversation` keeps the
        exchange between this member and Campfire. At most ``chat.history_messages`` messages
        except in a channel."""
        limit = self.settings.chat.history_messages
        channel = message.channel
        if isinstance(channel, discord.Thread):
            return await self._recent(channel, message, limit), "thread"
        if message.reference is not None:
            return await self._chain(message, limit), "chain"
        if message.guild is None:
            return await self._recent(channel, message, limit), "dm"
        return await self._recent(channel, message, CHANNEL_SCAN), "channel"

    async def _chain(self, message: discord.Message, limit: int) -> list[discord.Message]:
        """The reply chain above ``message`` (at most ``limit`` messages), oldest first."""
        chain: list[discord.Message] = []
        current = message
        seen = {message.id}
        while len(chain) < limit and current.reference is not None:
            parent = await self.resolve_reference(current)
            if parent is None or parent.id in seen:
                break
            chain.append(parent)
            seen.add(parent.id)
            current = parent
        return list(reversed(chain))

    def line(self, message: discord.Message) -> ChatLine:
        """``message`` as chat reads it (:class:`campfire.features.types.ChatLine`)."""
        me = self.me
        assert me is not None
        return ChatLine(
            id=message.id, author_id=message.author.id, text=readable_content(message, me.id),
            author_name=message.author.display_name, from_bot=message.author.id == me.id,
            addressed=any(user.id == me.id for user in message.mentions),
            reply_to_id=message.reference.message_id if message.reference is not None else None,
        )

    async def turns(self, message: discord.Message) -> list[Any]:
        """The conversation as ``model.prompts.Turn`` objects, oldest first, ending with ``message``
        (:func:`campfire.features.chat.conversation`). Other bots' and system messages are left out."""
        me = self.me
        assert me is not None
        earlier, scope = await self.history(message)
        lines = [self.line(m) for m in earlier
                 if (m.author.id == me.id or not m.author.bot) and m.type in CHAT_TYPES]
        return chat.conversation([*lines, self.line(message)], member_id=message.author.id, scope=scope,
                                 limit=self.settings.chat.history_messages)

    async def persona(self, message: discord.Message) -> str:
        """The persona for ``message``'s channel (:func:`campfire.features.chat.persona`: the
        channel's, a thread's parent's, the guild's, else ``chat.persona``)."""
        channel = message.channel
        return await chat.persona(
            self.app, guild_id=message.guild.id if message.guild is not None else None,
            channel_id=channel.id, parent_id=getattr(channel, "parent_id", None),
        )

    # ---- answering -----------------------------------------------------------------------------
    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if not await self.should_answer(message):
            return
        wait = self.on_cooldown(message)
        if wait:
            log.debug("member %s on chat cooldown for %.1f s", message.author.id, wait)
            return
        await self.answer(message)

    async def answer(self, message: discord.Message) -> StreamingReply:
        """Stream the model's answer to ``message`` into one or more replies; never raises for a
        generator failure (the member is told kindly). Returns the :class:`StreamingReply`."""
        mentions = answer_mentions(message.author)
        channel = message.channel
        sent_any = asyncio.Event()

        async def send(content: str) -> discord.Message:
            sent_any.set()
            if not reply.messages:
                try:
                    return await message.reply(content, allowed_mentions=mentions)
                except discord.HTTPException:  # the member's message is gone: answer in the channel
                    pass
            return await channel.send(content, allowed_mentions=mentions)

        async def edit(msg: discord.Message, content: str) -> Any:
            return await msg.edit(content=content, allowed_mentions=mentions)

        reply = StreamingReply(send, edit, edit_interval_s=self.settings.chat.edit_interval_s)
        if self.app.generator is None:
            await reply.set_status(UNAVAILABLE_TEXT)
            return reply

        async def on_queued(position: int) -> None:
            await reply.set_status(QUEUE_TEXT.format(position=position))

        typing = asyncio.create_task(self._typing(channel, sent_any), name="campfire-chat-typing")
        try:
            turns = await self.turns(message)
            persona = await self.persona(message)
            log.debug("answering member %s in channel %s with %d turn(s)", message.author.id, channel.id, len(turns))
            async with aclosing(chat.reply(self.app, persona, turns, member_id=message.author.id, on_queued=on_queued)) as deltas:
                async for delta in deltas:
                    await reply.push(delta)
            await reply.finish(fallback="…")
        except Exception as err:  # generator down, Discord error, or a bug: tell the member kindly
            text = generator_message(err)
            if text is None:
                error_id = new_error_id()
                log.error("chat reply failed [error %s] (channel %s)", error_id, channel.id, exc_info=err)
                text = f"Something went wrong on my side, sorry (error `{error_id}`)."
            else:
                log.warning("chat reply failed: %s: %s", type(err).__name__, err)
            await self._tell(reply, text)
        finally:
            sent_any.set()
            await typing
        return reply

    async def _tell(self, reply: StreamingReply, text: str) -> None:
        """Finish ``reply`` with ``text`` as a note (after any partial answer) — never raises."""
        try:
            if reply.text:
                await reply.push(f"\n\n*({text})*")
                await reply.finish()
            elif reply.messages:
                reply.text = ""
                await reply.finish(fallback=text)
            else:
                await reply.set_status(text)
        except discord.HTTPException as err:
            log.warning("could not tell a member about a failed reply: %s", err)

    @staticmethod
    async def _typing(channel: Any, done: asyncio.Event) -> None:
        """Show "Campfire is typing…" until ``done`` (the first message is out)."""
        try:
            async with channel.typing():
                await done.wait()
        except Exception as err:  # typing is cosmetic: never let it break a reply
            log.debug("typing indicator failed: %s", err)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Chat(bot))  # type: ignore[arg-type]
