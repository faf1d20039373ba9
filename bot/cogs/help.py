"""``/help``: what Campfire does, what it stores and how to delete it (ephemeral)."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import register

HELP_COLOUR = discord.Colour.orange()

register({"What Campfire does, what it stores and how to delete it": "篝火能做什么、保存什么、如何删除"})

COMMANDS = (
    "**Chat** — mention me, reply to me, or DM me; I remember the reply chain (and the thread in my threads).\n"
    "`/story` — a short story about your theme (genre, length, English or 中文), with 👍 / 👎 / Continue / Regenerate.\n"
    "`/recommend now` — your personal picks from this server, with 👍 / 👎 / Not interested.\n"
    "`/recommend subscribe` · `/recommend unsubscribe` — your picks in the daily post.\n"
    "`/campfire settings` · `/campfire status` — for server managers."
)

STORED = (
    "In the channels I can read (server managers choose which): messages with their author, channel and time; "
    "replies and reactions; stories you ask for and your 👍 / 👎; the picks sent to you; your display name and "
    "roles (so you are only shown what you may see); and text embeddings (numbers computed from that text) for "
    "finding what you may like. Nothing from direct messages is stored. It is all kept in this Campfire's own database, "
    "run by this bot's operators."
)

CONTROL = (
    "`/privacy optout` — record nothing more about me (`/privacy optin` undoes it).\n"
    "`/privacy export` — download everything stored about me (JSON).\n"
    "`/privacy forget` — delete everything stored about me, in every server, after a confirmation."
)


def help_embed() -> discord.Embed:
    """The ``/help`` embed: commands, what Campfire stores, how to opt out, export or delete
    (three fields, each ≤ 1,024 characters)."""
    embed = discord.Embed(
        title="Campfire 🔥", colour=HELP_COLOUR,
        description="An AI companion for this community: chat, stories, and daily picks of what you may have missed.",
    )
    embed.add_field(name="Commands", value=COMMANDS, inline=False)
    embed.add_field(name="What Campfire stores", value=STORED, inline=False)
    embed.add_field(name="Your data, your call", value=CONTROL, inline=False)
    return embed


class HelpCog(commands.Cog, name="Help"):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="help", description="What Campfire does, what it stores and how to delete it")
    async def help(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(embed=help_embed(), ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(HelpCog(bot))
