"""Reading DiscordChatExporter (DCE) JSON exports, streamed with ijson (the JSON tree of an export is
never built in memory; only the compact records of the file being read are). Format reference:
DiscordChatExporter's JSON writer (Tyrrrz/DiscordChatExporter, ``JsonMessageWriter``): a top-level
object with ``guild``, ``channel``, ``dateRange``, ``exportedAt``, ``messages`` and ``messageCount``.
A malformed file (bad JSON, or no usable guild / channel id) raises :class:`ExportFormatError` naming
the file, byte offset and line; a bad field of a message costs that field or that message and one
line in ``_Export.problems`` (:mod:`recsys.dce_fields`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import ijson

from recsys.dce_fields import MISSING, Msg, Problems, User, as_id, as_time, describe, optional, read_message

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
@dataclass
class _Export:
    """One export file read: header, members met (id -> (display name or "", is bot, role ids or
    None)), readable messages and the problems met (one line each).

    ``exported_at``, ``after`` and ``before`` are UNIX s (``None``: not given, or open);
    ``range_known`` is False when ``dateRange`` or ``exportedAt`` could not be read. ``present`` holds
    the id of every message in the file, readable or not; ``complete`` is False when some message
    had no readable id (then the file cannot tell which messages are missing from it)."""

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
    messages: list[Msg] = field(default_factory=list)
    bots: set[int] = field(default_factory=set)
    exported_at: float | None = None
    after: float | None = None
    before: float | None = None
    range_known: bool = True
    present: set[int] = field(default_factory=set)
    complete: bool = True
    problems: list[str] = field(default_factory=list)


class _CountingReader:
    """A binary reader that counts the bytes handed to the parser. After ``fine_from`` bytes it
    hands them out one at a time, so a parse error can be located to the exact byte."""

    def __init__(self, raw: BinaryIO, fine_from: int | None = None):
        self.raw = raw
        self.pos = raw.tell()  # 3 after a byte-order mark (see _open)
        self.fine_from = fine_from

    def read(self, n: int = -1) -> bytes:
        if self.fine_from is not None and n != 0:
            n = self.fine_from - self.pos if self.pos < self.fine_from else 1
            n = max(1, n)
        b = self.raw.read(n)
        self.pos += len(b)
        return b


def _open(path: Path) -> BinaryIO:
    """``path`` opened for reading, past a UTF-8 byte-order mark if it starts with one (some
    Windows tools add it; JSON parsers refuse it)."""
    f = path.open("rb")
    if f.read(3) != b"\xef\xbb\xbf":
        f.seek(0)
    return f


def _parse_time(value: Any) -> float:
    """ISO-8601 (naive = UTC) or UNIX seconds -> UNIX seconds; ValueError otherwise."""
    t = as_time(value)
    if t is None:
        raise ValueError(f"not an ISO date or UNIX time: {value!r}")
    return t


_TOP = ("guild", "channel", "dateRange", "exportedAt", "message", "messages")


def _events(reader: _CountingReader) -> Iterator[tuple[str, Any]]:
    """Yield ``(key, value)`` for the top-level ``guild``, ``channel``, ``dateRange`` and
    ``exportedAt`` of a DCE export and ``("message", obj)`` for each element of ``messages``, one
    message at a time (``("messages", value)`` when ``messages`` is not a list). Values are as
    found: the caller checks their types."""
    builder: ijson.ObjectBuilder | None = None
    target, depth = "", 0
    for prefix, event, value in ijson.parse(reader, use_float=True):
        if builder is not None:
            builder.event(event, value)
            if event in ("start_map", "start_array"):
                depth += 1
            elif event in ("end_map", "end_array"):
                depth -= 1
                if depth == 0:
                    yield target, builder.value
                    builder = None
            continue
        key = "message" if prefix == "messages.item" else prefix
        if key not in _TOP or event in ("map_key", "end_map", "end_array") or (key == "messages" and event == "start_array"):
            continue
        if event in ("start_map", "start_array"):
            builder, target, depth = ijson.ObjectBuilder(), key, 1
            builder.event(event, value)
        else:
            yield key, value


def _read_export(path: Path, reader: _CountingReader) -> _Export:
    problems = Problems(path)
    header: dict[str, Any] = {}
    exp: _Export | None = None
    index = -1
    for key, obj in _events(reader):
        if key != "message":
            if key == "messages":
                problems.add("header", "messages", obj, "no message read")
            header[key] = obj
            continue
        index += 1
        if exp is None:
            exp = _new_export(path, header, problems)
        msg, mid, users = read_message(obj, index, problems)
        if mid is None:
            exp.complete = False
        else:
            exp.present.add(mid)
        if msg is None:
            continue
        for user in users:
            _add_member(exp, user)
        exp.messages.append(msg)
    if exp is None:
        exp = _new_export(path, header, problems)
    _read_range(exp, header, problems)
    exp.problems = problems.lines
    return exp


def _new_export(path: Path, header: dict[str, Any], problems: Problems) -> _Export:
    """The export's guild and channel. Raises :class:`ExportFormatError` when either is not an
    object with a valid id (nothing of the file can be placed); other header fields cost themselves."""
    guild, channel = header.get("guild", MISSING), header.get("channel", MISSING)
    if guild is MISSING and channel is MISSING:
        raise ExportFormatError("not a DiscordChatExporter JSON export (no guild/channel before messages)")
    for name, obj in (("guild", guild), ("channel", channel)):
        if not isinstance(obj, dict):
            raise ExportFormatError(f"bad guild/channel header: field '{name}' {describe(obj)}")
        if _header_id(obj.get("id", MISSING), name) is None:
            raise ExportFormatError(f"bad guild/channel header: field '{name}.id' {describe(obj.get('id', MISSING))}")
    ctype = optional(channel, "type", str, problems, "header", "channel.type", "taken as a text channel") or "GuildTextChat"
    is_thread = ctype in THREAD_TYPES
    parent_id = None
    if is_thread and channel.get("categoryId") is not None:
        parent_id = as_id(channel["categoryId"])
        if parent_id is None:
            problems.add("header", "channel.categoryId", channel["categoryId"], "the thread's parent channel is unknown")
    return _Export(
        path=path,
        guild_id=_header_id(guild["id"], "guild"),  # type: ignore[arg-type]
        guild_name=optional(guild, "name", str, problems, "header", "guild.name", "name left empty") or "",
        channel_id=as_id(channel["id"]),  # type: ignore[arg-type]
        channel_name=optional(channel, "name", str, problems, "header", "channel.name", "name left empty") or "",
        channel_kind=CHANNEL_KINDS.get(ctype, "text") if ctype not in DIRECT_TYPES else "dm",
        parent_id=parent_id,
        parent_name=(optional(channel, "category", str, problems, "header", "channel.category", "name left empty")
                     or "") if is_thread else "",
        is_thread=is_thread,
    )


def _header_id(value: Any, name: str) -> int | None:
    """A guild or channel id; DCE writes guild id ``"0"`` for direct messages (skipped by the import)."""
    if name == "guild" and value in (0, "0"):
        return 0
    return as_id(value)


def _read_range(exp: _Export, header: dict[str, Any], problems: Problems) -> None:
    """``exportedAt`` and ``dateRange``: what the file can tell about messages missing from it. A
    value that cannot be read makes the range unknown (the file then proves no deletion)."""
    stamp = header.get("exportedAt")
    if stamp is not None:
        exp.exported_at = as_time(stamp)
        if exp.exported_at is None:
            problems.add("header", "exportedAt", stamp, "export time unknown: no message is taken as deleted")
            exp.range_known = False
    rng = header.get("dateRange")
    if rng is None:
        return
    if not isinstance(rng, dict):
        problems.add("header", "dateRange", rng, "date range unknown: no message is taken as deleted")
        exp.range_known = False
        return
    for key in ("after", "before"):
        value = rng.get(key)
        t = as_time(value) if value is not None else None
        if value is not None and t is None:
            problems.add("header", f"dateRange.{key}", value, "date range unknown: no message is taken as deleted")
            exp.range_known = False
        setattr(exp, key, t)


def _add_member(exp: _Export, user: User) -> None:
    """Merge a user met in the export into ``exp.members`` (a name or roles found later fill gaps)."""
    if user.is_bot:
        exp.bots.add(user.id)
    old = exp.members.get(user.id)
    if old is None:
        exp.members[user.id] = (user.name, user.is_bot, user.roles)
    elif (user.name and not old[0]) or (user.roles is not None and old[2] is None):
        exp.members[user.id] = (old[0] or user.name, old[1] or user.is_bot,
                                old[2] if old[2] is not None else user.roles)


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
    with _open(path) as raw:
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
    with _open(path) as raw:
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
    """Ids of messages replied to in ``path`` (a cheap streaming pre-pass; a bad value is skipped
    here and reported by the import, a malformed file too)."""
    out: set[int] = set()
    try:
        with _open(path) as f:
            for v in ijson.items(f, "messages.item.reference.messageId", use_float=True):
                target = as_id(v)
                if target is not None:
                    out.add(target)
    except (ijson.JSONError, ValueError, TypeError, OSError):
        pass
    return out


def peek_header(path: Path) -> tuple[int | None, float | None]:
    """``(channel id, exportedAt as UNIX s)`` of an export, read from its header only (parsing
    stops where ``messages`` begins; DCE writes the header first). ``None`` for what is missing or
    unreadable: this only orders files, the import reports problems."""
    channel_id = exported_at = None
    try:
        with _open(path) as f:
            for prefix, event, value in ijson.parse(f, use_float=True):
                if prefix == "channel.id" and event in ("string", "number"):
                    channel_id = as_id(value)
                elif prefix == "exportedAt" and event in ("string", "number"):
                    exported_at = as_time(value)
                elif prefix == "messages" and event == "start_array":
                    break
    except (ijson.JSONError, ValueError, TypeError, OSError):
        pass
    return channel_id, exported_at
