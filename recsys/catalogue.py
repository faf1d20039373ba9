"""Importing a JSON-lines content catalogue (stories, articles…) into one guild (``campfire import-items``)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.dce import _parse_time
from recsys.ingest_common import ImportReport, _flush, _progress, _write_items
from recsys.store import Item, new_id

if TYPE_CHECKING:
    from recsys.service import Recommender

log = logging.getLogger(__name__)

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
    with _progress(None, "embedding", "text", progress) as bar:
        async with store.transaction():
            await store.upsert_guild(guild_id)
            for it in items:
                old = await store.item_by_external_id(guild_id, it.external_id)  # type: ignore[arg-type]
                it.id = old.id if old else new_id()
            report.items = await _write_items(recommender, items)
        await _flush(recommender, bar)
    report.seconds = time.perf_counter() - t0
    return report
