"""``campfire.features.stories`` without any bot: what a story save stores (item, meta, the
``requested`` interaction, embedded), continue / regenerate rules, ratings replacing ratings, an
opted-out requester, the cooldown policy — on a real store, embedder and FAISS, with the fake
generator (``app``) and once on the real model (``real_app``)."""

from __future__ import annotations

import dataclasses

import pytest

from campfire.features import stories
from campfire.features.types import Member, StoryPlan
from model.errors import GeneratorError, GeneratorUnavailable

STORY = (
    "The Lantern Keeper\n"
    "Rain fell on the old harbour town while Mei lit the last lantern on the pier. "
    "A stranger with a broken umbrella asked her the way to the lighthouse. "
    "At the top of the stairs he turned, smiled, and was gone."
)
PART_TWO = (
    "Part Two\nThe next morning the lantern was lit again, though nobody had climbed the pier. "
    "Mei found a folded umbrella on the bottom step, dry despite the storm. "
    "Inside it was a note in careful handwriting that thanked her for the light. "
    "She kept it, and every evening after that she lit one lantern more."
)
THEME = "a chance meeting on a rainy day"
GUILD = 7001
MEI, ADA, BOB = (Member(guild_id=GUILD, id=n, name=name) for n, name in ((11, "Mei"), (12, "Ada"), (13, "Bob")))


async def interactions_on(app, item_id: int):
    return [i for i in await app.store.interactions(GUILD) if i.item_id == item_id]


async def tell(app, fake, requester=MEI, *, reply=STORY, plan: StoryPlan | None = None, **where):
    fake.reply = reply
    plan = plan or stories.plan(app, THEME, genre="mystery")
    return await stories.tell(app, plan, requester=requester, **where)


async def test_tell_saves_the_story_with_its_requested_interaction(app, app_fake, monkeypatch):
    calls = []
    save_item = app.recommender.save_item

    async def spy(item, interactions=()):
        calls.append((item.id, [r["kind"] for r in interactions]))
        return await save_item(item, interactions)

    monkeypatch.setattr(app.recommender, "save_item", spy)
    deltas: list[str] = []
    story = await tell(app, app_fake, channel_id=55, message_id=99, url="https://discord.com/channels/7001/55/99",
                       on_delta=deltas.append)
    assert "".join(deltas).startswith("The Lantern Keeper\n")  # the raw stream, title line first
    assert story.saved and story.item_id is not None and story.part == 1
    assert story.title == story.shown_title == "The Lantern Keeper"
    assert story.text.startswith("Rain fell") and story.theme == THEME and story.genre == "mystery"
    assert calls == [(story.item_id, ["requested"])]  # item and interaction: one save, one transaction

    item = await app.store.get_item(story.item_id)
    assert item.kind == "story" and item.guild_id == GUILD and item.author_id == MEI.id
    assert item.title == "The Lantern Keeper" and item.text == story.text
    assert item.tags == ["mystery"] and item.channel_id == 55 and item.url.endswith("/99")
    assert item.parent_item_id is None
    assert item.meta == {"theme": THEME, "genre": "mystery", "length": "short", "language": "en",
                         "requested_language": "auto", "part": 1, "message_id": 99,
                         "completion_tokens": story.completion_tokens}
    [requested] = await interactions_on(app, story.item_id)
    assert (requested.member_id, requested.kind, requested.text, requested.source_id) == (MEI.id, "requested", THEME, 99)
    await app.recommender.flush()
    stats = app.recommender.stats(GUILD)
    assert stats["item_vectors"] == 1 and stats["interaction_vectors"] == 1  # embedded and indexed


async def test_an_opted_out_requester_gets_the_story_but_nothing_is_stored(app, app_fake):
    await app.store.set_opted_out(MEI.id)
    story = await tell(app, app_fake)
    assert not story.saved and story.item_id is None and story.text.startswith("Rain fell")
    assert await app.store.items(GUILD, kind="story") == []
    assert await app.store.interactions(GUILD) == []


async def test_continue_writes_the_next_part_for_whoever_asks(app, app_fake):
    first = await tell(app, app_fake)
    plan = await stories.plan_continue(app, first.item_id)
    assert plan.part == 2 and plan.heading == "The Lantern Keeper (part 2)"
    assert plan.request.theme == THEME and plan.request.language == "en"  # the language it came out in
    second = await tell(app, app_fake, ADA, plan=plan, reply=PART_TWO)
    assert "Mei lit the last lantern" in str(app_fake.requests[-1]["messages"])  # the prompt carried part 1
    assert second.part == 2 and second.title == "The Lantern Keeper"  # the part's own title is dropped
    assert second.shown_title == "The Lantern Keeper (part 2)"
    item = await app.store.get_item(second.item_id)
    assert item.parent_item_id == first.item_id and item.meta["part"] == 2 and item.author_id == ADA.id
    [requested] = await interactions_on(app, second.item_id)
    assert requested.member_id == ADA.id and requested.text.startswith("The Lantern Keeper\nThe next morning")


async def test_only_the_requester_may_regenerate(app, app_fake):
    first = await tell(app, app_fake)
    with pytest.raises(stories.StoryRefused, match="Only the member who asked"):
        await stories.plan_regenerate(app, first.item_id, ADA.id)
    plan = await stories.plan_regenerate(app, first.item_id, MEI.id)
    assert plan.previous is None and plan.part == 1
    assert plan.request == stories.StoryRequest(theme=THEME, genre="mystery", length="short", language="auto")

    # a later part is regenerated by continuing its parent again; when the parent is gone it cannot be
    second = await tell(app, app_fake, ADA, plan=await stories.plan_continue(app, first.item_id))
    again = await stories.plan_regenerate(app, second.item_id, ADA.id)
    assert again.previous is not None and again.previous.item_id == first.item_id and again.part == 2
    assert await app.recommender.remove_item(first.item_id)
    with pytest.raises(stories.StoryRefused, match="part before this one"):
        await stories.plan_regenerate(app, second.item_id, ADA.id)


async def test_a_deleted_story_is_refused_politely_and_nothing_is_recorded(app, app_fake):
    story = await tell(app, app_fake)
    assert await app.recommender.remove_item(story.item_id)
    assert await stories.get_story(app, story.item_id) is None
    for planning in (stories.plan_continue(app, story.item_id), stories.plan_regenerate(app, story.item_id, MEI.id)):
        with pytest.raises(stories.StoryRefused, match="no longer stored"):
            await planning
    assert await stories.rate(app, story.item_id, ADA.id, "up") == "gone"
    assert await app.store.interactions(GUILD) == []


async def test_a_later_rating_replaces_the_earlier_one(app, app_fake):
    story = await tell(app, app_fake, message_id=99)
    sid = story.item_id
    assert await stories.rate(app, sid, ADA.id, "up") == "rated"
    assert await stories.rate(app, sid, ADA.id, "down") == "rated"
    assert await stories.rate(app, sid, BOB.id, "up") == "rated"
    ratings = sorted((i.member_id, i.kind, i.source_id) for i in await interactions_on(app, sid) if i.kind.startswith("rated"))
    assert ratings == [(ADA.id, "rated_down", 99), (BOB.id, "rated_up", 99)]
    assert (await app.store.get_item(sid)).rating == 0.0  # -1 (Ada) + 1 (Bob)
    await app.store.set_opted_out(BOB.id)
    assert await stories.rate(app, sid, 14, "down") == "rated"
    assert await stories.rate(app, sid, BOB.id, "down") == "opted_out"
    with pytest.raises(ValueError):
        await stories.rate(app, sid, ADA.id, "sideways")


@pytest.mark.parametrize("theme", ["   ", "x" * 301])
def test_a_bad_theme_is_a_readable_error(app, theme):
    with pytest.raises(ValueError, match="theme"):
        stories.plan(app, theme)


def test_unknown_choices_are_refused_and_the_theme_is_cleaned(app):
    with pytest.raises(ValueError, match="genre"):
        stories.plan(app, "a cat", genre="opera")
    with pytest.raises(ValueError, match="length"):
        stories.plan(app, "a cat", length="enormous")
    assert stories.plan(app, "  a\tcat \n on a roof ").request.theme == "a cat on a roof"


async def test_generator_trouble_saves_nothing(app, app_fake):
    app_fake.status = 503
    with pytest.raises(GeneratorError):
        await tell(app, app_fake)
    assert await app.store.items(GUILD, kind="story") == []
    with pytest.raises(GeneratorUnavailable):
        await tell(dataclasses.replace(app, generator=None), app_fake)


def test_cooldowns_are_per_member_and_refundable():
    cooldowns = stories.Cooldowns()
    assert cooldowns.take(1, 600) is None  # the turn is taken
    wait = cooldowns.take(1, 600)
    assert wait is not None and 599 < wait <= 600
    assert cooldowns.take(2, 600) is None  # other members are not affected
    cooldowns.refund(1)  # a failed generation gives the turn back
    assert cooldowns.take(1, 600) is None
    assert cooldowns.take(1, 0) is None and cooldowns.take(1, 0) is None  # 0: no cooldown


async def test_console_story_and_rate_go_through_the_feature(app, app_fake):
    """The console's /story and /rate are adapters over this module: same item shape as the bot's."""
    import io

    from campfire.cmd_console import run_console
    from campfire.console import PlainOutput

    app_fake.reply = STORY
    buf = io.StringIO()
    code = await run_console(app, out=PlainOutput(buf), stdin=io.StringIO(f"/story {THEME} --genre mystery\n/rate up\n"))
    out = buf.getvalue()
    assert code == 0 and "saved story #" in out and "rated up: 'The Lantern Keeper'" in out, out
    [item] = await app.store.items(1, kind="story")  # the console's own guild and member (id 1)
    assert item.author_id == 1 and item.meta["source"] == "console" and item.meta["message_id"] is None
    assert set(item.meta) - {"source"} == {"theme", "genre", "length", "language", "requested_language", "part",
                                            "message_id", "completion_tokens"}
    assert sorted(i.kind for i in await app.store.interactions(1) if i.item_id == item.id) == ["rated_up", "requested"]


@pytest.mark.slow
async def test_a_story_on_the_real_model_is_saved_and_embedded(real_app):
    story = await stories.tell(real_app, stories.plan(real_app, THEME), requester=MEI, max_tokens=64)
    assert story.title.strip() and len(story.text.split()) >= 1
    if not story.saved:  # sampled: the gate may fail it twice; then it is shown with its notice, stored nowhere
        assert story.rejected and story.notice and story.item_id is None
        assert await real_app.store.items(MEI.guild_id, kind="story") == []
        return
    assert len(story.text.split()) >= 3
    item = await real_app.store.get_item(story.item_id)
    assert item.kind == "story" and item.text == story.text
    assert [i.kind for i in await interactions_on(real_app, story.item_id)] == ["requested"]
    await real_app.recommender.flush()
    vectors = await real_app.store.embeddings_for("item", [item.id], real_app.recommender.embedder.key)
    assert vectors[item.id].shape == (384,)


# ---- loops, the quality gate, language honesty (issue 14) ----------------------------------------
LOOPING = STORY + "\nLikes: 1" * 40  # a good story, then the default model's "Likes: 1" loop


async def test_a_loop_closes_the_stream_early_and_is_cut_from_the_saved_story(app, app_fake):
    deltas: list[str] = []
    story = await tell(app, app_fake, reply=LOOPING, on_delta=deltas.append)
    streamed = "".join(deltas)
    assert len(streamed) < len(LOOPING) // 2  # the stream was closed at the third "Likes: 1"
    assert story.saved and story.finish_reason == "loop" and story.attempts == 1
    assert story.text.endswith("and was gone.") and "Likes" not in story.text
    assert (await app.store.get_item(story.item_id)).text == story.text
    assert app_fake.requests_started == 1


async def test_a_story_that_fails_the_gate_is_written_once_more_with_stronger_penalties(app, app_fake):
    retries: list[str] = []

    def on_delta(delta: str) -> None:  # the first attempt loops at once; the next request gets a good story
        app_fake.reply = STORY

    story = await tell(app, app_fake, reply="The Lantern Keeper\n" + "Likes: 1\n" * 40, on_delta=on_delta,
                       on_retry=lambda: retries.append("retry"))
    assert retries == ["retry"] and story.attempts == 2 and story.saved and not story.rejected
    assert story.text.startswith("Rain fell") and story.notice is None
    first, second = app_fake.requests
    assert second["frequency_penalty"] > first.get("frequency_penalty", 0.0)
    assert second["temperature"] <= first["temperature"]
    for name, neutral in (("presence_penalty", 0.0), ("repetition_penalty", 1.0)):
        if name in second:  # sent once the client passes it on (the server honours it per request)
            assert second[name] > first.get(name, neutral)
    assert [i.kind for i in await app.store.items(GUILD, kind="story")] == ["story"]


async def test_a_story_that_fails_twice_is_shown_honestly_but_never_saved(app, app_fake):
    drafts = stories.Drafts()
    plan = stories.plan(app, THEME)
    story = await tell(app, app_fake, reply="The Lantern Keeper\nRain fell on the pier and", plan=plan)
    assert not story.saved and story.item_id is None and story.attempts == 2
    assert story.rejected == ("too_short", "unfinished") and story.text == "Rain fell on the pier and"
    assert story.notice.startswith("⚠️ This story did not come out well") and "Regenerate" in story.notice
    assert await app.store.items(GUILD, kind="story") == [] and await app.store.interactions(GUILD) == []
    # its Regenerate works from the kept plan — for its requester only
    drafts.remember(555, plan, MEI.id)
    assert await stories.plan_regenerate(app, 555, MEI.id, drafts=drafts) == plan
    with pytest.raises(stories.StoryRefused, match="Only the member who asked"):
        await stories.plan_regenerate(app, 555, ADA.id, drafts=drafts)
    with pytest.raises(stories.StoryRefused, match="no longer stored"):
        await stories.plan_regenerate(app, 556, MEI.id, drafts=drafts)


MULTILINGUAL = [{"generator": {"languages": ["en", "zh"]}}]  # a model prepared for Chinese too


@pytest.mark.parametrize("app_settings_overrides", MULTILINGUAL)
async def test_a_rejected_chinese_request_gets_a_chinese_notice(app, app_fake):
    story = await tell(app, app_fake, reply="灯塔\n" + "茧" * 200, plan=stories.plan(app, "雨天的一次偶遇"))
    assert story.rejected and "loop" in story.rejected and story.language == "zh"
    assert story.notice.startswith("⚠️ 这个故事写得不好") and "内容不断重复" in story.notice
    assert "茧茧" not in story.text


def test_chinese_to_an_english_only_model_is_declined_in_the_members_language(app, app_fake):
    assert stories.model_languages(app.settings) == ("en",)  # the packaged SmolLM2's default
    with pytest.raises(stories.StoryDeclined) as zh:
        stories.plan(app, "雨天的一次偶遇")
    assert zh.value.language == "zh" and "写不好中文" in str(zh.value) and "generator.languages" in str(zh.value)
    with pytest.raises(stories.StoryDeclined) as en:
        stories.plan(app, "a chance meeting on a rainy day", language="zh")  # an English speaker asking for Chinese
    assert "cannot write Chinese well" in str(en.value) and "README" in str(en.value)
    assert isinstance(en.value, ValueError)  # front ends show it like any refused request
    assert app_fake.requests_started == 0


@pytest.mark.parametrize("app_settings_overrides", MULTILINGUAL)
async def test_a_chinese_story_cannot_be_continued_on_an_english_only_model(app, app_fake, monkeypatch):
    zh = "灯塔\n" + "雨下了一整天。小美撑着伞走到车站，一位老人站在屋檐下发抖。她把伞递给老人，自己跑进了雨里。" * 2
    first = await tell(app, app_fake, reply=zh, plan=stories.plan(app, "雨天的一次偶遇"))
    assert first.saved and first.language == "zh"
    monkeypatch.setattr(app.settings.generator, "languages", ["en"])  # the admin switched back to SmolLM2
    with pytest.raises(stories.StoryDeclined, match="写不好中文"):
        await stories.plan_continue(app, first.item_id)


async def test_console_shows_a_declined_or_rejected_story_honestly_and_saves_nothing(app, app_fake):
    import io

    from campfire.cmd_console import run_console
    from campfire.console import PlainOutput

    app_fake.reply = "The Lantern Keeper\n" + "Likes: 1\n" * 40
    buf = io.StringIO()
    script = f"/story {THEME}\n/story 雨天的一次偶遇\n/rate up\n"
    assert await run_console(app, out=PlainOutput(buf), stdin=io.StringIO(script)) == 0
    out = buf.getvalue()
    assert "writing it once more with stronger repetition penalties" in out
    assert "⚠️ This story did not come out well (it kept repeating itself, it came out too short" in out
    assert "saved story" not in out
    assert "抱歉，这个服务器的故事模型写不好中文" in out and "\n! 抱歉" not in out  # an answer, not an error
    assert "no story to rate yet" in out  # nothing was saved to rate
    assert app_fake.requests_started == 2  # two attempts for the first; none for the declined one
    assert await app.store.items(1, kind="story") == []
