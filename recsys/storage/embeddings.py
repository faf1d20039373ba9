"""Stored vectors (``embeddings``: float32 blobs per item / interaction, tagged with the model) —
one part of :class:`recsys.store.Store`. FAISS indexes are rebuilt from these (``recsys.index``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recsys.storage.core import StoreCore
from recsys.storage.rows import blob_to_vector, chunks, vector_to_blob


class EmbeddingStore(StoreCore):
    """Vectors of items and interactions; ``owner`` is ``"item"`` or ``"interaction"``."""

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
        for chunk in chunks(list(ids), 500):
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
        for chunk in chunks(list(ids), 500):
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
        for chunk in chunks(list(ids), 500):
            q = ",".join("?" * len(chunk))
            out.update(r[0] for r in await self._fetchall(f"SELECT id FROM {table} WHERE id IN ({q})", chunk))
        return out


    async def delete_embeddings(self, owner: str, ids: Sequence[int]) -> int:
        """Drop the vectors of ``owner`` rows (e.g. an item whose text changed); returns how many."""
        n = 0
        for chunk in chunks(list(ids), 500):
            q = ",".join("?" * len(chunk))
            cur = await self._write(f"DELETE FROM embeddings WHERE owner = ? AND owner_id IN ({q})", [owner, *chunk])
            n += cur.rowcount
        return n
