"""One way to name and shorten things for people, shared by the bot, the console and the CLI:
:func:`clip`, :func:`item_title`, :func:`item_link` and :func:`pick_line`."""

from __future__ import annotations

from typing import Any


def clip(text: str, limit: int, *, one_line: bool = False) -> str:
    """``text`` cut to at most ``limit`` characters, ending in "…" when cut. With ``one_line`` (or
    when the text has no newline) runs of whitespace become one space; otherwise the text is only
    stripped. ``limit`` must be ≥ 1."""
    text = " ".join(text.split()) if one_line or "\n" not in text else text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def item_title(item: Any, width: int = 80) -> str:
    """An item's title, else the start of its text, on one line of at most ``width`` characters
    (``item`` has ``title``, ``text`` and ``id``, as :class:`recsys.store.Item`)."""
    title = (item.title or "").strip() or " ".join((item.text or "").split())
    return clip(title or f"item {item.id}", width, one_line=True)


def item_link(item: Any) -> str | None:
    """Where a member can see ``item``: a message's jump URL
    (``https://discord.com/channels/<guild>/<channel>/<message>``), else the item's own url (a
    story's message, a catalogue entry's page); None when there is neither."""
    if item.kind == "message" and item.channel_id:
        return f"https://discord.com/channels/{item.guild_id}/{item.channel_id}/{item.id}"
    return item.url or None


def pick_line(pick: Any, *, width: int = 300) -> str:
    """One pick (:class:`campfire.features.types.Pick`: ``title``, ``reason``, ``link``) as a line of
    Markdown: ``**Title** — reason <link>`` (the title ≤ 80 characters, the reason ≤ ``width``; the
    link in angle brackets, so Discord shows no preview)."""
    line = f"**{clip(pick.title, 80, one_line=True)}** — {clip(pick.reason, width)}"
    return f"{line} <{pick.link}>" if pick.link else line
