"""Text that Campfire sends to Discord: splitting, sanitising, and streaming by edits.

Discord rejects a message over 2,000 characters (error 50035) and rate-limits edits, so:

- :func:`split_message` cuts text into pieces of at most ``limit`` characters, never inside a word and
  never inside a fenced code block (a block longer than a whole message is closed at the end of one
  piece and reopened, with its language, at the start of the next: each piece still renders).
- :func:`sanitise` removes what must never reach Discord from model output (NUL bytes, mass-mention
  pings are defanged in the text as well as blocked by ``allowed_mentions``).
- :class:`StreamingReply` shows a growing reply by editing its message at most once per
  ``edit_interval_s`` seconds, continuing in a new message before the limit is reached.

Limits: https://discord.com/developers/docs/resources/message#create-message (content ≤ 2,000 chars).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

DISCORD_LIMIT = 2000  # characters of message content (Discord API)
FENCE = "```"
CURSOR = " ▌"  # shown at the end of a message while it is still being written
_FENCE_RE = re.compile(r"```")
_MASS_MENTION_RE = re.compile(r"@(everyone|here)")
_ZWSP = "\u200b"


def sanitise(text: str) -> str:
    """Model or member text made safe to show: NULs and other C0 controls (but tab/newline) removed,
    ``@everyone``/``@here`` defanged with a zero-width space (they also never ping: every message is
    sent with ``allowed_mentions`` that exclude them), trailing whitespace trimmed."""
    text = "".join(ch for ch in text if ch in "\n\t" or ord(ch) >= 32)
    text = _MASS_MENTION_RE.sub(lambda m: "@" + _ZWSP + m.group(1), text)
    return text.rstrip()


def _fence_starts(text: str) -> list[int]:
    return [m.start() for m in _FENCE_RE.finditer(text)]


def _inside_code(fences: list[int], pos: int) -> bool:
    """True when a cut at ``pos`` would fall inside a fenced block (or inside a ``` token)."""
    opened = 0
    for start in fences:
        if start >= pos:
            break
        if start < pos < start + 3:
            return True
        opened += 1
    return opened % 2 == 1


def _open_fence_language(text: str, fences: list[int], pos: int) -> str:
    """Language tag of the block open at ``pos`` (``python`` in ```` ```python ````), or ''."""
    before = [f for f in fences if f < pos]
    if len(before) % 2 == 0:
        return ""
    start = before[-1] + 3
    line_end = text.find("\n", start)
    tag = text[start : line_end if line_end != -1 else start].strip()
    return tag if re.fullmatch(r"[\w+#.-]+", tag) else ""


def _best_cut(text: str, limit: int, fences: list[int]) -> int:
    """Where to end the first piece of ``text`` (an index ≤ limit), outside code and between words;
    0 when no such place exists."""
    floor = limit // 2
    for sep, min_pos in (("\n\n", floor), ("\n", floor), (". ", floor), (" ", 1), ("\n", 1)):
        pos = text.rfind(sep, 0, limit)
        while pos >= min_pos - len(sep) and pos > 0:
            cut = pos + (len(sep) if sep == ". " else 0)
            if cut <= limit and cut >= min_pos and not _inside_code(fences, cut):
                return cut
            pos = text.rfind(sep, 0, pos)
    return 0


def _split_first(text: str, limit: int) -> tuple[str, str, str]:
    """Cut the first piece off ``text`` (which is longer than ``limit``).

    Returns ``(head, rest, reopen)``: ``head`` (≤ limit chars) is the piece to send, ``rest`` is the
    untouched suffix of ``text`` that follows it, and ``reopen`` is the fence (```` ```lang\n ````) the
    next piece must start with when a code block was cut in two ('' otherwise).
    """
    fences = _fence_starts(text)
    cut = _best_cut(text, limit, fences)
    if cut:
        return text[:cut].rstrip(), text[cut:].lstrip(" \n"), ""
    # No clean cut outside code within the limit. If a code block is open there, cut at a line
    # break inside it, close it here and reopen it in the next piece.
    close = "\n" + FENCE
    room = limit - len(close)
    if _inside_code(fences, room):
        lang = _open_fence_language(text, fences, room)
        opening = max(f for f in fences if f < room) + 3
        pos = text.rfind("\n", opening, room)
        if pos <= opening:  # no line break inside the block: cut between words
            pos = text.rfind(" ", opening, room)
        if pos <= opening:  # one enormous token
            pos = room
        rest = text[pos + 1 :] if text[pos : pos + 1] in ("\n", " ") else text[pos:]
        return text[:pos] + close, rest, FENCE + lang + "\n"
    # A single word longer than the limit (e.g. a URL): the only mid-word cut there is.
    return text[:limit], text[limit:], ""


def split_message(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` characters.

    Cuts prefer a paragraph break, then a line break, a sentence end, a space — always outside fenced
    code blocks and never inside a word. A code block that cannot fit in one piece is cut at a line
    break inside it, closed with ``` and reopened (same language) in the next piece. A single "word"
    longer than ``limit`` (a URL, say) is the only thing ever cut mid-word. Empty text gives ``[]``.
    Raises ``ValueError`` when ``limit`` < 20.
    """
    if limit < 20:
        raise ValueError("limit must be at least 20 characters")
    pieces: list[str] = []
    text = text.strip("\n")
    while text:
        if len(text) <= limit:
            pieces.append(text)
            break
        head, rest, reopen = _split_first(text, limit)
        if head.strip():
            pieces.append(head)
        text = (reopen + rest) if rest else ""
    return pieces


def close_open_fence(text: str) -> str:
    """``text`` with an unclosed code fence closed (for showing a partial reply while it streams)."""
    return text + "\n" + FENCE if len(_fence_starts(text)) % 2 else text


class StreamingReply:
    """Shows a reply that grows token by token, as one or more Discord messages.

    ``send(content) -> message`` posts a new message (the first one should reply to the member);
    ``edit(message, content)`` edits one. Both are the caller's coroutines, so this class knows
    nothing of discord.py and is tested on its own.

    - :meth:`push` adds text; the visible message is edited at most once per ``edit_interval_s``
      (seconds, measured on ``clock``); a piece that reaches ``limit`` characters is finished in its
      message and the rest continues in a new one (cuts as :func:`split_message`).
    - :meth:`set_status` shows a line (e.g. the queue position) until the first text arrives.
    - :meth:`finish` writes the final text (no cursor) and returns the messages sent.

    ``limit`` leaves room for the cursor and a temporarily closed fence (default 1,990 ≤ 2,000).
    """

    def __init__(
        self,
        send: Callable[[str], Awaitable[Any]],
        edit: Callable[[Any, str], Awaitable[Any]],
        *,
        edit_interval_s: float = 1.0,
        limit: int = DISCORD_LIMIT - 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._edit = edit
        self.edit_interval_s = edit_interval_s
        self.limit = limit
        self._clock = clock
        self.messages: list[Any] = []  # every message sent, in order
        self.contents: list[str] = []  # what each message shows now
        self.text = ""  # everything pushed so far (raw model output)
        self._done = 0  # characters of sanitise(text) already finished in earlier messages
        self._reopen = ""  # fence reopening a code block cut between two messages
        self._fallback = "…"
        self._last_write = float("-inf")
        self.edits = 0  # edits made (for tests and the benchmark)

    @property
    def started(self) -> bool:
        """True once any message (status or text) has been sent."""
        return bool(self.messages)

    async def set_status(self, status: str) -> None:
        """Show ``status`` while no text has arrived yet: sent at once the first time, later changes
        shown only when the edit interval has passed (skipped otherwise)."""
        if self.text:
            return
        if not self.messages or self._interval_passed():
            await self._write(status)

    async def push(self, delta: str) -> None:
        """Add ``delta`` to the reply; the message is refreshed if the interval has passed."""
        if not delta:
            return
        self.text += delta
        if not self.messages or self._interval_passed():
            await self._refresh(final=False)

    async def finish(self, fallback: str = "…") -> list[Any]:
        """Write the final text (``fallback`` when nothing was pushed), waiting out the edit
        interval first if needed, and return the messages sent."""
        self._fallback = fallback
        if self.messages and not self._interval_passed():
            await asyncio.sleep(self.edit_interval_s - (self._clock() - self._last_write))
        await self._refresh(final=True)
        return self.messages

    def _interval_passed(self) -> bool:
        return self._clock() - self._last_write >= self.edit_interval_s

    async def _refresh(self, *, final: bool) -> None:
        full = sanitise(self.text)
        tail = (self._reopen + full[self._done :]).strip("\n")
        # a tail over the limit: finish its first piece in the current message, continue in a new one
        while len(tail) > self.limit:
            head, rest, reopen = _split_first(tail, self.limit)
            await self._write(head, new_after=True)
            self._done = len(full) - len(rest)
            self._reopen = reopen
            tail = (reopen + rest).strip("\n") if rest else ""
        if not tail and not final:
            return
        shown = (tail or self._fallback) if final else close_open_fence(tail) + CURSOR
        await self._write(shown)

    async def _write(self, content: str, *, new_after: bool = False) -> None:
        """Show ``content`` in the current message (send one if there is none); with ``new_after``
        the next write goes to a new message."""
        if not self.messages or self._current_closed:
            self.messages.append(await self._send(content))
            self.contents.append(content)
            self._current_closed = False
        elif content != self.contents[-1]:
            await self._edit(self.messages[-1], content)
            self.contents[-1] = content
            self.edits += 1
        self._last_write = self._clock()
        if new_after:
            self._current_closed = True

    _current_closed = False
