"""``/campfire settings`` and ``/campfire status``, for members who may manage the guild
(``default_permissions(manage_guild=True)``: server admins can grant them to other roles in
Server Settings → Integrations)."""

from __future__ import annotations

import asyncio
import logging
import re
import zoneinfo
from functools import lru_cache
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import register
from bot.views import services_of

log = logging.getLogger(__name__)

PERSONA_MAX = 1000  # characters of a guild persona (it is part of every chat prompt)
_HHMM = re.compile(r"^\s*(\d{1,2})[:h.](\d{2})\s*$")
ADMIN_COLOUR = discord.Colour.dark_teal()

register({
    "Campfire settings and status (server managers)": "篝火的设置与状态（服务器管理员）",
    "Show or change Campfire's settings for this server": "查看或修改本服务器的篝火设置",
    "Generator health, queue and index sizes": "生成器状态、队列与索引大小",
    "digest_channel": "推送频道", "digest_in_dms": "私信推送", "time": "时间", "timezone": "时区",
    "persona": "人设", "nsfw_allowed": "允许成人内容", "learn_from": "学习频道", "ignore": "忽略频道",
    "learn_everywhere": "学习所有频道",
    "Channel of the daily post": "每日推送的频道",
    "Send the daily picks by direct message instead of in a channel": "用私信而不是频道发送每日推荐",
    "Local time of the daily post, HH:MM (24-hour)": "每日推送的本地时间，HH:MM（24 小时制）",
    "IANA timezone, e.g. Europe/Paris": "IANA 时区，例如 Asia/Shanghai",
    "How Campfire talks here (up to 1000 characters; 'default' resets it)": "篝火在这里的说话方式（最多 1000 字符；填 default 恢复默认）",
    "May NSFW items be recommended here?": "这里可以推荐成人内容吗？",
    "Add a channel to the ones Campfire learns from (none set = every channel)": "添加一个篝火学习的频道（未设置 = 所有频道）",
    "Add a channel Campfire never learns from": "添加一个篝火从不学习的频道",
    "Clear both channel lists: learn from every channel Campfire can see": "清空两个频道列表：从所有可见频道学习",
})


def parse_hhmm(text: str) -> str:
    """``"7:05"`` → ``"07:05"``; raises ValueError with a sentence an admin can read."""
    m = _HHMM.match(text)
    if not m or not (0 <= int(m[1]) < 24 and 0 <= int(m[2]) < 60):
        raise ValueError(f"“{text}” is not a time of day: use HH:MM on a 24-hour clock, e.g. 18:00.")
    return f"{int(m[1]):02d}:{int(m[2]):02d}"


def parse_timezone(name: str) -> str:
    """An IANA timezone name checked with ``zoneinfo`` (``Europe/Paris``); raises ValueError otherwise."""
    name = name.strip()
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"“{name}” is not an IANA timezone: use a name such as Europe/Paris, Asia/Shanghai or UTC.") from None
    return name


@lru_cache(maxsize=1)
def _zones() -> tuple[str, ...]:
    return tuple(sorted(zoneinfo.available_timezones()))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _channels(ids: list[int]) -> str:
    return ", ".join(f"<#{i}>" for i in ids) if ids else "—"


def settings_embed(guild: dict[str, Any], defaults: Any) -> discord.Embed:
    """The guild's settings as an embed (field values ≤ 1024 characters)."""
    embed = discord.Embed(title="Campfire settings", colour=ADMIN_COLOUR)
    digest = f"<#{guild['digest_channel_id']}>" if guild.get("digest_channel_id") else "direct messages"
    embed.add_field(name="Daily post", value=f"{digest} at {guild.get('digest_time') or defaults.digest.default_time} "
                    f"({guild.get('timezone') or defaults.digest.default_timezone})", inline=False)
    embed.add_field(name="Persona", value=_clip(guild.get("persona") or "(default)", 1024), inline=False)
    embed.add_field(name="NSFW allowed", value="yes" if guild.get("nsfw_allowed") else "no")
    learn = guild.get("learn_channel_ids") or []
    embed.add_field(name="Learns from", value=_clip(_channels(learn) if learn else "every channel it can see", 1024))
    embed.add_field(name="Ignores", value=_clip(_channels(guild.get("ignore_channel_ids") or []), 1024))
    return embed


class AdminCog(commands.Cog, name="Admin"):
    """Guild settings and health, for members with Manage Server."""

    campfire = app_commands.Group(
        name="campfire", description="Campfire settings and status (server managers)", guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @property
    def services(self) -> Any:
        return services_of(self.bot)

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
    ) -> None:
        guild_id = interaction.guild_id
        assert guild_id is not None  # guild_only
        # validate everything first: a bad value changes nothing
        changes: dict[str, Any] = {}
        try:
            if time is not None:
                changes["digest_time"] = parse_hhmm(time)
            if timezone is not None:
                changes["timezone"] = parse_timezone(timezone)
            if persona is not None:
                persona = persona.strip()
                if len(persona) > PERSONA_MAX:
                    raise ValueError(f"The persona is {len(persona)} characters long; the limit is {PERSONA_MAX}.")
                changes["persona"] = None if persona.lower() in ("", "default", "reset") else persona
            if digest_channel is not None and digest_in_dms:
                raise ValueError("Choose either a digest channel or direct messages, not both.")
            if learn_from is not None and ignore is not None and learn_from.id == ignore.id:
                raise ValueError("A channel cannot be both learned from and ignored.")
        except ValueError as err:
            await interaction.response.send_message(f"🙏 {err} Nothing was changed.", ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        store = self.services.store
        guild = await store.get_guild(guild_id)
        if guild is None:
            await store.upsert_guild(guild_id, interaction.guild.name if interaction.guild else "")
            guild = await store.get_guild(guild_id)
        notes: list[str] = []
        if digest_channel is not None:
            changes["digest_channel_id"] = digest_channel.id
            me = interaction.guild.me if interaction.guild else None
            if me is not None and not digest_channel.permissions_for(me).send_messages:
                notes.append(f"⚠️ I cannot send messages in {digest_channel.mention} yet: please give me that permission.")
        if digest_in_dms:
            changes["digest_channel_id"] = None
        if nsfw_allowed is not None:
            changes["nsfw_allowed"] = nsfw_allowed
        learn = list(guild["learn_channel_ids"])
        ignored = list(guild["ignore_channel_ids"])
        if learn_everywhere:
            learn, ignored = [], []
        if learn_from is not None:
            learn = sorted(set(learn) | {learn_from.id})
            ignored = [c for c in ignored if c != learn_from.id]
        if ignore is not None:
            ignored = sorted(set(ignored) | {ignore.id})
            learn = [c for c in learn if c != ignore.id]
        if learn != guild["learn_channel_ids"]:
            changes["learn_channel_ids"] = learn
        if ignored != guild["ignore_channel_ids"]:
            changes["ignore_channel_ids"] = ignored
        if changes:
            async with store.transaction():
                await store.update_guild(guild_id, **changes)
            log.info("guild %s settings changed by %s: %s", guild_id, interaction.user.id, ", ".join(sorted(changes)))
        guild = await store.get_guild(guild_id)
        header = "✅ Saved." if changes else "Current settings (pass options to change them):"
        await interaction.followup.send("\n".join([header, *notes]), embed=settings_embed(guild, self.services.settings),
                                        ephemeral=True)

    @settings.autocomplete("timezone")
    async def _timezone_autocomplete(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        needle = current.strip().lower().replace(" ", "_")
        hits = [z for z in _zones() if needle in z.lower()] if needle else ["UTC", "Europe/London", "Europe/Paris",
                                                                            "America/New_York", "Asia/Shanghai"]
        return [app_commands.Choice(name=z, value=z) for z in hits[:25]]

    @campfire.command(name="status", description="Generator health, queue and index sizes")
    async def status(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        services = self.services
        embed = discord.Embed(title="Campfire status", colour=ADMIN_COLOUR)
        generator = services.generator
        if generator is None:
            embed.add_field(name="Generator", value="not connected", inline=False)
        else:
            try:
                healthy = await asyncio.wait_for(generator.health(), timeout=5.0)
            except Exception as err:  # health must never break /campfire status
                log.warning("generator health check failed: %s", err)
                healthy = False
            embed.add_field(name="Generator", value="🟢 healthy" if healthy else "🔴 unavailable")
            embed.add_field(name="Generating now", value=str(generator.in_flight))
            embed.add_field(name="Waiting in queue", value=str(generator.queue_depth))
        stats = services.recommender.stats(interaction.guild_id)
        for key, value in list(stats.items())[:20]:
            embed.add_field(name=_clip(str(key).replace("_", " "), 256), value=_clip(str(value), 1024))
        guild = await services.store.get_guild(interaction.guild_id) or {}
        embed.set_footer(text=f"Last daily post: {guild.get('last_digest_date') or 'never'}")
        await interaction.followup.send(embed=embed, ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(AdminCog(bot))
