"""A member's control over what Campfire keeps about them: opt out / in, export, forget.

- :func:`opt_out`: nothing more is recorded about the member, in every guild (the store enforces
  it), and they get no daily picks; :func:`opt_in` undoes it.
- :func:`forget`: every row and vector about the member, in every guild, through
  ``Recommender.forget_user`` (SQL and FAISS together), gone from the files too (VACUUM, WAL
  truncated, index files rewritten). Then nothing of theirs is recorded again — not their new
  activity, not their old messages when others reply or react to them or an old export is
  re-imported — until :func:`opt_in` (tombstones: ``recsys.storage.privacy``); their forgotten
  messages stay out even after that.
  Front ends ask for a confirmation first: it is valid for :data:`CONFIRM_WINDOW_S` seconds and
  only the member who asked may give it (:func:`may_confirm`, :func:`confirmation_expired`).
- :func:`export`: everything stored about the member as one JSON file (gzip-compressed when over
  the front end's size limit).

Never imports discord.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from campfire.features.types import ExportFile, ForgetResult

if TYPE_CHECKING:
    from campfire.app import App

log = logging.getLogger(__name__)

CONFIRM_WINDOW_S = 300  # seconds a forget confirmation stays valid
DEFAULT_FILE_LIMIT = 8 * 1024 * 1024  # bytes of an export when the front end knows no limit


async def opt_out(app: App, user_id: int) -> None:
    """Stop recording anything about ``user_id``, in every guild (and unsubscribe them)."""
    await app.store.set_opted_out(user_id, True)
    log.info("member %s opted out", user_id)


async def opt_in(app: App, user_id: int) -> None:
    """Record ``user_id``'s activity again (also after a :func:`forget`; the messages forgotten then
    are never recorded again)."""
    await app.store.set_opted_out(user_id, False)
    log.info("member %s opted back in", user_id)


async def is_opted_out(app: App, user_id: int) -> bool:
    """Whether ``user_id`` opted out of recording."""
    return await app.store.is_opted_out(user_id)


def may_confirm(answerer_id: int, asker_id: int) -> bool:
    """Only the member who asked to be forgotten may confirm (or cancel) it."""
    return answerer_id == asker_id


def confirmation_expired(offered_at: float, now: float | None = None) -> bool:
    """Whether a confirmation offered at ``offered_at`` (UNIX s) is older than :data:`CONFIRM_WINDOW_S`."""
    return (time.time() if now is None else now) - offered_at > CONFIRM_WINDOW_S


async def forget(app: App, user_id: int) -> ForgetResult:
    """Delete everything stored about ``user_id`` in every guild: their items (with everyone's
    interactions on them), their interactions, the picks sent to them, their member rows, and every
    vector of those in SQLite and FAISS; the database and index files are rewritten so the bytes are
    gone too. Recording stays off for them until :func:`opt_in` (``ForgetResult.opted_out`` is
    True): the tombstone left by the forget does that, so no opt-out row has to keep their id on disk.
    The log line names no member (the operator's logs would keep the id)."""
    counts = await app.recommender.forget_user(user_id)
    log.info("a member was forgotten: %s", counts)
    return ForgetResult(counts=dict(counts), opted_out=True)


def export_bytes(data: dict[str, Any], limit: int) -> tuple[bytes, bool]:
    """``data`` as indented UTF-8 JSON, gzip-compressed when longer than ``limit`` bytes (JSON
    compresses about 10×). Returns ``(bytes, gzipped)``; the bytes may still exceed ``limit``.
    Blocking (CPU): call it in a worker thread."""
    raw = json.dumps(data, ensure_ascii=False, indent=2, default=str).encode("utf-8")
    if len(raw) > limit:
        return gzip.compress(raw), True
    return raw, False


async def export(app: App, user_id: int, *, limit: int | None = None) -> ExportFile:
    """Everything stored about ``user_id`` (see ``Store.export_user``) as a file of at most
    ``limit`` bytes (default :data:`DEFAULT_FILE_LIMIT`): ``campfire-export-<id>.json``, or
    ``.json.gz`` when compressed; ``too_large`` when even compressed it does not fit. Encoding runs
    in a worker thread (a long history is megabytes of JSON)."""
    limit = limit or DEFAULT_FILE_LIMIT
    data = await app.recommender.export_user(user_id)
    raw, gzipped = await asyncio.to_thread(export_bytes, data, limit)
    name = f"campfire-export-{user_id}.json" + (".gz" if gzipped else "")
    return ExportFile(name=name, data=raw, gzipped=gzipped, too_large=len(raw) > limit)
