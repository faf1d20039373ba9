"""``/story``: a short story from the generator, streamed into the interaction's follow-up.

An adapter over :mod:`campfire.features.stories`. Journey: the interaction arrives → the plan is
made (``stories.plan``: the theme checked, microseconds) → the member's cooldown turn is taken
(``stories.Cooldowns``) and the interaction deferred (before any generation) → ``stories.tell``
streams text deltas, which :class:`EmbedStream` shows by editing the follow-up (an embed titled by
the story, crediting the requester; ``bot.render``) at most once per ``chat.edit_interval_s``
seconds → ``stories.tell`` gates the story (a failure is written once more, the embed starting
over) and saves it (the one save: item + ``requested`` interaction, one transaction) → the persistent
👍 / 👎 / Continue / Regenerate row (``bot.views.StoryButton``) is attached. A story that failed the
gate twice is shown with its notice and only a Regenerate button (its plan kept in
``stories.Drafts`` under the message id: nothing was saved). A request in a language the model does
not write (``stories.StoryDeclined``) is answered ephemerally, in the member's language, before any
generation. A button becomes ``stories.rate`` / ``plan_continue`` / ``plan_regenerate`` → ``tell``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.errors import generator_message
from bot.i18n import register
from bot.views import StoryButton, detached, story_view
from campfire.features import stories
from campfire.features.types import Member, SavedStory, StoryPlan
from model.errors import EmptyOutput, GeneratorError

log = logging.getLogger(__name__)

register({
    "Write a short story about a theme": "根据一个主题写一篇短故事",
    "What the story is about (up to 300 characters)": "故事讲什么（最多 300 个字符）",
    "The kind of story": "故事的类型",
    "short ≈ 150 words, medium ≈ 400, long ≈ 800": "短篇约 150 词，中篇约 400，长篇约 800",
    "The story's language (auto: the theme's)": "故事的语言（自动：与主题相同）",
    "any": "不限", "fantasy": "奇幻", "sci-fi": "科幻", "mystery": "悬疑", "horror": "恐怖",
    "romance": "爱情", "adventure": "冒险", "comedy": "喜剧", "fairy tale": "童话",
})


class EmbedStream:
    """Shows streamed text by editing one interaction response, at most once per ``interval_s``
    seconds (Discord rate-limits faster edits), from a background task so the generator's stream is
    never held up by Discord's HTTP round trips."""

    def __init__(self, interaction: discord.Interaction, render: Callable[[str], list[discord.Embed]], interval_s: float):
        self.interaction = interaction
        self.render = render
        self.interval_s = interval_s
        self.text = ""
        self.queue_note = ""
        self.message: discord.InteractionMessage | None = None
        self.edits = 0
        self._dirty = asyncio.Event()
        self._closing = False
        self._last_edit = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self, first: list[discord.Embed]) -> discord.InteractionMessage:
        """Replace the "thinking…" response with ``first`` and start the edit loop; returns the message."""
        self.message = await self.interaction.edit_original_response(content=None, embeds=first)
        self._last_edit = time.monotonic()
        self._task = asyncio.create_task(self._loop(), name="campfire-story-stream")
        return self.message

    def feed(self, delta: str) -> None:
        """Add a streamed text delta (``model.story`` ``on_delta``); shown at the next edit."""
        self.text += delta
        self.queue_note = ""
        self._dirty.set()

    def restart(self) -> None:
        """The story is being written again (it failed the quality gate): show it from its start."""
        self.text = ""
        self.queue_note = render.STORY_RETRY_NOTE
        self._dirty.set()

    def queued(self, position: int) -> None:
        """Show the member's queue position (1 = next; ``GeneratorClient`` ``on_queued``) until text arrives."""
        self.queue_note = f"The storyteller is busy — you are number {position} in the queue."
        self._dirty.set()

    async def _loop(self) -> None:
        while True:
            await self._dirty.wait()
            if self._closing:
                return
            wait = self.interval_s - (time.monotonic() - self._last_edit)
            if wait > 0:
                await asyncio.sleep(wait)
            if self._closing:
                return
            self._dirty.clear()
            try:
                await self.interaction.edit_original_response(content=self.queue_note or None, embeds=self.render(self.text))
                self.edits += 1
            except discord.HTTPException as err:  # a lost edit is fine: the final edit shows everything
                log.warning("story stream edit failed: %s", err)
            self._last_edit = time.monotonic()

    async def stop(self) -> None:
        """Stop editing (an edit in flight completes first); the caller makes the final edit."""
        self._closing = True
        self._dirty.set()
        if self._task is not None:
            await self._task
            self._task = None
        # the final edit must also wait out the interval
        wait = self.interval_s - (time.monotonic() - self._last_edit)
        if wait > 0:
            await asyncio.sleep(wait)


class StoryCog(commands.Cog, name="Story"):
    """``/story`` and the buttons under each story."""

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        self.app = bot.app  # type: ignore[attr-defined]
        self.cooldowns = stories.Cooldowns()
        #: Plans of stories shown but not saved (the quality gate), by message id: their Regenerate.
        self.drafts = stories.Drafts()
        #: Completion budget (tokens) for every story; None = from the requested length
        #: (``model.prompts.story_max_tokens``). Tests and benchmarks lower it to keep CPU runs short.
        self.max_tokens: int | None = None

    async def _start(self, interaction: discord.Interaction) -> bool:
        """Use up the member's cooldown turn (``story.cooldown_s``) and defer ``interaction`` (public
        "thinking…"); when the member must still wait, say how long (ephemeral) and return False."""
        wait = self.cooldowns.take(interaction.user.id, self.app.settings.story.cooldown_s)
        if wait:
            await interaction.response.send_message(render.story_cooldown_text(wait), ephemeral=True)
            return False
        await interaction.response.defer(thinking=True)
        return True

    # ---- /story ----------------------------------------------------------------------------------
    @app_commands.command(name="story", description="Write a short story about a theme")
    @app_commands.guild_only()
    @app_commands.describe(
        theme="What the story is about (up to 300 characters)",
        genre="The kind of story",
        length="short ≈ 150 words, medium ≈ 400, long ≈ 800",
        language="The story's language (auto: the theme's)",
    )
    @app_commands.choices(
        genre=[app_commands.Choice(name=g, value=g) for g in stories.GENRES],
        length=[app_commands.Choice(name=x, value=x) for x in stories.LENGTHS],
        language=[app_commands.Choice(name=name, value=value) for value, name in stories.LANGUAGES.items()],
    )
    async def story(
        self, interaction: discord.Interaction, theme: str, genre: str = "any", length: str = "short",
        language: str = "auto",
    ) -> None:
        try:
            plan = stories.plan(self.app, theme, genre=genre, length=length, language=language)
        except ValueError as err:
            await interaction.response.send_message(f"🙏 {err}", ephemeral=True)
            return
        if await self._start(interaction):
            await self.tell(interaction, plan)

    async def tell(self, interaction: discord.Interaction, plan: StoryPlan) -> SavedStory | None:
        """Tell ``plan``'s story into the deferred ``interaction``'s response (streamed), saved by
        :func:`campfire.features.stories.tell`, with its buttons when it was saved. Returns the
        story, or None after a generator failure (the member is told; their cooldown turn refunded)."""
        user = interaction.user
        stream = EmbedStream(interaction, lambda raw: render.writing_embeds(plan, raw, user), self.app.settings.chat.edit_interval_s)
        message = await stream.start(render.writing_embeds(plan, "", user))
        requester = Member(guild_id=interaction.guild_id or 0, id=user.id, name=user.display_name)
        try:
            story = await stories.tell(
                self.app, plan, requester=requester, channel_id=interaction.channel_id, message_id=message.id,
                url=message.jump_url, nsfw=bool(getattr(interaction.channel, "nsfw", False)),
                on_delta=stream.feed, on_queued=stream.queued, on_retry=stream.restart, max_tokens=self.max_tokens,
            )
        except (GeneratorError, ValueError) as err:
            await stream.stop()
            await self._failed(interaction, err)
            return None
        except BaseException:
            await stream.stop()
            raise
        await stream.stop()
        view = None
        if story.item_id is not None:
            view = story_view(story.item_id)
        elif story.rejected:  # shown, not saved: Regenerate from the plan kept under the message id
            self.drafts.remember(message.id, plan, user.id)
            view = discord.ui.View(timeout=None)
            view = detached(view.add_item(StoryButton("again", message.id)))
        await interaction.edit_original_response(content=story.notice, embeds=render.told_embeds(story, plan, user), view=view)
        log.info("story %s: %d tokens in %.1f s (TTFT %.2f s, %d attempts, finish %s, rejected %s)", story.item_id,
                 story.completion_tokens, story.total_s, story.ttft_s, story.attempts, story.finish_reason,
                 ",".join(story.rejected) or "no")
        return story

    async def _failed(self, interaction: discord.Interaction, err: Exception) -> None:
        """Tell the member a story failed (kindly) and give back their cooldown turn."""
        self.cooldowns.refund(interaction.user.id)
        log.warning("story failed (%s): %s", type(err).__name__, err)
        if isinstance(err, (EmptyOutput, ValueError)):
            text = f"😕 {err}"  # already a sentence for the member
        else:
            text = generator_message(err) or "😕 The storyteller stumbled. Please try again."
        await interaction.edit_original_response(content=text, embeds=[], view=None)

    # ---- buttons (bot.views.StoryButton) ---------------------------------------------------------
    async def on_button(self, interaction: discord.Interaction, action: str, item_id: int) -> None:
        """A click on a story's button (``bot.views.StoryButton``): ``up``/``down`` record a rating
        (acknowledged before any lookup), ``more`` continues the story, ``again`` regenerates it (its
        requester only). Replies are ephemeral except the new story itself."""
        if action in ("up", "down"):
            await interaction.response.send_message(render.RATED_TEXT[action], ephemeral=True)
            outcome = await stories.rate(self.app, item_id, interaction.user.id, action)
            if outcome == "gone":
                await interaction.edit_original_response(content=stories.GONE_TEXT)
            elif outcome == "opted_out":
                await interaction.edit_original_response(content=render.RATING_NOT_KEPT_TEXT)
            return
        try:
            if action == "more":
                plan = await stories.plan_continue(self.app, item_id)
            else:
                plan = await stories.plan_regenerate(self.app, item_id, interaction.user.id, drafts=self.drafts)
        except (stories.StoryRefused, stories.StoryDeclined) as err:
            await interaction.response.send_message(str(err), ephemeral=True)
            return
        if await self._start(interaction):
            await self.tell(interaction, plan)


async def setup(bot: commands.Bot) -> None:
    bot.add_dynamic_items(StoryButton)
    await bot.add_cog(StoryCog(bot))


async def teardown(bot: commands.Bot) -> None:
    bot.remove_dynamic_items(StoryButton)
