"""The SQLite store: the one module that owns Campfire's SQL (aiosqlite, WAL).

Ids are Discord snowflakes (guild, channel, user, message) where Discord has them; stories and
catalogue entries get snowflake-shaped ids from :func:`new_id`, so every item id fits FAISS's int64.
Times are UNIX seconds (float, UTC). Upserts are keyed by those ids, so importing the same export
twice changes nothing. Opted-out members are never recorded (enforced here, not by callers).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import numpy as np

T = TypeVar("T")

ITEM_KINDS = ("message", "story", "imported")
INTERACTION_KINDS = (
    "authored",
    "replied",
    "reacted",
    "requested",
    "rated_up",
    "rated_down",
    "viewed",
    "recommended",
    "clicked",
    "dismissed",
)
# Default weight of each interaction kind in a member's profile (negative = pushes away).
DEFAULT_WEIGHTS = {
    "authored": 1.0,
    "replied": 0.8,
    "reacted": 0.6,
    "requested": 1.0,
    "rated_up": 1.5,
    "rated_down": -1.0,
    "viewed": 0.2,
    "recommended": 0.0,
    "clicked": 0.8,
    "dismissed": -0.7,
}

_MIGRATIONS: list[str] = [
    # 0 -> 1
    """
    CREATE TABLE guilds (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL DEFAULT '',
        digest_channel_id INTEGER,
        digest_time TEXT,            -- HH:MM guild local time; NULL = settings default
        timezone TEXT,               -- IANA name; NULL = settings default
        persona TEXT,
        nsfw_allowed INTEGER NOT NULL DEFAULT 0,
        learn_channel_ids TEXT NOT NULL DEFAULT '[]',   -- JSON; empty = every visible channel
        ignore_channel_ids TEXT NOT NULL DEFAULT '[]',  -- JSON
        last_digest_date TEXT,       -- YYYY-MM-DD guild local date of the last daily post
        created_at REAL NOT NULL
    );
    CREATE TABLE channels (
        id INTEGER PRIMARY KEY,
        guild_id INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
        name TEXT NOT NULL DEFAULT '',
        kind TEXT NOT NULL DEFAULT 'text',
        parent_id INTEGER,
        nsfw INTEGER NOT NULL DEFAULT 0,
        persona TEXT,
        -- permission snapshot: {"public": bool, "roles": [ids that may view], "members": [ids], "denied_members": [ids]}
        visibility TEXT NOT NULL DEFAULT '{"public": true}',
        updated_at REAL NOT NULL
    );
    CREATE INDEX channels_guild ON channels(guild_id);
    CREATE TABLE members (
        guild_id INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL,
        display_name TEXT NOT NULL DEFAULT '',
        role_ids TEXT NOT NULL DEFAULT '[]',
        is_bot INTEGER NOT NULL DEFAULT 0,
        opted_out INTEGER NOT NULL DEFAULT 0,
        subscribed INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (guild_id, user_id)
    );
    CREATE INDEX members_user ON members(user_id);
    CREATE TABLE items (
        id INTEGER PRIMARY KEY,
        guild_id INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
        channel_id INTEGER,
        kind TEXT NOT NULL CHECK (kind IN ('message', 'story', 'imported')),
        author_id INTEGER,
        title TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL,
        url TEXT,
        tags TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL,
        nsfw INTEGER NOT NULL DEFAULT 0,
        rating REAL NOT NULL DEFAULT 0,
        external_id TEXT,
        parent_item_id INTEGER,
        meta TEXT NOT NULL DEFAULT '{}',
        UNIQUE (guild_id, external_id)
    );
    CREATE INDEX items_guild_created ON items(guild_id, created_at);
    CREATE INDEX items_author ON items(author_id);
    CREATE TABLE interactions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        guild_id INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
        member_id INTEGER NOT NULL,
        item_id INTEGER REFERENCES items(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('authored', 'replied', 'reacted', 'requested', 'rated_up',
            'rated_down', 'viewed', 'recommended', 'clicked', 'dismissed')),
        weight REAL NOT NULL,
        created_at REAL NOT NULL,
        text TEXT NOT NULL DEFAULT '',   -- what the interaction is about, embedded into the interaction index
        source_id INTEGER,               -- the Discord message that produced it, when there is one
        dedup_key TEXT NOT NULL UNIQUE
    );
    CREATE INDEX interactions_member ON interactions(guild_id, member_id, created_at);
    CREATE INDEX interactions_item ON interactions(item_id);
    CREATE TABLE embeddings (
        owner TEXT NOT NULL CHECK (owner IN ('item', 'interaction')),
        owner_id INTEGER NOT NULL,
        guild_id INTEGER NOT NULL,
        model TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,          -- float32 little-endian, L2-normalised, `dim` values
        PRIMARY KEY (owner, owner_id)
    );
    CREATE INDEX embeddings_guild ON embeddings(owner, guild_id);
    CREATE TABLE recommendations_sent (
        guild_id INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
        member_id INTEGER NOT NULL,
        item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
        date TEXT NOT NULL,            -- YYYY-MM-DD guild local date of the digest
        score REAL NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        PRIMARY KEY (guild_id, member_id, item_id)
    );
    CREATE TRIGGER items_drop_vectors AFTER DELETE ON items BEGIN
        DELETE FROM embeddings WHERE owner = 'item' AND owner_id = OLD.id;
    END;
    CREATE TRIGGER interactions_drop_vectors AFTER DELETE ON interactions BEGIN
        DELETE FROM embeddings WHERE owner = 'interaction' AND owner_id = OLD.id;
    END;
    """,
    # 1 -> 2: the item a digest reason quotes (another member's words), so forgetting its author
    # can blank the reason
    """
    ALTER TABLE recommendations_sent ADD COLUMN reason_item_id INTEGER;
    CREATE INDEX recommendations_reason_item ON recommendations_sent(reason_item_id);
    """,
]

SCHEMA_VERSION = len(_MIGRATIONS)

# what a digest reason that quoted a forgotten member's message says instead
FORGOTTEN_REASON = "picked for you"

_GUILD_SETTING_KEYS = {
    "name",
    "digest_channel_id",
    "digest_time",
    "timezone",
    "persona",
    "nsfw_allowed",
    "learn_channel_ids",
    "ignore_channel_ids",
    "last_digest_date",
}

# Discord's epoch (2015-01-01) in ms, for snowflake-shaped ids of our own items.
_DISCORD_EPOCH_MS = 1420070400000
_id_lock = threading.Lock()
# The Store whose transaction the current task is inside (None outside any).
_in_transaction: contextvars.ContextVar[Store | None] = contextvars.ContextVar("campfire_store_tx", default=None)
_id_counter = itertools.count()


def new_id(at: float | None = None) -> int:
    """A unique snowflake-shaped id (int63) for a story or catalogue item created at ``at`` (UNIX s).

    Layout follows Discord's snowflake (ms since 2015-01-01 << 22 | sequence), so ids sort by time
    and never collide with real message ids of the same millisecond in practice (sequence ≥ 2^21).
    """
    ms = int((time.time() if at is None else at) * 1000) - _DISCORD_EPOCH_MS
    with _id_lock:
        seq = next(_id_counter) % (1 << 21)
    return (max(ms, 0) << 22) | (1 << 21) | seq


@dataclass
class Item:
    """A piece of community content that can be recommended."""

    id: int
    guild_id: int
    kind: str  # message | story | imported
    text: str
    created_at: float
    channel_id: int | None = None
    author_id: int | None = None
    title: str = ""
    url: str | None = None
    tags: list[str] = field(default_factory=list)
    nsfw: bool = False
    rating: float = 0.0
    external_id: str | None = None
    parent_item_id: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: aiosqlite.Row) -> Item:
        d = dict(row)
        d["tags"] = json.loads(d["tags"])
        d["meta"] = json.loads(d["meta"])
        d["nsfw"] = bool(d["nsfw"])
        return cls(**d)


@dataclass
class Interaction:
    """One thing a member did (or was shown), about an item or a piece of text."""

    id: int
    guild_id: int
    member_id: int
    item_id: int | None
    kind: str
    weight: float
    created_at: float
    text: str
    source_id: int | None = None


def vector_to_blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def blob_to_vector(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<f4")


class Store:
    """Async access to ``campfire.db``. Open with ``async with await Store.open(path) as store``
    or ``async with Store.connect(path) as store``.

    One connection (aiosqlite runs it on its own thread, so SQL never blocks the event loop);
    writes are grouped with :meth:`transaction` where several must land together.
    """

    def __init__(self, db: aiosqlite.Connection, path: Path):
        self._db = db
        self.path = path
        self._lock = asyncio.Lock()
        self._names_versions: dict[int, int] = {}  # see names_version
        self._names_epoch = 0

    # ---- lifetime -------------------------------------------------------------------------
    @classmethod
    async def open(cls, path: str | Path) -> Store:
        """Open (creating and migrating as needed) the database at ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA busy_timeout=5000")
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute("PRAGMA synchronous=NORMAL")
        store = cls(db, path)
        await store.migrate()
        return store

    @classmethod
    @asynccontextmanager
    async def connect(cls, path: str | Path) -> AsyncIterator[Store]:
        store = await cls.open(path)
        try:
            yield store
        finally:
            await store.close()

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def migrate(self) -> int:
        """Apply pending migrations (``PRAGMA user_version``); returns the schema version."""
        (version,) = await (await self._db.execute("PRAGMA user_version")).fetchone()
        for target in range(version, len(_MIGRATIONS)):
            await self._db.execute("BEGIN")
            try:
                for stmt in _split_sql(_MIGRATIONS[target]):
                    await self._db.execute(stmt)
                await self._db.execute(f"PRAGMA user_version={target + 1}")
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
        return len(_MIGRATIONS)

    async def pragma(self, name: str) -> Any:
        (value,) = await (await self._db.execute(f"PRAGMA {name}")).fetchone()
        return value

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Group writes: all land, or none (rolled back on any exception).

        Safe under concurrent tasks on the one connection: an ``asyncio.Lock`` serialises outer
        transactions and lone writes, and nesting is tracked per task (a ContextVar), so a write from
        another task never slips into, or is rolled back with, this task's transaction.
        """
        if _in_transaction.get() is self:
            yield
            return
        async with self._lock:
            token = _in_transaction.set(self)
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    await self._db.execute("ROLLBACK")
                    raise
                else:
                    await self._db.execute("COMMIT")
            finally:
                _in_transaction.reset(token)

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Cursor:
        if _in_transaction.get() is self:
            return await self._db.execute(sql, params)
        async with self._lock:
            return await self._db.execute(sql, params)

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        return list(await (await self._db.execute(sql, params)).fetchall())

    async def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        return await (await self._db.execute(sql, params)).fetchone()

    async def count(self, table: str) -> int:
        """Rows in one of the schema's tables (for tests, status and reports)."""
        if table not in {"guilds", "channels", "members", "items", "interactions", "embeddings", "recommendations_sent"}:
            raise ValueError(f"unknown table {table!r}")
        (n,) = await self._fetchone(f"SELECT COUNT(*) FROM {table}")
        return n

    # ---- guilds ---------------------------------------------------------------------------
    async def upsert_guild(self, guild_id: int, name: str = "") -> None:
        await self._write(
            "INSERT INTO guilds (id, name, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET name = CASE WHEN excluded.name != '' THEN excluded.name ELSE name END",
            (guild_id, name, time.time()),
        )

    async def get_guild(self, guild_id: int) -> dict[str, Any] | None:
        row = await self._fetchone("SELECT * FROM guilds WHERE id = ?", (guild_id,))
        if row is None:
            return None
        d = dict(row)
        d["learn_channel_ids"] = json.loads(d["learn_channel_ids"])
        d["ignore_channel_ids"] = json.loads(d["ignore_channel_ids"])
        d["nsfw_allowed"] = bool(d["nsfw_allowed"])
        return d

    async def list_guilds(self) -> list[dict[str, Any]]:
        rows = await self._fetchall("SELECT id FROM guilds ORDER BY id")
        return [await self.get_guild(r["id"]) for r in rows]  # type: ignore[misc]

    async def update_guild(self, guild_id: int, **settings: Any) -> None:
        """Set guild settings (keys: digest_channel_id, digest_time, timezone, persona, nsfw_allowed,
        learn_channel_ids, ignore_channel_ids, last_digest_date, name). Raises ValueError on unknown keys."""
        unknown = set(settings) - _GUILD_SETTING_KEYS
        if unknown:
            raise ValueError(f"unknown guild setting(s): {', '.join(sorted(unknown))}")
        await self.upsert_guild(guild_id)
        for key, value in settings.items():
            if key in ("learn_channel_ids", "ignore_channel_ids"):
                value = json.dumps([int(x) for x in value])
            elif key == "nsfw_allowed":
                value = int(bool(value))
            await self._write(f"UPDATE guilds SET {key} = ? WHERE id = ?", (value, guild_id))

    # ---- channels -------------------------------------------------------------------------
    async def upsert_channel(
        self,
        channel_id: int,
        guild_id: int,
        name: str = "",
        kind: str = "text",
        *,
        parent_id: int | None = None,
        nsfw: bool = False,
        visibility: dict[str, Any] | None = None,
    ) -> None:
        """Insert or update a channel. ``visibility`` is the permission snapshot
        ``{"public": bool, "roles": [role ids that may view], "members": [...], "denied_members": [...]}``;
        ``None`` keeps the stored snapshot (public for a new channel)."""
        await self.upsert_guild(guild_id)
        vis = json.dumps(visibility) if visibility is not None else None
        await self._write(
            "INSERT INTO channels (id, guild_id, name, kind, parent_id, nsfw, visibility, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, COALESCE(?, '{\"public\": true}'), ?) "
            "ON CONFLICT(id) DO UPDATE SET name = excluded.name, kind = excluded.kind, "
            "parent_id = excluded.parent_id, nsfw = excluded.nsfw, "
            "visibility = COALESCE(?, visibility), updated_at = excluded.updated_at",
            (channel_id, guild_id, name, kind, parent_id, int(nsfw), vis, time.time(), vis),
        )

    async def get_channel(self, channel_id: int) -> dict[str, Any] | None:
        row = await self._fetchone("SELECT * FROM channels WHERE id = ?", (channel_id,))
        if row is None:
            return None
        d = dict(row)
        d["visibility"] = json.loads(d["visibility"])
        d["nsfw"] = bool(d["nsfw"])
        return d

    async def channels(self, guild_id: int) -> list[dict[str, Any]]:
        rows = await self._fetchall("SELECT id FROM channels WHERE guild_id = ? ORDER BY id", (guild_id,))
        return [await self.get_channel(r["id"]) for r in rows]  # type: ignore[misc]

    async def set_channel_persona(self, channel_id: int, persona: str | None) -> None:
        await self._write("UPDATE channels SET persona = ? WHERE id = ?", (persona, channel_id))

    async def visible_channel_ids(self, guild_id: int, member_id: int) -> set[int]:
        """Channels of ``guild_id`` the member may view, from the stored permission snapshots and the
        member's stored roles (see :func:`channels_visible_to`)."""
        member = await self.get_member(guild_id, member_id)
        return channels_visible_to(guild_id, member, member_id, await self.channels(guild_id))

    # ---- members --------------------------------------------------------------------------
    async def upsert_member(
        self,
        guild_id: int,
        user_id: int,
        display_name: str = "",
        *,
        role_ids: Iterable[int] | None = None,
        is_bot: bool = False,
    ) -> None:
        await self.upsert_guild(guild_id)
        roles = json.dumps(sorted(int(r) for r in role_ids)) if role_ids is not None else None
        opted = int(await self.is_opted_out(user_id))
        before = await self._fetchone(
            "SELECT display_name FROM members WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        )
        await self._write(
            "INSERT INTO members (guild_id, user_id, display_name, role_ids, is_bot, opted_out) "
            "VALUES (?, ?, ?, COALESCE(?, '[]'), ?, ?) ON CONFLICT(guild_id, user_id) DO UPDATE SET "
            "display_name = CASE WHEN excluded.display_name != '' THEN excluded.display_name ELSE display_name END, "
            "role_ids = COALESCE(?, role_ids), is_bot = excluded.is_bot",
            (guild_id, user_id, display_name, roles, int(is_bot), opted, roles),
        )
        if before is None or (display_name and display_name != before[0]):  # a new member or a new name
            self._names_versions[guild_id] = self._names_versions.get(guild_id, 0) + 1

    def names_version(self, guild_id: int) -> tuple[int, int]:
        """Changes whenever a member of the guild is added or renamed, or anyone is forgotten, through
        this store (a cache key for the guild's display names)."""
        return self._names_epoch, self._names_versions.get(guild_id, 0)

    async def get_member(self, guild_id: int, user_id: int) -> dict[str, Any] | None:
        row = await self._fetchone("SELECT * FROM members WHERE guild_id = ? AND user_id = ?", (guild_id, user_id))
        return _member(row) if row else None

    async def members(self, guild_id: int) -> list[dict[str, Any]]:
        rows = await self._fetchall("SELECT * FROM members WHERE guild_id = ? ORDER BY user_id", (guild_id,))
        return [_member(r) for r in rows]

    async def member_count(self, guild_id: int) -> int:
        (n,) = await self._fetchone("SELECT COUNT(*) FROM members WHERE guild_id = ?", (guild_id,))
        return int(n)

    async def member_names(self, guild_id: int) -> set[str]:
        """The guild's member display names, lower-case (empty names left out)."""
        rows = await self._fetchall("SELECT DISTINCT display_name FROM members WHERE guild_id = ?", (guild_id,))
        return {r[0].lower() for r in rows if r[0]}

    async def find_members(self, name: str, guild_id: int | None = None) -> list[dict[str, Any]]:
        """Members whose display name equals ``name`` (case-insensitive), or whose user id is ``name``."""
        sql = "SELECT * FROM members WHERE (lower(display_name) = lower(?) OR CAST(user_id AS TEXT) = ?)"
        params: list[Any] = [name, name]
        if guild_id is not None:
            sql += " AND guild_id = ?"
            params.append(guild_id)
        return [_member(r) for r in await self._fetchall(sql + " ORDER BY guild_id", params)]

    async def set_subscribed(self, guild_id: int, user_id: int, subscribed: bool) -> None:
        await self.upsert_member(guild_id, user_id)
        await self._write(
            "UPDATE members SET subscribed = ? WHERE guild_id = ? AND user_id = ?",
            (int(subscribed), guild_id, user_id),
        )

    async def subscribed_members(self, guild_id: int) -> list[dict[str, Any]]:
        rows = await self._fetchall(
            "SELECT * FROM members WHERE guild_id = ? AND subscribed = 1 AND opted_out = 0 ORDER BY user_id",
            (guild_id,),
        )
        return [_member(r) for r in rows]

    async def members_with_interactions(self, guild_id: int, minimum: int = 3) -> list[dict[str, Any]]:
        """Members (not opted out, not bots) with at least ``minimum`` interactions in the guild."""
        rows = await self._fetchall(
            "SELECT m.* FROM members m JOIN interactions i ON i.guild_id = m.guild_id AND i.member_id = m.user_id "
            "WHERE m.guild_id = ? AND m.opted_out = 0 AND m.is_bot = 0 AND i.kind != 'recommended' "
            "GROUP BY m.user_id HAVING COUNT(*) >= ? ORDER BY m.user_id",
            (guild_id, minimum),
        )
        return [_member(r) for r in rows]

    async def set_opted_out(self, user_id: int, opted_out: bool = True) -> None:
        """Opt a user out of (or back into) recording, in every guild."""
        await self._write("UPDATE members SET opted_out = ?, subscribed = CASE WHEN ? THEN 0 ELSE subscribed END "
                          "WHERE user_id = ?", (int(opted_out), int(opted_out), user_id))
        if opted_out and not await self._fetchone("SELECT 1 FROM members WHERE user_id = ?", (user_id,)):
            # remember the choice even for a user we have never seen in a guild
            await self._write(
                "INSERT INTO guilds (id, name, created_at) VALUES (0, '(opt-outs)', ?) ON CONFLICT(id) DO NOTHING",
                (time.time(),),
            )
            await self._write(
                "INSERT INTO members (guild_id, user_id, opted_out) VALUES (0, ?, 1) "
                "ON CONFLICT(guild_id, user_id) DO UPDATE SET opted_out = 1",
                (user_id,),
            )

    async def is_opted_out(self, user_id: int) -> bool:
        row = await self._fetchone("SELECT 1 FROM members WHERE user_id = ? AND opted_out = 1 LIMIT 1", (user_id,))
        return row is not None

    async def opted_out_ids(self, guild_id: int) -> set[int]:
        rows = await self._fetchall(
            "SELECT DISTINCT user_id FROM members WHERE opted_out = 1 AND user_id IN "
            "(SELECT user_id FROM members WHERE guild_id = ?)",
            (guild_id,),
        )
        return {r["user_id"] for r in rows}

    # ---- items ----------------------------------------------------------------------------
    async def upsert_items(self, items: Sequence[Item]) -> int:
        """Insert or update items (keyed by id); returns how many were new. Items by opted-out
        authors are skipped."""
        if not items:
            return 0
        before = await self.count("items")
        rows = []
        opted = {}
        for it in items:
            if it.author_id is not None:
                if it.author_id not in opted:
                    opted[it.author_id] = await self.is_opted_out(it.author_id)
                if opted[it.author_id]:
                    continue
            if it.kind not in ITEM_KINDS:
                raise ValueError(f"unknown item kind {it.kind!r}")
            rows.append(
                (
                    it.id, it.guild_id, it.channel_id, it.kind, it.author_id, it.title, it.text, it.url,
                    json.dumps(it.tags), it.created_at, int(it.nsfw), it.rating, it.external_id,
                    it.parent_item_id, json.dumps(it.meta),
                )
            )
        async with self.transaction():
            for gid in {r[1] for r in rows}:
                await self.upsert_guild(gid)
            await self._db.executemany(
                "INSERT INTO items (id, guild_id, channel_id, kind, author_id, title, text, url, tags, created_at, "
                "nsfw, rating, external_id, parent_item_id, meta) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET title = excluded.title, text = excluded.text, url = excluded.url, "
                "tags = excluded.tags, nsfw = excluded.nsfw, rating = excluded.rating, meta = excluded.meta, "
                "channel_id = excluded.channel_id, parent_item_id = excluded.parent_item_id",
                rows,
            )
        return await self.count("items") - before

    async def upsert_item(self, item: Item) -> bool:
        """Insert or update one item; True when it was new."""
        return bool(await self.upsert_items([item]))

    async def get_item(self, item_id: int) -> Item | None:
        row = await self._fetchone("SELECT * FROM items WHERE id = ?", (item_id,))
        return Item.from_row(row) if row else None

    async def get_items(self, item_ids: Iterable[int]) -> dict[int, Item]:
        ids = list(item_ids)
        out: dict[int, Item] = {}
        for chunk in _chunks(ids, 500):
            q = ",".join("?" * len(chunk))
            for row in await self._fetchall(f"SELECT * FROM items WHERE id IN ({q})", chunk):
                out[row["id"]] = Item.from_row(row)
        return out

    async def item_quotes(self, item_ids: Iterable[int], width: int = 400) -> dict[int, str]:
        """Item id -> what a reason quotes for it: its title, else its text (first ``width`` characters);
        a light read of many items (a digest's reasons), ids not found left out."""
        ids = list(item_ids)
        out: dict[int, str] = {}
        for chunk in _chunks(ids, 500):
            q = ",".join("?" * len(chunk))
            rows = await self._fetchall(
                f"SELECT id, substr(COALESCE(NULLIF(title, ''), text, ''), 1, ?) FROM items WHERE id IN ({q})",
                [width, *chunk],
            )
            out.update((r[0], r[1]) for r in rows)
        return out

    async def items(self, guild_id: int, *, kind: str | None = None, since: float | None = None) -> list[Item]:
        sql, params = "SELECT * FROM items WHERE guild_id = ?", [guild_id]
        if kind:
            sql += " AND kind = ?"
            params.append(kind)
        if since is not None:
            sql += " AND created_at >= ?"
            params.append(since)
        return [Item.from_row(r) for r in await self._fetchall(sql + " ORDER BY created_at, id", params)]

    async def item_by_external_id(self, guild_id: int, external_id: str) -> Item | None:
        row = await self._fetchone("SELECT * FROM items WHERE guild_id = ? AND external_id = ?", (guild_id, external_id))
        return Item.from_row(row) if row else None

    async def update_item_text(self, item_id: int, text: str, title: str | None = None) -> bool:
        """Change an item's text (an edited message); its vector is dropped for re-embedding."""
        async with self.transaction():
            cur = await self._write(
                "UPDATE items SET text = ?, title = COALESCE(?, title) WHERE id = ?", (text, title, item_id)
            )
            await self._write("DELETE FROM embeddings WHERE owner = 'item' AND owner_id = ?", (item_id,))
        return cur.rowcount > 0

    async def delete_item(self, item_id: int) -> bool:
        """Remove an item with its interactions, vectors and sent recommendations."""
        cur = await self._write("DELETE FROM items WHERE id = ?", (item_id,))
        return cur.rowcount > 0

    async def add_rating(self, item_id: int, delta: float) -> None:
        await self._write("UPDATE items SET rating = rating + ? WHERE id = ?", (delta, item_id))

    async def engagement_counts(self, guild_id: int, since: float | None = None) -> dict[int, int]:
        """Item id -> number of positive interactions by members other than the author (popularity prior)."""
        rows = await self._fetchall(
            "SELECT i.item_id, COUNT(*) AS n FROM interactions i JOIN items t ON t.id = i.item_id "
            "WHERE i.guild_id = ? AND i.weight > 0 AND i.kind NOT IN ('authored', 'recommended') "
            "AND (t.author_id IS NULL OR t.author_id != i.member_id) AND i.created_at >= ? GROUP BY i.item_id",
            (guild_id, since if since is not None else -1e18),
        )
        return {r["item_id"]: r["n"] for r in rows}

    # ---- interactions -------------------------------------------------------------------
    async def add_interactions(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Record interactions; each dict has guild_id, member_id, kind and optionally item_id,
        weight (default by kind), created_at (default now), text, source_id. Duplicates (same guild,
        member, kind, item, source) and opted-out members are skipped. Returns the new ids."""
        new_ids: list[int] = []
        opted: dict[int, bool] = {}
        async with self.transaction():
            for r in rows:
                kind = r["kind"]
                if kind not in INTERACTION_KINDS:
                    raise ValueError(f"unknown interaction kind {kind!r}")
                mid = int(r["member_id"])
                if mid not in opted:
                    opted[mid] = await self.is_opted_out(mid)
                if opted[mid]:
                    continue
                key = f"{r['guild_id']}:{mid}:{kind}:{r.get('item_id')}:{r.get('source_id')}"
                cur = await self._write(
                    "INSERT INTO interactions (guild_id, member_id, item_id, kind, weight, created_at, text, "
                    "source_id, dedup_key) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(dedup_key) DO NOTHING",
                    (
                        r["guild_id"], mid, r.get("item_id"), kind,
                        r.get("weight", DEFAULT_WEIGHTS[kind]), r.get("created_at") or time.time(),
                        r.get("text") or "", r.get("source_id"), key,
                    ),
                )
                if cur.rowcount:
                    new_ids.append(cur.lastrowid)  # type: ignore[arg-type]
        return new_ids

    async def add_interaction(self, guild_id: int, member_id: int, kind: str, **fields: Any) -> int | None:
        """Record one interaction (see :meth:`add_interactions`); its id, or None when skipped."""
        ids = await self.add_interactions([{"guild_id": guild_id, "member_id": member_id, "kind": kind, **fields}])
        return ids[0] if ids else None

    async def remove_interactions(
        self, guild_id: int, member_id: int, *, item_id: int | None = None, kinds: Iterable[str] | None = None
    ) -> int:
        """Delete a member's interactions on an item (e.g. a removed reaction, a changed rating)."""
        sql, params = "DELETE FROM interactions WHERE guild_id = ? AND member_id = ?", [guild_id, member_id]
        if item_id is not None:
            sql += " AND item_id = ?"
            params.append(item_id)
        if kinds is not None:
            ks = list(kinds)
            sql += f" AND kind IN ({','.join('?' * len(ks))})"
            params += ks
        return (await self._write(sql, params)).rowcount

    async def interactions(
        self, guild_id: int, member_id: int | None = None, *, before: float | None = None
    ) -> list[Interaction]:
        """A guild's (or one member's) interactions, oldest first."""
        sql, params = "SELECT * FROM interactions WHERE guild_id = ?", [guild_id]
        if member_id is not None:
            sql += " AND member_id = ?"
            params.append(member_id)
        if before is not None:
            sql += " AND created_at < ?"
            params.append(before)
        rows = await self._fetchall(sql + " ORDER BY created_at, id", params)
        return await _built(lambda: [_interaction(r) for r in rows], len(rows))

    async def get_interactions(self, ids: Iterable[int]) -> dict[int, Interaction]:
        out: dict[int, Interaction] = {}
        for chunk in _chunks(list(ids), 500):
            q = ",".join("?" * len(chunk))
            for row in await self._fetchall(f"SELECT * FROM interactions WHERE id IN ({q})", chunk):
                out[row["id"]] = _interaction(row)
        return out

    # ---- embeddings -----------------------------------------------------------------------
    async def put_embeddings(
        self, owner: str, owner_ids: Sequence[int], guild_ids: Sequence[int], vectors: np.ndarray, model: str
    ) -> None:
        """Store vectors ``(n, dim) float32`` (L2-normalised) for items or interactions, tagged with
        the embedding model's name so a model change is detected."""
        if owner not in ("item", "interaction"):
            raise ValueError("owner must be 'item' or 'interaction'")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(owner_ids):
            raise ValueError(f"vectors must be (n, dim) with n={len(owner_ids)}, got {vectors.shape}")
        dim = vectors.shape[1]
        rows = [(owner, int(i), int(g), model, dim, vector_to_blob(v)) for i, g, v in zip(owner_ids, guild_ids, vectors)]
        async with self.transaction():
            await self._db.executemany(
                "INSERT INTO embeddings (owner, owner_id, guild_id, model, dim, vector) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(owner, owner_id) DO UPDATE SET model = excluded.model, dim = excluded.dim, "
                "vector = excluded.vector, guild_id = excluded.guild_id",
                rows,
            )

    async def get_embeddings(self, owner: str, guild_id: int, model: str) -> tuple[np.ndarray, np.ndarray]:
        """All of a guild's vectors of ``owner`` made by ``model``: ``(ids (n,) int64, vectors (n, dim) float32)``."""
        rows = await self._fetchall(
            "SELECT owner_id, dim, vector FROM embeddings WHERE owner = ? AND guild_id = ? AND model = ? ORDER BY owner_id",
            (owner, guild_id, model),
        )
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        ids = np.fromiter((r["owner_id"] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.vstack([blob_to_vector(r["vector"]) for r in rows]).astype(np.float32, copy=False)
        return ids, vecs

    async def embeddings_for(self, owner: str, ids: Sequence[int], model: str) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        for chunk in _chunks(list(ids), 500):
            q = ",".join("?" * len(chunk))
            for r in await self._fetchall(
                f"SELECT owner_id, vector FROM embeddings WHERE owner = ? AND model = ? AND owner_id IN ({q})",
                [owner, model, *chunk],
            ):
                out[r["owner_id"]] = blob_to_vector(r["vector"])
        return out

    async def missing_embeddings(self, owner: str, model: str, guild_id: int | None = None) -> list[tuple[int, int, str]]:
        """``(id, guild_id, text)`` of items or interactions with no vector from ``model`` (new, edited,
        or embedded by another model)."""
        table = "items" if owner == "item" else "interactions"
        text = "CASE WHEN t.title != '' THEN t.title || char(10) || t.text ELSE t.text END" if owner == "item" else "t.text"
        sql = (
            f"SELECT t.id, t.guild_id, {text} AS body FROM {table} t LEFT JOIN embeddings e "
            f"ON e.owner = ? AND e.owner_id = t.id AND e.model = ? WHERE e.owner_id IS NULL"
        )
        params: list[Any] = [owner, model]
        if owner == "interaction":
            sql += " AND t.text != '' AND t.kind != 'recommended'"
        if guild_id is not None:
            sql += " AND t.guild_id = ?"
            params.append(guild_id)
        return [(r["id"], r["guild_id"], r["body"]) for r in await self._fetchall(sql + " ORDER BY t.id", params)]

    async def embedding_count(self, owner: str, guild_id: int, model: str) -> int:
        (n,) = await self._fetchone(
            "SELECT COUNT(*) FROM embeddings WHERE owner = ? AND guild_id = ? AND model = ?", (owner, guild_id, model)
        )
        return n

    async def embedding_ids(self, owner: str, guild_id: int, model: str) -> np.ndarray:
        """Ids of a guild's ``owner`` rows with a vector from ``model``: ``(n,) int64`` sorted (index checks)."""
        rows = await self._fetchall(
            "SELECT owner_id FROM embeddings WHERE owner = ? AND guild_id = ? AND model = ? ORDER BY owner_id",
            (owner, guild_id, model),
        )
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    async def embedded_ids(self, owner: str, ids: Sequence[int], model: str) -> set[int]:
        """Those of ``ids`` that already have a vector from ``model``."""
        out: set[int] = set()
        for chunk in _chunks(list(ids), 500):
            q = ",".join("?" * len(chunk))
            rows = await self._fetchall(
                f"SELECT owner_id FROM embeddings WHERE owner = ? AND model = ? AND owner_id IN ({q})",
                [owner, model, *chunk],
            )
            out.update(r[0] for r in rows)
        return out

    async def existing_ids(self, owner: str, ids: Sequence[int]) -> set[int]:
        """Those of ``ids`` still present in ``items`` (owner ``item``) or ``interactions``."""
        table = "items" if owner == "item" else "interactions"
        out: set[int] = set()
        for chunk in _chunks(list(ids), 500):
            q = ",".join("?" * len(chunk))
            out.update(r[0] for r in await self._fetchall(f"SELECT id FROM {table} WHERE id IN ({q})", chunk))
        return out

    async def interaction_ids_for_items(self, item_ids: Sequence[int]) -> dict[int, list[int]]:
        """Guild id -> ids of every interaction on the given items (to drop from indexes with them)."""
        out: dict[int, list[int]] = {}
        for chunk in _chunks(list(item_ids), 500):
            q = ",".join("?" * len(chunk))
            for r in await self._fetchall(f"SELECT guild_id, id FROM interactions WHERE item_id IN ({q})", chunk):
                out.setdefault(r[0], []).append(r[1])
        return out

    async def engaged_items(
        self, guild_id: int, member_ids: Sequence[int], *, before: float | None = None
    ) -> list[tuple[int, int, float]]:
        """``(member_id, item_id, weight)`` of the members' interactions on items with positive weight,
        excluding ``recommended``/``viewed`` (the neighbourhood signal)."""
        out: list[tuple[int, int, float]] = []
        for chunk in _chunks(list(member_ids), 500):
            q = ",".join("?" * len(chunk))
            rows = await self._fetchall(
                f"SELECT member_id, item_id, weight FROM interactions WHERE guild_id = ? AND member_id IN ({q}) "
                "AND item_id IS NOT NULL AND weight > 0 AND kind NOT IN ('recommended', 'viewed') AND created_at < ?",
                [guild_id, *chunk, before if before is not None else 1e18],
            )
            out.extend((r[0], r[1], r[2]) for r in rows)
        return out

    async def interaction_members(self, ids: Sequence[int]) -> dict[int, int]:
        """Interaction id -> member id."""
        out: dict[int, int] = {}
        for chunk in _chunks(list(ids), 500):
            q = ",".join("?" * len(chunk))
            out.update((r[0], r[1]) for r in await self._fetchall(f"SELECT id, member_id FROM interactions WHERE id IN ({q})", chunk))
        return out

    async def recent_items(self, guild_id: int, limit: int, *, before: float | None = None) -> list[Item]:
        """The guild's newest ``limit`` items created before ``before`` (default: any time), newest first."""
        rows = await self._fetchall(
            "SELECT * FROM items WHERE guild_id = ? AND created_at <= ? ORDER BY created_at DESC, id DESC LIMIT ?",
            (guild_id, before if before is not None else 1e18, limit),
        )
        return [Item.from_row(r) for r in rows]

    async def delete_embeddings(self, owner: str, ids: Sequence[int]) -> int:
        """Drop the vectors of ``owner`` rows (e.g. an item whose text changed); returns how many."""
        n = 0
        for chunk in _chunks(list(ids), 500):
            q = ",".join("?" * len(chunk))
            cur = await self._write(f"DELETE FROM embeddings WHERE owner = ? AND owner_id IN ({q})", [owner, *chunk])
            n += cur.rowcount
        return n

    async def last_activity(self, guild_id: int) -> dict[int, float]:
        """Item id -> time (UNIX s) of its latest interaction (any kind but ``recommended``)."""
        rows = await self._fetchall(
            "SELECT item_id, MAX(created_at) FROM interactions WHERE guild_id = ? AND item_id IS NOT NULL "
            "AND kind != 'recommended' GROUP BY item_id",
            (guild_id,),
        )
        return {r[0]: r[1] for r in rows}

    async def recommended_since(self, guild_id: int, member_id: int, since: float) -> set[int]:
        """Items sent to the member in a digest at or after ``since`` (UNIX s)."""
        rows = await self._fetchall(
            "SELECT item_id FROM recommendations_sent WHERE guild_id = ? AND member_id = ? AND created_at >= ?",
            (guild_id, member_id, since),
        )
        return {r[0] for r in rows}

    # ---- recommendations ------------------------------------------------------------------
    async def record_recommendations(
        self, guild_id: int, member_id: int, picks: Sequence[tuple[Any, ...]], date: str
    ) -> None:
        """Remember that ``picks`` (item id, score, reason[, id of the item the reason quotes]) were
        sent on ``date`` (YYYY-MM-DD)."""
        await self.record_digest(guild_id, {member_id: picks}, date)

    async def record_digest(self, guild_id: int, picks: Mapping[int, Sequence[tuple[Any, ...]]], date: str) -> None:
        """:meth:`record_recommendations` for many members (member id -> picks) in one transaction."""
        now = time.time()
        async with self.transaction():
            await self._db.executemany(
                "INSERT INTO recommendations_sent (guild_id, member_id, item_id, date, score, reason, created_at, "
                "reason_item_id) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                [(guild_id, m, p[0], date, p[1], p[2], now, p[3] if len(p) > 3 else None)
                 for m, rows in picks.items() for p in rows],
            )

    async def recommended_item_ids(self, guild_id: int, member_id: int) -> set[int]:
        """Every item ever sent to the member in a digest (a digest never repeats an item)."""
        rows = await self._fetchall(
            "SELECT item_id FROM recommendations_sent WHERE guild_id = ? AND member_id = ?", (guild_id, member_id)
        )
        return {r["item_id"] for r in rows}

    async def recommended_by_member(self, guild_id: int, since: float | None = None) -> dict[int, set[int]]:
        """Member id -> items sent to them in the guild's digests (at or after ``since``, UNIX s, when
        given): :meth:`recommended_item_ids` / :meth:`recommended_since` for every member in one query."""
        rows = await self._fetchall(
            "SELECT member_id, item_id FROM recommendations_sent WHERE guild_id = ? AND created_at >= ?",
            (guild_id, since if since is not None else -1e18),
        )

        def by_member() -> dict[int, set[int]]:
            out: dict[int, set[int]] = {}
            for r in rows:
                out.setdefault(r[0], set()).add(r[1])
            return out

        return await _built(by_member, len(rows))

    async def item_columns(self, guild_id: int) -> dict[str, np.ndarray]:
        """The guild's items as columns for batched ranking, sorted by id: ``id`` int64,
        ``created_at`` float64 (UNIX s), ``channel_id`` / ``author_id`` int64 (-1 = none), ``nsfw``
        bool, ``rating`` float64."""
        rows = await self._fetchall(
            "SELECT id, created_at, COALESCE(channel_id, -1), COALESCE(author_id, -1), nsfw, rating "
            "FROM items WHERE guild_id = ? ORDER BY id",
            (guild_id,),
        )

        def columns() -> dict[str, np.ndarray]:
            cols = list(zip(*rows)) if rows else [()] * 6
            return {
                "id": np.array(cols[0], np.int64), "created_at": np.array(cols[1], np.float64),
                "channel_id": np.array(cols[2], np.int64), "author_id": np.array(cols[3], np.int64),
                "nsfw": np.array(cols[4], bool), "rating": np.array(cols[5], np.float64),
            }

        return await _built(columns, len(rows))

    async def recommendations_on(self, guild_id: int, date: str) -> dict[int, list[tuple[int, float, str]]]:
        """Member id -> ``(item_id, score, reason)`` sent in the guild's digest of ``date`` (YYYY-MM-DD),
        best score first (a digest re-run on the same date returns what was already sent)."""
        rows = await self._fetchall(
            "SELECT member_id, item_id, score, reason FROM recommendations_sent WHERE guild_id = ? AND date = ? "
            "ORDER BY member_id, score DESC, item_id",
            (guild_id, date),
        )
        out: dict[int, list[tuple[int, float, str]]] = {}
        for r in rows:
            out.setdefault(r["member_id"], []).append((r["item_id"], r["score"], r["reason"]))
        return out

    # ---- privacy --------------------------------------------------------------------------
    async def forget_user(self, user_id: int) -> dict[str, int]:
        """Delete every row about ``user_id`` in every guild: their items (with everyone's interactions
        on them), interactions, vectors, recommendations and member rows; digest reasons sent to others
        that quoted their items become ``FORGOTTEN_REASON``. Returns counts per table (and
        ``quotes_removed``).
        The caller removes the returned ids from the FAISS indexes (see recsys.privacy)."""
        counts: dict[str, int] = {}
        async with self.transaction():
            # digest reasons sent to others that quote this member's items lose the quote
            counts["quotes_removed"] = (await self._write(
                "UPDATE recommendations_sent SET reason = ?, reason_item_id = NULL "
                "WHERE reason_item_id IN (SELECT id FROM items WHERE author_id = ?)", (FORGOTTEN_REASON, user_id),
            )).rowcount
            counts["items"] = (await self._write("DELETE FROM items WHERE author_id = ?", (user_id,))).rowcount
            counts["interactions"] = (
                await self._write("DELETE FROM interactions WHERE member_id = ?", (user_id,))
            ).rowcount
            counts["recommendations_sent"] = (
                await self._write("DELETE FROM recommendations_sent WHERE member_id = ?", (user_id,))
            ).rowcount
            counts["members"] = (await self._write("DELETE FROM members WHERE user_id = ?", (user_id,))).rowcount
        self._names_epoch += 1
        return counts

    async def export_user(self, user_id: int) -> dict[str, Any]:
        """Everything stored about ``user_id`` as JSON-ready data (for /privacy export)."""
        members = [_member(r) for r in await self._fetchall("SELECT * FROM members WHERE user_id = ?", (user_id,))]
        items = [asdict(Item.from_row(r)) for r in await self._fetchall("SELECT * FROM items WHERE author_id = ?", (user_id,))]
        inter = [asdict(_interaction(r)) for r in await self._fetchall("SELECT * FROM interactions WHERE member_id = ?", (user_id,))]
        recs = [dict(r) for r in await self._fetchall("SELECT * FROM recommendations_sent WHERE member_id = ?", (user_id,))]
        return {"user_id": user_id, "memberships": members, "items": items, "interactions": inter,
                "recommendations_sent": recs}

    async def ids_owned_by(self, user_id: int) -> dict[int, dict[str, list[int]]]:
        """Per guild, the item ids authored and interaction ids made by ``user_id`` (to drop from indexes)."""
        out: dict[int, dict[str, list[int]]] = {}
        for r in await self._fetchall("SELECT guild_id, id FROM items WHERE author_id = ?", (user_id,)):
            out.setdefault(r["guild_id"], {"items": [], "interactions": []})["items"].append(r["id"])
        for r in await self._fetchall(
            "SELECT guild_id, id FROM interactions WHERE member_id = ? OR item_id IN (SELECT id FROM items WHERE author_id = ?)",
            (user_id, user_id),
        ):
            out.setdefault(r["guild_id"], {"items": [], "interactions": []})["interactions"].append(r["id"])
        return out


def channels_visible_to(
    guild_id: int, member: dict[str, Any] | None, member_id: int, channels: Iterable[dict[str, Any]]
) -> set[int]:
    """Ids of ``channels`` (rows as :meth:`Store.channels`) that ``member`` (a row as
    :meth:`Store.get_member`, or None) may view: public, or one of their roles (the guild id is the
    @everyone role) or they themselves allowed, and they not denied."""
    roles = set(member["role_ids"]) if member else set()
    roles.add(guild_id)
    visible: set[int] = set()
    for ch in channels:
        vis = ch["visibility"]
        if member_id in vis.get("denied_members", []):
            continue
        if vis.get("public", False) or member_id in vis.get("members", []) or roles & set(vis.get("roles", [])):
            visible.add(ch["id"])
    return visible


def _member(row: aiosqlite.Row) -> dict[str, Any]:
    d = dict(row)
    d["role_ids"] = json.loads(d["role_ids"])
    for k in ("is_bot", "opted_out", "subscribed"):
        d[k] = bool(d[k])
    return d


def _interaction(row: aiosqlite.Row) -> Interaction:
    d = dict(row)
    d.pop("dedup_key", None)
    return Interaction(**d)


OFF_LOOP_ROWS = 2000  # rows above which turning them into objects runs in a worker thread


async def _built(build: Callable[[], T], rows: int) -> T:
    """``build()`` — Python objects from ``rows`` fetched rows — in a worker thread when there are
    more than ``OFF_LOOP_ROWS`` (a whole guild's 50k interactions or 100k items take ~0.3 s, which
    would pause the event loop), else inline."""
    return build() if rows <= OFF_LOOP_ROWS else await asyncio.to_thread(build)


def _chunks(seq: list[Any], n: int) -> Iterable[list[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies (BEGIN … END;) whole."""
    out, buf = [], []
    depth = 0
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        buf.append(line)
        upper = stripped.upper()
        if upper.endswith("BEGIN"):
            depth += 1
        if upper == "END;":
            depth -= 1
        if stripped.endswith(";") and depth == 0:
            out.append("\n".join(buf))
            buf = []
    if buf:
        out.append("\n".join(buf))
    return out
