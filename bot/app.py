"""The Discord bot: :class:`CampfireBot` and ``campfire bot``.

Shape follows discord.py's ``examples/advanced_startup.py``: the bot receives its application in its
constructor, ``setup_hook`` loads the extensions (one cog per concern), and :func:`main` owns every
lifetime with ``async with``. Cogs reach the application as ``bot.app`` (a typed
:class:`campfire.app.App`) and are adapters only: a command's arguments → one call into
:mod:`campfire.features` → rendering (:mod:`bot.render`).

``campfire bot`` with a real token connects to Discord; that is not testable here (no network), so
tests drive the same bot through dpytest and real :class:`discord.Interaction` objects
(``tests/bot/conftest.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import gc
import logging
import sys
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from discord.ext import commands

if TYPE_CHECKING:
    from campfire.config import Secrets, Settings
    from campfire.app import App

log = logging.getLogger(__name__)

#: Extensions loaded by ``setup_hook``, in order. A module that does not exist yet is skipped with a
#: warning; one that exists but fails to import is an error.
EXTENSIONS: tuple[str, ...] = (
    "bot.cogs.chat",
    "bot.cogs.events",
    "bot.cogs.story",
    "bot.cogs.recommend",
    "bot.cogs.daily",
    "bot.cogs.admin",
    "bot.cogs.privacy",
    "bot.cogs.help",
)


def make_intents() -> discord.Intents:
    """Gateway intents Campfire needs: guilds, members (roles for the visibility filter; privileged),
    guild and DM messages, message content (privileged), reactions."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.members = True
    intents.messages = True  # guild_messages + dm_messages
    intents.message_content = True
    intents.reactions = True  # guild_reactions + dm_reactions
    return intents


class CampfireBotMixin:
    """Everything Campfire adds to a discord.py bot; combined with a bot class below.

    Attributes cogs use: ``app`` (:class:`~campfire.app.App`), ``settings`` (``app.settings``),
    ``missing_extensions`` (names skipped at start).
    """

    def __init__(
        self,
        app: App,
        *,
        extensions: tuple[str, ...] | list[str] = EXTENSIONS,
        sync_commands: bool = True,
        **options: Any,
    ) -> None:
        options.setdefault("command_prefix", commands.when_mentioned)  # no text commands: see on_message
        options.setdefault("help_command", None)  # /help is an app command (bot.cogs.help)
        options.setdefault("intents", make_intents())
        options.setdefault("allowed_mentions", discord.AllowedMentions.none())
        super().__init__(**options)  # type: ignore[call-arg]
        self.app: App = app
        self.settings = app.settings
        self.extensions_to_load = tuple(extensions)
        self.sync_commands = sync_commands
        self.missing_extensions: list[str] = []

    async def setup_hook(self) -> None:
        """Load the extensions, install the translator and error handler, sync app commands (to
        ``discord.test_guild_id`` when set — instant — else globally, which Discord propagates
        within about an hour). ``sync_commands=False`` skips syncing (tests, benchmarks)."""
        from bot.errors import install_error_handler
        from bot.i18n import CampfireTranslator

        for name in self.extensions_to_load:
            try:
                await self.load_extension(name)  # type: ignore[attr-defined]
            except commands.ExtensionNotFound:
                self.missing_extensions.append(name)
                log.warning("extension %s does not exist yet; skipped", name)
        tree = self.tree  # type: ignore[attr-defined]
        install_error_handler(tree)
        await tree.set_translator(CampfireTranslator())
        if self.sync_commands:
            await self.sync_app_commands()

    async def sync_app_commands(self) -> list[Any]:
        """Push the command tree to Discord; returns the synced commands."""
        tree = self.tree  # type: ignore[attr-defined]
        guild_id = self.settings.discord.test_guild_id
        if guild_id:
            guild = discord.Object(id=guild_id)
            tree.copy_global_to(guild=guild)
            synced = await tree.sync(guild=guild)
            log.info("synced %d app commands to test guild %d", len(synced), guild_id)
        else:
            synced = await tree.sync()
            log.info("synced %d app commands globally (may take up to an hour to appear)", len(synced))
        return synced

    async def on_message(self, message: discord.Message) -> None:
        """Campfire has no text commands (everything is an app command); the chat and events cogs
        listen to messages themselves."""

    async def on_app_command_completion(self, interaction: discord.Interaction, command: Any) -> None:
        """Count each completed slash command for ``/metrics`` (by its qualified name, never its input)."""
        from campfire import ops

        ops.count_interaction(command.qualified_name)

    async def on_ready(self) -> None:
        user = self.user  # type: ignore[attr-defined]
        log.info("connected as %s (id %s) to %d guild(s)", user, getattr(user, "id", "?"), len(self.guilds))  # type: ignore[attr-defined]


class CampfireBot(CampfireBotMixin, commands.AutoShardedBot):
    """Campfire's bot: ``CampfireBot(app, *, extensions=EXTENSIONS, sync_commands=True, **options)``.

    AutoSharded so a large deployment needs no code change; ``options`` go to discord.py (defaults:
    :func:`make_intents`, ``AllowedMentions.none()`` — each message widens it only to the member
    being answered).
    """


class SingleShardCampfireBot(CampfireBotMixin, commands.Bot):
    """The same bot on one shard. dpytest refuses ``AutoShardedClient``, so tests and
    ``bench/bot.py`` use this class; all of Campfire's behaviour lives in :class:`CampfireBotMixin`."""


# ---- running it -----------------------------------------------------------------------------


class BotStartError(Exception):
    """The bot cannot start; ``str()`` is one line for the operator (``campfire bot`` exits 2)."""


class TokenError(BotStartError):
    """``DISCORD_TOKEN`` is missing, malformed or refused."""


def check_token(token: str | None) -> str:
    """Return ``token`` when it looks like a bot token (three dot-separated base64 parts, the first
    an application id); raise :class:`TokenError` with one readable line otherwise. Discord itself
    has the last word at login (``discord.LoginFailure``)."""
    if not token:
        raise TokenError("DISCORD_TOKEN is not set: put your bot's token in the environment (Developer Portal → Bot → Token)")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise TokenError("DISCORD_TOKEN does not look like a bot token (expected three parts separated by dots)")
    try:
        first = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        first = ""
    if not first.isdigit():
        raise TokenError("DISCORD_TOKEN does not look like a bot token (its first part is not an application id)")
    return token


async def main(settings: Settings, secrets: Secrets, *, bot_class: type[CampfireBotMixin] = CampfireBot) -> int:
    """Open the app, run the bot until it is stopped, close everything in reverse order.
    Returns 0 after a clean stop; raises :class:`BotStartError` (one line) when the token is
    refused, the privileged intents are not enabled, or Discord cannot be reached."""
    from campfire.app import open_app
    from campfire.ops import serve_ops

    token = check_token(secrets.discord_token)
    async with open_app(settings, secrets) as app:
        # The models and indexes are loaded: keep their objects out of the cyclic garbage collector,
        # whose gen-2 runs would otherwise scan them all on the event loop (measured in bench/bot.py:
        # pauses of ~350 ms without this, none with it). https://docs.python.org/3/library/gc.html#gc.freeze
        gc.collect()
        gc.freeze()
        # /health and /metrics when [ops] metrics_port is set (campfire.ops; a taken port: one line, exit 2)
        async with bot_class(app) as bot, serve_ops(settings, generator=app.generator, ready=bot.is_ready):  # type: ignore[call-arg,attr-defined]
            try:
                await bot.start(token)  # type: ignore[attr-defined]
            except discord.LoginFailure:
                raise TokenError("Discord refused DISCORD_TOKEN (invalid or revoked): reset it in the Developer Portal") from None
            except discord.PrivilegedIntentsRequired:
                raise BotStartError(
                    "Discord refused the members/message-content intents: enable them in the Developer Portal → Bot → Privileged Gateway Intents"
                ) from None
            except (aiohttp.ClientError, OSError) as err:
                raise BotStartError(f"cannot reach Discord ({type(err).__name__}): check the network and try again") from None
    return 0


def cli(args: argparse.Namespace, settings: Settings) -> int:
    """``campfire bot``: run the bot with ``DISCORD_TOKEN`` from the environment. A missing, invalid
    or refused token (or an unreachable Discord) prints one line and exits 2 (no traceback)."""
    from campfire.config import secrets_from_env

    secrets = secrets_from_env()
    try:
        check_token(secrets.discord_token)  # before loading any model
        return asyncio.run(main(settings, secrets))
    except BotStartError as err:
        print(f"campfire: {err}", file=sys.stderr)
        return 2
