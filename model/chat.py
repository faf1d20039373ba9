"""The chat journey: persona + history (under a token budget) → streamed reply."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

from campfire.config import ChatSettings
from model.client import GeneratorClient, QueueCallback
from model.prompts import Turn, build_chat_messages, system_prompt
from model.tokens import TokenCounter

EMPTY_REPLY_APOLOGY = "Sorry, I couldn't come up with a reply just now. Could you say that again?"


async def stream_reply(
    client: GeneratorClient,
    *,
    persona: str,
    turns: list[Turn],
    chat: ChatSettings,
    counter: TokenCounter,
    user: str | None = None,
    on_queued: QueueCallback | None = None,
) -> AsyncIterator[str]:
    """Stream the assistant's reply to the last of ``turns`` (oldest first), as text deltas.

    Uses the new turn plus up to ``chat.history_messages`` earlier turns that fit ``chat.history_token_budget`` tokens, at
    most ``chat.max_reply_tokens`` reply tokens and ``chat.temperature``. An empty model reply is
    retried once; a second empty reply yields :data:`EMPTY_REPLY_APOLOGY`. Raises the client's
    :class:`model.errors.GeneratorError` subclasses. Close it with ``contextlib.aclosing`` when
    stopping early.
    """
    if not turns:
        raise ValueError("There is no message to reply to.")
    # Tokenising the history is CPU work (≈ 20 ms for 20 turns): keep it off the event loop.
    messages = await asyncio.to_thread(
        build_chat_messages,
        system_prompt(persona),
        turns[-(chat.history_messages + 1) :],
        budget_tokens=chat.history_token_budget,
        counter=counter,
    )
    for _ in range(2):
        produced = False
        async with aclosing(
            client.stream_chat(
                messages, max_tokens=chat.max_reply_tokens, temperature=chat.temperature, user=user, on_queued=on_queued
            )
        ) as stream:
            async for delta in stream:
                if not produced:
                    delta = delta.lstrip()
                    if not delta:
                        continue  # leading whitespace only: not yet a reply
                produced = True
                yield delta
        if produced:
            return
    yield EMPTY_REPLY_APOLOGY
