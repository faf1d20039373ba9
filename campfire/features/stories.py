"""Stories: plan → tell (write, gate and save) → continue / regenerate → rate; the ONE story save.

Every front end tells a story the same way::

    plan = stories.plan(app, theme, genre=..., length=..., language=...)   # ValueError: bad theme;
                                                                           # StoryDeclined: a language
                                                                           # the model cannot write
    story = await stories.tell(app, plan, requester=member, on_delta=..., on_retry=...)
    # GeneratorError, ValueError; story.rejected / story.notice: shown but not saved

:func:`compose` is the writing half (``campfire story`` uses it alone: nothing saved): the story is
streamed under a loop guard (``model.loops``), then gated (``model.quality.check_story``: no loop,
no U+FFFD, the requested language, long enough, ends on a full sentence). A story that fails is
written once more with stronger penalties (``model.story.Sampling.stronger``; ``on_retry`` lets the
front end clear what it showed); if that fails too it is shown to the member with a ``notice`` but
never saved, so it is never recommended (:class:`Drafts` keeps its plan for a Regenerate button).

A button under a stored story becomes ``plan_continue(app, item_id)`` or
``plan_regenerate(app, item_id, member_id)`` (:class:`StoryRefused` with a sentence a member can
read when it is gone or not theirs), then the same :func:`tell`. :func:`save` is the only place a
story is written: an item of kind ``story`` and its requester's ``requested`` interaction.

:class:`Cooldowns` is the per-member "one story at a time" policy (``story.cooldown_s``); front ends
that serve many members (the bot) keep one and ask it before each generation.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from campfire import ops
from campfire.features.story_policy import (
    Drafts,
    StoryDeclined,
    check_language,
    model_languages,
    rejection_notice,
)
from campfire.features.types import ComposedStory, Member, RateOutcome, SavedStory, StoryPart, StoryPlan
from model.prompts import detect_language
from model.quality import check_story, min_story_units
from model.slots import invoke_callback
from model.story import Sampling, StoryRequest, continue_story, validate_theme, write_story

if TYPE_CHECKING:
    from campfire.app import App
    from campfire.config import Settings
    from model.client import GeneratorClient
    from model.story import StoryResult
    from recsys.store import Item

log = logging.getLogger(__name__)

__all__ = [
    "GENRES", "LENGTHS", "LANGUAGES", "GONE_TEXT", "Cooldowns", "Drafts", "StoryRefused", "StoryDeclined",
    "StoryRequest", "plan", "plan_continue", "plan_regenerate", "compose", "tell", "save", "rate", "get_story",
    "model_languages",
]

#: The genres ``model.prompts`` knows (it has a Chinese name for each).
GENRES = ("any", "fantasy", "sci-fi", "mystery", "horror", "romance", "adventure", "comedy", "fairy tale")
LENGTHS = ("short", "medium", "long")
#: Story languages and how to name them to a member ("auto": the theme's).
LANGUAGES = {"auto": "auto", "en": "English", "zh": "中文"}

GONE_TEXT = "This story is no longer stored (it may have been deleted), so its buttons no longer work."
NOT_REQUESTER_TEXT = "Only the member who asked for this story can regenerate it — try your own /story!"
PARENT_GONE_TEXT = "The part before this one is no longer stored, so this part cannot be regenerated."


class StoryRefused(Exception):
    """A continue / regenerate that cannot be done; ``str()`` is a sentence a member can read."""


class Cooldowns:
    """Per-key "one at a time" turns: :meth:`take` uses a key's turn unless its last one is under
    ``per_s`` seconds old; :meth:`refund` gives it back (a failed generation). Keys are usually
    member ids. Holds at most ~10,000 keys (expired ones are dropped beyond that)."""

    def __init__(self) -> None:
        self._last: dict[Any, float] = {}

    def take(self, key: Any, per_s: float) -> float | None:
        """Seconds ``key`` must still wait (its turn is not used), or None: the turn is taken now.
        ``per_s`` ≤ 0 means no cooldown."""
        if per_s <= 0:
            return None
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < per_s:
            return per_s - (now - last)
        if len(self._last) > 10_000:
            self._last = {k: t for k, t in self._last.items() if now - t < per_s}
        self._last[key] = now
        return None

    def refund(self, key: Any) -> None:
        """Give ``key`` its turn back (the generation it was taken for failed)."""
        self._last.pop(key, None)


# ---- planning --------------------------------------------------------------------------------------
def plan(app: App | Storyteller, theme: str, *, genre: str = "any", length: str = "short", language: str = "auto") -> StoryPlan:
    """A new story's plan. Raises ``ValueError`` with a sentence a member can read for an empty or
    too long theme (``story.max_theme_chars``), or an unknown genre / length / language, and
    :class:`StoryDeclined` (a ``ValueError``; the sentence is in the member's language) when the
    served model does not write the story's language (``generator.languages``)."""
    theme = validate_theme(theme, max_chars=app.settings.story.max_theme_chars)
    if genre not in GENRES:
        raise ValueError(f"Unknown genre {genre!r}; choose one of: {', '.join(GENRES)}.")
    if length not in LENGTHS:
        raise ValueError(f"Unknown length {length!r}; choose short, medium or long.")
    if language not in LANGUAGES:
        raise ValueError(f"Unknown language {language!r}; choose auto, en or zh.")
    request = StoryRequest(theme=theme, genre=genre, length=length, language=language)  # type: ignore[arg-type]
    check_language(app.settings, request)
    return StoryPlan(request)


def _part(item: Item) -> StoryPart:
    meta = item.meta or {}
    return StoryPart(
        item_id=item.id, guild_id=item.guild_id, title=item.title or "", text=item.text, author_id=item.author_id,
        part=int(meta.get("part", 1)), parent_id=item.parent_item_id, theme=meta.get("theme") or item.title or "",
        genre=meta.get("genre", "any"), length=meta.get("length", "short"), language=meta.get("language", "auto"),
        requested_language=meta.get("requested_language", "auto"), message_id=meta.get("message_id"),
    )


async def get_story(app: App, item_id: int) -> StoryPart | None:
    """The stored story ``item_id`` (one primary-key read), or None when there is no such story."""
    item = await app.store.get_item(item_id)
    return _part(item) if item is not None and item.kind == "story" else None


def _request(story: StoryPart, *, continuing: bool) -> StoryRequest:
    # a continuation keeps the language the story came out in; a fresh story asks as the member did
    return StoryRequest(
        theme=story.theme, genre=story.genre, length=story.length,  # type: ignore[arg-type]
        language=story.language if continuing else story.requested_language,  # type: ignore[arg-type]
    )


async def plan_continue(app: App, item_id: int) -> StoryPlan:
    """The next part of story ``item_id`` (anyone may ask). Raises :class:`StoryRefused` when the
    story is no longer stored, :class:`StoryDeclined` when the model does not write its language."""
    story = await get_story(app, item_id)
    if story is None:
        raise StoryRefused(GONE_TEXT)
    return _checked(app, StoryPlan(_request(story, continuing=True), previous=story))


async def plan_regenerate(app: App, item_id: int, member_id: int, *, drafts: Drafts | None = None) -> StoryPlan:
    """Story ``item_id`` told again: the same request; a later part continues its parent again.
    Only its requester may ask. ``item_id`` not stored but kept in ``drafts`` (a story shown but
    not saved by the gate) is told again from its kept plan. Raises :class:`StoryRefused` when the
    story (or, for a later part, the part before it) is gone, or ``member_id`` is not the requester;
    :class:`StoryDeclined` when the model does not write its language."""
    story = await get_story(app, item_id)
    if story is None:
        draft = drafts.get(item_id) if drafts is not None else None
        if draft is None:
            raise StoryRefused(GONE_TEXT)
        if member_id != draft[1]:
            raise StoryRefused(NOT_REQUESTER_TEXT)
        return _checked(app, draft[0])
    if member_id != story.author_id:
        raise StoryRefused(NOT_REQUESTER_TEXT)
    previous = None
    if story.parent_id:
        previous = await get_story(app, story.parent_id)
        if previous is None:
            raise StoryRefused(PARENT_GONE_TEXT)
    return _checked(app, StoryPlan(_request(story, continuing=previous is not None), previous=previous))


def _checked(app: App, plan: StoryPlan) -> StoryPlan:
    check_language(app.settings, plan.request, plan.previous.text if plan.previous else "")
    return plan


# ---- telling and saving ------------------------------------------------------------------------------
class Storyteller(Protocol):
    """What :func:`compose` needs of an :class:`campfire.app.App`: its settings and generator
    (``campfire story`` passes just these: it saves nothing)."""

    settings: Settings
    generator: GeneratorClient | None


Callback = Callable[..., Awaitable[None] | None]


async def _write(app: Storyteller, plan: StoryPlan, *, user: str, sampling: Sampling, **kw: Any) -> StoryResult:
    previous, story = plan.previous, app.settings.story
    if previous is None:
        return await write_story(app.generator, plan.request, story=story, user=user, sampling=sampling, **kw)  # type: ignore[arg-type]
    return await continue_story(app.generator, previous.title, previous.text, plan.request, story=story,  # type: ignore[arg-type]
                                user=user, sampling=sampling, **kw)


async def compose(
    app: App | Storyteller,
    plan: StoryPlan,
    *,
    user: str | None = None,
    on_delta: Callback | None = None,
    on_queued: Callback | None = None,
    on_retry: Callback | None = None,
    max_tokens: int | None = None,
    gate: bool = True,
) -> ComposedStory:
    """Write ``plan``'s story and gate it (see the module docstring); nothing is saved.

    ``on_delta(text)`` gets the raw stream (title line first); ``on_queued(position)`` the queue
    position while waiting; ``on_retry()`` is called before the second attempt (clear what was
    shown: the new text streams from its start). ``user``: the requester's id for the generator.
    ``max_tokens`` overrides the length's budget (the gate's minimum length scales with it).
    ``gate=False``: one attempt, no gate (benchmarks). Raises :class:`StoryDeclined` (the model does
    not write the language), :class:`model.errors.GeneratorUnavailable` when there is no generator,
    the generator's other :class:`model.errors.GeneratorError` subclasses (``EmptyOutput``: str is
    an apology) and ``ValueError`` (a member-readable sentence) for a bad theme."""
    from model.errors import GeneratorUnavailable

    if app.generator is None:
        raise GeneratorUnavailable("The storyteller is not running in this session.")
    previous = plan.previous
    language = check_language(app.settings, plan.request, previous.text if previous else "")
    minimum = min_story_units(plan.request.length, language, max_tokens)
    sampling, t0 = Sampling.of(app.settings.story), time.perf_counter()
    kw: dict[str, Any] = {"on_delta": on_delta, "on_queued": on_queued, "max_tokens": max_tokens}
    for attempt in (1, 2):
        result = await _write(app, plan, user=user, sampling=sampling, **kw)
        report = check_story(result.text, result.language, min_units=minimum, title=result.title)
        if not gate or report.ok or attempt == 2:
            break
        log.info("story failed the gate (%s, %d units, finish %s): writing it once more with stronger penalties",
                 ",".join(report.reasons), report.units, result.finish_reason)
        await invoke_callback(on_retry)
        sampling = sampling.stronger()
    rejected = report.reasons if gate else ()
    if rejected and result.finish_reason == "loop" and "loop" not in rejected:
        rejected = ("loop", *rejected)  # what is left is too short because the model looped: say so
    notice = rejection_notice(rejected, detect_language(plan.request.theme or result.text)) if rejected else None
    return ComposedStory(result=result, attempts=attempt, rejected=rejected, notice=notice,
                         total_s=time.perf_counter() - t0)


async def tell(
    app: App,
    plan: StoryPlan,
    *,
    requester: Member,
    channel_id: int | None = None,
    message_id: int | None = None,
    url: str | None = None,
    nsfw: bool = False,
    source: str | None = None,
    on_delta: Callback | None = None,
    on_queued: Callback | None = None,
    on_retry: Callback | None = None,
    max_tokens: int | None = None,
) -> SavedStory:
    """Write ``plan``'s story (:func:`compose`: streamed to ``on_delta``, the raw text with its
    title line; ``on_queued(position)`` while waiting for the generator; ``on_retry()`` before a
    second attempt) and, when it passed the quality gate, :func:`save` it for ``requester`` (whose
    ``guild_id`` is the story's guild). A story that failed the gate twice comes back unsaved with
    ``rejected`` and ``notice`` set — show it, do not offer it. ``channel_id``, ``message_id`` and
    ``url`` say where it is shown (a Discord message; None in the console); ``max_tokens``
    overrides the length's budget. Raises what :func:`compose` raises."""
    try:
        composed = await compose(app, plan, user=str(requester.id), on_delta=on_delta, on_queued=on_queued,
                                 on_retry=on_retry, max_tokens=max_tokens)
    except Exception as err:
        ops.observe_generation("story", outcome=ops.outcome_of(err))
        raise
    result = composed.result
    ops.observe_generation("story", ttft_s=result.ttft_s, total_s=composed.total_s, completion_tokens=result.completion_tokens)
    if composed.rejected:
        request, previous = plan.request, plan.previous
        return SavedStory(
            item_id=None, saved=False, title=previous.title if previous else result.title, text=result.text,
            part=plan.part, language=result.language, theme=request.theme, genre=request.genre, length=request.length,
            completion_tokens=result.completion_tokens, ttft_s=result.ttft_s, total_s=composed.total_s,
            finish_reason=result.finish_reason, attempts=composed.attempts, rejected=composed.rejected,
            notice=composed.notice,
        )
    story = await save(app, plan, result, requester=requester, channel_id=channel_id, message_id=message_id, url=url,
                       nsfw=nsfw, source=source)
    return dataclasses.replace(story, total_s=composed.total_s, attempts=composed.attempts)


async def save(
    app: App,
    plan: StoryPlan,
    result: StoryResult,
    *,
    requester: Member,
    channel_id: int | None = None,
    message_id: int | None = None,
    url: str | None = None,
    nsfw: bool = False,
    source: str | None = None,
) -> SavedStory:
    """THE story save: an item of kind ``story`` (id ``new_id()``, authored by ``requester``, tagged
    with its genre, ``parent_item_id`` the part it continues; meta theme / genre / length / language /
    requested_language / part / message_id / completion_tokens, plus ``source`` when given) and the
    requester's ``requested`` interaction (text: the theme, or for a continuation the title and the
    start of the new text; ``source_id``: the message), both embedded and indexed by the
    recommender — in ONE transaction (``Recommender.save_item``). Nothing is stored when the
    requester opted out of recording (``saved`` False)."""
    from recsys.store import Item, new_id

    request, previous = plan.request, plan.previous
    title = previous.title if previous else result.title
    now = time.time()
    meta: dict[str, Any] = {
        "theme": request.theme, "genre": request.genre, "length": request.length, "language": result.language,
        "requested_language": request.language, "part": plan.part, "message_id": message_id,
        "completion_tokens": result.completion_tokens,
    }
    if source:
        meta["source"] = source
    item = Item(
        id=new_id(now), guild_id=requester.guild_id, kind="story", text=result.text, created_at=now,
        channel_id=channel_id, author_id=requester.id, title=title, url=url,
        tags=[request.genre] if request.genre != "any" else [], nsfw=nsfw,
        parent_item_id=previous.item_id if previous else None, meta=meta,
    )
    requested = {
        "guild_id": requester.guild_id, "member_id": requester.id, "item_id": item.id, "kind": "requested",
        "text": request.theme if previous is None else f"{title}\n{result.text[:500]}", "source_id": message_id,
        "created_at": now,
    }
    saved = await app.recommender.save_item(item, [requested])  # one SQL transaction
    return SavedStory(
        item_id=item.id if saved else None, saved=saved, title=title, text=result.text, part=plan.part,
        language=result.language, theme=request.theme, genre=request.genre, length=request.length,
        completion_tokens=result.completion_tokens, ttft_s=result.ttft_s, total_s=result.total_s,
        finish_reason=result.finish_reason,
    )


# ---- rating ------------------------------------------------------------------------------------------
async def rate(app: App, item_id: int, member_id: int, choice: str) -> RateOutcome:
    """Member ``member_id``'s 👍 (``choice`` "up") or 👎 ("down") on story ``item_id``, replacing their
    earlier rating of it (store, FAISS and the story's rating move together). Returns "gone" when
    the story is no longer stored, "opted_out" when the member opted out of recording (nothing kept),
    else "rated". Raises ``ValueError`` for another ``choice``."""
    from campfire.features.picks import set_feedback

    if choice not in ("up", "down"):
        raise ValueError(f"unknown rating {choice!r} (up or down)")
    item = await app.store.get_item(item_id)
    if item is None or item.kind != "story":
        return "gone"
    kind = "rated_up" if choice == "up" else "rated_down"
    kept = await set_feedback(app, item, member_id, kind, source_id=(item.meta or {}).get("message_id"))
    return "rated" if kept else "opted_out"
