"""``/recommend``: a member's personal picks now (ephemeral), and the daily-post subscription.

Discord does not let a command that has subcommands be invoked itself, so the group is
``/recommend now`` (picks, each with its reason, a link to the item and 👍 / 👎 / Not interested
buttons — ``bot.views.PickButton``), ``/recommend subscribe`` and ``/recommend unsubscribe``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import register
from bot.views import PickButton, detached, picks_view, services_of, set_feedback

if TYPE_CHECKING:
    from recsys.service import Pick
    from recsys.store import Item

log = logging.getLogger(__name__)

FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FIELDS_MAX = 25
EMBED_TOTAL_MAX = 6000
PICKS_COLOUR = discord.Colour.blurple()

register({
    "Personal recommendations": "个性化推荐",
    "now": "现在",
    "Show your personal picks now (only you see them)": "现在查看为你挑选的内容（仅你可见）",
    "Get your picks in the daily post": "在每日推送中收到你的推荐",
    "Stop getting your picks in the daily post": "不再在每日推送中收到推荐",
})


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split()) if "\n" not in text else text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def item_link(item: Item) -> str | None:
    """Where a member can see ``item``: a message's jump URL
    (``https://discord.com/channels/<guild>/<channel>/<message>``), else the item's own url
    (a story's message, a catalogue entry's page); None when there is neither."""
    if item.kind == "message" and item.channel_id:
        return f"https://discord.com/channels/{item.guild_id}/{item.channel_id}/{item.id}"
    return item.url or None


def item_title(item: Item, width: int = 80) -> str:
    """The item's title, or the start of its text (one line, ≤ ``width`` characters)."""
    title = (item.title or "").strip() or " ".join(item.text.split())
    return _clip(title or f"item {item.id}", width)


def pick_line(pick: Pick, *, width: int = 300) -> str:
    """One pick as a line of message content: ``**Title** — reason <link>`` (link in angle brackets:
    no preview)."""
    link = item_link(pick.item)
    line = f"**{item_title(pick.item)}** — {_clip(pick.reason, width)}"
    return f"{line} <{link}>" if link else line


def picks_embed(picks: list[Pick], member: discord.abc.User) -> discord.Embed:
    """The picks as one embed within Discord's limits
    (https://discord.com/developers/docs/resources/message#embed-object-embed-limits): one field per
    pick (≤ 25), name ≤ 256 and value ≤ 1024 characters, and all text together ≤ 6,000 characters
    (each field gets an equal share of what the title, author and footer leave); the link is kept
    whole when the reason is cut."""
    embed = discord.Embed(title="Picked for you", colour=PICKS_COLOUR)
    embed.set_author(name=_clip(member.display_name, 256), icon_url=member.display_avatar.url)
    embed.set_footer(text="Buttons below: 👍 more like this · 👎 less like this · 🚫 not interested (rows follow the picks)")
    shown = picks[:FIELDS_MAX]
    left = EMBED_TOTAL_MAX - len(embed)  # len(Embed) counts title, author, footer (and fields)
    share = left // max(1, len(shown))
    for n, pick in enumerate(shown, 1):
        link = item_link(pick.item)
        tail = f"\n[Open]({link})" if link else ""
        if len(tail) > share // 2:  # an enormous url: the title and reason matter more than the link
            tail = ""
        # the title gets at most half of what the link leaves, the reason the rest
        name = _clip(f"{n}. {item_title(pick.item, 200)}", min(FIELD_NAME_MAX, max(16, (share - len(tail)) // 2)))
        room = max(1, min(FIELD_VALUE_MAX, share - len(name)) - len(tail))
        reason = _clip(pick.reason or "Recommended for you", room)
        embed.add_field(name=name, value=reason + tail, inline=False)
    return embed


def _can_view(guild: discord.Guild | None, member: Any, channel_id: int | None) -> bool:
    """Live check with Discord's permissions when the channel is in the cache; True otherwise (the
    recommender has already filtered with the stored permission snapshot)."""
    if guild is None or channel_id is None or not isinstance(member, discord.Member):
        return True
    channel = guild.get_channel_or_thread(channel_id)
    if channel is None:
        return True
    return channel.permissions_for(member).view_channel


class RecommendCog(commands.Cog, name="Recommend"):
    """``/recommend now|subscribe|unsubscribe`` and the feedback buttons under the picks."""

    recommend = app_commands.Group(name="recommend", description="Personal recommendations", guild_only=True)

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @property
    def services(self) -> Any:
        return services_of(self.bot)

    async def _remember_member(self, interaction: discord.Interaction) -> None:
        """Store the member's current roles, so the visibility filter sees what they may view now."""
        user = interaction.user
        store = self.services.store
        if isinstance(user, discord.Member) and not await store.is_opted_out(user.id):
            await store.upsert_member(
                user.guild.id, user.id, user.display_name, role_ids=[r.id for r in user.roles], is_bot=user.bot
            )

    @recommend.command(name="now", description="Show your personal picks now (only you see them)")
    async def now(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        services = self.services
        guild_id = interaction.guild_id
        assert guild_id is not None  # guild_only
        await self._remember_member(interaction)
        picks = await services.recommender.recommend(guild_id, interaction.user.id)
        picks = [p for p in picks if _can_view(interaction.guild, interaction.user, p.item.channel_id)]
        if not picks:
            await interaction.followup.send(
                "I have nothing to recommend yet — talk, react and ask for a /story, and picks will follow!",
                ephemeral=True,
            )
            return
        view = picks_view([p.item.id for p in picks])
        await interaction.followup.send(embed=picks_embed(picks, interaction.user), view=view or discord.utils.MISSING,
                                        ephemeral=True)

    @recommend.command(name="subscribe", description="Get your picks in the daily post")
    async def subscribe(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        store = self.services.store
        if await store.is_opted_out(interaction.user.id):
            await interaction.followup.send(
                "You opted out of recording, so I cannot pick for you. `/privacy optin` turns recording back on.",
                ephemeral=True,
            )
            return
        await self._remember_member(interaction)
        await store.set_subscribed(interaction.guild_id, interaction.user.id, True)
        guild = await store.get_guild(interaction.guild_id) or {}
        digest = self.services.settings.digest
        when = f"{guild.get('digest_time') or digest.default_time} ({guild.get('timezone') or digest.default_timezone})"
        where = f"in <#{guild['digest_channel_id']}>" if guild.get("digest_channel_id") else "by direct message"
        await interaction.followup.send(
            f"✅ Subscribed! Your picks arrive every day at {when} {where}. `/recommend unsubscribe` stops them.",
            ephemeral=True,
        )

    @recommend.command(name="unsubscribe", description="Stop getting your picks in the daily post")
    async def unsubscribe(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.services.store.set_subscribed(interaction.guild_id, interaction.user.id, False)
        await interaction.followup.send("👋 Unsubscribed: no more daily picks for you here.", ephemeral=True)

    # ---- buttons (bot.views.PickButton) ----------------------------------------------------------
    async def on_feedback(self, interaction: discord.Interaction, button: PickButton) -> None:
        """Record 👍 / 👎 / Not interested on a pick (replacing the member's earlier feedback on it) and
        mark the pick's row on the message: the chosen button green, the row disabled."""
        services = self.services
        # acknowledge first (Discord's 3-second deadline), then look the item up
        view = button.view
        if view is not None:
            for child in view.children:
                if isinstance(child, (discord.ui.Button, PickButton)):
                    custom_id = getattr(child, "custom_id", "") or ""
                    if custom_id.endswith(f":{button.item_id}"):
                        target = child.item if isinstance(child, PickButton) else child
                        target.disabled = True
                        if custom_id == button.custom_id:
                            target.style = discord.ButtonStyle.success
            await interaction.response.edit_message(view=detached(view))
        else:
            await interaction.response.defer()
        item = await services.store.get_item(button.item_id)
        if item is None or interaction.guild_id is None or item.guild_id != interaction.guild_id:
            await interaction.followup.send("That item is no longer stored, so your feedback was not kept.", ephemeral=True)
            return
        recorded = await set_feedback(services.store, services.recommender, item, item.guild_id, interaction.user.id,
                                      button.kind)
        if not recorded:
            await interaction.followup.send("You opted out of recording, so this was not kept.", ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    bot.add_dynamic_items(PickButton)
    await bot.add_cog(RecommendCog(bot))


async def teardown(bot: commands.Bot) -> None:
    bot.remove_dynamic_items(PickButton)
