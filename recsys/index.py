"""Per-guild FAISS indexes: isolation by construction (one index pair per guild, never shared).

Two kinds per guild, named like the store's embedding owners:

- ``item``: one vector per recommendable item (content);
- ``interaction``: one vector per member interaction (what they wrote, replied to, reacted to, …),
  which answers "members who engaged with things like this".

Each is a ``faiss.IndexIDMap2`` over inner product on L2-normalised vectors (so scores are cosine
similarities in [-1, 1]): exact ``IndexFlatIP`` by default, ``IndexHNSWFlat`` once it holds more than
``hnsw_threshold`` vectors. Files live in ``<index_dir>/<guild_id>/{item,interaction}.faiss`` with a
JSON sidecar (model, dim, count, ids removed from an HNSW graph), both written atomically
(temporary file + ``os.replace``). On start :func:`IndexSet.sync` checks each file against the ids
stored in SQLite and rebuilds from the stored vectors when it is missing, stale or corrupt.

Every method here is blocking (FAISS): async callers run them with ``asyncio.to_thread``.
A lock per index makes concurrent add/remove/search from worker threads safe.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

log = logging.getLogger(__name__)

KINDS = ("item", "interaction")
HNSW_M = 32  # graph degree (faiss default is 32); recall ≈ 0.95+ at efSearch 128 on 384-d text vectors
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128


class VectorIndex:
    """One ``IndexIDMap2`` over inner product holding int64 ids and ``(n, dim)`` float32 vectors.

    ``hnsw_threshold``: above this many vectors the exact index is rebuilt as HNSW.
    HNSW graphs cannot delete in place: removed ids are kept as tombstones, filtered from
    results, and dropped at the next :meth:`compact` (done by :meth:`save`).
    """

    def __init__(self, dim: int, *, model: str = "", hnsw_threshold: int = 50_000, hnsw: bool = False):
        self.dim = int(dim)
        self.model = model
        self.hnsw_threshold = int(hnsw_threshold)
        self._lock = threading.RLock()
        self._dead: set[int] = set()
        self.index = self._new(hnsw)
        self.dirty = False

    # ---- construction -------------------------------------------------------------------
    def _new(self, hnsw: bool) -> faiss.IndexIDMap2:
        if hnsw:
            inner = faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            inner.hnsw.efSearch = HNSW_EF_SEARCH
        else:
            inner = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(inner)

    @property
    def is_hnsw(self) -> bool:
        return isinstance(faiss.downcast_index(self.index.index), faiss.IndexHNSWFlat)

    @property
    def kind(self) -> str:
        return "hnsw" if self.is_hnsw else "flat"

    def __len__(self) -> int:
        with self._lock:
            return int(self.index.ntotal) - len(self._dead)

    def ids(self) -> np.ndarray:
        """Live ids, ``(n,) int64``, sorted."""
        with self._lock:
            ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
            if self._dead:
                ids = ids[~np.isin(ids, np.fromiter(self._dead, np.int64))]
            return np.sort(ids)

    # ---- updates ------------------------------------------------------------------------
    def add(self, ids: Iterable[int], vectors: np.ndarray) -> None:
        """Add (or replace) vectors ``(n, dim) float32`` under ``ids``."""
        ids = np.asarray(list(ids), dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(ids) == 0:
            return
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"vectors must be ({len(ids)}, {self.dim}), got {vectors.shape}")
        with self._lock:
            self._remove_locked(ids)
            if self._dead & set(ids.tolist()):
                self._compact_locked()  # a tombstoned id comes back: drop its old vector first
            self.index.add_with_ids(vectors, ids)
            self.dirty = True
            if not self.is_hnsw and self.index.ntotal > self.hnsw_threshold:
                self._rebuild_locked(hnsw=True)

    def remove(self, ids: Iterable[int]) -> int:
        """Remove ``ids`` (absent ones are ignored); returns how many were present."""
        ids = np.asarray(list(ids), dtype=np.int64)
        with self._lock:
            return self._remove_locked(ids)

    def _remove_locked(self, ids: np.ndarray) -> int:
        if len(ids) == 0 or self.index.ntotal == 0:
            return 0
        present = faiss.vector_to_array(self.index.id_map)
        hit = ids[np.isin(ids, present)]
        hit = np.array([i for i in hit.tolist() if i not in self._dead], dtype=np.int64)
        if len(hit) == 0:
            return 0
        if self.is_hnsw:
            self._dead.update(hit.tolist())
        else:
            self.index.remove_ids(faiss.IDSelectorBatch(hit))
        self.dirty = True
        return len(hit)

    def compact(self) -> None:
        """Rebuild an HNSW graph without its tombstoned ids (no-op otherwise)."""
        with self._lock:
            if self._dead:
                self._compact_locked()

    def _compact_locked(self) -> None:
        self._rebuild_locked(hnsw=self.is_hnsw)

    def _rebuild_locked(self, *, hnsw: bool) -> None:
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        keep = ~np.isin(ids, np.fromiter(self._dead, np.int64)) if self._dead else np.ones(len(ids), bool)
        vecs = self._reconstruct_rows(np.flatnonzero(keep))
        self.index = self._new(hnsw or len(vecs) > self.hnsw_threshold)
        self._dead.clear()
        if len(vecs):
            self.index.add_with_ids(vecs, ids[keep])
        self.dirty = True

    def _reconstruct_rows(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros((0, self.dim), np.float32)
        inner = self.index.index
        return np.ascontiguousarray(inner.reconstruct_n(0, inner.ntotal)[rows], dtype=np.float32)

    # ---- queries ------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest neighbours by inner product for ``queries (m, dim)``: ``(sims (m, k) float32,
        ids (m, k) int64)``, best first; missing slots have id -1 and sim -inf."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        m = len(queries)
        with self._lock:
            n = int(self.index.ntotal)
            if n == 0 or k <= 0:
                return np.full((m, max(k, 0)), -np.inf, np.float32), np.full((m, max(k, 0)), -1, np.int64)
            fetch = min(n, k + len(self._dead))
            sims, ids = self.index.search(queries, fetch)
            dead = self._dead
        if dead:
            out_s = np.full((m, k), -np.inf, np.float32)
            out_i = np.full((m, k), -1, np.int64)
            for r in range(m):
                keep = [j for j in range(fetch) if ids[r, j] >= 0 and int(ids[r, j]) not in dead][:k]
                out_s[r, : len(keep)] = sims[r, keep]
                out_i[r, : len(keep)] = ids[r, keep]
            return out_s, out_i
        if fetch < k:
            sims = np.pad(sims, ((0, 0), (0, k - fetch)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, k - fetch)), constant_values=-1)
        sims = np.where(ids < 0, -np.inf, sims).astype(np.float32)
        return sims, ids

    def vectors(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        """Stored vectors of the given ids that are present (``(dim,) float32`` each): :meth:`matrix`
        as a dict."""
        ids = np.fromiter((int(i) for i in ids), np.int64)
        rows, present = self.matrix(ids)
        return {i: rows[r] for r, i in enumerate(ids.tolist()) if present[r]}

    def matrix(self, ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """Stored vectors of ``ids (n,)`` in one bulk read (batched ranking): ``((n, dim) float32,
        (n,) bool present)``; an id that is absent or removed gets a zero row and ``False``."""
        ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, np.int64)
        out = np.zeros((len(ids), self.dim), np.float32)
        with self._lock:
            if len(ids) == 0 or self.index.ntotal == 0:
                return out, np.zeros(len(ids), bool)
            present = np.isin(ids, faiss.vector_to_array(self.index.id_map))
            if self._dead:
                present &= ~np.isin(ids, np.fromiter(self._dead, np.int64))
            if present.any():
                out[present] = self.index.reconstruct_batch(ids[present])
        return out, present

    # ---- files --------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write ``path`` (``.faiss``) and its ``.json`` sidecar atomically (compacting HNSW first)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._compact_locked() if self._dead else None
            tmp = path.with_name(path.name + ".tmp")
            faiss.write_index(self.index, str(tmp))
            meta = {"model": self.model, "dim": self.dim, "count": int(self.index.ntotal), "kind": self.kind}
            tmp_meta = path.with_suffix(".json.tmp")
            tmp_meta.write_text(json.dumps(meta))
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            os.replace(tmp_meta, path.with_suffix(".json"))
            self.dirty = False

    @classmethod
    def load(cls, path: Path, *, dim: int, model: str, hnsw_threshold: int) -> VectorIndex:
        """Read an index saved by :meth:`save`. Raises ``ValueError`` when it is unreadable, made by
        another model or dimension, or disagrees with its sidecar."""
        path = Path(path)
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            index = faiss.read_index(str(path))
        except (OSError, ValueError, RuntimeError) as err:
            raise ValueError(f"unreadable index {path}: {err}") from None
        if meta.get("model") != model or int(meta.get("dim", -1)) != dim or index.d != dim:
            raise ValueError(f"index {path} was built by {meta.get('model')!r}/{meta.get('dim')}, not {model!r}/{dim}")
        if not isinstance(index, faiss.IndexIDMap2) and "IDMap2" not in type(index).__name__:
            raise ValueError(f"index {path} is not an IndexIDMap2")
        if int(index.ntotal) != int(meta.get("count", -1)):
            raise ValueError(f"index {path} holds {index.ntotal} vectors, its sidecar says {meta.get('count')}")
        self = cls(dim, model=model, hnsw_threshold=hnsw_threshold)
        self.index = faiss.downcast_index(index) if not isinstance(index, faiss.IndexIDMap2) else index
        if self.is_hnsw:
            faiss.downcast_index(self.index.index).hnsw.efSearch = HNSW_EF_SEARCH
        return self


class IndexSet:
    """All guilds' indexes under ``root`` (``settings.index_dir``) for one embedding model."""

    def __init__(self, root: Path, *, dim: int, model: str, hnsw_threshold: int = 50_000):
        self.root = Path(root)
        self.dim = dim
        self.model = model
        self.hnsw_threshold = hnsw_threshold
        self._indexes: dict[tuple[int, str], VectorIndex] = {}
        self._lock = threading.Lock()

    def path(self, guild_id: int, kind: str) -> Path:
        return self.root / str(int(guild_id)) / f"{kind}.faiss"

    def get(self, guild_id: int, kind: str) -> VectorIndex:
        """The guild's index of ``kind`` (``item`` | ``interaction``), created empty when new."""
        if kind not in KINDS:
            raise ValueError(f"index kind must be one of {KINDS}, got {kind!r}")
        key = (int(guild_id), kind)
        with self._lock:
            idx = self._indexes.get(key)
            if idx is None:
                idx = self._indexes[key] = VectorIndex(self.dim, model=self.model, hnsw_threshold=self.hnsw_threshold)
            return idx

    def guilds(self) -> list[int]:
        with self._lock:
            return sorted({g for g, _ in self._indexes})

    def try_load(self, guild_id: int, kind: str, expected_ids: np.ndarray) -> str | None:
        """Load the saved index if it holds exactly ``expected_ids`` (the ids with a vector of this
        model in SQLite). Returns ``None`` when loaded (or nothing is expected and nothing saved),
        else why it must be rebuilt: ``missing`` | ``stale`` | ``corrupt: …``."""
        path = self.path(guild_id, kind)
        expected = np.sort(np.asarray(expected_ids, np.int64))
        if not path.exists():
            if len(expected) == 0:
                self._put(guild_id, kind, VectorIndex(self.dim, model=self.model, hnsw_threshold=self.hnsw_threshold))
                return None
            return "missing"
        try:
            idx = VectorIndex.load(path, dim=self.dim, model=self.model, hnsw_threshold=self.hnsw_threshold)
        except ValueError as err:
            return f"corrupt: {err}"
        if not np.array_equal(idx.ids(), expected):
            return "stale"
        self._put(guild_id, kind, idx)
        return None

    def rebuild(self, guild_id: int, kind: str, ids: np.ndarray, vectors: np.ndarray) -> VectorIndex:
        """Build the guild's index of ``kind`` from ``ids (n,)`` and ``vectors (n, dim)`` and save it."""
        idx = VectorIndex(self.dim, model=self.model, hnsw_threshold=self.hnsw_threshold,
                          hnsw=len(ids) > self.hnsw_threshold)
        if len(ids):
            idx.add(ids, vectors)
        idx.save(self.path(guild_id, kind))
        self._put(guild_id, kind, idx)
        return idx

    def _put(self, guild_id: int, kind: str, idx: VectorIndex) -> None:
        with self._lock:
            self._indexes[(int(guild_id), kind)] = idx

    def save(self, guild_id: int | None = None, *, only_dirty: bool = True) -> int:
        """Save one guild's (or every guild's) indexes; returns how many files were written."""
        with self._lock:
            items = [(k, v) for k, v in self._indexes.items() if guild_id is None or k[0] == int(guild_id)]
        n = 0
        for (g, kind), idx in items:
            if idx.dirty or not only_dirty or not self.path(g, kind).exists():
                idx.save(self.path(g, kind))
                n += 1
        return n

    def drop_guild(self, guild_id: int) -> None:
        """Forget a guild's indexes in memory and on disk."""
        with self._lock:
            for kind in KINDS:
                self._indexes.pop((int(guild_id), kind), None)
        shutil.rmtree(self.root / str(int(guild_id)), ignore_errors=True)

    def stats(self, guild_id: int) -> dict[str, Any]:
        return {
            f"{kind}_vectors": len(self.get(guild_id, kind)) for kind in KINDS
        } | {f"{kind}_index": self.get(guild_id, kind).kind for kind in KINDS}
