"""``/story``: a short story from the generator, streamed into the interaction's follow-up.

Journey: the interaction arrives → the theme is checked (a pure function, microseconds) → the
interaction is deferred (before any generation) → ``model.story.write_story`` streams text deltas →
the follow-up (an embed titled by the story, crediting the requester) is edited at most once per
``chat.edit_interval_s`` seconds → the story is saved as an item (kind ``story``, id from
``recsys.store.new_id``) and a ``requested`` interaction recorded, both through the ``Recommender``
→ the persistent 👍 / 👎 / Continue / Regenerate row (``bot.views.StoryButton``) is attached.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import generator_message
from bot.i18n import register
from bot.messages import sanitise, split_message
from bot.views import StoryButton, services_of, set_feedback, story_view
from model.errors import EmptyOutput, GeneratorError
from model.story import StoryRequest, continue_story, split_title, validate_theme, write_story
from recsys.store import Item, new_id

if TYPE_CHECKING:
    from model.story import StoryResult

log = logging.getLogger(__name__)

# the genres model.prompts knows (it has a Chinese name for each)
GENRES = ["any", "fantasy", "sci-fi", "mystery", "horror", "romance", "adventure", "comedy", "fairy tale"]
LENGTHS = ["short", "medium", "long"]
LANGUAGES = {"auto": "auto", "en": "English", "zh": "中文"}

register({
    "Write a short story about a theme": "根据一个主题写一篇短故事",
    "What the story is about (up to 300 characters)": "故事讲什么（最多 300 个字符）",
    "The kind of story": "故事的类型",
    "short ≈ 150 words, medium ≈ 400, long ≈ 800": "短篇约 150 词，中篇约 400，长篇约 800",
    "The story's language (auto: the theme's)": "故事的语言（自动：与主题相同）",
    "any": "不限", "fantasy": "奇幻", "sci-fi": "科幻", "mystery": "悬疑", "horror": "恐怖",
    "romance": "爱情", "adventure": "冒险", "comedy": "喜剧", "fairy tale": "童话",
})

# Discord's limits (https://discord.com/developers/docs/resources/message#embed-object-embed-limits).
EMBED_TITLE_MAX = 256
EMBED_DESCRIPTION_MAX = 4096
EMBED_FOOTER_MAX = 2048
EMBED_AUTHOR_MAX = 256
EMBEDS_TOTAL_MAX = 6000
STORY_COLOUR = discord.Colour.orange()
GONE_TEXT = "This story is no longer stored (it may have been deleted), so its buttons no longer work."


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def story_embeds(
    title: str, text: str, requester: discord.abc.User, *, footer: str = "", writing: bool = False
) -> list[discord.Embed]:
    """The story as embeds within Discord's limits: the first titled by the story and crediting the
    requester, the text split over as many descriptions (≤ 4096 characters each) as the 6,000-character
    total of one message allows; text beyond that is cut with "…" (the stored item keeps all of it)."""
    title = _clip(title.strip() or "Untitled", EMBED_TITLE_MAX)
    author = _clip(f"Requested by {requester.display_name}", EMBED_AUTHOR_MAX)
    footer = _clip(footer, EMBED_FOOTER_MAX)
    budget = EMBEDS_TOTAL_MAX - len(title) - len(author) - len(footer) - 40  # room for split_message's joins
    body = sanitise(text).strip() or ("✍️ …" if writing else "(the story came out empty)")
    if writing:
        # while streaming, show the newest text: the tail that fits in one description
        body = body if len(body) <= EMBED_DESCRIPTION_MAX else "…" + body[-(EMBED_DESCRIPTION_MAX - 1):]
        parts = [body]
    else:
        body = _clip(body, budget)
        parts = split_message(body, EMBED_DESCRIPTION_MAX)[:10]
    embeds = []
    for n, part in enumerate(parts):
        embed = discord.Embed(description=part, colour=STORY_COLOUR)
        if n == 0:
            embed.title = ("✍️ " + title)[:EMBED_TITLE_MAX] if writing else title
            embed.set_author(name=author, icon_url=requester.display_avatar.url)
        embeds.append(embed)
    if footer:
        embeds[-1].set_footer(text=footer)
    return embeds


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
        self._cooldowns: dict[int, app_commands.Cooldown] = {}
        #: Completion budget (tokens) for every story; None = from the requested length
        #: (``model.prompts.story_max_tokens``). Tests and benchmarks lower it to keep CPU runs short.
        self.max_tokens: int | None = None

    # ---- helpers ---------------------------------------------------------------------------------
    @property
    def services(self) -> Any:
        return services_of(self.bot)

    def retry_after(self, member_id: int) -> float | None:
        """Seconds the member must still wait before another generation (``story.cooldown_s``), or
        None — in which case this call uses up the member's turn (discord.py's ``Cooldown`` bucket)."""
        per = self.services.settings.story.cooldown_s
        if per <= 0:
            return None
        bucket = self._cooldowns.get(member_id)
        if bucket is None or bucket.per != per:
            if len(self._cooldowns) > 10_000:  # forget buckets whose window has passed
                now = time.time()
                self._cooldowns = {k: b for k, b in self._cooldowns.items() if now - b._window < b.per}
            bucket = self._cooldowns[member_id] = app_commands.Cooldown(1, per)
        return bucket.update_rate_limit()

    def _refund(self, member_id: int) -> None:
        bucket = self._cooldowns.get(member_id)
        if bucket is not None:
            bucket.reset()

    async def _start(self, interaction: discord.Interaction) -> bool:
        """Use up the member's cooldown turn and defer ``interaction`` (public "thinking…"); when the
        member must still wait, say how long (ephemeral) and return False."""
        wait = self.retry_after(interaction.user.id)
        if wait:
            await interaction.response.send_message(
                f"⏳ One story at a time! You can ask for another in {math.ceil(wait)} s.", ephemeral=True
            )
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
        genre=[app_commands.Choice(name=g, value=g) for g in GENRES],
        length=[app_commands.Choice(name=x, value=x) for x in LENGTHS],
        language=[app_commands.Choice(name=name, value=value) for value, name in LANGUAGES.items()],
    )
    async def story(
        self, interaction: discord.Interaction, theme: str, genre: str = "any", length: str = "short",
        language: str = "auto",
    ) -> None:
        try:
            theme = validate_theme(theme, max_chars=self.services.settings.story.max_theme_chars)
        except ValueError as err:
            await interaction.response.send_message(f"🙏 {err}", ephemeral=True)
            return
        if not await self._start(interaction):
            return
        request = StoryRequest(theme=theme, genre=genre, length=length, language=language)  # type: ignore[arg-type]
        await self.tell(interaction, request)

    async def tell(self, interaction: discord.Interaction, request: StoryRequest, *, previous: Item | None = None) -> Item | None:
        """Write (or, with ``previous``, continue) a story into the deferred ``interaction``'s response,
        save it and attach its buttons. Returns the saved item, or None when nothing was saved
        (generator trouble, or a requester who opted out of recording)."""
        services = self.services
        settings = services.settings
        user = interaction.user
        part = int(previous.meta.get("part", 1)) + 1 if previous else 1
        base_title = previous.title if previous else ""
        heading = f"{base_title} (part {part})" if previous else request.theme
        footer = f"{request.genre} · {request.length} · theme: {request.theme}"

        def render(raw: str) -> list[discord.Embed]:
            # the model writes a title line first: once the line is complete, a new story shows it as
            # the title; a continuation keeps the story's title (its part's own title is dropped)
            title, body = split_title(raw, heading) if "\n" in raw else (heading, raw)
            return story_embeds(title if previous is None else heading, body, user, footer=footer, writing=True)

        stream = EmbedStream(interaction, render, settings.chat.edit_interval_s)
        message = await stream.start(story_embeds(heading, "", user, footer=footer, writing=True))
        try:
            if previous is None:
                result: StoryResult = await write_story(
                    services.generator, request, story=settings.story, user=str(user.id),
                    on_delta=stream.feed, on_queued=stream.queued, max_tokens=self.max_tokens,
                )
            else:
                result = await continue_story(
                    services.generator, previous.title, previous.text, request, story=settings.story,
                    user=str(user.id), on_delta=stream.feed, on_queued=stream.queued, max_tokens=self.max_tokens,
                )
        except (GeneratorError, ValueError) as err:
            await stream.stop()
            self._refund(user.id)
            log.warning("story failed (%s): %s", type(err).__name__, err)
            if isinstance(err, (EmptyOutput, ValueError)):
                text = f"😕 {err}"  # already a sentence for the member
            else:
                text = generator_message(err) or "😕 The storyteller stumbled. Please try again."
            await interaction.edit_original_response(content=text, embeds=[], view=None)
            return None
        except BaseException:
            await stream.stop()
            raise
        await stream.stop()

        title = result.title if previous is None else base_title
        shown_title = title if previous is None else f"{title} (part {part})"
        item = Item(
            id=new_id(), guild_id=interaction.guild_id, kind="story", text=result.text, created_at=time.time(),  # type: ignore[arg-type]
            channel_id=interaction.channel_id, author_id=user.id, title=title, url=message.jump_url,
            tags=[request.genre] if request.genre != "any" else [],
            nsfw=bool(getattr(interaction.channel, "nsfw", False)),
            parent_item_id=previous.id if previous else None,
            meta={"theme": request.theme, "genre": request.genre, "length": request.length,
                  "language": result.language, "requested_language": request.language, "part": part,
                  "message_id": message.id, "completion_tokens": result.completion_tokens},
        )
        saved = await services.recommender.add_items([item]) > 0
        if saved:
            await services.recommender.record([{
                "guild_id": item.guild_id, "member_id": user.id, "item_id": item.id, "kind": "requested",
                "text": request.theme if previous is None else f"{title}\n{result.text[:500]}", "source_id": message.id,
            }])
        else:
            footer += " · not saved (you opted out of recording)"
        await interaction.edit_original_response(
            content=None, embeds=story_embeds(shown_title, result.text, user, footer=footer),
            view=story_view(item.id) if saved else None,
        )
        log.info("story %s: %d tokens in %.1f s (TTFT %.2f s)", item.id, result.completion_tokens, result.total_s, result.ttft_s)
        return item if saved else None

    # ---- buttons (bot.views.StoryButton) ---------------------------------------------------------
    async def on_button(self, interaction: discord.Interaction, action: str, item_id: int) -> None:
        """A click on a story's button (``bot.views.StoryButton``): ``up``/``down`` record a rating
        (acknowledged before any lookup), ``more`` continues the story, ``again`` regenerates it (its
        requester only). Replies are ephemeral except the new story itself."""
        services = self.services
        if action in ("up", "down"):
            kind = "rated_up" if action == "up" else "rated_down"
            await interaction.response.send_message("Thanks! 👍 noted." if action == "up" else "Thanks — 👎 noted.", ephemeral=True)
            item = await services.store.get_item(item_id)
            if item is None or item.kind != "story":
                await interaction.edit_original_response(content=GONE_TEXT)
            elif not await set_feedback(services.store, services.recommender, item, item.guild_id, interaction.user.id, kind,
                                        source_id=item.meta.get("message_id")):
                await interaction.edit_original_response(content="You opted out of recording, so your rating was not kept.")
            return
        item = await services.store.get_item(item_id)  # one primary-key read, before choosing how to answer
        if item is None or item.kind != "story":
            await interaction.response.send_message(GONE_TEXT, ephemeral=True)
            return
        if action == "again" and interaction.user.id != item.author_id:
            await interaction.response.send_message(
                "Only the member who asked for this story can regenerate it — try your own /story!", ephemeral=True
            )
            return
        previous = item if action == "more" else None
        if action == "again" and item.parent_item_id:  # regenerate a later part: continue its parent again
            previous = await services.store.get_item(item.parent_item_id)
            if previous is None:
                await interaction.response.send_message(
                    "The part before this one is no longer stored, so this part cannot be regenerated.", ephemeral=True
                )
                return
        if not await self._start(interaction):
            return
        meta = item.meta
        request = StoryRequest(
            theme=meta.get("theme") or item.title, genre=meta.get("genre", "any"), length=meta.get("length", "short"),
            # a continuation keeps the language the story came out in; a fresh story asks as the member did
            language=meta.get("language", "auto") if previous else meta.get("requested_language", "auto"),
        )
        await self.tell(interaction, request, previous=previous)


async def setup(bot: commands.Bot) -> None:
    bot.add_dynamic_items(StoryButton)
    await bot.add_cog(StoryCog(bot))


async def teardown(bot: commands.Bot) -> None:
    bot.remove_dynamic_items(StoryButton)
