"""Import a community's history and content catalogues into the store and indexes.

* :func:`import_exports` reads DiscordChatExporter (DCE) JSON exports — files or folders, thread
  files included — streamed with ijson (the JSON tree of an export is never built in memory; only
  the compact records of the file being imported are). Guilds, channels, members and messages
  become rows; messages with substance become items; authorship, replies and reactions become
  interactions. Everything is embedded and indexed in batches through the :class:`Recommender`
  facade. Upserts are keyed by Discord ids, so importing the same export twice changes nothing.
* :func:`import_items` reads a JSON-lines catalogue (stories, articles…) into one guild.

A malformed file costs one error line (file, byte offset and line) and nothing of that file is
written; a bad field costs that field, or its message (one line naming file, message id and
field: :mod:`recsys.dce_fields`); the rest of the import goes on. Format reference: DiscordChatExporter's JSON writer
(Tyrrrz/DiscordChatExporter, ``JsonMessageWriter``): a top-level object with ``guild``,
``channel``, ``dateRange``, ``messages`` and ``messageCount``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.catalogue import import_items
from recsys.conversation_sync import chat_line_row, sync_conversations
from recsys.dce import (
    CONTENT_TYPES,
    THREAD_OPENING_MESSAGES,
    THREAD_TEXT_CHARS,
    ExportFormatError,
    _Export,
    _reference_targets,
    export_files,
    read_export,
)
from recsys.ingest_common import ImportReport, _flush, _progress, _record, _write_items
from recsys.ingest_sync import DeletionCheck, order_files
from recsys.store import Item
from recsys.substance import text_length

if TYPE_CHECKING:
    from recsys.service import Recommender

__all__ = ["ExportFormatError", "ImportReport", "export_files", "import_exports", "import_items", "read_export"]

log = logging.getLogger(__name__)


# ---- turning an export into rows ----------------------------------------------------------------
@dataclass
class _Plan:
    items: list[Item]
    interactions: list[dict[str, Any]]
    pending_replies: list[tuple[int, dict[str, Any]]]  # (target message id, interaction row)
    lines: list[dict[str, Any]]  # chat lines: every member message, short ones too (recsys.conversation_sync)


def _plan(exp: _Export, *, min_chars: int, referenced: set[int], bots: frozenset[int] = frozenset()) -> _Plan:
    gid, cid = exp.guild_id, exp.channel_id
    by_id = {m.id: m for m in exp.messages}
    items: dict[int, Item] = {}
    rows: list[dict[str, Any]] = []
    pending: list[tuple[int, dict[str, Any]]] = []
    replies_to: dict[int, int] = {}
    sighted = {"exported_at": exp.exported_at} if exp.exported_at is not None else {}  # recsys.ingest_sync
    lines = []
    for m in exp.messages:
        if m.reply_to is not None:
            replies_to[m.reply_to] = replies_to.get(m.reply_to, 0) + 1
        if m.type in CONTENT_TYPES and m.text and m.author_id not in exp.bots:
            lines.append(chat_line_row(m.id, gid, cid, m.author_id, m.created_at, m.text, m.reply_to, m.mention_ids))
    for m in exp.messages:
        if m.type not in CONTENT_TYPES or not m.text or m.author_id in exp.bots or m.author_id in bots:
            continue  # (``bots``: known bots of the guild, recsys.chat_bots: their lines are no items)
        substantive = text_length(m.text) >= min_chars or m.reactions > 0 or m.id in referenced or m.id in replies_to
        if not substantive:
            continue
        items[m.id] = Item(
            id=m.id, guild_id=gid, kind="message", text=m.text, created_at=m.created_at, channel_id=cid,
            author_id=m.author_id, url=f"https://discord.com/channels/{gid}/{cid}/{m.id}",
            rating=float(m.reactions),
            meta={"source": "discord", "channel": exp.channel_name, "reactions": m.reactions,
                  "replies": replies_to.get(m.id, 0), **sighted},
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
                      "messages": len(exp.messages), **sighted},
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
    return _Plan(list(items.values()), rows, pending, lines)


async def _write_export(recommender: Recommender, exp: _Export, plan: _Plan) -> tuple[int, int]:
    store = recommender.store
    await store.upsert_guild(exp.guild_id, exp.guild_name)
    if exp.parent_id is not None and await store.get_channel(exp.parent_id) is None:
        await store.upsert_channel(exp.parent_id, exp.guild_id, exp.parent_name)
    await store.upsert_channel(exp.channel_id, exp.guild_id, exp.channel_name, exp.channel_kind,
                               parent_id=exp.parent_id)
    for uid, (name, is_bot, roles) in exp.members.items():
        if not name and await store.get_member(exp.guild_id, uid) is None:
            name = f"user {uid}"  # no nickname, global name or name in the export; a later one replaces it
        await store.upsert_member(exp.guild_id, uid, name, role_ids=roles, is_bot=is_bot)
    items = await _write_items(recommender, plan.items)
    await store.add_chat_lines(plan.lines)
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


@dataclass
class _Run:
    """One :func:`import_exports` call's shared state."""

    recommender: Recommender
    report: ImportReport
    check: DeletionCheck
    referenced: set[int]
    read_bar: Any
    bar: Any
    pending: list[tuple[int, dict[str, Any]]]
    channels: dict[tuple[int, int], Path] = field(default_factory=dict)  # (guild, channel) imported -> a file of it


async def _import_file(run: _Run, f: Path) -> None:
    """Read, check and write one export; every failure costs this file (or a field) and one line."""
    report, rec = run.report, run.recommender
    try:
        exp = await asyncio.to_thread(read_export, f)
    except ExportFormatError as err:
        report.errors.append(str(err))
        return
    except Exception as err:  # an unreadable file (permissions, encoding…): this file only
        report.errors.append(f"{f}: not imported ({type(err).__name__}: {err})")
        log.debug("reading %s failed", f, exc_info=True)
        return
    finally:
        run.read_bar.update(f.stat().st_size if f.exists() else 0)
    report.errors += exp.problems
    if exp.channel_kind == "dm" or exp.guild_id == 0:
        report.skipped.append(f"{f}: direct messages are not imported")
        return
    try:
        plan = _plan(exp, min_chars=rec.settings.recsys.min_message_chars, referenced=run.referenced,
                     bots=frozenset(await rec.store.bot_ids(exp.guild_id)))
        run.channels.setdefault((exp.guild_id, exp.channel_id), f)  # its conversations are rebuilt at the end
        report.removed += await run.check.before_write(exp)
        async with rec.store.transaction():
            n_items, n_inter = await _write_export(rec, exp, plan)
        # Rows are committed; embed them after the commit (the embedding task writes vectors
        # itself, and a vector missing after a crash is queued again at the next start).
        await _flush(rec, run.bar)
    except Exception as err:  # a store/embedding failure: this file is rolled back
        report.errors.append(f"{f}: not imported ({type(err).__name__}: {err})")
        log.debug("import of %s failed", f, exc_info=True)
        return
    run.check.after_write(exp)
    report.files += 1
    report.messages += len(exp.messages)
    report.items += n_items
    report.interactions += n_inter
    run.pending += plan.pending_replies
    if exp.guild_id not in report.guild_ids:
        report.guild_ids.append(exp.guild_id)


async def import_exports(recommender: Recommender, paths: Iterable[str | Path], *, progress: bool = True,
                         replace_channel: bool = False) -> ImportReport:
    """Import DiscordChatExporter JSON exports (files, or folders searched recursively).

    Per file, in one store transaction: guild, channel (threads with their parent), members
    (display name: nickname → global name → name → ``user <id>``; roles where exported; bot flag),
    items — messages of a member (not a bot, not a system message such as a join) whose text has at
    least ``settings.recsys.min_message_chars`` characters, or that were replied to or reacted to;
    a thread becomes one item (title + its first 3 messages, id = the thread's id) — and
    interactions: ``authored`` (own items), ``replied`` (``reference.messageId``; joining a thread
    counts as replying to it) and ``reacted`` (where the export lists ``reactions[].users``).
    Every member message (short ones too) is also a chat line, and once every file is in, each
    imported channel's conversations are rebuilt (:func:`recsys.conversation_sync.sync_conversations`,
    knowing every member's name: conversation items, counted in ``items`` when new; a thread is one
    conversation). Direct-message exports are skipped.

    Messages the exports show were deleted on Discord are removed, and with ``replace_channel``
    each export is its channel's whole truth for its date range (:mod:`recsys.ingest_sync`); copies
    that disagree without ``exportedAt`` are kept and reported in ``notes``. A malformed file is
    one line in ``errors`` (file, byte offset, line) and nothing of it is written; a bad field
    costs that field, or its message (one line naming file, message id and field); other files
    still import. Raises FileNotFoundError when a path does not exist.
    """
    t0 = time.perf_counter()
    report = ImportReport()
    files, repeated = order_files(export_files(paths))
    if replace_channel:  # one truth per channel: several copies of one would contradict each other
        for cid, copies in repeated.items():
            report.errors += [f"{f}: not imported: --replace-channel was given {len(copies)} exports of channel "
                              f"{cid} ({', '.join(c.name for c in copies)}); give one" for f in copies]
        files = [f for f in files if not any(f in c for c in repeated.values())]
    members_before = await recommender.store.count("members")
    referenced: set[int] = set()
    for f in files:
        referenced |= await asyncio.to_thread(_reference_targets, f)
    check = DeletionCheck(recommender, set(repeated), replace=replace_channel)
    total = sum(f.stat().st_size for f in files)
    with _progress(total, "reading", "B", progress) as read_bar, _progress(None, "embedding", "text", progress) as bar:
        run = _Run(recommender, report, check, referenced, read_bar, bar, [])
        for f in files:
            await _import_file(run, f)
        await _resolve_pending(run)
        await _sync_conversations(run)
    report.notes += check.notes()
    report.members = await recommender.store.count("members") - members_before
    report.seconds = time.perf_counter() - t0
    return report


async def _sync_conversations(run: _Run) -> None:
    """Rebuild each imported channel's conversations once every file is in, so every channel is built
    knowing every member's name ("nick:" addressing) and a re-import builds the same ones. A failure
    costs that channel's conversations and one line in ``errors``."""
    rec, report = run.recommender, run.report
    for (gid, cid), f in run.channels.items():
        try:
            synced = await sync_conversations(rec, gid, cid)
        except Exception as err:
            report.errors.append(f"{f}: conversations of channel {cid} not rebuilt ({type(err).__name__}: {err})")
            log.debug("conversation sync of %s failed", cid, exc_info=True)
            continue
        report.items += synced.created
        report.conversations += synced.conversations
    await _flush(rec, run.bar)


async def _resolve_pending(run: _Run) -> None:
    """Replies to messages that a later file made into items."""
    if not run.pending:
        return
    store = run.recommender.store
    stored = await store.get_items({t for t, _ in run.pending})
    rows = [{**row, "text": stored[t].text} for t, row in run.pending
            if t in stored and stored[t].author_id != row["member_id"]]
    if rows:
        async with store.transaction():
            run.report.interactions += await _record(run.recommender, rows)
        await _flush(run.recommender, run.bar)
    unresolved = sum(1 for t, _ in run.pending if t not in stored)
    if unresolved:
        log.info("%d repl(ies) point to messages not in the export (deleted or not exported)", unresolved)
