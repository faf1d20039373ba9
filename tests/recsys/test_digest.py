"""Daily picks (the ranking, ``recsys.digest.daily_picks``) on a real imported export (real SQLite,
FAISS, embedder). Which guilds are due, marking posted and the typed results are
``campfire.features.digest``'s (tests/features/test_digest.py).

Data: ../shared/data/chat/dce_example_guild (GPL-3.0, slatinsky/DiscordChatExporter-frontend) and
../shared/data/stories/scp_tales.jsonl (CC BY-SA 3.0, SCP Wiki; creator and url kept per item).
"""

from __future__ import annotations

import pytest
import pytest_asyncio

from recsys.digest import daily_picks
from recsys.ingest import import_exports, import_items
from recsys.service import Recommender
from recsys.store import Store
from tests.conftest import shared_data

GUILD = 748545324524575035
ADAM, THOMAS, PATRICK = 521486476985155645, 896568767994532880, 627848643557663699


@pytest_asyncio.fixture(loop_scope="function")  # the facade's embedding task runs on the test's loop
async def community(store: Store, settings, embedder, tmp_path):
    """The example guild's export plus 20 SCP tales as a catalogue, imported and embedded."""
    rec = Recommender(store, embedder, settings)
    await rec.start()
    await import_exports(rec, [shared_data("chat", "dce_example_guild")], progress=False)
    tales = shared_data("stories", "scp_tales.jsonl").read_text().splitlines()[:20]
    cat = tmp_path / "tales.jsonl"
    cat.write_text("\n".join(tales) + "\n")
    await import_items(rec, cat, GUILD, progress=False)
    await rec.flush()
    try:
        yield rec
    finally:
        await rec.aclose()


async def test_digest_never_repeats_an_item_across_days(community: Recommender, store: Store):
    for m in (ADAM, THOMAS, PATRICK):
        await store.set_subscribed(GUILD, m, True)
    days = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]
    seen: dict[int, list[int]] = {}
    for day in days:
        result = await daily_picks(community, GUILD, day, dry_run=False)
        assert {mp.member_id for mp in result} == {ADAM, THOMAS, PATRICK}
        for mp in result:
            assert len(mp.picks) == 3 and all(p.reason for p in mp.picks)
            assert mp.member == {ADAM: "Adam", THOMAS: "Thomas", PATRICK: "Patrick"}[mp.member_id]
            assert all(p.item.author_id != mp.member_id for p in mp.picks)
            seen.setdefault(mp.member_id, []).extend(p.item.id for p in mp.picks)
    for member, ids in seen.items():
        assert len(ids) == len(set(ids)) == 3 * len(days), member
    assert await store.count("recommendations_sent") == 3 * 3 * len(days)
    # the same date again: the same picks come back, nothing new is recorded
    again = await daily_picks(community, GUILD, days[1], dry_run=False)
    sent = await store.recommendations_on(GUILD, days[1])
    assert {mp.member_id: [p.item.id for p in mp.picks] for mp in again} == {
        m: [i for i, _, _ in rows] for m, rows in sent.items()
    }
    assert await store.count("recommendations_sent") == 3 * 3 * len(days)


async def test_dry_run_records_nothing(community: Recommender, store: Store):
    await store.set_subscribed(GUILD, THOMAS, True)
    only_subscribed = await daily_picks(community, GUILD, "2026-03-01", dry_run=True)
    assert [mp.member_id for mp in only_subscribed] == [THOMAS]
    everyone = await daily_picks(community, GUILD, "2026-03-01", dry_run=True, all_members=True, k=2)
    active = {m["user_id"] for m in await store.members_with_interactions(GUILD, 3)}
    assert {mp.member_id for mp in everyone} == active | {THOMAS} and len(active) >= 2
    assert all(len(mp.picks) == 2 for mp in everyone)
    assert await store.count("recommendations_sent") == 0
    # a dry run twice gives the same picks: nothing was recorded to exclude them
    twice = await daily_picks(community, GUILD, "2026-03-01", dry_run=True, all_members=True, k=2)
    assert [[p.item.id for p in mp.picks] for mp in twice] == [[p.item.id for p in mp.picks] for mp in everyone]


async def test_bad_arguments(community: Recommender):
    with pytest.raises(ValueError, match="only allowed with --dry-run"):
        await daily_picks(community, GUILD, "2026-03-01", dry_run=False, all_members=True)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        await daily_picks(community, GUILD, "1/3/2026", dry_run=True)
