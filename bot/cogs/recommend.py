"""``/recommend``: a member's personal picks now (ephemeral), and the daily-post subscription.

Discord does not let a command that has subcommands be invoked itself, so the group is
``/recommend now`` (picks, each with its reason, a link to the item and 👍 / 👎 / Not interested
buttons — ``bot.views.PickButton``), ``/recommend subscribe`` and ``/recommend unsubscribe``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.cogs.events import member_record
from bot.i18n import register
from bot.views import PickButton, detached, picks_view
from bot.visibility import ThreadMembers, live_view_check
from campfire.features import picks
from campfire.features.types import Member

if TYPE_CHECKING:
    from campfire.app import App

log = logging.getLogger(__name__)

register({
    "Personal recommendations": "个性化推荐",
    "now": "现在",
    "Show your personal picks now (only you see them)": "现在查看为你挑选的内容（仅你可见）",
    "Get your picks in the daily post": "在每日推送中收到你的推荐",
    "Stop getting your picks in the daily post": "不再在每日推送中收到推荐",
})


def as_member(interaction: discord.Interaction) -> Member:
    """Who clicked or typed: a :class:`MemberRecord` (with roles) for a guild member."""
    user = interaction.user
    if isinstance(user, discord.Member):
        return member_record(user)
    return Member(guild_id=interaction.guild_id or 0, id=user.id, name=user.display_name, is_bot=user.bot)


class RecommendCog(commands.Cog, name="Recommend"):
    """``/recommend now|subscribe|unsubscribe`` and the feedback buttons under the picks
    (:mod:`campfire.features.picks`; rendering in :mod:`bot.render`)."""

    recommend = app_commands.Group(name="recommend", description="Personal recommendations", guild_only=True)

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @property
    def app(self) -> App:
        return self.bot.app  # type: ignore[attr-defined]

    @property
    def threads(self) -> ThreadMembers | None:
        """The private threads' members as the recorder (``bot.cogs.events``) knows them, if it is loaded."""
        return getattr(self.bot.get_cog("Events"), "threads", None)

    @recommend.command(name="now", description="Show your personal picks now (only you see them)")
    async def now(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        user = interaction.user
        found = await picks.now(self.app, as_member(interaction),
                                can_view=live_view_check(interaction.guild, user, self.threads))
        if not found:
            await interaction.followup.send(render.NO_PICKS_TEXT, ephemeral=True)
            return
        view = picks_view([p.item_id for p in found])
        await interaction.followup.send(embed=render.picks_embed(found, user), view=view or discord.utils.MISSING,
                                        ephemeral=True)

    @recommend.command(name="subscribe", description="Get your picks in the daily post")
    async def subscribe(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        guild = await picks.subscribe(self.app, as_member(interaction))
        text = render.SUBSCRIBE_OPTED_OUT_TEXT if guild is None else render.subscribed_text(guild)
        await interaction.followup.send(text, ephemeral=True)

    @recommend.command(name="unsubscribe", description="Stop getting your picks in the daily post")
    async def unsubscribe(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        assert interaction.guild_id is not None  # guild_only
        await picks.unsubscribe(self.app, interaction.guild_id, interaction.user.id)
        await interaction.followup.send(render.UNSUBSCRIBED_TEXT, ephemeral=True)

    # ---- buttons (bot.views.PickButton) ----------------------------------------------------------
    async def on_feedback(self, interaction: discord.Interaction, button: PickButton) -> None:
        """Record 👍 / 👎 / Not interested on a pick (replacing the member's earlier feedback on it) and
        mark the pick's row on the message: the chosen button green, the row disabled."""
        view = button.view  # acknowledge first (Discord's 3-second deadline), then record
        if view is not None:
            mark_choice(view, button)
            await interaction.response.edit_message(view=detached(view))
        else:
            await interaction.response.defer()
        if interaction.guild_id is None:
            outcome = "gone"
        else:
            outcome = await picks.feedback(self.app, interaction.guild_id, interaction.user.id, button.item_id,
                                           button.kind)
        if outcome == "gone":
            await interaction.followup.send(render.FEEDBACK_GONE_TEXT, ephemeral=True)
        elif outcome == "opted_out":
            await interaction.followup.send(render.FEEDBACK_OPTED_OUT_TEXT, ephemeral=True)


def mark_choice(view: discord.ui.View, button: PickButton) -> None:
    """Disable the clicked pick's row of buttons and colour the chosen one green."""
    for child in view.children:
        if isinstance(child, (discord.ui.Button, PickButton)):
            custom_id = getattr(child, "custom_id", "") or ""
            if custom_id.endswith(f":{button.item_id}"):
                target = child.item if isinstance(child, PickButton) else child
                target.disabled = True
                if custom_id == button.custom_id:
                    target.style = discord.ButtonStyle.success


async def setup(bot: commands.Bot) -> None:
    bot.add_dynamic_items(PickButton)
    await bot.add_cog(RecommendCog(bot))


async def teardown(bot: commands.Bot) -> None:
    bot.remove_dynamic_items(PickButton)
