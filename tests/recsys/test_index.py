"""Per-guild FAISS indexes: real FAISS, real SQLite, the real embedder."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.index import VectorIndex
from recsys.service import Recommender
from recsys.store import Item


def unit(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_add_search_replace_remove_by_id():
    rng = np.random.default_rng(0)
    idx = VectorIndex(16, model="m")
    v = unit(rng, 50)
    ids = np.arange(1000, 1050) * 10**12  # snowflake-sized ids
    idx.add(ids, v)
    sims, got = idx.search(v[:3], 1)
    assert got[:, 0].tolist() == ids[:3].tolist()
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)
    idx.add(ids[:1], v[1:2])  # replace a vector under the same id
    assert len(idx) == 50
    np.testing.assert_allclose(idx.vectors([ids[0]])[int(ids[0])], v[1], atol=1e-6)
    assert idx.remove([ids[5], ids[6], 42]) == 2
    assert len(idx) == 48
    assert ids[5] not in idx.search(v[5:6], 48)[1]
    sims, got = idx.search(v[:1], 60)  # more than stored: padded with -1
    assert (got[0] == -1).sum() == 12 and np.isneginf(sims[0, -1])


def test_switches_to_hnsw_above_threshold_and_keeps_removals(tmp_path):
    rng = np.random.default_rng(1)
    idx = VectorIndex(16, model="m", hnsw_threshold=100)
    v = unit(rng, 300)
    idx.add(np.arange(300), v[:300])
    assert idx.kind == "hnsw"
    assert idx.search(v[7:8], 1)[1][0, 0] == 7
    assert idx.remove([7, 8]) == 2
    assert len(idx) == 298
    assert 7 not in idx.search(v[7:8], 5)[1][0]
    idx.save(tmp_path / "item.faiss")  # compacts the tombstones away
    back = VectorIndex.load(tmp_path / "item.faiss", dim=16, model="m", hnsw_threshold=100)
    assert back.kind == "hnsw" and len(back) == 298
    assert 7 not in back.ids() and 9 in back.ids()


def test_load_refuses_another_model_or_a_truncated_file(tmp_path):
    idx = VectorIndex(16, model="m")
    idx.add([1, 2], unit(np.random.default_rng(2), 2))
    path = tmp_path / "item.faiss"
    idx.save(path)
    with pytest.raises(ValueError, match="built by"):
        VectorIndex.load(path, dim=16, model="other", hnsw_threshold=10)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="unreadable"):
        VectorIndex.load(path, dim=16, model="m", hnsw_threshold=10)


TEXTS = ["Which hops give a citrus aroma?", "How should I store bottles of stout?",
         "What glass suits a Belgian tripel?", "Is lager older than ale?"]


async def _seed(rec: Recommender, store, guild: int, base: int) -> None:
    await store.upsert_channel(guild + 1, guild, "general")
    await rec.add_items([Item(id=base + i, guild_id=guild, kind="message", text=t, created_at=1.7e9 + i,
                              channel_id=guild + 1, author_id=9) for i, t in enumerate(TEXTS)])
    await rec.record([{"guild_id": guild, "member_id": 5, "kind": "replied", "item_id": base,
                       "text": "Citra, Mosaic and Galaxy", "created_at": 1.7e9 + 10}])
    await rec.flush()


async def test_rebuilt_when_missing_stale_or_corrupt(store, settings, embedder):
    rec = Recommender(store, embedder, settings)
    await rec.start()
    await _seed(rec, store, 1, 100)
    await _seed(rec, store, 2, 200)
    await rec.aclose()
    item_file = settings.index_dir / "1" / "item.faiss"
    assert item_file.exists() and (settings.index_dir / "2" / "interaction.faiss").exists()

    rec = Recommender(store, embedder, settings)
    assert await rec.start() == {(g, k): "loaded" for g in (1, 2) for k in ("item", "interaction")}
    await rec.aclose()

    item_file.unlink()
    rec = Recommender(store, embedder, settings)
    report = await rec.start()
    assert report[(1, "item")] == "rebuilt (missing)" and report[(2, "item")] == "loaded"
    assert rec.stats(1)["item_vectors"] == 4
    sims, ids = rec.indexes.get(1, "item").search(await embedder.aencode([TEXTS[2]]), 1)
    assert ids[0, 0] == 102  # rebuilt from the stored vectors, searchable
    await rec.aclose()

    item_file.write_bytes(b"\x00garbage" * 10)
    rec = Recommender(store, embedder, settings)
    assert (await rec.start())[(1, "item")].startswith("rebuilt (corrupt")
    assert rec.stats(1)["item_vectors"] == 4
    await rec.aclose()

    await store.delete_item(103)  # changed behind the index's back
    rec = Recommender(store, embedder, settings)
    assert (await rec.start())[(1, "item")] == "rebuilt (stale)"
    assert 103 not in rec.indexes.get(1, "item").ids()
    assert 203 in rec.indexes.get(2, "item").ids() and 103 not in rec.indexes.get(2, "item").ids()
    await rec.aclose()


@pytest.mark.parametrize("old", ["old-model", "all-MiniLM-L6-v2"])  # another model; the same before TEXT_PREP
async def test_model_or_text_preparation_change_triggers_re_embedding(store, settings, embedder, old):
    rec = Recommender(store, embedder, settings)
    await rec.start()
    await _seed(rec, store, 1, 100)
    await rec.aclose()
    # pretend the stored vectors came from another model, or from the text preparation before
    ids, vecs = await store.get_embeddings("item", 1, embedder.key)
    await store.put_embeddings("item", ids, [1] * len(ids), np.roll(vecs, 1, axis=1), old)
    assert await store.embedding_count("item", 1, embedder.key) == 0
    rec = Recommender(store, embedder, settings)
    report = await rec.start()
    assert report[(1, "item")] != "loaded"
    await rec.flush()
    assert await store.embedding_count("item", 1, embedder.key) == 4
    assert await store.embedding_count("item", 1, old) == 0
    assert rec.stats(1)["item_vectors"] == 4
    await rec.aclose()


async def test_guild_indexes_are_separate(store, settings, embedder):
    rec = Recommender(store, embedder, settings)
    await rec.start()
    await _seed(rec, store, 1, 100)
    await _seed(rec, store, 2, 200)
    assert set(rec.indexes.get(1, "item").ids()) == {100, 101, 102, 103}
    assert set(rec.indexes.get(2, "item").ids()) == {200, 201, 202, 203}
    assert rec.stats(1)["interaction_vectors"] == 1
    await rec.aclose()


def test_matrix_reads_many_vectors_at_once_with_absent_and_removed_ids_zero():
    rng = np.random.default_rng(6)
    v = unit(rng, 300)
    for threshold in (10**6, 100):  # exact, then HNSW with a tombstone
        idx = VectorIndex(16, model="m", hnsw_threshold=threshold)
        idx.add(np.arange(300) + 7, v)
        idx.remove([9])
        got, present = idx.matrix(np.array([7, 9, 5, 306, 100]))
        assert present.tolist() == [True, False, False, True, True]
        np.testing.assert_allclose(got[[0, 3, 4]], v[[0, 299, 93]], atol=1e-6)
        assert not got[[1, 2]].any()
    empty, present = VectorIndex(16, model="m").matrix([1, 2])
    assert empty.shape == (2, 16) and not present.any()
