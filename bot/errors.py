"""App-command errors become an ephemeral, friendly message with a short error id, also logged.

:func:`install_error_handler` sets ``CommandTree.on_error`` (done by ``CampfireBot.setup_hook``).
Cogs may raise :class:`UserFacingError` with a sentence a member can read; views call
:func:`report_error` from ``View.on_error``. :func:`friendly_message` turns any exception into
``(text, error_id)``; generator failures get kind sentences (``model.errors``).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import discord
from discord import app_commands

log = logging.getLogger(__name__)


class UserFacingError(Exception):
    """An error whose ``str()`` is a polite sentence to show the member as is (bad input, a missing
    setting). Logged at DEBUG only (the sentence may quote what the member typed)."""


def new_error_id() -> str:
    """A short random id (6 hex characters) a member can quote to the admins."""
    return secrets.token_hex(3)


def generator_message(err: BaseException) -> str | None:
    """A kind sentence for a generator failure (``model.errors``), or None for other errors."""
    try:
        from model.errors import ContextTooLong, GeneratorError, GeneratorTimeout, GeneratorUnavailable
    except ImportError:  # pragma: no cover - model/ is part of the package
        return None
    if isinstance(err, GeneratorUnavailable):
        wait = f" Please try again in about {max(1, round(err.retry_after_s))} s." if err.retry_after_s else " Please try again in a minute."
        return "I can't reach my writing engine right now." + wait
    if isinstance(err, GeneratorTimeout):
        return "That took me too long to write, sorry. Please try again (a shorter request may help)."
    if isinstance(err, ContextTooLong):
        return "That's more text than I can read at once. Please try something shorter."
    if isinstance(err, GeneratorError):
        return "My writing engine had a problem. Please try again in a moment."
    return None


def friendly_message(error: BaseException) -> tuple[str, str | None, int]:
    """``(text for the member, error id or None, log level)`` for ``error``.

    Unwraps ``CommandInvokeError``/``TransformerError`` to the original exception. Expected errors
    (cooldowns, missing permissions, :class:`UserFacingError`, generator down) carry no id; anything
    else is a bug: it gets an id, quoted in the text and logged with the traceback.
    """
    original = error
    while isinstance(original, (app_commands.CommandInvokeError, app_commands.TransformerError)) and original.__cause__:
        original = original.__cause__
    if isinstance(original, app_commands.CommandInvokeError):
        original = original.original
    if isinstance(original, UserFacingError):
        return str(original), None, logging.DEBUG
    if isinstance(original, app_commands.CommandOnCooldown):
        return f"Slow down a little: you can use this again in {original.retry_after:.0f} s.", None, logging.DEBUG
    if isinstance(original, (app_commands.MissingPermissions, app_commands.MissingRole, app_commands.MissingAnyRole)):
        return "You don't have permission to use this command here.", None, logging.INFO
    if isinstance(original, app_commands.BotMissingPermissions):
        perms = ", ".join(p.replace("_", " ") for p in original.missing_permissions)
        return f"I'm missing a permission in this channel ({perms}). Please ask an admin.", None, logging.WARNING
    if isinstance(original, app_commands.NoPrivateMessage):
        return "This command only works in a server.", None, logging.DEBUG
    if isinstance(original, app_commands.CheckFailure):
        return "You can't use this command here.", None, logging.INFO
    if isinstance(original, app_commands.CommandNotFound):
        return "I don't know that command any more: it may have been updated. Try again in a minute.", None, logging.INFO
    text = generator_message(original)
    if text is not None:
        return text, None, logging.WARNING
    error_id = new_error_id()
    return (f"Something went wrong on my side, sorry. It has been logged as error `{error_id}`.", error_id, logging.ERROR)


async def send_ephemeral(interaction: discord.Interaction, text: str) -> None:
    """Answer ``interaction`` privately, whether or not it was already responded to or deferred."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())
        else:
            await interaction.response.send_message(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())
    except discord.HTTPException as err:  # the interaction expired, or Discord is unhappy
        log.warning("could not send an error message for interaction %s: %s", interaction.id, err)


async def report_error(interaction: discord.Interaction, error: BaseException, *, where: str = "") -> str | None:
    """Log ``error`` and tell the member kindly (ephemeral). Returns the error id (None for expected
    errors). Use from ``View.on_error(interaction, error, item)`` and anywhere a cog catches."""
    text, error_id, level = friendly_message(error)
    name = where or _command_name(interaction)
    if error_id:
        log.error("%s failed [error %s] (guild %s, member %s)", name, error_id, interaction.guild_id,
                  interaction.user.id if interaction.user else "?", exc_info=error)
    else:
        log.log(level, "%s: %s: %s", name, type(error).__name__, error)
    await send_ephemeral(interaction, text)
    return error_id


def _command_name(interaction: discord.Interaction) -> str:
    cmd = interaction.command
    if cmd is not None:
        return f"/{cmd.qualified_name}"
    data: Any = interaction.data or {}
    return str(data.get("custom_id") or data.get("name") or "interaction")


async def on_app_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    """``CommandTree.on_error``: every app-command error → ephemeral message (+ id when a bug)."""
    await report_error(interaction, error)


def install_error_handler(tree: app_commands.CommandTree) -> None:
    """Route every app-command error of ``tree`` to :func:`on_app_command_error`."""
    tree.on_error = on_app_command_error  # type: ignore[method-assign]
