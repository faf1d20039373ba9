"""Privacy (campfire.features.privacy) without a bot: opt-out / opt-in, export, forget and the
confirmation's rules, on the real store, embedder and FAISS indexes."""

from __future__ import annotations

import gzip
import json
import time

import pytest

from campfire.features import privacy
from recsys.store import Item

GUILD, CHANNEL = 1001, 2001
A, B = 31, 32


@pytest.fixture
def app(offline_app):
    return offline_app


async def seed(app) -> dict[int, list[int]]:
    """A and B each wrote two messages and reacted to one of the other's; A got a digest pick.
    Returns member id -> their item ids."""
    store, rec = app.store, app.recommender
    await store.upsert_channel(CHANNEL, GUILD, "general")
    now, mine, items = time.time(), {}, []
    for m, topic in ((A, "sailing boats on the lake"), (B, "baking bread at home")):
        await store.upsert_member(GUILD, m, f"member {m}")
        for k in range(2):
            iid = 700_000 + m * 10 + k
            mine.setdefault(m, []).append(iid)
            items.append(Item(id=iid, guild_id=GUILD, kind="message", channel_id=CHANNEL, author_id=m,
                              created_at=now - 100 * (k + 1), text=f"Message {k} about {topic}, with enough words."))
    await rec.add_items(items)
    rows = [{"guild_id": GUILD, "member_id": it.author_id, "kind": "authored", "item_id": it.id} for it in items]
    rows += [{"guild_id": GUILD, "member_id": A, "kind": "reacted", "item_id": mine[B][0], "source_id": 1},
             {"guild_id": GUILD, "member_id": B, "kind": "reacted", "item_id": mine[A][0], "source_id": 2}]
    await rec.record(rows)
    await store.record_recommendations(GUILD, A, [(mine[B][1], 0.9, "because")], "2026-01-01")
    await rec.flush()
    return mine


async def rows_about(app, user_id: int) -> int:
    data = await app.store.export_user(user_id)
    return sum(len(v) for k, v in data.items() if k != "user_id")


async def test_forget_leaves_no_rows_or_vectors_and_keeps_others_data(app):
    mine = await seed(app)
    before = app.recommender.stats(GUILD)
    result = await privacy.forget(app, A)
    # recording stays off until /privacy optin (tests/features/test_forget.py)
    assert result.opted_out and result.counts["item_vectors"] == 2
    assert await rows_about(app, A) == 0
    assert await app.store.get_items(mine[A]) == {}
    assert all(i.member_id != A and i.item_id not in mine[A] for i in await app.store.interactions(GUILD))
    ids, _ = await app.store.get_embeddings("item", GUILD, app.recommender.embedder.key)
    assert not set(ids.tolist()) & set(mine[A])
    after = app.recommender.stats(GUILD)
    assert after["item_vectors"] == before["item_vectors"] - 2
    assert after["interaction_vectors"] < before["interaction_vectors"]
    model = app.recommender.embedder.key
    for owner in ("item", "interaction"):  # FAISS = SQL after the forget
        assert after[f"{owner}_vectors"] == await app.store.embedding_count(owner, GUILD, model)
    assert set(await app.store.get_items(mine[B])) == set(mine[B])
    assert any(i.member_id == B for i in await app.store.interactions(GUILD))


async def test_forget_keeps_an_opt_out(app):
    await seed(app)
    await privacy.opt_out(app, A)
    result = await privacy.forget(app, A)
    assert result.opted_out and await privacy.is_opted_out(app, A)
    assert await app.recommender.record([{"guild_id": GUILD, "member_id": A, "kind": "reacted", "text": "x"}]) == []


async def test_optout_stops_recording_and_optin_restarts_it(app):
    await app.store.upsert_member(GUILD, A, "member A")
    await privacy.opt_out(app, A)
    row = {"guild_id": GUILD, "member_id": A, "kind": "reacted", "text": "a reaction", "source_id": 7}
    assert await app.recommender.record([row]) == []
    await privacy.opt_in(app, A)
    assert not await privacy.is_opted_out(app, A)
    assert len(await app.recommender.record([row])) == 1


async def test_optout_of_a_member_never_seen_is_remembered(app):
    await privacy.opt_out(app, 999)
    assert await privacy.is_opted_out(app, 999)


async def test_export_is_json_then_gzip_then_too_large(app):
    mine = await seed(app)
    export = await privacy.export(app, A)
    assert export.name == f"campfire-export-{A}.json" and not export.gzipped and not export.too_large
    data = json.loads(export.data)
    assert data["user_id"] == A
    assert sorted(i["id"] for i in data["items"]) == sorted(mine[A])
    assert {i["kind"] for i in data["interactions"]} == {"authored", "reacted"}
    assert [r["item_id"] for r in data["recommendations_sent"]] == [mine[B][1]]

    small = await privacy.export(app, A, limit=len(export.data) - 1)  # over the limit: compressed
    assert small.gzipped and small.name.endswith(".json.gz") and not small.too_large
    assert json.loads(gzip.decompress(small.data)) == data
    tiny = await privacy.export(app, A, limit=10)  # even compressed too large
    assert tiny.too_large


def test_confirmation_rules():
    now = time.time()
    assert privacy.may_confirm(A, A) and not privacy.may_confirm(B, A)
    assert not privacy.confirmation_expired(now - privacy.CONFIRM_WINDOW_S + 5, now)
    assert privacy.confirmation_expired(now - privacy.CONFIRM_WINDOW_S - 1, now)
    assert privacy.confirmation_expired(now - 3600)
