"""Persistent buttons (discord.py ``DynamicItem``s) whose ``custom_id`` carries the state they need.

A ``DynamicItem`` is rebuilt from the ``custom_id`` of every click, so the buttons of a story posted
yesterday keep working after a restart: nothing lives in memory. Each class is registered with
``bot.add_dynamic_items`` by the cog that owns its behaviour (``setup`` of ``bot.cogs.story``,
``bot.cogs.recommend``, ``bot.cogs.privacy``); the callbacks only parse ids and hand over to that cog.

Custom ids (≤ 100 characters, Discord's limit):

- ``campfire:story:<up|down|more|again>:<item id>``  — 👍 / 👎 / Continue / Regenerate on a story
- ``campfire:rec:<up|down|no>:<item id>``            — 👍 / 👎 / Not interested on a /recommend pick
- ``campfire:forget:<yes|no>:<user id>:<unix s>``    — confirmation of /privacy forget (expires)
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import ui

from bot.errors import report_error

if TYPE_CHECKING:
    from recsys.service import Recommender
    from recsys.store import Item, Store

# Interaction kinds that make up a member's feedback on an item: a later one replaces an earlier one.
FEEDBACK_KINDS = ("rated_up", "rated_down", "dismissed")
# Change of an item's stored rating for each feedback kind (the popularity prior reads it).
_RATING_DELTA = {"rated_up": 1.0, "rated_down": -1.0, "dismissed": 0.0}


def services_of(client: discord.Client) -> Any:
    """The :class:`campfire.services.Services` the bot was built with (``CampfireBot.services``)."""
    return client.services  # type: ignore[attr-defined]


async def set_feedback(
    store: Store, recommender: Recommender, item: Item, guild_id: int, member_id: int, kind: str, *, source_id: int | None = None
) -> bool:
    """Record ``kind`` (one of :data:`FEEDBACK_KINDS`) by a member on ``item``, replacing the member's
    earlier feedback on it (a 👎 after a 👍 leaves only the 👎). Adjusts ``item.rating`` by the change.

    Returns False when nothing was recorded (the member opted out of recording). The earlier rows
    are deleted from the store (``Store.remove_interactions``; their stored vectors go by trigger)
    and from the guild's FAISS interaction index (``Recommender.indexes``, in a worker thread).
    """
    if kind not in FEEDBACK_KINDS:
        raise ValueError(f"unknown feedback kind {kind!r}")
    if await store.is_opted_out(member_id):
        return False
    before = [i for i in await store.interactions(guild_id, member_id) if i.item_id == item.id and i.kind in FEEDBACK_KINDS]
    if len(before) == 1 and before[0].kind == kind:
        return True  # the same rating again: nothing changes
    if before:
        await store.remove_interactions(guild_id, member_id, item_id=item.id, kinds=FEEDBACK_KINDS)
        index = recommender.indexes.get(guild_id, "interaction")
        await asyncio.to_thread(index.remove, [i.id for i in before])
    about = f"{item.title}\n{item.text}" if item.title else item.text
    ids = await recommender.record(
        [{"guild_id": guild_id, "member_id": member_id, "item_id": item.id, "kind": kind, "text": about[:1000],
          "source_id": source_id}]
    )
    delta = _RATING_DELTA[kind] - sum(_RATING_DELTA[i.kind] for i in before)
    if delta:
        await store.add_rating(item.id, delta)
    return bool(ids)


def detached(view: ui.View) -> ui.View:
    """``view`` marked finished before it is sent: its items are all ``DynamicItem``s, dispatched by
    the patterns registered with ``add_dynamic_items``, so discord.py need not track it (it would
    otherwise keep an ephemeral message's view, with a 15-minute timeout task, in its view store)."""
    view.stop()
    return view


# ---- /story -------------------------------------------------------------------------------------
STORY_ACTIONS = {
    "up": ("👍", None, discord.ButtonStyle.secondary),
    "down": ("👎", None, discord.ButtonStyle.secondary),
    "more": ("➡️", "Continue", discord.ButtonStyle.primary),
    "again": ("🔄", "Regenerate", discord.ButtonStyle.secondary),
}


class StoryButton(ui.DynamicItem[ui.Button], template=r"campfire:story:(?P<action>up|down|more|again):(?P<item>\d+)"):
    """One of a story's four buttons; hands the click to the ``Story`` cog."""

    def __init__(self, action: str, item_id: int) -> None:
        emoji, label, style = STORY_ACTIONS[action]
        super().__init__(ui.Button(style=style, emoji=emoji, label=label, custom_id=f"campfire:story:{action}:{item_id}"))
        self.action = action
        self.item_id = item_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Item, match: re.Match[str], /) -> StoryButton:
        return cls(match["action"], int(match["item"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog("Story")  # type: ignore[attr-defined]
        if cog is None:
            await interaction.response.send_message("Stories are switched off right now.", ephemeral=True)
            return
        try:
            await cog.on_button(interaction, self.action, self.item_id)
        except Exception as err:  # the member hears about it (with an error id); it is logged
            await report_error(interaction, err, where=self.custom_id)


def story_view(item_id: int) -> ui.View:
    """The persistent 👍 / 👎 / Continue / Regenerate row of a saved story."""
    view = ui.View(timeout=None)
    for action in STORY_ACTIONS:
        view.add_item(StoryButton(action, item_id))
    return detached(view)


# ---- /recommend ---------------------------------------------------------------------------------
REC_ACTIONS = {
    "up": ("👍", None, "rated_up"),
    "down": ("👎", None, "rated_down"),
    "no": ("🚫", "Not interested", "dismissed"),
}


class PickButton(ui.DynamicItem[ui.Button], template=r"campfire:rec:(?P<action>up|down|no):(?P<item>\d+)"):
    """Feedback on one recommended item; hands the click to the ``Recommend`` cog."""

    def __init__(self, action: str, item_id: int, *, row: int | None = None) -> None:
        emoji, label, _ = REC_ACTIONS[action]
        super().__init__(
            ui.Button(style=discord.ButtonStyle.secondary, emoji=emoji, label=label, custom_id=f"campfire:rec:{action}:{item_id}"),
            row=row,
        )
        self.action = action
        self.item_id = item_id

    @property
    def kind(self) -> str:
        return REC_ACTIONS[self.action][2]

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Item, match: re.Match[str], /) -> PickButton:
        return cls(match["action"], int(match["item"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog("Recommend")  # type: ignore[attr-defined]
        if cog is None:
            await interaction.response.send_message("Recommendations are switched off right now.", ephemeral=True)
            return
        try:
            await cog.on_feedback(interaction, self)
        except Exception as err:  # the member hears about it (with an error id); it is logged
            await report_error(interaction, err, where=self.custom_id)


def picks_view(item_ids: list[int]) -> ui.View | None:
    """👍 / 👎 / Not interested for each pick, one row per pick (Discord allows 5 rows: the first 5 picks)."""
    if not item_ids:
        return None
    view = ui.View(timeout=None)
    for row, item_id in enumerate(item_ids[:5]):
        for action in REC_ACTIONS:
            view.add_item(PickButton(action, item_id, row=row))
    return detached(view)


# ---- /privacy forget ----------------------------------------------------------------------------
class ForgetButton(ui.DynamicItem[ui.Button], template=r"campfire:forget:(?P<answer>yes|no):(?P<user>\d+):(?P<ts>\d+)"):
    """Confirm / cancel of ``/privacy forget``; only the member who asked may press it, and only for
    a few minutes (the time it was offered is in the ``custom_id``)."""

    def __init__(self, answer: str, user_id: int, offered_at: int) -> None:
        button = ui.Button(
            style=discord.ButtonStyle.danger if answer == "yes" else discord.ButtonStyle.secondary,
            label="Yes, delete everything" if answer == "yes" else "Cancel",
            custom_id=f"campfire:forget:{answer}:{user_id}:{offered_at}",
        )
        super().__init__(button)
        self.answer = answer
        self.user_id = user_id
        self.offered_at = offered_at

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: ui.Item, match: re.Match[str], /) -> ForgetButton:
        return cls(match["answer"], int(match["user"]), int(match["ts"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog("Privacy")  # type: ignore[attr-defined]
        if cog is None:
            await interaction.response.send_message("Privacy commands are unavailable right now.", ephemeral=True)
            return
        try:
            await cog.on_forget_answer(interaction, self)
        except Exception as err:  # the member hears about it (with an error id); it is logged
            await report_error(interaction, err, where=self.custom_id)


def forget_view(user_id: int, offered_at: int) -> ui.View:
    view = ui.View(timeout=None)
    view.add_item(ForgetButton("yes", user_id, offered_at))
    view.add_item(ForgetButton("no", user_id, offered_at))
    return detached(view)
