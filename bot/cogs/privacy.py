"""``/privacy optout|optin|forget|export``: a member's control over what Campfire keeps about them —
adapters to :mod:`campfire.features.privacy` (what each does, the confirmation's rules), rendered
by :mod:`bot.render`.

``forget`` asks first with ``bot.views.ForgetButton`` (Yes / Cancel, only for the member who asked,
valid for ``privacy.CONFIRM_WINDOW_S``). All replies are ephemeral; the commands also work in
direct messages with the bot.
"""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.i18n import register
from bot.views import ForgetButton, forget_view
from campfire.features import privacy

if TYPE_CHECKING:
    from bot.app import CampfireBotMixin

register({
    "Your data in Campfire": "你在篝火中的数据",
    "optin": "恢复记录",
    "Stop Campfire recording anything about you": "让篝火不再记录任何关于你的内容",
    "Let Campfire learn from your activity again": "允许篝火重新从你的活动中学习",
    "Delete everything Campfire stored about you": "删除篝火保存的关于你的一切",
    "Download everything Campfire stored about you (JSON)": "下载篝火保存的关于你的一切（JSON）",
})


class PrivacyCog(commands.Cog, name="Privacy"):
    """What a member may do about their data."""

    privacy = app_commands.Group(name="privacy", description="Your data in Campfire")

    def __init__(self, bot: CampfireBotMixin) -> None:
        self.bot = bot
        self.app = bot.app

    @privacy.command(name="optout", description="Stop Campfire recording anything about you")
    async def optout(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await privacy.opt_out(self.app, interaction.user.id)
        await interaction.followup.send(render.OPTED_OUT, ephemeral=True)

    @privacy.command(name="optin", description="Let Campfire learn from your activity again")
    async def optin(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await privacy.opt_in(self.app, interaction.user.id)
        await interaction.followup.send(render.OPTED_IN, ephemeral=True)

    @privacy.command(name="forget", description="Delete everything Campfire stored about you")
    async def forget(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(render.FORGET_PROMPT, view=forget_view(interaction.user.id, int(time.time())),
                                                ephemeral=True)

    async def on_forget_answer(self, interaction: discord.Interaction, button: ForgetButton) -> None:
        """The member pressed Yes or Cancel under ``/privacy forget``."""
        if not privacy.may_confirm(interaction.user.id, button.user_id):
            await interaction.response.send_message(render.FORGET_NOT_YOURS, ephemeral=True)
            return
        if button.answer == "no":
            await interaction.response.edit_message(content=render.FORGET_CANCELLED, view=None)
            return
        if privacy.confirmation_expired(button.offered_at):
            await interaction.response.edit_message(content=render.FORGET_EXPIRED, view=None)
            return
        await interaction.response.edit_message(content=render.FORGET_RUNNING, view=None)
        result = await privacy.forget(self.app, interaction.user.id)
        await interaction.edit_original_response(content=render.forget_done(result))

    @privacy.command(name="export", description="Download everything Campfire stored about you (JSON)")
    async def export(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        export = await privacy.export(self.app, interaction.user.id, limit=getattr(interaction, "filesize_limit", None))
        if export.too_large:
            await interaction.followup.send(render.EXPORT_TOO_LARGE, ephemeral=True)
            return
        await interaction.followup.send(render.EXPORT_READY, file=discord.File(io.BytesIO(export.data), filename=export.name),
                                        ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    bot.add_dynamic_items(ForgetButton)
    await bot.add_cog(PrivacyCog(bot))  # type: ignore[arg-type]


async def teardown(bot: commands.Bot) -> None:
    bot.remove_dynamic_items(ForgetButton)
