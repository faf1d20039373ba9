"""Reading DiscordChatExporter (DCE) JSON exports, streamed with ijson (the JSON tree of an export is
never built in memory; only the compact records of the file being read are). Format reference:
DiscordChatExporter's JSON writer (Tyrrrz/DiscordChatExporter, ``JsonMessageWriter``): a top-level
object with ``guild``, ``channel``, ``dateRange``, ``messages`` and ``messageCount``. A malformed file
raises :class:`ExportFormatError` naming the file, byte offset and line."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import ijson

log = logging.getLogger(__name__)

# Message types (Discord's MessageType as DCE names them) whose content a member wrote.
CONTENT_TYPES = frozenset({"Default", "Reply", "ApplicationCommand", "ContextMenuCommand"})
THREAD_TYPES = frozenset({"GuildPublicThread", "GuildPrivateThread", "GuildNewsThread"})
DIRECT_TYPES = frozenset({"DirectTextChat", "DirectGroupTextChat"})
CHANNEL_KINDS = {
    "GuildTextChat": "text",
    "GuildNews": "news",
    "GuildForum": "forum",
    "GuildVoiceChat": "voice",
    "GuildStageVoice": "stage",
    "GuildPublicThread": "public_thread",
    "GuildPrivateThread": "private_thread",
    "GuildNewsThread": "news_thread",
}
THREAD_OPENING_MESSAGES = 3  # a thread item is its title + this many opening messages
THREAD_TEXT_CHARS = 2000


class ExportFormatError(ValueError):
    """A file is not a valid DiscordChatExporter JSON export; ``str()`` names file and position."""


# ---- reading DCE exports ------------------------------------------------------------------------
@dataclass(slots=True)
class _Msg:
    id: int
    type: str
    created_at: float
    author_id: int
    text: str
    reply_to: int | None
    reactions: int  # total reaction count
    reactors: list[int]  # user ids that reacted, where the export lists them


@dataclass
class _Export:
    path: Path
    guild_id: int
    guild_name: str
    channel_id: int
    channel_name: str
    channel_kind: str
    parent_id: int | None  # threads: the parent channel (DCE puts it in categoryId)
    parent_name: str
    is_thread: bool
    members: dict[int, tuple[str, bool, list[int] | None]] = field(default_factory=dict)
    messages: list[_Msg] = field(default_factory=list)
    bots: set[int] = field(default_factory=set)


class _CountingReader:
    """A binary reader that counts the bytes handed to the parser. After ``fine_from`` bytes it
    hands them out one at a time, so a parse error can be located to the exact byte."""

    def __init__(self, raw: BinaryIO, fine_from: int | None = None):
        self.raw = raw
        self.pos = 0
        self.fine_from = fine_from

    def read(self, n: int = -1) -> bytes:
        if self.fine_from is not None and n != 0:
            n = self.fine_from - self.pos if self.pos < self.fine_from else 1
            n = max(1, n)
        b = self.raw.read(n)
        self.pos += len(b)
        return b


def _parse_time(value: Any) -> float:
    """ISO-8601 (naive = UTC) or UNIX seconds -> UNIX seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _events(path: Path, reader: _CountingReader) -> Iterator[tuple[str, Any]]:
    """Yield ``("guild"|"channel"|"message", obj)`` from a DCE export, one message at a time."""
    builder: ijson.ObjectBuilder | None = None
    target = ""
    for prefix, event, value in ijson.parse(reader, use_float=True):
        if builder is not None:
            builder.event(event, value)
            if prefix == target and event == "end_map":
                yield ("message" if target == "messages.item" else target), builder.value
                builder = None
            continue
        if event == "start_map" and prefix in ("guild", "channel", "messages.item"):
            builder = ijson.ObjectBuilder()
            builder.event(event, value)
            target = prefix


def _message_text(m: dict[str, Any]) -> str:
    text = (m.get("content") or "").strip()
    for e in m.get("embeds") or []:  # link previews add what the link is about
        extra = " — ".join(s for s in ((e.get("title") or "").strip(), (e.get("description") or "").strip()) if s)
        if extra and extra not in text:
            text = f"{text}\n{extra}" if text else extra
    return text


def _int(v: Any, what: str) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is not an id: {v!r}") from None


def _read_export(path: Path, reader: _CountingReader) -> _Export:
    exp: _Export | None = None
    guild: dict[str, Any] | None = None
    channel: dict[str, Any] | None = None
    index = -1
    for kind, obj in _events(path, reader):
        if kind == "guild":
            guild = obj
            continue
        if kind == "channel":
            channel = obj
            continue
        index += 1
        if exp is None:
            if guild is None or channel is None:
                raise ExportFormatError("not a DiscordChatExporter JSON export (no guild/channel before messages)")
            exp = _new_export(path, guild, channel)
        try:
            author = obj["author"]
            msg = _Msg(
                id=_int(obj["id"], "message id"),
                type=str(obj.get("type") or "Default"),
                created_at=_parse_time(obj["timestamp"]),
                author_id=_int(author["id"], "author id"),
                text=_message_text(obj),
                reply_to=None,
                reactions=0,
                reactors=[],
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ExportFormatError(f"message #{index + 1}: {_describe_value_error(err)}") from None
        ref = obj.get("reference") or {}
        if ref.get("messageId") and msg.type in CONTENT_TYPES:
            msg.reply_to = _int(ref["messageId"], "reference.messageId")
        _add_member(exp, author)
        for u in obj.get("mentions") or []:
            _add_member(exp, u)
        for r in obj.get("reactions") or []:
            msg.reactions += int(r.get("count") or 0)
            for u in r.get("users") or []:
                _add_member(exp, u)
                uid = int(u["id"])
                if uid != msg.author_id and uid not in msg.reactors:
                    msg.reactors.append(uid)
        exp.messages.append(msg)
    if exp is None:
        if guild is None or channel is None:
            raise ExportFormatError("not a DiscordChatExporter JSON export (no guild/channel)")
        exp = _new_export(path, guild, channel)
    return exp


def _describe_value_error(err: Exception) -> str:
    if isinstance(err, KeyError):
        return f"missing field {err.args[0]!r}"
    return str(err)


def _new_export(path: Path, guild: dict[str, Any], channel: dict[str, Any]) -> _Export:
    try:
        ctype = str(channel.get("type") or "GuildTextChat")
        is_thread = ctype in THREAD_TYPES
        parent = channel.get("categoryId") if is_thread else None
        return _Export(
            path=path,
            guild_id=_int(guild["id"], "guild id"),
            guild_name=str(guild.get("name") or ""),
            channel_id=_int(channel["id"], "channel id"),
            channel_name=str(channel.get("name") or ""),
            channel_kind=CHANNEL_KINDS.get(ctype, "text") if ctype not in DIRECT_TYPES else "dm",
            parent_id=_int(parent, "thread parent id") if parent else None,
            parent_name=str(channel.get("category") or "") if is_thread else "",
            is_thread=is_thread,
        )
    except (KeyError, ValueError) as err:
        raise ExportFormatError(f"bad guild/channel header: {_describe_value_error(err)}") from None


def _add_member(exp: _Export, user: dict[str, Any]) -> None:
    uid = int(user["id"])
    name = str(user.get("nickname") or user.get("name") or "")
    roles = user.get("roles")
    role_ids = [int(r["id"]) for r in roles if isinstance(r, dict) and "id" in r] if isinstance(roles, list) else None
    is_bot = bool(user.get("isBot"))
    if is_bot:
        exp.bots.add(uid)
    old = exp.members.get(uid)
    if old is None or (role_ids is not None and old[2] is None) or (name and not old[0]):
        exp.members[uid] = (name or (old[0] if old else ""), is_bot, role_ids if role_ids is not None else (old[2] if old else None))


def _line_of(path: Path, offset: int) -> int:
    """1-based line number of byte ``offset`` (streamed count)."""
    line, pos = 1, 0
    with path.open("rb") as f:
        while pos < offset:
            chunk = f.read(min(1 << 20, offset - pos))
            if not chunk:
                break
            line += chunk.count(b"\n")
            pos += len(chunk)
    return line


def read_export(path: Path) -> _Export:
    """Parse one DCE export (blocking; run it in a worker thread). Raises :class:`ExportFormatError`
    whose message names the file, the byte offset and the line of the first problem."""
    with path.open("rb") as raw:
        reader = _CountingReader(raw)
        try:
            return _read_export(path, reader)
        except ijson.JSONError as err:
            window_start = max(0, reader.pos - 65536)
            first = str(err).strip().splitlines()[0] if str(err).strip() else "malformed JSON"
        except ExportFormatError as err:
            raise ExportFormatError(f"{path}: {err} (near byte {reader.pos}, line {_line_of(path, reader.pos)})") from None
    # Locate the error exactly: parse again, feeding single bytes from the last window on.
    size = path.stat().st_size
    offset = reader.pos
    with path.open("rb") as raw:
        fine = _CountingReader(raw, fine_from=window_start)
        try:
            _read_export(path, fine)
        except (ijson.JSONError, ExportFormatError):
            offset = max(0, fine.pos - 1)
    if "premature EOF" in first or offset >= size - 1:
        offset = size
        where = f"at byte {offset} (end of file: truncated?)"
    else:
        where = f"at byte {offset}"
    raise ExportFormatError(f"{path}: malformed JSON {where}, line {_line_of(path, offset)}: {first}")


def export_files(paths: Iterable[str | Path]) -> list[Path]:
    """The ``.json`` files named by ``paths`` (folders searched recursively, sorted; thread
    files in ``_threads/`` subfolders included). Raises FileNotFoundError for a missing path."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*.json") if f.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    seen: set[Path] = set()
    return [f for f in out if not (f.resolve() in seen or seen.add(f.resolve()))]


def _reference_targets(path: Path) -> set[int]:
    """Ids of messages replied to in ``path`` (a cheap streaming pre-pass; errors are left to the import)."""
    out: set[int] = set()
    try:
        with path.open("rb") as f:
            for v in ijson.items(f, "messages.item.reference.messageId"):
                if v:
                    out.add(int(v))
    except (ijson.JSONError, ValueError, TypeError):
        pass
    return out
