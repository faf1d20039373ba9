"""``/help``: what Campfire does, what it stores and how to delete it (ephemeral; the embed is
:func:`bot.render.help_embed`)."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import register
from bot.render import help_embed

__all__ = ["HelpCog", "help_embed"]

register({"What Campfire does, what it stores and how to delete it": "篝火能做什么、保存什么、如何删除"})


class HelpCog(commands.Cog, name="Help"):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="help", description="What Campfire does, what it stores and how to delete it")
    async def help(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(embed=help_embed(), ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(HelpCog(bot))
