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

import re
from typing import Any

import discord
from discord import ui

from bot.errors import report_error


async def hand_over(interaction: discord.Interaction, cog_name: str, method: str, *args: Any, where: str, off: str) -> None:
    """Call ``cog_name``'s ``method(interaction, *args)`` for a button click. When the cog is not
    loaded the member reads ``off`` (ephemeral); an exception is logged and the member told kindly,
    with an error id (:func:`bot.errors.report_error`; ``where`` names the button in the log)."""
    cog = interaction.client.get_cog(cog_name)  # type: ignore[attr-defined]
    if cog is None:
        await interaction.response.send_message(off, ephemeral=True)
        return
    try:
        await getattr(cog, method)(interaction, *args)
    except Exception as err:  # the member hears about it (with an error id); it is logged
        await report_error(interaction, err, where=where)


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
        await hand_over(interaction, "Story", "on_button", self.action, self.item_id,
                        where=self.custom_id, off="Stories are switched off right now.")


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
        await hand_over(interaction, "Recommend", "on_feedback", self,
                        where=self.custom_id, off="Recommendations are switched off right now.")


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
        await hand_over(interaction, "Privacy", "on_forget_answer", self,
                        where=self.custom_id, off="Privacy commands are unavailable right now.")


def forget_view(user_id: int, offered_at: int) -> ui.View:
    """Yes / Cancel under ``/privacy forget`` for member ``user_id``, offered at ``offered_at`` (UNIX s)."""
    view = ui.View(timeout=None)
    view.add_item(ForgetButton("yes", user_id, offered_at))
    view.add_item(ForgetButton("no", user_id, offered_at))
    return detached(view)
