"""A guild's Campfire settings: loading them typed, the one validator, changing them, and status.

The two parsers (:func:`parse_hhmm`, :func:`parse_timezone`) and :func:`zone` are defined in
:mod:`campfire.config` — the leaf module that ``model/`` and ``recsys/`` may import, whose
``[digest]`` validators use them too — and re-exported here, so there is one HH:MM parser and one
timezone check for the config file, ``/campfire settings``, the console and the daily post.
Never imports discord.
"""

from __future__ import annotations

import asyncio
import logging
import zoneinfo
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from campfire.config import parse_hhmm, parse_timezone, zone
from campfire.features.types import GuildSettings, GuildStatus, SettingsRequest, SettingsUpdate

if TYPE_CHECKING:
    from campfire.app import App

__all__ = [
    "HEALTH_TIMEOUT_S", "PERSONA_MAX", "load_settings", "parse_hhmm", "parse_timezone", "status",
    "suggest_timezones", "update_settings", "validate", "zone",
]

log = logging.getLogger(__name__)

PERSONA_MAX = 1000  # characters of a guild persona (it is part of every chat prompt)
HEALTH_TIMEOUT_S = 5.0  # seconds /campfire status waits for the generator's health check
COMMON_ZONES = ("UTC", "Europe/London", "Europe/Paris", "America/New_York", "Asia/Shanghai")
PERSONA_RESETS = ("", "default", "reset")


async def load_settings(app: App, guild_id: int) -> GuildSettings:
    """The guild's settings with the defaults filled in (all defaults for a guild without a row)."""
    return GuildSettings.from_row(await app.store.get_guild(guild_id), app.settings.digest, guild_id)


def _persona(text: str, what: str) -> str | None:
    """A persona as typed, checked: stripped; None for a reset word (:data:`PERSONA_RESETS`)."""
    persona = text.strip()
    if len(persona) > PERSONA_MAX:
        raise ValueError(f"The {what} is {len(persona)} characters long; the limit is {PERSONA_MAX}.")
    return None if persona.lower() in PERSONA_RESETS else persona


def validate(request: SettingsRequest) -> dict[str, Any]:
    """Check everything in ``request`` before anything is saved (a bad value changes nothing).
    Returns the plain changes it implies (``digest_time``, ``timezone``, ``persona``,
    ``digest_channel_id``, ``nsfw_allowed``, and ``channel_persona``: ``(channel id, persona or
    None)``; the channel lists depend on the stored ones and are worked out by
    :func:`update_settings`). Raises ValueError with a sentence an admin can read."""
    changes: dict[str, Any] = {}
    if request.time is not None:
        changes["digest_time"] = parse_hhmm(request.time)
    if request.timezone is not None:
        changes["timezone"] = parse_timezone(request.timezone)
    if request.persona is not None:
        changes["persona"] = _persona(request.persona, "persona")
    if request.channel is not None and request.channel_persona is None:
        raise ValueError("Give the channel persona to set for that channel.")
    if request.channel_persona is not None:
        if request.channel is None:
            raise ValueError("Say which channel the channel persona is for.")
        if request.channel.kind.endswith("thread"):
            raise ValueError("Threads speak with their channel's persona: set it on the channel instead.")
        changes["channel_persona"] = (request.channel.id, _persona(request.channel_persona, "channel persona"))
    if request.digest_channel_id is not None and request.digest_in_dms:
        raise ValueError("Choose either a digest channel or direct messages, not both.")
    if request.learn_from is not None and request.learn_from == request.ignore:
        raise ValueError("A channel cannot be both learned from and ignored.")
    if request.digest_channel_id is not None:
        changes["digest_channel_id"] = request.digest_channel_id
    if request.digest_in_dms:
        changes["digest_channel_id"] = None
    if request.nsfw_allowed is not None:
        changes["nsfw_allowed"] = request.nsfw_allowed
    return changes


def _channel_lists(current: GuildSettings, request: SettingsRequest) -> tuple[list[int], list[int]]:
    """The learn and ignore lists after ``request``: a channel added to one leaves the other."""
    learn, ignored = list(current.learn_channel_ids), list(current.ignore_channel_ids)
    if request.learn_everywhere:
        learn, ignored = [], []
    if request.learn_from is not None:
        learn = sorted(set(learn) | {request.learn_from})
        ignored = [c for c in ignored if c != request.learn_from]
    if request.ignore is not None:
        ignored = sorted(set(ignored) | {request.ignore})
        learn = [c for c in learn if c != request.ignore]
    return learn, ignored


async def update_settings(app: App, guild_id: int, request: SettingsRequest, *, guild_name: str = "",
                          by: int | None = None) -> SettingsUpdate:
    """Apply ``request`` to the guild's settings (creating its row, named ``guild_name``, when
    missing) in one transaction; an empty request only reads them. ``by`` (a member id) is logged.
    A channel persona is stored on the channel (its row created from ``request.channel``, with its
    visibility snapshot, when Campfire has none yet); its threads inherit it
    (:func:`campfire.features.chat.persona`). Returns the settings after the change and the names of
    what changed. Raises ValueError (see :func:`validate`) before anything is written."""
    changes = validate(request)
    channel_persona = changes.pop("channel_persona", None)
    store = app.store
    row = await store.get_guild(guild_id)
    if row is None:
        await store.upsert_guild(guild_id, guild_name)
        row = await store.get_guild(guild_id)
    current = GuildSettings.from_row(row, app.settings.digest, guild_id)
    learn, ignored = _channel_lists(current, request)
    if tuple(learn) != current.learn_channel_ids:
        changes["learn_channel_ids"] = learn
    if tuple(ignored) != current.ignore_channel_ids:
        changes["ignore_channel_ids"] = ignored
    if not changes and channel_persona is None:
        return SettingsUpdate(current)
    async with store.transaction():
        if changes:
            await store.update_guild(guild_id, **changes)
        if channel_persona is not None:
            await _set_channel_persona(app, request, channel_persona[1])
    changed = sorted([*changes, *(["channel_persona"] if channel_persona is not None else [])])
    log.info("guild %s settings changed by %s: %s", guild_id, by, ", ".join(changed))
    after = GuildSettings.from_row({**(row or {}), **changes}, app.settings.digest, guild_id)
    return SettingsUpdate(after, tuple(changed), channel_persona=channel_persona)


async def _set_channel_persona(app: App, request: SettingsRequest, persona: str | None) -> None:
    """Store ``persona`` on ``request.channel`` (creating its row, with its visibility, when missing)."""
    channel = request.channel
    assert channel is not None  # validate() checked it
    if await app.store.get_channel(channel.id) is None:
        await app.store.upsert_channel(channel.id, channel.guild_id, channel.name, channel.kind,
                                       parent_id=channel.parent_id, nsfw=channel.nsfw, visibility=channel.visibility)
    await app.store.set_channel_persona(channel.id, persona)


@lru_cache(maxsize=1)
def _zones() -> tuple[str, ...]:
    return tuple(sorted(zoneinfo.available_timezones()))


def suggest_timezones(typed: str, limit: int = 25) -> list[str]:
    """IANA names containing what was typed (case-insensitive, spaces as underscores), at most
    ``limit`` (Discord's autocomplete shows 25); a few common zones when nothing was typed."""
    needle = typed.strip().lower().replace(" ", "_")
    hits = [z for z in _zones() if needle in z.lower()] if needle else list(COMMON_ZONES)
    return hits[:limit]


async def status(app: App, guild_id: int) -> GuildStatus:
    """Generator health (checked with a :data:`HEALTH_TIMEOUT_S` timeout; a failing check reads as
    unhealthy), its running and waiting requests, which model answers (``index["generator_model"]``,
    :func:`model_label`), the guild's index sizes and its last daily post."""
    generator = app.generator
    healthy: bool | None = None
    if generator is not None:
        try:
            healthy = bool(await asyncio.wait_for(generator.health(), timeout=HEALTH_TIMEOUT_S))
        except Exception as err:  # health must never break /campfire status
            log.warning("generator health check failed: %s", err)
            healthy = False
    settings = await load_settings(app, guild_id)
    return GuildStatus(
        healthy=healthy,
        in_flight=generator.in_flight if generator is not None else 0,
        queue_depth=generator.queue_depth if generator is not None else 0,
        index={**({"generator_model": model_label(generator.model)} if generator is not None else {}),
               **app.recommender.stats(guild_id)},
        last_digest_date=settings.last_digest_date,
    )


def model_label(model: str) -> str:
    """Which model answers, for ``/campfire status``: a local folder's name (``generator.model_path``,
    e.g. a ``campfire model finetune`` output under ``data/models``), else the served model's id;
    ``"(server default)"`` when none is resolved yet."""
    if not model:
        return "(server default)"
    return model.rstrip("/").rsplit("/", 1)[-1] if model.startswith("/") else model

