"""Recommender benchmarks, measured side by side in one run (``python -m bench.recsys``).

1. Ingest: messages/s of ``campfire import`` on a real export (parsed, stored, embedded, indexed:
   timed until the facade's queue is flushed) ÷ raw ``SentenceTransformer.encode`` sentences/s on
   the same messages' texts with the same model and batch size (target ≥ 0.9).
2. Daily picks at scale: a guild of ``--members`` members × ``--items`` items with synthetic,
   clustered 384-d vectors (stored with the embedder's name, so nothing is re-embedded) — half of
   the items grouped into conversations (an opener item holding 4 message items, item_members
   written as the importer does, so eligibility and the roll-up run at full size) — and 5
   interactions per member; :func:`recsys.digest.daily_picks` (recorded, not a dry run; one batched
   pass, :func:`recsys.recommend.recommend_many`) is timed for all members subscribed (``--sample N``
   subscribes N and extrapolates) next to the per-member ``recommend`` path on 20 members (target ≤ 15 s).
   While it runs, every event-loop callback is timed (``bench.bot.CallbackClock``): the longest one
   is how long a bot running the digest stops answering (target ≤ 100 ms, as ``bench.bot``).
3. ``/recommend`` latency for one member on that guild: p50 / p99 over ``--repeats`` calls with the
   database unchanged (the guild's snapshot reused, :mod:`recsys.snapshot`), and the p50 of 3 calls
   each right after a write (the snapshot read again).
4. Offline quality: Campfire's NDCG@10 ÷ the best baseline's on se_beer, ``time`` and ``static``
   protocols (:func:`recsys.eval.evaluate`; target ≥ 1 under ``time``).

The CPU is whatever the machine gives (2 shared cores here): read the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def _settings(data_dir: Path):
    from campfire.config import Settings

    return Settings(data_dir=data_dir)


async def bench_ingest(embedder, export: Path) -> dict:
    from recsys.ingest import import_exports
    from recsys.service import Recommender
    from recsys.store import Store

    texts = [(m.get("content") or "").strip() or " " for m in json.loads(export.read_text())["messages"]]
    embedder.encode(texts[:64])  # warm-up

    def raw() -> float:
        t0 = time.perf_counter()
        embedder.model.encode(texts, batch_size=embedder.batch_size, normalize_embeddings=True, show_progress_bar=False)
        return time.perf_counter() - t0

    raw_before = raw()
    with tempfile.TemporaryDirectory() as d:
        settings = _settings(Path(d))
        async with Store.connect(settings.db_path) as store:
            rec = Recommender(store, embedder, settings)
            await rec.start()
            t0 = time.perf_counter()
            report = await import_exports(rec, [export], progress=False)
            await rec.flush()
            ingest_s = time.perf_counter() - t0
            embedded = await store.count("embeddings")
            await rec.aclose()
    raw_s = (raw_before + raw()) / 2  # before and after the ingest: shared-CPU drift cancels out
    ingest_rate = report.messages / ingest_s
    raw_rate = len(texts) / raw_s
    return {"file": export.name, "messages": report.messages, "items": report.items,
            "interactions": report.interactions, "vectors_stored_by_ingest": embedded,
            "ingest_s": round(ingest_s, 2), "raw_encode_s": round(raw_s, 2),
            "ingest_msgs_per_s": round(ingest_rate, 1), "raw_sentences_per_s": round(raw_rate, 1),
            "ratio": round(ingest_rate / raw_rate, 3)}


def _synthetic(n_items: int, n_topics: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.standard_normal((n_topics, dim)).astype(np.float32)
    topics = rng.integers(0, n_topics, n_items)
    vecs = centres[topics] + 0.8 * rng.standard_normal((n_items, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs.astype(np.float32), topics


CONVERSATION_SHARE = 0.5  # of the synthetic items: conversations of CONVERSATION_SIZE messages
CONVERSATION_SIZE = 5  # an opener (the conversation item) and 4 messages inside it


def _conversations(items: int, topics: np.ndarray, vecs: np.ndarray, created: np.ndarray, author: np.ndarray,
                   rng) -> np.ndarray:
    """Group the first ``CONVERSATION_SHARE`` of the items into conversations of ``CONVERSATION_SIZE``
    consecutive items (in place: one topic, vectors near the opener's, a minute apart, 2-3 authors);
    returns each item's conversation index into the items (its opener), -1 for a lone line."""
    conv = np.full(items, -1, np.int64)
    n = int(items * CONVERSATION_SHARE) // CONVERSATION_SIZE * CONVERSATION_SIZE
    for o in range(0, n, CONVERSATION_SIZE):
        block = slice(o, o + CONVERSATION_SIZE)
        conv[block] = o
        topics[block] = topics[o]
        mixed = vecs[o] + 0.5 * vecs[block]
        vecs[block] = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
        created[block] = created[o] + 60.0 * np.arange(CONVERSATION_SIZE)
        author[block] = rng.choice(author[block][:3], CONVERSATION_SIZE)  # 2-3 people talking
    return conv


async def _build_guild(store, embedder, *, members: int, items: int, per_member: int, rng) -> int:
    """A guild of synthetic clustered items — half of them conversations (an opener item holding 4
    message items, with their item_members as the importer writes them) — and ``per_member``
    interactions per member on their two favourite topics (messages inside conversations included)."""
    from recsys.store import Item

    gid, cid = 1, 10
    day = 86400.0
    now = time.time()
    vecs, topics = _synthetic(items, 200, embedder.dim, rng)
    author = rng.integers(0, members, items) + 1000
    async with store.transaction():
        await store.upsert_guild(gid, "bench guild")
        await store.upsert_channel(cid, gid, "general")
        for m in range(members):
            await store.upsert_member(gid, 1000 + m, f"member{m}")
    created = now - rng.uniform(0, 60 * day, items)
    conv = _conversations(items, topics, vecs, created, author, rng)
    by_topic: dict[int, np.ndarray] = {t: np.flatnonzero(topics == t) for t in range(200)}
    ids = np.arange(1, items + 1, dtype=np.int64) + 10_000_000
    batch = 20_000
    for s in range(0, items, batch):
        chunk = [Item(id=int(ids[i]), guild_id=gid, kind="message", text=f"synthetic item {i} on topic {topics[i]}",
                      title=f"synthetic conversation {i}" if conv[i] == i else "", created_at=float(created[i]),
                      channel_id=cid, author_id=int(author[i]),
                      meta={"conversation": True, "participants": len(set(author[i : i + CONVERSATION_SIZE].tolist())),
                            "size": CONVERSATION_SIZE} if conv[i] == i else {})
                 for i in range(s, min(items, s + batch))]
        await store.upsert_items(chunk)
        await store.put_embeddings("item", ids[s : s + batch].tolist(), [gid] * len(chunk), vecs[s : s + batch],
                                   embedder.key)
    inside = np.flatnonzero(conv >= 0)
    openers = np.flatnonzero(conv == np.arange(items))
    await store.write_conversation_links({}, {int(ids[i]): int(ids[conv[i]]) for i in inside}, {
        (gid, int(ids[o])): [(int(a), "participant") for a in sorted(set(author[o : o + CONVERSATION_SIZE].tolist()))]
        for o in openers})
    rows, row_items = [], []
    for m in range(members):
        fav = rng.integers(0, 200, 2)
        for j in range(per_member):
            pool = by_topic[int(fav[j % 2])]
            i = int(pool[rng.integers(0, len(pool))])
            rows.append({"guild_id": gid, "member_id": 1000 + m, "item_id": int(ids[i]),
                         "kind": ("reacted", "replied", "authored")[j % 3], "created_at": float(created[i]) + 3600,
                         "text": f"synthetic item {i}", "source_id": int(ids[i]) * 10 + j})
            row_items.append(i)
    new_ids: list[int] = []
    for s in range(0, len(rows), 20_000):
        new_ids += await store.add_interactions(rows[s : s + 20_000])
    # interaction vectors = their item's vector (as the facade would embed the same text)
    await store.put_embeddings("interaction", new_ids, [gid] * len(new_ids), vecs[np.array(row_items)], embedder.key)
    return gid


from bench.bot import CallbackClock  # noqa: E402


async def bench_scale(embedder, *, members: int, items: int, sample: int, repeats: int, seed: int = 7) -> dict:
    from recsys.digest import daily_picks
    from recsys.service import Recommender
    from recsys.store import Store

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as d:
        settings = _settings(Path(d))
        async with Store.connect(settings.db_path) as store:
            t0 = time.perf_counter()
            gid = await _build_guild(store, embedder, members=members, items=items, per_member=5, rng=rng)
            build_s = time.perf_counter() - t0
            rec = Recommender(store, embedder, settings)
            t0 = time.perf_counter()
            await rec.start()
            await rec.flush()
            index_s = time.perf_counter() - t0
            stats = rec.stats(gid)
            n_sub = members if not sample else min(sample, members)
            subscribed = rng.choice(members, size=n_sub, replace=False) + 1000
            async with store.transaction():
                for m in subscribed:
                    await store.set_subscribed(gid, int(m), True)
            one = int(subscribed[0])
            await rec.recommend(gid, one)  # warm-up (guild stats cache, index pages)
            lat = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                await rec.recommend(gid, one)
                lat.append(time.perf_counter() - t0)
            cold = []  # after a write the guild's snapshot is read again (recsys.snapshot)
            for _ in range(3):
                await store.set_subscribed(gid, one, True)  # one row written: the snapshot is stale
                t0 = time.perf_counter()
                await rec.recommend(gid, one)
                cold.append(time.perf_counter() - t0)
            # the per-member path on a few members, for the side-by-side ratio
            t0 = time.perf_counter()
            for m in subscribed[:20]:
                await rec.recommend(gid, int(m), exclude_sent=True)
            loop_per_member = (time.perf_counter() - t0) / min(20, len(subscribed))
            clock = CallbackClock()  # what the digest costs the event loop (a bot keeps serving meanwhile)
            clock.install()
            clock.exclude = asyncio.current_task()
            clock.on = True
            t0 = time.perf_counter()
            try:
                # its own task: the clock leaves out only this driver task
                result = await asyncio.create_task(daily_picks(rec, gid, time.strftime("%Y-%m-%d"), dry_run=False))
            finally:
                clock.on = False
                clock.uninstall()
            picks_s = time.perf_counter() - t0
            wall, cpu = clock.take()
            sent = await store.count("recommendations_sent")
            await rec.aclose()
    per_member = picks_s / len(subscribed)
    lat_ms = sorted(x * 1000 for x in lat)
    return {
        "members": members, "items": items, "interactions": members * 5, "build_store_s": round(build_s, 1),
        "index_load_s": round(index_s, 1), "item_index": stats.get("item_index"),
        "sampled_members": len(subscribed), "members_with_picks": len(result), "picks_recorded": sent,
        "daily_picks_s": round(picks_s, 2), "ms_per_member": round(per_member * 1000, 2),
        "digest_loop_block_max_ms": round(max(wall, default=0) * 1000, 1),
        "digest_loop_block_max_cpu_ms": round(max(cpu, default=0) * 1000, 1), "digest_worst_callback": clock.worst_cpu,
        "daily_picks_all_members_s": round(per_member * members, 1),
        "extrapolated": len(subscribed) < members,
        "per_member_loop_ms": round(loop_per_member * 1000, 1),
        "batched_speedup": round(loop_per_member / per_member, 1),
        "recommend_p50_ms": round(statistics.median(lat_ms), 1),
        "recommend_p99_ms": round(lat_ms[min(len(lat_ms) - 1, int(0.99 * len(lat_ms)))], 1),
        "recommend_after_write_p50_ms": round(statistics.median(cold) * 1000, 1),
    }


async def bench_digest_mix(embedder, data_dir: Path) -> dict:
    """What a real community's dry-run digest hands out (``campfire digest --dry-run --all-members``
    on an imported data dir): distinct items, the largest share of members one item went to, the
    share of picks from channels the member took part in, the share of catalogue items (e.g. SCP
    tales), and how many reasons quote an interaction of ≥ 20 characters. No picks are recorded
    (``dry_run``); vectors of another model or text preparation are made again first."""
    from recsys.digest import daily_picks
    from recsys.service import Recommender
    from recsys.store import Store

    settings = _settings(data_dir)
    out: dict = {}
    async with Store.connect(settings.db_path) as store:
        rec = Recommender(store, embedder, settings)
        await rec.start()
        await rec.flush()  # vectors of another model or text preparation are made again first
        for g in await store.list_guilds():
            if g["id"] == 0:
                continue
            t0 = time.perf_counter()
            result = await daily_picks(rec, g["id"], time.strftime("%Y-%m-%d"), dry_run=True, all_members=True)
            secs = time.perf_counter() - t0
            picks = [(mp.member_id, p) for mp in result for p in mp.picks]
            if not picks:
                continue
            took_part: dict[int, set] = {}
            for i in await store.interactions(g["id"]):
                if i.item_id is not None:
                    took_part.setdefault(i.member_id, set())
            items = await store.get_items({i.item_id for i in await store.interactions(g["id"]) if i.item_id})
            for i in await store.interactions(g["id"]):
                it = items.get(i.item_id)
                if it is not None and it.channel_id is not None:
                    took_part.setdefault(i.member_id, set()).add(it.channel_id)
            per_item: dict[int, int] = {}
            for _, p in picks:
                per_item[p.item.id] = per_item.get(p.item.id, 0) + 1
            own = sum(p.item.channel_id is not None and p.item.channel_id in took_part.get(m, set()) for m, p in picks)
            quoted = [p.reason.split(": ", 1)[1] for _, p in picks if p.reason.startswith("because") and ": " in p.reason]
            out[str(g["id"])] = {
                "members": len(result), "picks": len(picks), "distinct_items": len(per_item),
                "max_item_share": round(max(per_item.values()) / len(result), 3),
                "own_channel_share": round(own / len(picks), 3),
                "other_channel_share": round(sum(p.item.channel_id is not None for _, p in picks) / len(picks)
                                             - own / len(picks), 3),
                "catalogue_share": round(sum(p.item.kind == "imported" for _, p in picks) / len(picks), 3),
                "reasons_quoting": round(len(quoted) / len(picks), 3),
                "reasons_quote_ge_20_chars": round(sum(len(q) >= 20 for q in quoted) / max(len(quoted), 1), 3),
                "digest_s": round(secs, 2),
            }
        await rec.aclose()
    return out


def bench_quality(embedder) -> dict:
    from recsys.eval import evaluate

    beer = SHARED / "recsys" / "se_beer"
    out = {}
    for protocol in ("time", "static"):
        t0 = time.perf_counter()
        r = evaluate(beer / "interactions.csv", beer / "items.jsonl", k=10, protocol=protocol, embedder=embedder)
        ndcg = {name: v["ndcg"] for name, v in r["systems"].items()}
        best_name = max((n for n in ndcg if n != "campfire"), key=ndcg.get)
        out[protocol] = {"campfire_ndcg10": round(ndcg["campfire"], 4), "best_baseline": best_name,
                         "best_baseline_ndcg10": round(ndcg[best_name], 4),
                         "ratio": round(ndcg["campfire"] / ndcg[best_name], 3) if ndcg[best_name] else None,
                         "seconds": round(time.perf_counter() - t0, 1)}
    return out


async def amain(a: argparse.Namespace) -> dict:
    from recsys.embed import Embedder

    embedder = Embedder()
    out: dict = {"cpu_count": os.cpu_count(), "torch_threads": __import__("torch").get_num_threads()}
    if not a.skip_ingest:
        out["ingest"] = await bench_ingest(embedder, Path(a.export))
        print(json.dumps({"ingest": out["ingest"]}), flush=True)
    if not a.skip_scale:
        out["scale"] = await bench_scale(embedder, members=a.members, items=a.items, sample=a.sample, repeats=a.repeats)
        print(json.dumps({"scale": out["scale"]}), flush=True)
    if a.digest_data:
        out["digest_mix"] = await bench_digest_mix(embedder, Path(a.digest_data))
        print(json.dumps({"digest_mix": out["digest_mix"]}), flush=True)
    if not a.skip_eval:
        out["quality"] = await asyncio.to_thread(bench_quality, embedder)
        print(json.dumps({"quality": out["quality"]}), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.recsys", description=__doc__.splitlines()[0])
    ap.add_argument("--export", default=str(SHARED / "chat" / "ubuntu_irc" / "2016-12-19_20.json"))
    ap.add_argument("--members", type=int, default=10_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--sample", type=int, default=0,
                    help="subscribe only this many members and extrapolate (default 0: all members, measured)")
    ap.add_argument("--repeats", type=int, default=50, help="/recommend calls timed for p50/p99")
    ap.add_argument("--digest-data", help="a data dir with imported exports (e.g. the ubuntu_irc files and "
                    "scp_tales): report what a dry-run digest for every member hands out")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-eval", action="store_true")
    a = ap.parse_args()
    out = asyncio.run(amain(a))
    print("\n== summary (targets: ingest ratio ≥ 0.9; daily picks ≤ 15 s; NDCG@10 ratio ≥ 1 under time)")
    if "ingest" in out:
        i = out["ingest"]
        print(f"ingest  {i['ingest_msgs_per_s']} msg/s ÷ raw encode {i['raw_sentences_per_s']} sent/s = {i['ratio']}"
              f"  ({i['vectors_stored_by_ingest']} vectors stored for {i['messages']} messages)")
    if "scale" in out:
        s = out["scale"]
        print(f"digest  {s['members']} members × {s['items']} items: {s['ms_per_member']} ms/member → "
              f"{s['daily_picks_all_members_s']} s for all ({'extrapolated from' if s['extrapolated'] else 'measured on'} "
              f"{s['sampled_members']}); per-member loop {s['per_member_loop_ms']} ms/member = "
              f"{s['batched_speedup']}× slower than the batched digest")
        print(f"/recommend p50 {s['recommend_p50_ms']} ms, p99 {s['recommend_p99_ms']} ms; right after a write "
              f"p50 {s['recommend_after_write_p50_ms']} ms")
        print(f"digest  longest event-loop block {s['digest_loop_block_max_ms']} ms "
              f"({s['digest_loop_block_max_cpu_ms']} ms CPU): {s['digest_worst_callback']}")
    for proto, q in out.get("quality", {}).items():
        print(f"quality [{proto}] campfire NDCG@10 {q['campfire_ndcg10']} ÷ {q['best_baseline']} "
              f"{q['best_baseline_ndcg10']} = {q['ratio']}")


if __name__ == "__main__":
    main()
