"""/campfire settings and /campfire status through real discord.Interaction objects: permissions,
ephemerality, the embeds within Discord's limits, refusals before deferring. The settings logic
(parsers, lists, validation) is tested without a bot in tests/features/test_guilds.py."""

from __future__ import annotations

import discord
import pytest

from bot.cogs.admin import AdminCog


@pytest.fixture
def bot_extensions():
    return ("bot.cogs.admin",)


def test_campfire_group_needs_manage_guild_and_a_guild():
    group = AdminCog.campfire
    assert group.default_permissions == discord.Permissions(manage_guild=True)
    assert group.guild_only
    assert sorted(c.name for c in group.commands) == ["settings", "status"]
    options = {p.name for p in group.get_command("settings").parameters}
    assert {"persona", "channel_persona", "persona_channel"} <= options


async def test_settings_change_and_show(bot):
    h = bot
    digest, ignored = h.channels[0], h.channels[1]
    inv = await h.invoke("campfire settings", digest_channel=digest, time="7:05", timezone="Europe/Paris",
                         persona="You are a cheerful baker who loves puns.", nsfw_allowed=True, ignore=ignored)
    assert inv.ephemeral and "Saved" in inv.text
    guild = await h.store.get_guild(h.guild.id)
    assert guild["digest_channel_id"] == digest.id
    assert guild["digest_time"] == "07:05" and guild["timezone"] == "Europe/Paris"
    assert guild["persona"] == "You are a cheerful baker who loves puns." and guild["nsfw_allowed"] is True
    assert guild["ignore_channel_ids"] == [ignored.id] and guild["learn_channel_ids"] == []
    embed = inv.message["embeds"][0]
    assert all(len(f["value"]) <= 1024 for f in embed["fields"])
    assert f"<#{digest.id}>" in inv.text and "07:05" in inv.text

    # learning from a channel that was ignored moves it between the lists; DMs replace the channel
    await h.invoke("campfire settings", learn_from=ignored, digest_in_dms=True, persona="default")
    guild = await h.store.get_guild(h.guild.id)
    assert guild["learn_channel_ids"] == [ignored.id] and guild["ignore_channel_ids"] == []
    assert guild["digest_channel_id"] is None and guild["persona"] is None
    await h.invoke("campfire settings", learn_everywhere=True)
    assert (await h.store.get_guild(h.guild.id))["learn_channel_ids"] == []

    shown = await h.invoke("campfire settings")  # no options: just show
    assert shown.ephemeral and "Current settings" in shown.text and "direct messages" in shown.text


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"time": "25:00"}, "HH:MM"),
        ({"timezone": "Mars/Olympus_Mons"}, "IANA"),
    ],
)
async def test_bad_settings_are_refused_politely_and_change_nothing(bot, options, says):
    h = bot
    await h.store.update_guild(h.guild.id, digest_time="18:00", timezone="UTC")
    # a valid change in the same call is not applied either
    inv = await h.invoke("campfire settings", nsfw_allowed=True, **options)
    assert inv.callback_type == 4 and inv.ephemeral
    assert says in inv.text and "Nothing was changed" in inv.text
    guild = await h.store.get_guild(h.guild.id)
    assert (guild["digest_time"], guild["timezone"], guild["nsfw_allowed"], guild["persona"]) == ("18:00", "UTC", False, None)


async def test_timezone_autocomplete_offers_iana_names(bot):
    cog = bot.bot.get_cog("Admin")
    choices = await cog._timezone_autocomplete(None, "shang")
    assert [c.value for c in choices] == ["Asia/Shanghai"]
    assert len(await cog._timezone_autocomplete(None, "america")) == 25  # Discord's maximum


async def test_status_reports_generator_queue_and_indexes(bot):
    h = bot
    inv = await h.invoke("campfire status")
    assert inv.callback_type == 5 and inv.ephemeral
    fields = {f["name"]: f["value"] for f in inv.message["embeds"][0]["fields"]}
    assert fields["Generator"] == "🟢 healthy"
    assert fields["Waiting in queue"] == "0" and fields["Generating now"] == "0"
    assert fields["item vectors"] == "0" and "interaction vectors" in fields

    h.fake.health_status = 503
    down = await h.invoke("campfire status")
    assert {f["name"]: f["value"] for f in down.message["embeds"][0]["fields"]}["Generator"] == "🔴 unavailable"



async def test_channel_persona_from_settings(bot):
    h = bot
    here, other = h.channels[0], h.channels[1]
    inv = await h.invoke("campfire settings", channel_persona="You are a librarian.", persona_channel=other)
    assert inv.ephemeral and "Saved" in inv.text and f"<#{other.id}>" in inv.text and "librarian" in inv.text
    assert (await h.store.get_channel(other.id))["persona"] == "You are a librarian."
    # without persona_channel: the channel the command is used in
    await h.invoke("campfire settings", channel_persona="You are a poet.", channel=here)
    assert (await h.store.get_channel(here.id))["persona"] == "You are a poet."
    assert (await h.store.get_guild(h.guild.id))["persona"] is None  # the server's persona is untouched
    reset = await h.invoke("campfire settings", channel_persona="default", persona_channel=other)
    assert (await h.store.get_channel(other.id))["persona"] is None and "server's persona" in reset.text
    refused = await h.invoke("campfire settings", persona_channel=other)
    assert refused.callback_type == 4 and "Nothing was changed" in refused.text
