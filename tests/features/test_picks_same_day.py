"""``/recommend`` (``features.picks.now``) and the daily post (``features.digest.run``) give a member the
same picks on the same day, best score first, each with its kind and the messages it covers — on a
real imported export (real SQLite, FAISS, all-MiniLM-L6-v2; conversations built by the importer).

Data: ../shared/data/chat/dce_example_guild (GPL-3.0, slatinsky/DiscordChatExporter-frontend).
"""

from __future__ import annotations

from campfire.app import App
from campfire.features import digest, picks
from campfire.features.types import Member
from recsys.ingest import import_exports
from tests.conftest import shared_data

GUILD = 748545324524575035
KINDS = {"conversation", "thread", "story", "catalogue", "message"}


async def imported(app: App) -> list[int]:
    """The example guild imported; returns the members with interactions."""
    await import_exports(app.recommender, [shared_data("chat", "dce_example_guild")], progress=False)
    await app.recommender.flush()
    return [m["user_id"] for m in await app.store.members_with_interactions(GUILD, 1)]


async def test_recommend_and_the_digest_agree_all_day(app: App):
    members = await imported(app)
    assert len(members) >= 3
    store = app.store
    dry = await digest.run(app, GUILD, dry_run=True, all_members=True, k=3)
    by_member = {mp.member_id: mp.picks for mp in dry.picks}
    assert by_member
    authors = {}
    for channel in await store.chat_channels(GUILD):
        authors.update({line["message_id"]: line["author_id"] for line in await store.chat_lines(GUILD, channel)})
    for member, shown in by_member.items():
        now = await picks.now(app, Member(GUILD, member), k=3)
        assert [p.item_id for p in now] == [p.item_id for p in shown], member  # the same list
        assert [p.score for p in now] == sorted((p.score for p in now), reverse=True)
        for p in shown:
            doc = p.to_json()
            assert doc["kind"] in KINDS and doc["kind"] == p.kind
            covered = (await store.conversation_message_ids([p.item_id])).get(p.item_id, [])
            assert doc["message_ids"] == covered
            if p.kind == "message":  # one message, or one member's several lines (a monologue)
                assert p.item_id in covered and len({authors.get(mid) for mid in covered}) == 1
            if p.kind in ("conversation", "thread"):
                assert doc["participants"] >= 2 or p.kind == "thread"
            # never a pick that covers a message of the member's own
            assert all(authors.get(mid) != member for mid in covered), (member, p)
    # subscribed and posted: /recommend gives back what the post gave, until feedback changes it
    member = next(iter(by_member))
    await store.set_subscribed(GUILD, member, True)
    posted = await digest.run(app, GUILD, dry_run=False, k=3)
    [mine] = [mp.picks for mp in posted.picks if mp.member_id == member]
    assert [p.item_id for p in await picks.now(app, Member(GUILD, member))] == [p.item_id for p in mine]
    assert await picks.feedback(app, GUILD, member, mine[0].item_id, "dismissed") == "kept"
    after = [p.item_id for p in await picks.now(app, Member(GUILD, member))]
    assert mine[0].item_id not in after
    if len(mine) > 1:
        assert after == [p.item_id for p in mine[1:]]


def test_clock_rounds_up_to_the_minute():
    assert picks.clock(1_700_000_040.5) == 1_700_000_100.0
    assert picks.clock(1_700_000_100.0) == 1_700_000_100.0
