"""``campfire eval``'s input: the se_beer format, read into arrays (:class:`Dataset`), and item vectors.

``interactions.csv`` with ``user_id, question_id, kind, timestamp`` (ISO 8601 or UNIX seconds) and
``items.jsonl`` with ``question_id, title, tags, body_text, created`` and optionally ``rating`` (else
``score``: read as ``campfire import-items`` reads a catalogue's rating, the ranker's ``rating`` input).
Kinds ``ask``/``answer`` map to Campfire's ``authored``/``replied`` (their profile weights); any of
Campfire's own kinds may be used directly. An item's author is the user of its first ``authored``
interaction (the asker); the ``others`` protocol never offers users their own items.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recsys.embed import embedding_text
from recsys.store import DEFAULT_WEIGHTS

if TYPE_CHECKING:
    from recsys.embed import Embedder

KIND_MAP = {"ask": "authored", "answer": "replied", "question": "authored", "comment": "replied"}

_vector_cache: dict[tuple[str, int, float, str], np.ndarray] = {}


class EvalInputError(ValueError):
    """The interactions or items file is missing or malformed (one line naming file and row)."""


@dataclass
class Dataset:
    item_ids: list[str]  # external ids, row order = item index
    texts: list[str]
    created: np.ndarray  # (M,) UNIX s
    users: np.ndarray  # (E,) user index per event, events sorted by time
    items: np.ndarray  # (E,) item index per event
    kinds: list[str]  # (E,) Campfire kinds
    weights: np.ndarray  # (E,) profile weights
    ts: np.ndarray  # (E,) UNIX s
    n_users: int
    rating: np.ndarray | None = None  # (M,) the items' ratings (``rating``, else ``score``; 0 when absent)
    # (M,) user index of the item's author (the first ``authored`` interaction: se_beer's ``ask``), -1 unknown
    author: np.ndarray | None = None
    user_ids: list[str] | None = None  # external user ids, index = user index
    skipped_rows: int = 0  # interactions.csv rows left out (:func:`load_dataset`)
    first_skipped: str = ""  # "line N (why)" of the first of them; "" when none


def _parse_time(value: str, where: str) -> float:
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise EvalInputError(f"{where}: cannot read time {value!r} (ISO 8601 or UNIX seconds)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _rating(row: dict) -> float:
    """An item's rating as ``campfire import-items`` reads it (``rating``, else ``score``); 0 when
    absent or not a number."""
    try:
        return float(row.get("rating", row.get("score", 0)) or 0)
    except (TypeError, ValueError):
        return 0.0


def _bad_row(row: dict, index: dict[str, int], where: str) -> tuple[str | None, tuple | None]:
    """``(why the interactions row is left out, None)`` or ``(None, (time, kind, user, item id))``."""
    if None in row or any(row.get(c) is None for c in ("user_id", "question_id", "timestamp")):
        return "wrong number of fields", None
    uid, qid = str(row["user_id"]).strip(), str(row["question_id"]).strip()
    if not uid or not qid:
        return "empty user_id or question_id", None
    if qid not in index:
        return f"question_id {qid!r} is not in the items file", None
    raw = (row.get("kind") or "").strip()
    kind = KIND_MAP.get(raw, raw or "reacted")
    if kind not in DEFAULT_WEIGHTS:
        return f"unknown kind {raw!r}", None
    try:
        when = _parse_time(row["timestamp"], where)
    except EvalInputError:
        return f"cannot read time {row['timestamp']!r}", None
    return None, (when, kind, uid, qid)


def load_dataset(interactions_csv: str | Path, items_jsonl: str | Path, *, warn: bool = True) -> Dataset:
    """Read the two files. Raises :class:`EvalInputError` naming the file (and line) when a file is
    missing, an items line is not JSON or the CSV lacks a needed column. An interactions row that
    cannot be used (wrong number of fields, empty ids, an item not in the items file, an unknown
    kind, an unreadable time) is left out and counted (``Dataset.skipped_rows`` and
    ``first_skipped``); with ``warn`` one line on stderr says how many and which came first."""
    items_path, inter_path = Path(items_jsonl), Path(interactions_csv)
    for p in (items_path, inter_path):
        if not p.is_file():
            raise EvalInputError(f"file not found: {p}")
    ids: list[str] = []
    texts: list[str] = []
    created: list[float] = []
    rating: list[float] = []
    index: dict[str, int] = {}
    with items_path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                qid = str(row.get("question_id", row.get("item_id", row.get("id"))))
                title, body = row.get("title") or "", row.get("body_text") or row.get("text") or ""
                when = _parse_time(str(row.get("created", row.get("created_at"))), f"{items_path}:{n}")
            except (json.JSONDecodeError, AttributeError) as err:
                raise EvalInputError(f"{items_path}:{n}: not a JSON object ({err})") from None
            if qid in index or qid == "None":
                continue
            index[qid] = len(ids)
            ids.append(qid)
            texts.append(f"{title}\n{body}" if title else body)
            created.append(when)
            rating.append(_rating(row))
    events: list[tuple[float, int, str, int, str]] = []
    user_index: dict[str, int] = {}
    with inter_path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        need = {"user_id", "question_id", "timestamp"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise EvalInputError(f"{inter_path}: needs columns {', '.join(sorted(need))} (has {reader.fieldnames})")
        skipped, first, total = 0, "", 0
        for total, row in enumerate(reader, 1):
            why, good = _bad_row(row, index, f"{inter_path}:{reader.line_num}")
            if good is None:
                skipped += 1
                first = first or f"line {reader.line_num} ({why})"
                continue
            when, kind, user, qid = good
            events.append((when, reader.line_num, kind, user_index.setdefault(user, len(user_index)), qid))
    if skipped and warn:
        print(f"{inter_path.name}: {skipped:,} of {total:,} rows could not be used and were left out "
              f"(the first: {first}); the rest is evaluated.", file=sys.stderr)
    events.sort()
    items_arr = np.array([index[e[4]] for e in events], np.int64)
    author = np.full(len(ids), -1, np.int64)
    for (_, _, kind, uid, _), i in zip(reversed(events), items_arr[::-1].tolist(), strict=True):
        if kind == "authored":
            author[i] = uid  # reversed: the earliest authored interaction wins
    return Dataset(
        item_ids=ids,
        texts=texts,
        created=np.array(created, np.float64),
        users=np.array([e[3] for e in events], np.int64),
        items=items_arr,
        kinds=[e[2] for e in events],
        weights=np.array([DEFAULT_WEIGHTS[e[2]] for e in events], np.float64),
        ts=np.array([e[0] for e in events], np.float64),
        n_users=len(user_index),
        rating=np.array(rating, np.float64),
        author=author,
        user_ids=list(user_index),
        skipped_rows=skipped,
        first_skipped=first,
    )


def item_vectors(ds: Dataset, items_jsonl: str | Path, embedder: Embedder) -> np.ndarray:
    """``(M, dim) float32`` L2-normalised item vectors, embedded once per file and model per process."""
    p = Path(items_jsonl).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime, embedder.key)
    if key not in _vector_cache:  # prepared as production prepares item texts (no member names here)
        _vector_cache[key] = embedder.encode([embedding_text(t) for t in ds.texts])
    return _vector_cache[key]
