"""The bot itself: construction, extensions, `campfire bot` token handling, app-command errors
(dispatched as real interactions through ``bot.tree``) and the Simplified Chinese translations."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from bot.app import EXTENSIONS, CampfireBot, SingleShardCampfireBot, TokenError, check_token, make_intents
from bot.errors import UserFacingError
from bot.i18n import ZH, CampfireTranslator
from model.errors import GeneratorUnavailable

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bot_extensions():
    return ("bot.cogs.chat", "bot.cogs.events", "bot.cogs.does_not_exist")


def test_bot_class_intents_and_default_mentions():
    assert issubclass(CampfireBot, commands.AutoShardedBot)
    assert issubclass(SingleShardCampfireBot, commands.Bot)
    intents = make_intents()
    for flag in ("guilds", "members", "guild_messages", "dm_messages", "message_content", "guild_reactions"):
        assert getattr(intents, flag), flag
    assert not intents.presences
    assert EXTENSIONS[:2] == ("bot.cogs.chat", "bot.cogs.events")


async def test_setup_hook_loads_extensions_and_skips_missing_ones(bot):
    assert {"bot.cogs.chat", "bot.cogs.events"} <= set(bot.bot.extensions)
    assert bot.bot.missing_extensions == ["bot.cogs.does_not_exist"]
    assert isinstance(bot.bot.tree.translator, CampfireTranslator)
    assert bot.bot.allowed_mentions.to_dict() == {"parse": []}


def test_check_token():
    good = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GabcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"
    assert check_token(good) == good
    for bad in (None, "", "not-a-token", "abc.def.ghi"):
        with pytest.raises(TokenError):
            check_token(bad)


@pytest.mark.parametrize("token", [None, "definitely not a token"])
def test_campfire_bot_with_missing_or_invalid_token_prints_one_line(token, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN" and not k.startswith("CAMPFIRE_")}
    if token is not None:
        env["DISCORD_TOKEN"] = token
    proc = subprocess.run(
        [sys.executable, "-m", "campfire.cli", "bot", "--data-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "PyNaCl" not in ln and "davey" not in ln
             and "audioop" not in ln and "import audioop" not in ln]
    assert len(lines) == 1, proc.stderr
    assert "DISCORD_TOKEN" in lines[0] and "Traceback" not in proc.stderr


def _add_failing_commands(tree: app_commands.CommandTree) -> None:
    @tree.command(name="boom", description="fails with a bug")
    async def boom(interaction: discord.Interaction) -> None:
        raise RuntimeError("a bug")

    @tree.command(name="tired", description="the generator is down")
    async def tired(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        raise GeneratorUnavailable(retry_after_s=12)

    @tree.command(name="picky", description="bad input")
    async def picky(interaction: discord.Interaction, theme: str) -> None:
        raise UserFacingError(f"The theme {theme!r} is too short.")


async def test_app_command_errors_become_ephemeral_messages_with_an_error_id(bot, caplog):
    _add_failing_commands(bot.bot.tree)
    with caplog.at_level(logging.INFO, logger="bot.errors"):
        crashed = await bot.invoke("boom")
    assert crashed.callback_type == 4 and crashed.ephemeral
    text = crashed.message["content"]
    assert "went wrong" in text
    error_id = text.split("`")[1]
    assert len(error_id) == 6
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert logged and logged[0].levelno == logging.ERROR and logged[0].exc_info is not None

    down = await bot.invoke("tired")
    assert down.callback_type == 5  # deferred first, then the error arrived as a follow-up
    assert down.responses[-1].kind == "followup" and down.responses[-1].payload["flags"] & 64  # ephemeral
    assert "12 s" in down.message["content"] and "`" not in down.message["content"]  # kind, no error id

    bad = await bot.invoke("picky", theme="ab")
    assert bad.message["content"] == "The theme 'ab' is too short."
    assert bad.defer_s is not None and bad.defer_s < 3.0


async def test_every_command_has_simplified_chinese_names_and_descriptions(make_settings):
    """Loads every extension (whatever exists) and checks the translated payload of each command."""
    from campfire.app import App

    settings = make_settings()
    app = App(settings=settings, store=None, recommender=None, generator=None, counter=None)  # type: ignore[arg-type]
    bot = SingleShardCampfireBot(app, sync_commands=False)
    await bot._async_setup_hook()
    for name in EXTENSIONS:
        try:
            await bot.load_extension(name)
        except commands.ExtensionNotFound:
            continue
    translator = CampfireTranslator()
    commands_ = bot.tree.get_commands()
    for name in list(bot.extensions):
        await bot.unload_extension(name)
    if not commands_:
        pytest.skip("no app commands loaded yet")
    missing: list[str] = []

    def check(payload: dict, path: str) -> None:
        if payload.get("type", 1) in (1, 2) or "description" in payload:
            if ZH not in (payload.get("name_localizations") or {}):
                missing.append(f"{path} name")
            if payload.get("description") and ZH not in (payload.get("description_localizations") or {}):
                missing.append(f"{path} description")
        for choice in payload.get("choices") or []:
            if ZH not in (choice.get("name_localizations") or {}):
                missing.append(f"{path} choice {choice['name']!r}")
        for option in payload.get("options") or []:
            check(option, f"{path} {option['name']}")

    checked = []
    for cmd in commands_:
        check(await cmd.get_translated_payload(bot.tree, translator), "/" + cmd.name)
        checked.append(cmd.name)
    assert {"story", "recommend", "privacy"} & set(checked)
    assert missing == [], "missing zh-CN translations (register them with bot.i18n.register): " + ", ".join(missing)
