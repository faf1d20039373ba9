"""Recommendations on real SQLite, real FAISS and the real all-MiniLM-L6-v2.

Item texts are real Beer Stack Exchange questions (../shared/data/recsys/se_beer, CC BY-SA 3.0,
beer.stackexchange.com); each test builds a small guild from them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys.service import Recommender
from recsys.store import Item
from tests.conftest import shared_data

DAY = 86400.0
NOW = 1_700_000_000.0
GUILD, OTHER_GUILD = 1000, 2000
PUBLIC, PRIVATE, NSFW_CH = 11, 12, 13
MOD_ROLE = 777


def se_beer(tag: str, n: int, *, exclude: tuple[str, ...] = ()) -> list[dict]:
    rows = []
    with (shared_data("recsys", "se_beer") / "items.jsonl").open() as f:
        for line in f:
            d = json.loads(line)
            if tag in d["tags"] and not set(exclude) & set(d["tags"]):
                rows.append(d)
    return rows[:n]


def make_items(rows: list[dict], *, start_id: int, guild: int = GUILD, channel: int = PUBLIC, author: int = 500,
               age_days: float = 3.0, **extra) -> list[Item]:
    return [
        Item(id=start_id + i, guild_id=guild, kind="message", title=r["title"], text=r["body_text"][:600],
             created_at=NOW - age_days * DAY + i * 60, channel_id=channel, author_id=author + i, tags=r["tags"], **extra)
        for i, r in enumerate(rows)
    ]


@pytest.fixture
async def rec(store, settings, embedder):
    r = Recommender(store, embedder, settings)
    await r.start()
    await store.upsert_guild(GUILD, "beer")
    await store.upsert_channel(PUBLIC, GUILD, "general")
    await store.upsert_channel(PRIVATE, GUILD, "mods", visibility={"public": False, "roles": [MOD_ROLE]})
    await store.upsert_channel(NSFW_CH, GUILD, "after-dark", nsfw=True)
    await store.upsert_channel(21, OTHER_GUILD, "general")
    for m in (1, 2, 3):
        await store.upsert_member(GUILD, m, f"member{m}")
    await store.upsert_member(GUILD, 4, "moderator", role_ids=[MOD_ROLE])
    try:
        yield r
    finally:
        await r.aclose()


async def engage(rec: Recommender, member: int, items: list[Item], kind: str = "reacted", days_ago: float = 1.0):
    await rec.record([
        {"guild_id": items[0].guild_id, "member_id": member, "kind": kind, "item_id": it.id,
         "created_at": NOW - days_ago * DAY + j} for j, it in enumerate(items)
    ])


async def test_recommendations_reflect_interests(rec: Recommender):
    hops = make_items(se_beer("hops", 12), start_id=10_000)
    other = make_items(se_beer("history", 12, exclude=("hops",)) + se_beer("glassware", 12, exclude=("hops",)),
                       start_id=20_000)
    # same creation time: freshness cannot separate the topics, only the member's interests can
    for it in hops + other:
        it.created_at = NOW - 3 * DAY
    await rec.add_items(hops + other)
    await engage(rec, 1, hops[:4])
    await rec.flush()
    picks = await rec.recommend(GUILD, 1, k=5, now=NOW)
    assert len(picks) == 5
    hop_ids = {it.id for it in hops[4:]}
    assert sum(p.item.id in hop_ids for p in picks) >= 3, [p.item.title for p in picks]
    assert picks[0].item.id in hop_ids
    # nothing the member already engaged with comes back
    assert not {p.item.id for p in picks} & {it.id for it in hops[:4]}
    for p in picks:
        assert 0.0 <= p.score <= 1.0
        assert p.reason.startswith("because you reacted to: ") or p.reason in (
            "popular in this server lately", "new in this server")
    assert picks[0].reason.startswith("because you reacted to: ")
    # the reason names one of the member's own interactions
    assert any(h.title[:40] in picks[0].reason for h in hops[:4])


async def test_hidden_channels_and_other_guilds_never_leak(rec: Recommender, store):
    rows = se_beer("hops", 16)
    public = make_items(rows[:4], start_id=30_000)
    seed = make_items(rows[4:8], start_id=30_100)
    private = make_items(rows[8:12], start_id=31_000, channel=PRIVATE)
    foreign = make_items(rows[12:16], start_id=32_000, guild=OTHER_GUILD, channel=21)
    await rec.add_items(public + seed + private + foreign)
    for member in (1, 4):
        await engage(rec, member, seed)
    await rec.flush()
    plain = await rec.recommend(GUILD, 1, k=20, now=NOW)
    ids = {p.item.id for p in plain}
    assert ids, "the member should get something"
    assert not ids & {it.id for it in private}, "an item from a channel the member cannot view leaked"
    assert not ids & {it.id for it in foreign}, "an item from another guild leaked"
    assert all(p.item.guild_id == GUILD for p in plain)
    # the moderator, who can view the private channel, does get those items
    mod = {p.item.id for p in await rec.recommend(GUILD, 4, k=20, now=NOW)}
    assert mod & {it.id for it in private}
    # a channel denied to one member by name is hidden from them alone
    await store.upsert_channel(PRIVATE, GUILD, "mods", visibility={"public": False, "roles": [MOD_ROLE],
                                                                    "denied_members": [4]})
    assert not {p.item.id for p in await rec.recommend(GUILD, 4, k=20, now=NOW)} & {it.id for it in private}
    # a thread whose parent is hidden is hidden too, even with a public snapshot of its own
    await store.upsert_channel(40, GUILD, "hops-thread", kind="thread", parent_id=PRIVATE)
    thread_items = make_items(se_beer("hops", 20)[16:20], start_id=33_000, channel=40)
    await rec.add_items(thread_items)
    await rec.flush()
    assert not {p.item.id for p in await rec.recommend(GUILD, 1, k=30, now=NOW)} & {it.id for it in thread_items}


async def test_filters_own_opted_out_nsfw_and_sent(rec: Recommender, store):
    rows = se_beer("taste", 20)
    seed = make_items(rows[:4], start_id=40_000)
    own = make_items(rows[4:8], start_id=40_100)
    by_opted = make_items(rows[8:11], start_id=40_200)
    for it in own:
        it.author_id = 1  # written by member 1
    for it in by_opted:
        it.author_id = 900
    nsfw = make_items(rows[11:14], start_id=40_300, channel=NSFW_CH)
    rest = make_items(rows[14:20], start_id=40_400)
    await rec.add_items(seed + own + by_opted + nsfw + rest)
    await engage(rec, 1, seed)
    await rec.flush()
    await store.upsert_member(GUILD, 900, "leaver")
    await store.set_opted_out(900)
    ids = {p.item.id for p in await rec.recommend(GUILD, 1, k=30, now=NOW)}
    assert ids
    assert not ids & {it.id for it in own}
    assert not ids & {it.id for it in by_opted}
    assert not ids & {it.id for it in nsfw}
    await store.update_guild(GUILD, nsfw_allowed=True)
    ids = {p.item.id for p in await rec.recommend(GUILD, 1, k=30, now=NOW)}
    assert ids & {it.id for it in nsfw}
    # items sent in a digest do not come back with exclude_sent
    first = await rec.recommend(GUILD, 1, k=3, now=NOW, exclude_sent=True)
    await store.record_recommendations(GUILD, 1, [(p.item.id, p.score, p.reason) for p in first], "2023-11-14")
    second = await rec.recommend(GUILD, 1, k=3, now=NOW, exclude_sent=True)
    assert not {p.item.id for p in first} & {p.item.id for p in second}


async def test_cold_start_gets_well_received_recent_items(rec: Recommender):
    rows = se_beer("brewing", 10)
    old = make_items(rows[:5], start_id=50_000, age_days=200)
    recent = make_items(rows[5:], start_id=50_100, age_days=1)
    await rec.add_items(old + recent)
    await engage(rec, 2, recent[:2], days_ago=0.5)
    await engage(rec, 3, recent[:2], days_ago=0.5)
    await rec.flush()
    picks = await rec.recommend(GUILD, 1, k=3, now=NOW)  # member 1 has no history
    assert len(picks) == 3
    assert all(p.item.id in {it.id for it in recent} for p in picks)
    assert {p.item.id for p in picks} & {recent[0].id, recent[1].id}
    assert any(p.reason == "popular in this server lately" for p in picks)


async def test_edit_and_remove_item_update_the_index(rec: Recommender, store):
    items = make_items(se_beer("storage", 3), start_id=60_000)
    await rec.add_items(items)
    await engage(rec, 2, items[:1])
    await rec.flush()
    assert rec.stats(GUILD)["item_vectors"] == 3
    before = rec.indexes.get(GUILD, "item").vectors([items[1].id])[items[1].id]
    assert await rec.update_item_text(items[1].id, "Which hops give the most citrus aroma in an IPA?")
    await rec.flush()
    after = rec.indexes.get(GUILD, "item").vectors([items[1].id])[items[1].id]
    assert float(before @ after) < 0.95
    assert await store.embedding_count("item", GUILD, rec.embedder.key) == 3
    assert await rec.remove_item(items[0].id)
    assert rec.stats(GUILD)["item_vectors"] == 2
    assert rec.stats(GUILD)["interaction_vectors"] == 0  # member 2's reaction went with the item
    assert await store.get_item(items[0].id) is None
    assert not await rec.remove_item(items[0].id)


async def test_bad_k_is_refused(rec: Recommender):
    with pytest.raises(ValueError, match="positive"):
        await rec.recommend(GUILD, 1, k=0)


async def test_member_inactive_for_years_still_gets_personal_picks(rec: Recommender):
    hops = make_items(se_beer("hops", 12), start_id=70_000, age_days=6 * 365 + 10)
    other = make_items(se_beer("history", 12, exclude=("hops",)) + se_beer("glassware", 12, exclude=("hops",)),
                       start_id=71_000, age_days=6 * 365 + 10)
    await rec.add_items(hops + other)
    await engage(rec, 1, hops[:4], days_ago=6 * 365)  # last active six years ago: decays to 0 from now
    await rec.flush()
    picks = await rec.recommend(GUILD, 1, k=5, now=NOW)
    hop_ids = {it.id for it in hops[4:]}
    assert sum(p.item.id in hop_ids for p in picks) >= 3, [p.item.title for p in picks]
    assert picks[0].reason.startswith("because you reacted to: ")


async def test_batched_picks_match_recommend_and_respect_visibility(rec: Recommender, store):
    rows = se_beer("brewing", 24)
    seed = make_items(rows[:4], start_id=80_000)
    public = make_items(rows[4:16], start_id=80_100)
    private = make_items(rows[16:24], start_id=81_000, channel=PRIVATE)
    await rec.add_items(seed + public + private)
    for member in (1, 2, 4):
        await engage(rec, member, seed[: 2 + member % 3])
    await rec.flush()
    members = [1, 2, 3, 4]  # 3 has no history (cold start)
    many = await rec.recommend_many(GUILD, members, k=4, now=NOW)
    assert set(many) == set(members)
    for m in members:
        one = await rec.recommend(GUILD, m, k=4, now=NOW)
        assert [p.item.id for p in many[m]] == [p.item.id for p in one], m
        assert [p.reason for p in many[m]] == [p.reason for p in one], m
        np.testing.assert_allclose([p.score for p in many[m]], [p.score for p in one], rtol=1e-6)  # float32 rounding
    private_ids = {it.id for it in private}
    assert len(private_ids) == 8
    for m in (1, 2, 3):
        assert not {p.item.id for p in many[m]} & private_ids
    mod = await rec.recommend_many(GUILD, [4], k=20, now=NOW)
    assert {p.item.id for p in mod[4]} & private_ids


async def test_batched_cap_limits_how_many_members_share_an_item(rec: Recommender, store):
    rows = se_beer("brewing", 20)
    seed = make_items(rows[:3], start_id=90_000)
    rest = make_items(rows[3:20], start_id=90_100)
    await rec.add_items(seed + rest)
    members = list(range(100, 130))  # 30 members with the same taste
    for m in members:
        await store.upsert_member(GUILD, m, f"m{m}")
        await engage(rec, m, seed)
    await rec.flush()
    free = await rec.recommend_many(GUILD, members, k=3, now=NOW)
    top = max(sum(p.item.id == i for ps in free.values() for p in ps) for i in {it.id for it in rest})
    assert top == len(members)  # without a cap everyone gets the same best item
    capped = await rec.recommend_many(GUILD, members, k=3, now=NOW, max_item_share=0.1)  # cap: max(10, 3)
    counts: dict[int, int] = {}
    for ps in capped.values():
        assert len(ps) == 3
        for p in ps:
            counts[p.item.id] = counts.get(p.item.id, 0) + 1
    assert max(counts.values()) <= 10
    assert len(counts) >= 9


async def test_reason_quotes_a_substantive_interaction(rec: Recommender, store):
    items = make_items(se_beer("hops", 10), start_id=95_000)
    await rec.add_items(items)
    # member 1 wrote a one-word message and a real question about hops
    short = Item(id=95_100, guild_id=GUILD, kind="message", text="hops!!", created_at=NOW - DAY, channel_id=PUBLIC,
                 author_id=1)
    long_ = Item(id=95_101, guild_id=GUILD, kind="message",
                 text="Which hop varieties give an IPA\nthat strong citrus and pine aroma?", created_at=NOW - 2 * DAY,
                 channel_id=PUBLIC, author_id=1)
    await rec.add_items([short, long_])
    await rec.record([{"guild_id": GUILD, "member_id": 1, "kind": "authored", "item_id": it.id, "text": it.text,
                       "created_at": it.created_at} for it in (short, long_)])
    await rec.flush()
    picks = await rec.recommend(GUILD, 1, k=3, now=NOW)
    assert picks
    for p in picks:
        assert "hops!!" not in p.reason
        assert "\n" not in p.reason and len(p.reason) <= len("because you wrote about: ") + 80
    assert any("Which hop varieties give an IPA that strong citrus" in p.reason for p in picks)


async def test_a_reason_quotes_only_a_related_interaction(embedder):
    """The reason quotes the member's nearest interaction only when it is related to the pick
    (cosine ≥ MIN_REASON_SIMILARITY on the real embedder); an unrelated one would mislead."""
    from recsys.recommend import MIN_REASON_SIMILARITY, pick_reason
    from recsys.store import Interaction

    wrote = "How do I mount an NTFS partition on Ubuntu so that I can write to it?"
    used = [Interaction(id=1, guild_id=1, member_id=2, item_id=None, kind="authored", weight=1.0,
                        created_at=0.0, text=wrote)]
    hv, related, unrelated = embedder.encode([
        wrote,
        "Mounting a Windows NTFS drive read-write in Ubuntu needs ntfs-3g.",
        "A chance meeting on a rainy day: two strangers share an umbrella at the bus stop.",
    ])
    assert float(hv @ related) >= MIN_REASON_SIMILARITY > float(hv @ unrelated)
    assert pick_reason(used, hv[None, :], related, {}, popular=False) == f"because you wrote about: {wrote}"
    assert pick_reason(used, hv[None, :], unrelated, {}, popular=False) == "new in this server"
    assert pick_reason(used, hv[None, :], unrelated, {}, popular=True) == "popular in this server lately"


async def test_reasons_for_many_members_equal_each_member_alone(embedder):
    """The digest's reasons (all members at once) and /recommend's (one member) are the same function."""
    from recsys.recommend import pick_reasons, reasons_many
    from recsys.store import Interaction

    texts = ["How long should an IPA dry hop before bottling?", "ok", "Best glass for a Belgian tripel?",
             "Mounting an NTFS drive read-write in Ubuntu", "Dry hopping with Citra for five days",
             "Which glassware suits Belgian ales?", "A chance meeting on a rainy day"]
    v = embedder.encode(texts)

    def inter(i: int, member: int, kind: str = "authored", weight: float = 1.0) -> Interaction:
        return Interaction(id=i, guild_id=1, member_id=member, item_id=None, kind=kind, weight=weight,
                           created_at=0.0, text=texts[i])

    members = [
        ([inter(0, 1), inter(1, 1), inter(2, 1)], v[[0, 1, 2]], v[[4, 5, 6]], [False, False, True]),
        ([inter(1, 2)], v[[1]], v[[4]], [False]),  # only a one-word message: quoted when related enough
        ([], np.zeros((0, v.shape[1]), np.float32), v[[6, 3]], [True, False]),  # cold start
        ([inter(3, 4, "rated_down", -1.0), inter(2, 4)], v[[3, 2]], v[[3, 5]], [False, False]),
    ]
    together = reasons_many(members, {})
    alone = [pick_reasons(*m[:3], {}, m[3]) for m in members]
    assert together == alone
    assert all(src is None for reasons in together for _, src in reasons)  # own words, or no quote
    together = [[text for text, _ in reasons] for reasons in together]
    assert together[0][:2] == [f"because you wrote about: {texts[0]}", f"because you wrote about: {texts[2]}"]
    assert together[0][2] == "popular in this server lately"
    assert together[2] == ["popular in this server lately", "new in this server"]
    assert together[3][0] != f"because you wrote about: {texts[3]}"  # a down-rating is never the reason


async def test_batched_picks_do_not_depend_on_the_chunk_size(rec: Recommender, store, monkeypatch):
    import recsys.batch

    rows = se_beer("brewing", 30)
    await rec.add_items(make_items(rows[:4], start_id=70_000) + make_items(rows[4:30], start_id=70_100))
    members = list(range(300, 323))
    for j, m in enumerate(members):
        await store.upsert_member(GUILD, m, f"m{m}")
        await engage(rec, m, make_items(rows[:4], start_id=70_000)[: 1 + j % 4])
    await rec.flush()
    whole = await rec.recommend_many(GUILD, members, k=3, now=NOW, max_item_share=0.1)
    monkeypatch.setattr(recsys.batch, "CHUNK", 4)
    chunked = await rec.recommend_many(GUILD, members, k=3, now=NOW, max_item_share=0.1)
    assert {m: [p.item.id for p in ps] for m, ps in chunked.items()} == {
        m: [p.item.id for p in ps] for m, ps in whole.items()}
    counts: dict[int, int] = {}
    for ps in chunked.values():
        for p in ps:
            counts[p.item.id] = counts.get(p.item.id, 0) + 1
    assert max(counts.values()) <= 10 and len(chunked) == len(members)
