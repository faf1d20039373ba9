"""The store's connection, lifetime, migrations and transactions: :class:`StoreCore`, the base every
part of :class:`recsys.store.Store` builds on (``_write`` / ``_fetchall`` / ``_fetchone``)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from recsys.storage.schema import _MIGRATIONS, split_sql

# The store whose transaction the current task is inside (None outside any).
_in_transaction: contextvars.ContextVar[StoreCore | None] = contextvars.ContextVar("campfire_store_tx", default=None)
_Self = TypeVar("_Self", bound="StoreCore")
TABLES = frozenset({"guilds", "channels", "members", "items", "interactions", "embeddings", "recommendations_sent"})


class StoreCore:
    """One aiosqlite connection (SQL runs on its thread, never blocking the event loop); writes are
    serialised by an ``asyncio.Lock`` and grouped with :meth:`transaction` where several must land
    together. :class:`recsys.store.Store` is this plus its parts (guilds, members, content, …).
    """

    def __init__(self, db: aiosqlite.Connection, path: Path):
        self._db = db
        self.path = path
        self._lock = asyncio.Lock()
        self._names_versions: dict[int, int] = {}  # see names_version
        self._names_epoch = 0

    # ---- lifetime -------------------------------------------------------------------------
    @classmethod
    async def open(cls: type[_Self], path: str | Path) -> _Self:
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
    async def connect(cls: type[_Self], path: str | Path) -> AsyncIterator[_Self]:
        store = await cls.open(path)
        try:
            yield store
        finally:
            await store.close()

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self: _Self) -> _Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def migrate(self) -> int:
        """Apply pending migrations (``PRAGMA user_version``); returns the schema version."""
        (version,) = await (await self._db.execute("PRAGMA user_version")).fetchone()
        for target in range(version, len(_MIGRATIONS)):
            await self._db.execute("BEGIN")
            try:
                for stmt in split_sql(_MIGRATIONS[target]):
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
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        (n,) = await self._fetchone(f"SELECT COUNT(*) FROM {table}")
        return n
