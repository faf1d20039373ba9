"""Daily picks on a real imported export (real SQLite, FAISS, embedder) and the daily-post clock.

Data: ../shared/data/chat/dce_example_guild (GPL-3.0, slatinsky/DiscordChatExporter-frontend) and
../shared/data/stories/scp_tales.jsonl (CC BY-SA 3.0, SCP Wiki; creator and url kept per item).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import pytest_asyncio

from campfire.config import DigestSettings
from recsys.digest import daily_picks, due_guilds, mark_posted
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
    # JSON shape of the CLI
    doc = json.loads(json.dumps([mp.to_json() for mp in again]))
    assert set(doc[0]) == {"guild_id", "member_id", "member", "picks"}
    assert set(doc[0]["picks"][0]) == {"item_id", "title", "reason", "score"}


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
    with pytest.raises(ValueError, match="unknown guild"):
        await daily_picks(community, 42, "2026-03-01", dry_run=True)


async def test_due_guilds_follow_local_time_across_midnight(store: Store):
    defaults = DigestSettings(default_time="18:00", default_timezone="UTC")
    await store.upsert_guild(1, "shanghai")
    await store.update_guild(1, timezone="Asia/Shanghai", digest_time="09:00")  # UTC+8
    await store.upsert_guild(2, "los angeles")
    await store.update_guild(2, timezone="America/Los_Angeles", digest_time="18:00")  # UTC-8 in winter
    await store.upsert_guild(3, "defaults")  # 18:00 UTC
    await store.set_opted_out(77)  # creates the opt-out placeholder guild 0, never due

    def at(h: int, m: int = 0, day: int = 15) -> datetime:
        return datetime(2026, 1, day, h, m, tzinfo=timezone.utc)

    assert await due_guilds(store, at(0, 59), defaults) == []  # 08:59 in Shanghai
    assert await due_guilds(store, at(1, 0), defaults) == [(1, "2026-01-15")]
    await mark_posted(store, 1, "2026-01-15")
    assert await due_guilds(store, at(1, 1), defaults) == []  # never twice a day
    assert await due_guilds(store, at(18, 0), defaults) == [(3, "2026-01-15")]
    # 02:00 UTC on the 16th is 18:00 on the 15th in Los Angeles; a restart later catches up once
    # (guild 3 has posted nothing yet on the 16th, but its 18:00 UTC has not come)
    assert await due_guilds(store, at(2, 0, day=16), defaults) == [(1, "2026-01-16"), (2, "2026-01-15")]
    await mark_posted(store, 2, "2026-01-15")
    assert await due_guilds(store, at(2, 30, day=16), defaults) == [(1, "2026-01-16")]
    assert await due_guilds(store, at(18, 0, day=16), defaults) == [(3, "2026-01-16")]  # 02:00 on the 17th in Shanghai
    with pytest.raises(ValueError):
        await mark_posted(store, 1, "tomorrow")
