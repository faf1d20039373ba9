"""``/privacy optout|optin|forget|export``: a member's control over what Campfire keeps about them.

- ``optout``: nothing more is recorded about the member, in every guild (the store enforces it).
- ``forget``: after a confirm button (``bot.views.ForgetButton``, valid for
  :data:`CONFIRM_WINDOW_S`), every row and vector about the member is deleted through
  ``Recommender.forget_user``; a member who had opted out stays opted out.
- ``export``: everything stored about the member as a JSON attachment, ephemeral.

All replies are ephemeral; the commands also work in direct messages with the bot.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import time
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import register
from bot.views import ForgetButton, forget_view, services_of

log = logging.getLogger(__name__)

CONFIRM_WINDOW_S = 300  # seconds a /privacy forget confirmation stays valid
DEFAULT_FILE_LIMIT = 8 * 1024 * 1024  # bytes; the interaction's attachment_size_limit when known

register({
    "Your data in Campfire": "你在篝火中的数据",
    "optin": "恢复记录",
    "Stop Campfire recording anything about you": "让篝火不再记录任何关于你的内容",
    "Let Campfire learn from your activity again": "允许篝火重新从你的活动中学习",
    "Delete everything Campfire stored about you": "删除篝火保存的关于你的一切",
    "Download everything Campfire stored about you (JSON)": "下载篝火保存的关于你的一切（JSON）",
})


def export_bytes(data: dict[str, Any], limit: int) -> tuple[bytes, bool]:
    """``data`` as indented UTF-8 JSON, gzip-compressed when longer than ``limit`` bytes (JSON
    compresses about 10×). Returns ``(bytes, gzipped)``; the bytes may still exceed ``limit``.
    Blocking (CPU): call it in a worker thread."""
    raw = json.dumps(data, ensure_ascii=False, indent=2, default=str).encode("utf-8")
    if len(raw) > limit:
        return gzip.compress(raw), True
    return raw, False


class PrivacyCog(commands.Cog, name="Privacy"):
    """What a member may do about their data."""

    privacy = app_commands.Group(name="privacy", description="Your data in Campfire")

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @property
    def services(self) -> Any:
        return services_of(self.bot)

    @privacy.command(name="optout", description="Stop Campfire recording anything about you")
    async def optout(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.services.store.set_opted_out(interaction.user.id, True)
        log.info("member %s opted out", interaction.user.id)
        await interaction.followup.send(
            "🔕 Done: from now on Campfire records nothing about you, in any server, and you get no daily picks.\n"
            "What was stored before is still there: `/privacy forget` deletes it, `/privacy export` shows it. "
            "`/privacy optin` turns recording back on.",
            ephemeral=True,
        )

    @privacy.command(name="optin", description="Let Campfire learn from your activity again")
    async def optin(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.services.store.set_opted_out(interaction.user.id, False)
        await interaction.followup.send(
            "🔔 Recording is back on: your messages, reactions and stories shape your picks again.", ephemeral=True
        )

    @privacy.command(name="forget", description="Delete everything Campfire stored about you")
    async def forget(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            "⚠️ This deletes **everything** Campfire stored about you, in every server: your messages it learned "
            "from, your reactions, ratings and requested stories, the picks sent to you, and their embeddings. "
            "It cannot be undone. Delete it all?",
            view=forget_view(interaction.user.id, int(time.time())),
            ephemeral=True,
        )

    async def on_forget_answer(self, interaction: discord.Interaction, button: ForgetButton) -> None:
        """The member pressed Yes or Cancel under ``/privacy forget``."""
        if interaction.user.id != button.user_id:
            await interaction.response.send_message("Only the member who asked can answer this.", ephemeral=True)
            return
        if button.answer == "no":
            await interaction.response.edit_message(content="Cancelled: nothing was deleted.", view=None)
            return
        if time.time() - button.offered_at > CONFIRM_WINDOW_S:
            await interaction.response.edit_message(
                content="This confirmation has expired: run `/privacy forget` again.", view=None
            )
            return
        await interaction.response.edit_message(content="🧹 Deleting…", view=None)
        services = self.services
        user_id = interaction.user.id
        was_opted_out = await services.store.is_opted_out(user_id)
        counts = await services.recommender.forget_user(user_id)
        if was_opted_out:  # deleting the member rows must not switch recording back on
            await services.store.set_opted_out(user_id, True)
        log.info("member %s forgotten: %s", user_id, counts)
        done = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in counts.items() if n) or "nothing was stored"
        more = "" if was_opted_out else " New activity will be recorded again unless you `/privacy optout`."
        await interaction.edit_original_response(content=f"✅ Deleted ({done}).{more}")

    @privacy.command(name="export", description="Download everything Campfire stored about you (JSON)")
    async def export(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        data = await self.services.recommender.export_user(interaction.user.id)
        limit = getattr(interaction, "filesize_limit", None) or DEFAULT_FILE_LIMIT
        # a long history is megabytes of JSON: encode (and compress) it in a worker thread
        raw, gzipped = await asyncio.to_thread(export_bytes, data, limit)
        name = f"campfire-export-{interaction.user.id}.json" + (".gz" if gzipped else "")
        if len(raw) > limit:
            await interaction.followup.send(
                "Your data is larger than the attachment limit here. Please ask the server's admins for help — "
                "nothing was changed.", ephemeral=True,
            )
            return
        await interaction.followup.send(
            "📦 Everything Campfire stores about you:", file=discord.File(io.BytesIO(raw), filename=name), ephemeral=True
        )


async def setup(bot: commands.Bot) -> None:
    bot.add_dynamic_items(ForgetButton)
    await bot.add_cog(PrivacyCog(bot))


async def teardown(bot: commands.Bot) -> None:
    bot.remove_dynamic_items(ForgetButton)
