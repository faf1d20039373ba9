"""Import a community's history and content catalogues into the store and indexes.

* :func:`import_exports` reads DiscordChatExporter (DCE) JSON exports — files or folders, thread
  files included — streamed with ijson (the JSON tree of an export is never built in memory; only
  the compact records of the file being imported are). Guilds, channels, members and messages
  become rows; messages with substance become items; authorship, replies and reactions become
  interactions. Everything is embedded and indexed in batches through the :class:`Recommender`
  facade. Upserts are keyed by Discord ids, so importing the same export twice changes nothing.
* :func:`import_items` reads a JSON-lines catalogue (stories, articles…) into one guild.

A malformed file costs one error line (file, byte offset and line) and nothing of that file is
written; the rest of the import goes on. Format reference: DiscordChatExporter's JSON writer
(Tyrrrz/DiscordChatExporter, ``JsonMessageWriter``): a top-level object with ``guild``,
``channel``, ``dateRange``, ``messages`` and ``messageCount``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import ijson

from recsys.store import Item, new_id

if TYPE_CHECKING:
    from recsys.service import Recommender

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
WRITE_BATCH = 512  # items / interactions handed to the facade at once (embedded in its batches)


class ExportFormatError(ValueError):
    """A file is not a valid DiscordChatExporter JSON export; ``str()`` names file and position."""


@dataclass
class ImportReport:
    """What an import did. ``items``, ``interactions`` and ``members`` count rows that are new
    (a repeated import reports 0); ``messages`` counts messages read; ``errors`` holds one line per
    file or catalogue line that could not be imported; ``seconds`` is wall time."""

    files: int = 0
    messages: int = 0
    items: int = 0
    interactions: int = 0
    members: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)  # files deliberately not imported (e.g. DMs)
    guild_ids: list[int] = field(default_factory=list)
    unit: str = "message(s)"  # what ``messages`` counts: "message(s)" (exports) or "entries" (catalogues)

    def summary(self) -> str:
        s = (f"{self.files} file(s), {self.messages} {self.unit} read: {self.items} new item(s), "
             f"{self.interactions} new interaction(s), {self.members} new member(s) in {self.seconds:.1f} s")
        if self.errors:
            s += f"; {len(self.errors)} error(s)"
        return s


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


# ---- turning an export into rows ----------------------------------------------------------------
@dataclass
class _Plan:
    items: list[Item]
    interactions: list[dict[str, Any]]
    pending_replies: list[tuple[int, dict[str, Any]]]  # (target message id, interaction row)


def _plan(exp: _Export, *, min_chars: int, referenced: set[int]) -> _Plan:
    gid, cid = exp.guild_id, exp.channel_id
    by_id = {m.id: m for m in exp.messages}
    items: dict[int, Item] = {}
    rows: list[dict[str, Any]] = []
    pending: list[tuple[int, dict[str, Any]]] = []
    replies_to: dict[int, int] = {}
    for m in exp.messages:
        if m.reply_to is not None:
            replies_to[m.reply_to] = replies_to.get(m.reply_to, 0) + 1
    for m in exp.messages:
        if m.type not in CONTENT_TYPES or not m.text or m.author_id in exp.bots:
            continue
        substantive = len(m.text) >= min_chars or m.reactions > 0 or m.id in referenced or m.id in replies_to
        if not substantive:
            continue
        items[m.id] = Item(
            id=m.id, guild_id=gid, kind="message", text=m.text, created_at=m.created_at, channel_id=cid,
            author_id=m.author_id, url=f"https://discord.com/channels/{gid}/{cid}/{m.id}",
            rating=float(m.reactions),
            meta={"source": "discord", "channel": exp.channel_name, "reactions": m.reactions,
                  "replies": replies_to.get(m.id, 0)},
        )
        rows.append({"guild_id": gid, "member_id": m.author_id, "item_id": m.id, "kind": "authored",
                     "created_at": m.created_at, "text": m.text, "source_id": m.id})
        for uid in m.reactors:
            rows.append({"guild_id": gid, "member_id": uid, "item_id": m.id, "kind": "reacted",
                         "created_at": m.created_at, "text": m.text, "source_id": m.id})
    for m in exp.messages:
        if m.reply_to is None or m.author_id in exp.bots:
            continue
        target = by_id.get(m.reply_to)
        if target is not None and target.author_id == m.author_id:
            continue  # replying to oneself is not engagement with someone else's item
        row = {"guild_id": gid, "member_id": m.author_id, "item_id": m.reply_to, "kind": "replied",
               "created_at": m.created_at, "text": target.text if target else "", "source_id": m.id}
        if m.reply_to in items:
            rows.append(row)
        else:
            pending.append((m.reply_to, row))
    if exp.is_thread:
        opening = [m for m in exp.messages if m.type in CONTENT_TYPES and m.text and m.author_id not in exp.bots]
        if opening:
            starter = opening[0]
            body = "\n".join(m.text for m in opening[:THREAD_OPENING_MESSAGES])[:THREAD_TEXT_CHARS]
            items[cid] = Item(
                id=cid, guild_id=gid, kind="message", title=exp.channel_name, text=body,
                created_at=starter.created_at, channel_id=cid, author_id=starter.author_id,
                url=f"https://discord.com/channels/{gid}/{cid}",
                rating=float(sum(m.reactions for m in exp.messages)),
                meta={"source": "discord", "thread": True, "channel": exp.parent_name,
                      "messages": len(exp.messages)},
            )
            thread_text = f"{exp.channel_name}\n{body}"
            rows.append({"guild_id": gid, "member_id": starter.author_id, "item_id": cid, "kind": "authored",
                         "created_at": starter.created_at, "text": thread_text, "source_id": starter.id})
            seen = {starter.author_id}
            for m in opening[1:]:
                if m.author_id not in seen:
                    seen.add(m.author_id)
                    rows.append({"guild_id": gid, "member_id": m.author_id, "item_id": cid, "kind": "replied",
                                 "created_at": m.created_at, "text": thread_text, "source_id": m.id})
    return _Plan(list(items.values()), rows, pending)


# ---- writing --------------------------------------------------------------------------------------
def _progress(total: int, desc: str, unit: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled, leave=False,
                dynamic_ncols=True)


async def _write_items(recommender: Recommender, items: list[Item]) -> int:
    """Hand new or changed items to the facade (which re-embeds changed text); unchanged ones cost
    nothing. Returns how many were new."""
    existing = await recommender.store.get_items([it.id for it in items])
    todo: list[Item] = []
    for it in items:
        old = existing.get(it.id)
        if old is not None:
            if old.meta.get("thread") and not it.meta.get("thread"):
                continue  # a thread started from this message owns the id (Discord reuses it)
            if (old.text, old.title, old.rating, old.meta, old.url, old.tags) == (it.text, it.title, it.rating, it.meta, it.url, it.tags):
                continue
        todo.append(it)
    added = 0
    for i in range(0, len(todo), WRITE_BATCH):
        batch = todo[i : i + WRITE_BATCH]
        added += await recommender.add_items(batch)
    return added


async def _flush(recommender: Recommender, bar) -> None:
    """Wait for the facade's embedding queue, showing texts embedded on ``bar``."""
    queued = recommender.pending()
    bar.total = (bar.total or 0) + queued
    start = bar.n
    task = asyncio.ensure_future(recommender.flush())
    while not task.done():
        await asyncio.wait({task}, timeout=0.5)
        bar.n = start + max(0, queued - recommender.pending())
        bar.refresh()
    await task
    bar.n = start + queued
    bar.refresh()


async def _record(recommender: Recommender, rows: list[dict[str, Any]]) -> int:
    n = 0
    for i in range(0, len(rows), WRITE_BATCH):
        n += len(await recommender.record(rows[i : i + WRITE_BATCH]))
    return n


async def _write_export(recommender: Recommender, exp: _Export, plan: _Plan, bar) -> tuple[int, int]:
    store = recommender.store
    await store.upsert_guild(exp.guild_id, exp.guild_name)
    if exp.parent_id is not None and await store.get_channel(exp.parent_id) is None:
        await store.upsert_channel(exp.parent_id, exp.guild_id, exp.parent_name)
    await store.upsert_channel(exp.channel_id, exp.guild_id, exp.channel_name, exp.channel_kind,
                               parent_id=exp.parent_id)
    for uid, (name, is_bot, roles) in exp.members.items():
        await store.upsert_member(exp.guild_id, uid, name, role_ids=roles, is_bot=is_bot)
    items = await _write_items(recommender, plan.items)
    # replies whose target is already stored (earlier file or earlier import) resolve now
    stored = await store.get_items([t for t, _ in plan.pending_replies])
    rows = list(plan.interactions)
    still: list[tuple[int, dict[str, Any]]] = []
    for target, row in plan.pending_replies:
        if target in stored:
            if stored[target].author_id == row["member_id"]:
                continue
            rows.append({**row, "text": stored[target].text})
        else:
            still.append((target, row))
    plan.pending_replies = still
    interactions = await _record(recommender, rows)
    return items, interactions


async def import_exports(recommender: Recommender, paths: Iterable[str | Path], *, progress: bool = True) -> ImportReport:
    """Import DiscordChatExporter JSON exports (files, or folders searched recursively).

    Per file, in one store transaction: guild, channel (threads with their parent), members
    (display name, roles where exported, bot flag), items — messages of a member (not a bot, not a
    system message such as a join) whose text has at least ``settings.recsys.min_message_chars``
    characters, or that were replied to or reacted to; a thread becomes one item (title + its
    first 3 messages, id = the thread's id) — and interactions: ``authored`` (own items),
    ``replied`` (``reference.messageId``; joining a thread counts as replying to it) and
    ``reacted`` (where the export lists ``reactions[].users``). Direct-message exports are skipped.

    A malformed file is reported in ``errors`` (file, byte offset, line) and nothing of it is
    written; other files still import. Raises FileNotFoundError when a path does not exist.
    """
    t0 = time.perf_counter()
    report = ImportReport()
    files = export_files(paths)
    store = recommender.store
    min_chars = recommender.settings.recsys.min_message_chars
    members_before = await store.count("members")
    referenced: set[int] = set()
    for f in files:
        referenced |= await asyncio.to_thread(_reference_targets, f)
    pending: list[tuple[int, dict[str, Any]]] = []
    total = sum(f.stat().st_size for f in files)
    with _progress(total, "reading", "B", progress) as read_bar, _progress(0, "embedding", "text", progress) as bar:
        for f in files:
            try:
                exp = await asyncio.to_thread(read_export, f)
            except ExportFormatError as err:
                report.errors.append(str(err))
                log.error("%s", err)
                read_bar.update(f.stat().st_size)
                continue
            read_bar.update(f.stat().st_size)
            if exp.channel_kind == "dm" or exp.guild_id == 0:
                report.skipped.append(f"{f}: direct messages are not imported")
                continue
            plan = _plan(exp, min_chars=min_chars, referenced=referenced)
            try:
                async with store.transaction():
                    n_items, n_inter = await _write_export(recommender, exp, plan, bar)
                # Rows are committed; embed them after the commit (the embedding task writes vectors
                # itself, and a vector missing after a crash is queued again at the next start).
                await _flush(recommender, bar)
            except Exception as err:  # a store/embedding failure: this file is rolled back
                report.errors.append(f"{f}: not imported ({type(err).__name__}: {err})")
                log.exception("import of %s failed", f)
                continue
            report.files += 1
            report.messages += len(exp.messages)
            report.items += n_items
            report.interactions += n_inter
            pending += plan.pending_replies
            if exp.guild_id not in report.guild_ids:
                report.guild_ids.append(exp.guild_id)
    if pending:  # replies to messages that a later file made into items
        stored = await store.get_items({t for t, _ in pending})
        rows = [{**row, "text": stored[t].text} for t, row in pending
                if t in stored and stored[t].author_id != row["member_id"]]
        if rows:
            async with store.transaction():
                report.interactions += await _record(recommender, rows)
            await _flush(recommender, bar)
        unresolved = sum(1 for t, _ in pending if t not in stored)
        if unresolved:
            log.info("%d repl(ies) point to messages not in the export (deleted or not exported)", unresolved)
    report.members = await store.count("members") - members_before
    report.seconds = time.perf_counter() - t0
    return report


# ---- JSON-lines catalogues --------------------------------------------------------------------------
_CATALOGUE_KEYS = {"id", "item_id", "title", "text", "body", "body_text", "url", "tags", "rating", "score",
                   "created_at", "created", "nsfw"}


def _catalogue_item(obj: Any, guild_id: int, source: str) -> Item:
    if not isinstance(obj, dict):
        raise ValueError("a line must be a JSON object")
    ext = obj.get("id", obj.get("item_id"))
    if ext is None or str(ext).strip() == "":
        raise ValueError("missing 'id' (or 'item_id')")
    text = obj.get("text", obj.get("body", obj.get("body_text")))
    if not isinstance(text, str) or not text.strip():
        raise ValueError("missing or empty 'text'")
    title = obj.get("title") or ""
    if not isinstance(title, str):
        raise ValueError("'title' must be a string")
    tags = obj.get("tags") or []
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError("'tags' must be a list of strings")
    rating = obj.get("rating", obj.get("score", 0)) or 0
    try:
        rating = float(rating)
    except (TypeError, ValueError):
        raise ValueError(f"'rating' must be a number, got {rating!r}") from None
    created = obj.get("created_at", obj.get("created"))
    try:
        created_at = _parse_time(created) if created not in (None, "") else time.time()
    except ValueError:
        raise ValueError(f"'created_at' is not an ISO date or UNIX time: {created!r}") from None
    url = obj.get("url") or None
    meta = {k: v for k, v in obj.items() if k not in _CATALOGUE_KEYS}
    meta["source"] = source
    if url:
        meta.setdefault("credit", f"{obj.get('creator') or 'unknown author'}, {url}")
    return Item(id=0, guild_id=guild_id, kind="imported", text=text.strip(), title=title.strip(),
                created_at=created_at, url=url, tags=tags, rating=rating, nsfw=bool(obj.get("nsfw", False)),
                external_id=str(ext), meta=meta)


async def import_items(recommender: Recommender, path: str | Path, guild_id: int, *, progress: bool = True) -> ImportReport:
    """Import a JSON-lines catalogue into guild ``guild_id`` as ``imported`` items.

    Each line: ``id`` (or ``item_id``, unique within the guild), ``text`` (or ``body``), and
    optionally ``title``, ``url``, ``tags`` (list or comma-separated), ``rating`` (number; a
    popularity prior), ``created_at`` (ISO-8601 or UNIX seconds; naive = UTC), ``nsfw``; other keys
    (e.g. ``creator``) are kept in ``meta`` with a ``credit`` line for attribution. A bad line is
    reported in ``errors`` with its line number and skipped; the others are imported, in one
    transaction. Re-importing updates changed entries and adds nothing twice.
    Raises FileNotFoundError when ``path`` does not exist.
    """
    t0 = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    report = ImportReport(files=1, guild_ids=[guild_id], unit="entries")
    store = recommender.store
    items: list[Item] = []
    seen: set[str] = set()
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
                item = _catalogue_item(obj, guild_id, path.name)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                report.errors.append(f"{path}:{lineno}: not valid JSON ({getattr(err, 'msg', err)})")
                continue
            except ValueError as err:
                report.errors.append(f"{path}:{lineno}: {err}")
                continue
            if item.external_id in seen:
                report.errors.append(f"{path}:{lineno}: duplicate id {item.external_id!r} (first one kept)")
                continue
            seen.add(item.external_id)  # type: ignore[arg-type]
            items.append(item)
    report.messages = len(items)
    with _progress(0, "embedding", "text", progress) as bar:
        async with store.transaction():
            await store.upsert_guild(guild_id)
            for it in items:
                old = await store.item_by_external_id(guild_id, it.external_id)  # type: ignore[arg-type]
                it.id = old.id if old else new_id()
            report.items = await _write_items(recommender, items)
        await _flush(recommender, bar)
    report.seconds = time.perf_counter() - t0
    return report
