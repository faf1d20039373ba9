"""``/campfire settings`` and ``/campfire status``, for members who may manage the guild
(``default_permissions(manage_guild=True)``: server admins can grant them to other roles in
Server Settings → Integrations)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.events import channel_record
from bot.i18n import register
from bot.render import settings_embed, settings_refused, settings_reply, status_embed
from campfire.features import guilds
from campfire.features.types import ChannelRecord, SettingsRequest

if TYPE_CHECKING:
    from bot.app import CampfireBotMixin

register({
    "Campfire settings and status (server managers)": "篝火的设置与状态（服务器管理员）",
    "Show or change Campfire's settings for this server": "查看或修改本服务器的篝火设置",
    "Generator health, queue and index sizes": "生成器状态、队列与索引大小",
    "digest_channel": "推送频道", "digest_in_dms": "私信推送", "time": "时间", "timezone": "时区",
    "persona": "人设", "nsfw_allowed": "允许成人内容", "learn_from": "学习频道", "ignore": "忽略频道",
    "learn_everywhere": "学习所有频道", "channel_persona": "频道人设", "persona_channel": "人设频道",
    "Channel of the daily post": "每日推送的频道",
    "Send the daily picks by direct message instead of in a channel": "用私信而不是频道发送每日推荐",
    "Local time of the daily post, HH:MM (24-hour)": "每日推送的本地时间，HH:MM（24 小时制）",
    "IANA timezone, e.g. Europe/Paris": "IANA 时区，例如 Asia/Shanghai",
    "How Campfire talks here (up to 1000 characters; 'default' resets it)": "篝火在这里的说话方式（最多 1000 字符；填 default 恢复默认）",
    "May NSFW items be recommended here?": "这里可以推荐成人内容吗？",
    "Add a channel to the ones Campfire learns from (none set = every channel)": "添加一个篝火学习的频道（未设置 = 所有频道）",
    "Add a channel Campfire never learns from": "添加一个篝火从不学习的频道",
    "Clear both channel lists: learn from every channel Campfire can see": "清空两个频道列表：从所有可见频道学习",
    "How Campfire talks in one channel and its threads ('default' = the server's persona)":
        "篝火在某个频道及其子区的说话方式（填 default 使用服务器人设）",
    "The channel for channel_persona (default: this one)": "频道人设所属的频道（默认：当前频道）",
})


class AdminCog(commands.Cog, name="Admin"):
    """Guild settings and health, for members with Manage Server: adapters to
    :mod:`campfire.features.guilds`, rendered by :mod:`bot.render`."""

    campfire = app_commands.Group(
        name="campfire", description="Campfire settings and status (server managers)", guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    def __init__(self, bot: CampfireBotMixin) -> None:
        self.bot = bot
        self.app = bot.app

    @campfire.command(name="settings", description="Show or change Campfire's settings for this server")
    @app_commands.describe(
        digest_channel="Channel of the daily post",
        digest_in_dms="Send the daily picks by direct message instead of in a channel",
        time="Local time of the daily post, HH:MM (24-hour)",
        timezone="IANA timezone, e.g. Europe/Paris",
        persona="How Campfire talks here (up to 1000 characters; 'default' resets it)",
        nsfw_allowed="May NSFW items be recommended here?",
        learn_from="Add a channel to the ones Campfire learns from (none set = every channel)",
        ignore="Add a channel Campfire never learns from",
        learn_everywhere="Clear both channel lists: learn from every channel Campfire can see",
        channel_persona="How Campfire talks in one channel and its threads ('default' = the server's persona)",
        persona_channel="The channel for channel_persona (default: this one)",
    )
    async def settings(
        self,
        interaction: discord.Interaction,
        digest_channel: discord.TextChannel | None = None,
        digest_in_dms: bool | None = None,
        time: str | None = None,
        timezone: str | None = None,
        persona: str | None = None,
        nsfw_allowed: bool | None = None,
        learn_from: discord.TextChannel | None = None,
        ignore: discord.TextChannel | None = None,
        learn_everywhere: bool | None = None,
        channel_persona: str | None = None,
        persona_channel: discord.TextChannel | None = None,
    ) -> None:
        assert interaction.guild_id is not None  # guild_only
        request = SettingsRequest(
            channel_persona=channel_persona, channel=self._persona_channel(interaction, channel_persona, persona_channel),
            digest_channel_id=digest_channel.id if digest_channel else None, digest_in_dms=digest_in_dms,
            time=time, timezone=timezone, persona=persona, nsfw_allowed=nsfw_allowed,
            learn_from=learn_from.id if learn_from else None, ignore=ignore.id if ignore else None,
            learn_everywhere=learn_everywhere,
        )
        try:
            guilds.validate(request)  # a bad value is refused at once and changes nothing
        except ValueError as err:
            await interaction.response.send_message(settings_refused(err), ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        update = await guilds.update_settings(self.app, interaction.guild_id, request, by=interaction.user.id,
                                              guild_name=interaction.guild.name if interaction.guild else "")
        notes: list[str] = []
        me = interaction.guild.me if interaction.guild else None
        if digest_channel is not None and me is not None and not digest_channel.permissions_for(me).send_messages:
            notes.append(f"⚠️ I cannot send messages in {digest_channel.mention} yet: please give me that permission.")
        await interaction.followup.send(settings_reply(update, notes), embed=settings_embed(update.settings), ephemeral=True)

    @staticmethod
    def _persona_channel(interaction: discord.Interaction, persona: str | None,
                         channel: discord.TextChannel | None) -> ChannelRecord | None:
        """The channel a channel persona is for: the one chosen, else where the command was used (a
        thread's parent channel: threads inherit their channel's persona). None when not asked for."""
        if persona is None and channel is None:
            return None
        target: Any = channel or interaction.channel
        if isinstance(target, discord.Thread) and target.parent is not None:
            target = target.parent
        return channel_record(target) if target is not None and getattr(target, "guild", None) else None

    @settings.autocomplete("timezone")
    async def _timezone_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=z, value=z) for z in guilds.suggest_timezones(current)]

    @campfire.command(name="status", description="Generator health, queue and index sizes")
    async def status(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None  # guild_only
        await interaction.response.defer(ephemeral=True, thinking=True)
        status = await guilds.status(self.app, interaction.guild_id)
        await interaction.followup.send(embed=status_embed(status), ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(AdminCog(bot))  # type: ignore[arg-type]
