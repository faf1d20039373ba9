"""Splitting, sanitising and the streaming-edit helper (pure functions, no Discord)."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from bot.messages import CURSOR, DISCORD_LIMIT, StreamingReply, close_open_fence, sanitise, split_message

CODE = "```python\n" + "\n".join(f"total += values[{i}]  # step {i}" for i in range(12)) + "\n```"


def long_reply_with_code(n_chars: int = 5000) -> str:
    """Prose paragraphs with a code block every few paragraphs, about ``n_chars`` long."""
    paragraphs, i = [], 0
    while sum(len(p) + 2 for p in paragraphs) < n_chars:
        paragraphs.append(f"Paragraph {i}: " + " ".join(f"word{i}_{j}" for j in range(40)))
        if i % 3 == 2:
            paragraphs.append(CODE.replace("total", f"total{i}"))
        i += 1
    return "\n\n".join(paragraphs)


def words(text: str) -> list[str]:
    return text.split()


def fences_balanced(piece: str) -> bool:
    return piece.count("```") % 2 == 0


def test_split_5000_chars_keeps_code_blocks_whole_and_words_intact():
    text = long_reply_with_code(5000)
    pieces = split_message(text)
    assert len(text) > 5000 and len(pieces) >= 3
    assert all(len(p) <= DISCORD_LIMIT for p in pieces)
    assert all(fences_balanced(p) for p in pieces)
    # every code block of the source appears whole in exactly one piece
    blocks = re.findall(r"```python\n.*?\n```", text, flags=re.S)
    assert len(blocks) >= 3
    for block in blocks:
        assert sum(block in p for p in pieces) == 1
    # nothing lost, no word cut in two
    assert words("\n".join(pieces)) == words(text)


def test_split_prefers_paragraph_breaks():
    para = "A sentence of several words. " * 20
    text = "\n\n".join([para.strip()] * 6)
    pieces = split_message(text, limit=1000)
    assert all(p.endswith("words.") for p in pieces)
    assert words(" ".join(pieces)) == words(text)


def test_code_block_longer_than_a_message_is_closed_and_reopened():
    block = "```rust\n" + "\n".join(f"let x{i} = {i};" for i in range(400)) + "\n```"
    pieces = split_message("Here you go:\n\n" + block + "\n\nDone.")
    assert len(pieces) >= 3
    assert all(len(p) <= DISCORD_LIMIT and fences_balanced(p) for p in pieces)
    assert all(p.startswith("```rust\n") for p in pieces[2:])  # continuation pieces reopen with the language
    lines = [ln for p in pieces for ln in p.splitlines() if ln.startswith("let ")]
    assert lines == [f"let x{i} = {i};" for i in range(400)]


def test_only_a_word_longer_than_the_limit_is_cut():
    url = "https://example.com/" + "a" * 2500
    pieces = split_message("see " + url + " now")
    assert all(len(p) <= DISCORD_LIMIT for p in pieces)
    assert "".join(pieces).replace(" ", "") == ("see" + url + "now")


def test_split_edge_cases():
    assert split_message("") == []
    assert split_message("short") == ["short"]
    with pytest.raises(ValueError):
        split_message("x", limit=5)


def test_sanitise_defangs_mass_mentions_and_drops_control_characters():
    out = sanitise("hi @everyone and @here\x00\x07 ok  \n")
    assert "@everyone" not in out and "@here" not in out
    assert out == "hi @\u200beveryone and @\u200bhere ok"
    assert close_open_fence("```py\nx = 1") == "```py\nx = 1\n```"
    assert close_open_fence("no code") == "no code"


class Channel:
    """Messages as lists of (monotonic time, content) — what a Discord channel would show."""

    def __init__(self) -> None:
        self.messages: list[list[tuple[float, str]]] = []

    async def send(self, content: str) -> int:
        assert len(content) <= DISCORD_LIMIT
        self.messages.append([(time.monotonic(), content)])
        return len(self.messages) - 1

    async def edit(self, index: int, content: str) -> None:
        assert len(content) <= DISCORD_LIMIT
        self.messages[index].append((time.monotonic(), content))

    def final(self) -> list[str]:
        return [m[-1][1] for m in self.messages]


async def test_streaming_reply_edits_at_most_once_per_interval_and_continues_in_new_messages():
    text = long_reply_with_code(5000)
    channel = Channel()
    reply = StreamingReply(channel.send, channel.edit, edit_interval_s=0.2)
    for i in range(0, len(text), 50):
        await reply.push(text[i : i + 50])
        await asyncio.sleep(0.005)
    await reply.finish()
    finals = channel.final()
    assert len(finals) >= 3
    assert all(CURSOR not in f for f in finals)
    assert all(fences_balanced(f) for f in finals)
    assert words("\n".join(finals)) == words(text)
    for history in channel.messages:
        times = [t for t, _ in history]
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert all(g >= 0.2 - 0.01 for g in gaps), gaps  # edit interval respected per message
    assert reply.edits >= 3  # it really streamed


async def test_streaming_reply_shows_status_then_text():
    channel = Channel()
    reply = StreamingReply(channel.send, channel.edit, edit_interval_s=0.2)
    await reply.set_status("you're #2 in line")
    await reply.set_status("you're #1 in line")  # within the interval: skipped
    assert channel.final() == ["you're #2 in line"]
    await reply.push("Hello there")
    await reply.finish()
    assert channel.final() == ["Hello there"]  # the status message became the answer
    assert len(channel.messages) == 1


async def test_streaming_reply_with_no_text_shows_the_fallback():
    channel = Channel()
    reply = StreamingReply(channel.send, channel.edit, edit_interval_s=0.2)
    await reply.finish(fallback="(nothing)")
    assert channel.final() == ["(nothing)"]
