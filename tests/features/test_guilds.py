"""Guild settings (campfire.features.guilds) without a bot: the one HH:MM parser and timezone check
(shared with the config file), validation before any write, the learn/ignore lists, status."""

from __future__ import annotations

from dataclasses import replace

import pytest

from campfire.config import ConfigError, DigestSettings, load_settings
from campfire.features import guilds
from campfire.features.guilds import parse_hhmm, parse_timezone, zone
from campfire.features.types import SettingsRequest

GUILD, C1, C2, C3 = 1001, 2001, 2002, 2003


def test_parsers():
    assert parse_hhmm("9:30") == "09:30" and parse_hhmm("23h59") == "23:59" and parse_hhmm(" 7.05 ") == "07:05"
    assert parse_timezone(" Asia/Tokyo ") == "Asia/Tokyo"
    for bad in ("24:00", "9:60", "", "9", "noon", "9:5"):
        with pytest.raises(ValueError, match="HH:MM"):
            parse_hhmm(bad)
    for bad in ("Europe/Atlantis", "", "../etc/passwd"):
        with pytest.raises(ValueError, match="IANA"):
            parse_timezone(bad)
    assert str(zone("Europe/Paris")) == "Europe/Paris"
    assert str(zone("Mars/Olympus_Mons", "Asia/Shanghai")) == "Asia/Shanghai"  # a stale stored name falls back
    assert str(zone(None)) == "UTC"


def test_config_uses_the_same_parsers(tmp_path):
    assert DigestSettings(default_time="7:05", default_timezone=" Europe/Paris ").default_time == "07:05"
    cfg = tmp_path / "config.toml"
    cfg.write_text('[digest]\ndefault_time = "25:00"\n')
    with pytest.raises(ConfigError, match="digest.default_time"):
        load_settings(cfg)


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        (SettingsRequest(time="25:00"), "HH:MM"),
        (SettingsRequest(timezone="Mars/Olympus_Mons"), "IANA"),
        (SettingsRequest(persona="x" * 1001), "1000"),
        (SettingsRequest(digest_channel_id=C1, digest_in_dms=True), "not both"),
        (SettingsRequest(learn_from=C1, ignore=C1), "both learned from and ignored"),
    ],
)
async def test_bad_requests_change_nothing(offline_app, request_, says):
    app = offline_app
    await app.store.update_guild(GUILD, digest_time="18:00", timezone="UTC")
    with pytest.raises(ValueError, match=says):
        # a valid change in the same request is not applied either
        await guilds.update_settings(app, GUILD, replace(request_, nsfw_allowed=True))
    s = await guilds.load_settings(app, GUILD)
    assert (s.digest_time, s.timezone, s.nsfw_allowed, s.persona) == ("18:00", "UTC", False, None)


async def test_update_settings_and_channel_lists(offline_app):
    app = offline_app
    shown = await guilds.update_settings(app, GUILD, SettingsRequest(), guild_name="Brewers")
    assert shown.changed == () and shown.settings.digest_time == app.settings.digest.default_time
    assert not shown.settings.own_time and shown.settings.name == "Brewers"

    up = await guilds.update_settings(app, GUILD, SettingsRequest(
        digest_channel_id=C1, time="7:05", timezone="Europe/Paris", persona="  A cheerful baker.  ",
        nsfw_allowed=True, ignore=C2))
    assert up.changed == ("digest_channel_id", "digest_time", "ignore_channel_ids", "nsfw_allowed", "persona", "timezone")
    s = up.settings
    assert (s.digest_channel_id, s.digest_time, s.timezone, s.persona, s.nsfw_allowed) == (C1, "07:05", "Europe/Paris",
                                                                                          "A cheerful baker.", True)
    assert s.ignore_channel_ids == (C2,) and s.learn_channel_ids == () and s.own_time and s.own_timezone
    assert await guilds.load_settings(app, GUILD) == s  # what is returned is what is stored

    # learning from an ignored channel moves it between the lists; DMs replace the channel
    s = (await guilds.update_settings(app, GUILD, SettingsRequest(learn_from=C2, digest_in_dms=True,
                                                                  persona="default"))).settings
    assert s.learn_channel_ids == (C2,) and s.ignore_channel_ids == () and s.digest_channel_id is None and s.persona is None
    s = (await guilds.update_settings(app, GUILD, SettingsRequest(learn_from=C3, ignore=C2))).settings
    assert s.learn_channel_ids == (C3,) and s.ignore_channel_ids == (C2,)
    again = await guilds.update_settings(app, GUILD, SettingsRequest(learn_from=C3))
    assert again.changed == ()  # already learned from
    s = (await guilds.update_settings(app, GUILD, SettingsRequest(learn_everywhere=True))).settings
    assert s.learn_channel_ids == () and s.ignore_channel_ids == ()
    assert await guilds.load_settings(app, GUILD) == s


async def test_load_settings_of_an_unknown_guild_is_all_defaults(offline_app):
    s = await guilds.load_settings(offline_app, 4242)
    assert s.id == 4242 and s.digest_time == offline_app.settings.digest.default_time and s.learn_channel_ids == ()


def test_suggest_timezones():
    assert guilds.suggest_timezones("shang") == ["Asia/Shanghai"]
    assert len(guilds.suggest_timezones("america")) == 25
    assert guilds.suggest_timezones("")[0] == "UTC"
    assert guilds.suggest_timezones("new york") == ["America/New_York"]


async def test_status(app, app_fake):
    st = await guilds.status(app, GUILD)
    assert st.healthy is True and st.in_flight == 0 and st.queue_depth == 0
    assert st.index["item_vectors"] == 0 and st.last_digest_date is None
    app_fake.health_status = 503
    assert (await guilds.status(app, GUILD)).healthy is False


async def test_status_without_a_generator(offline_app):
    await offline_app.store.update_guild(GUILD, last_digest_date="2026-01-02")
    st = await guilds.status(offline_app, GUILD)
    assert st.healthy is None and st.last_digest_date == "2026-01-02"


# --- issue 14: a channel's persona from /campfire settings -------------------------------------------


def _channel(cid: int, kind: str = "text", parent: int | None = None):
    from campfire.features.types import ChannelRecord

    return ChannelRecord(guild_id=GUILD, id=cid, name=f"c{cid}", kind=kind, parent_id=parent,
                         visibility={"public": False, "roles": [77], "members": [], "denied_members": []})


async def test_channel_persona_is_set_inherited_by_threads_and_reset(offline_app):
    from campfire.features import chat

    app = offline_app
    await guilds.update_settings(app, GUILD, SettingsRequest(persona="You are a pirate."))
    up = await guilds.update_settings(app, GUILD, SettingsRequest(channel_persona="  You are a librarian. ",
                                                                  channel=_channel(C1)))
    assert up.changed == ("channel_persona",) and up.channel_persona == (C1, "You are a librarian.")
    stored = await app.store.get_channel(C1)
    assert stored["persona"] == "You are a librarian."
    assert stored["visibility"]["public"] is False  # a new row keeps the channel's real visibility
    assert await chat.persona(app, guild_id=GUILD, channel_id=C1) == "You are a librarian."
    assert await chat.persona(app, guild_id=GUILD, channel_id=C3, parent_id=C1) == "You are a librarian."  # a thread
    assert await chat.persona(app, guild_id=GUILD, channel_id=C2) == "You are a pirate."
    reset = await guilds.update_settings(app, GUILD, SettingsRequest(channel_persona="default", channel=_channel(C1)))
    assert reset.channel_persona == (C1, None)
    assert await chat.persona(app, guild_id=GUILD, channel_id=C3, parent_id=C1) == "You are a pirate."


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        (SettingsRequest(channel_persona="You are a poet."), "which channel"),
        (SettingsRequest(channel=_channel(C1)), "Give the channel persona"),
        (SettingsRequest(channel_persona="x" * 1001, channel=_channel(C1)), "1000"),
        (SettingsRequest(channel_persona="You are a poet.", channel=_channel(C3, "thread", C1)), "Threads"),
    ],
)
async def test_bad_channel_persona_requests_change_nothing(offline_app, request_, says):
    app = offline_app
    with pytest.raises(ValueError, match=says):
        await guilds.update_settings(app, GUILD, replace(request_, nsfw_allowed=True))
    assert not (await guilds.load_settings(app, GUILD)).nsfw_allowed
    assert await app.store.get_channel(C1) is None
