"""What front ends see: the typed values the features take and return (no Discord, no SQL rows).
Defaults for guild settings are declared once, here (:meth:`GuildSettings.from_row`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from campfire.config import DigestSettings

if TYPE_CHECKING:
    from model.story import StoryRequest, StoryResult


@dataclass(frozen=True)
class Member:
    """A member of a guild as Campfire knows them. ``name`` is the display name ('' when unknown)."""

    guild_id: int
    id: int
    name: str = ""
    is_bot: bool = False
    opted_out: bool = False
    subscribed: bool = False

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Member:
        """From a ``Store`` member row (``user_id``, ``display_name``, ``is_bot``, ``opted_out``, ``subscribed``)."""
        return cls(
            guild_id=int(row["guild_id"]), id=int(row["user_id"]), name=row.get("display_name") or "",
            is_bot=bool(row.get("is_bot")), opted_out=bool(row.get("opted_out")), subscribed=bool(row.get("subscribed")),
        )


@dataclass(frozen=True)
class GuildSettings:
    """A guild's Campfire settings, with the defaults filled in.

    ``digest_time`` is HH:MM guild-local time, ``timezone`` an IANA name (both from
    ``settings.digest`` when the guild set none; ``own_time`` / ``own_timezone`` say whether it did).
    ``digest_channel_id`` None means the daily picks go by DM. Empty ``learn_channel_ids`` means
    every visible channel. ``last_digest_date`` is the guild-local YYYY-MM-DD of the last daily post.
    """

    id: int
    name: str = ""
    digest_channel_id: int | None = None
    digest_time: str = DigestSettings().default_time
    timezone: str = DigestSettings().default_timezone
    own_time: bool = False
    own_timezone: bool = False
    persona: str | None = None
    nsfw_allowed: bool = False
    learn_channel_ids: tuple[int, ...] = ()
    ignore_channel_ids: tuple[int, ...] = ()
    last_digest_date: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any] | None, defaults: DigestSettings, guild_id: int = 0) -> GuildSettings:
        """From a ``Store.get_guild`` row (None: a guild Campfire has no row for, all defaults)."""
        if row is None:
            return cls(id=guild_id, digest_time=defaults.default_time, timezone=defaults.default_timezone)
        return cls(
            id=int(row["id"]), name=row.get("name") or "", digest_channel_id=row.get("digest_channel_id"),
            digest_time=row.get("digest_time") or defaults.default_time,
            timezone=row.get("timezone") or defaults.default_timezone,
            own_time=bool(row.get("digest_time")), own_timezone=bool(row.get("timezone")),
            persona=row.get("persona"), nsfw_allowed=bool(row.get("nsfw_allowed")),
            learn_channel_ids=tuple(int(c) for c in row.get("learn_channel_ids") or ()),
            ignore_channel_ids=tuple(int(c) for c in row.get("ignore_channel_ids") or ()),
            last_digest_date=row.get("last_digest_date"),
        )


# ---- chat (features/chat.py) ---------------------------------------------------------------------
@dataclass(frozen=True)
class ChatLine:
    """One message of a conversation as chat reads it (front ends build these from what they see):
    ``text`` as the model should read it (mentions resolved to names); ``from_bot``: written by
    Campfire; ``addressed``: a member's message that mentions Campfire; ``reply_to_id``: the message
    it replies to (None when none); ``author_name``: the display name ('' when unknown)."""
    id: int
    author_id: int
    text: str
    author_name: str = ""
    from_bot: bool = False
    addressed: bool = False
    reply_to_id: int | None = None


# ---- stories (features/stories.py) ---------------------------------------------------------------
#: What :func:`campfire.features.stories.rate` did: recorded, the story is gone, or the member opted out.
RateOutcome = Literal["rated", "gone", "opted_out"]


@dataclass(frozen=True)
class StoryPart:
    """A stored story (one part of it) as front ends see it. ``part`` counts from 1; ``parent_id`` is
    the part it continues (None for a first part); ``message_id`` the Discord message showing it."""

    item_id: int
    guild_id: int
    title: str
    text: str
    author_id: int | None
    part: int = 1
    parent_id: int | None = None
    theme: str = ""
    genre: str = "any"
    length: str = "short"
    language: str = "auto"
    requested_language: str = "auto"
    message_id: int | None = None


@dataclass(frozen=True)
class StoryPlan:
    """What to write next (:func:`campfire.features.stories.plan`, ``plan_continue``,
    ``plan_regenerate``): the request (theme, genre, length, language) and, for a continuation, the
    part it follows. ``part`` is the number the new story will have; ``heading`` what to show while
    it is written (the theme, or "<title> (part N)")."""

    request: StoryRequest
    previous: StoryPart | None = None

    @property
    def part(self) -> int:
        return self.previous.part + 1 if self.previous else 1

    @property
    def heading(self) -> str:
        return f"{self.previous.title} (part {self.part})" if self.previous else self.request.theme


@dataclass(frozen=True)
class ComposedStory:
    """A story written and gated but not saved (:func:`campfire.features.stories.compose`):
    ``result`` the last attempt's ``model.story.StoryResult`` (title, text, language, tokens,
    ``finish_reason``); ``attempts`` 1 or 2 (the first failed the gate); ``rejected`` the gate's
    reason codes for ``result`` (empty: it passed); ``notice`` the sentence a member reads when it
    was rejected (None when it passed); ``total_s`` seconds over all attempts."""

    result: StoryResult
    attempts: int
    rejected: tuple[str, ...]
    notice: str | None
    total_s: float


@dataclass(frozen=True)
class SavedStory:
    """A told story. ``item_id`` is None and ``saved`` False when nothing was stored: the requester
    opted out of recording, or the story failed the quality gate twice (``rejected`` holds the
    gate's reason codes, ``model.quality.REASON_TEXT``; ``notice`` the sentence shown with it, in
    the member's language). ``title`` is the story's title (for a continuation: the first part's),
    ``shown_title`` adds " (part N)" from part 2. Times in seconds (``ttft_s``: to the first token,
    ``total_s``: all attempts). ``finish_reason``: ``stop`` / ``length`` / ``loop`` (the loop guard
    closed the stream); ``attempts``: 1, or 2 when the first failed the gate."""

    item_id: int | None
    saved: bool
    title: str
    text: str
    part: int
    language: str
    theme: str
    genre: str
    length: str
    completion_tokens: int
    ttft_s: float
    total_s: float
    finish_reason: str = "stop"
    attempts: int = 1
    rejected: tuple[str, ...] = ()
    notice: str | None = None

    @property
    def shown_title(self) -> str:
        return self.title if self.part == 1 else f"{self.title} (part {self.part})"

    @property
    def tokens_per_s(self) -> float:
        """Completion tokens per second after the first token (0 when unknown)."""
        decode = self.total_s - self.ttft_s
        return self.completion_tokens / decode if decode > 0 and self.completion_tokens else 0.0


# ---- picks and digest (features/picks.py, features/digest.py) ------------------------------------

#: What became of a member's 👍 / 👎 / Not interested (:func:`campfire.features.picks.feedback`):
#: ``kept``; ``opted_out`` (the member opted out of recording: nothing kept); ``gone`` (the item is
#: no longer stored, or belongs to another guild).
FeedbackOutcome = Literal["kept", "opted_out", "gone"]


@dataclass(frozen=True)
class Pick:
    """One recommended item as front ends show it (not the recommender's item).

    ``title``: the item's title, else the start of its text, one line of ≤ 200 characters (front ends
    clip further with :func:`campfire.features.text.clip`). ``link``: where a member can open it (a
    message's jump URL, else the item's url; None when neither). ``kind``: ``conversation``,
    ``thread``, ``message``, ``story`` or ``catalogue`` (:func:`campfire.features.picks.pick_kind`).
    ``score`` in [0, 1]; ``reason`` one line saying why it was picked. ``participants``: members who
    wrote in it (0 unless a conversation or thread); ``message_ids``: the Discord messages it covers,
    time order (all of a conversation or thread, the one of a single message, none for stories and catalogue)."""

    item_id: int
    title: str
    link: str | None
    kind: str
    score: float
    reason: str
    participants: int = 0
    message_ids: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """``{"item_id", "title" (≤ 80 characters), "reason", "score" (4 decimals), "kind",
        "participants", "message_ids"}`` (``campfire digest --json``)."""
        from campfire.features.text import clip

        return {"item_id": self.item_id, "title": clip(self.title, 80, one_line=True), "reason": self.reason,
                "score": round(float(self.score), 4), "kind": self.kind, "participants": self.participants,
                "message_ids": list(self.message_ids)}


@dataclass(frozen=True)
class MemberPicks:
    """One member's picks in a daily post; ``member`` is the display name (the id when unknown)."""

    guild_id: int
    member_id: int
    member: str
    picks: tuple[Pick, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """``{"guild_id", "member_id", "member", "picks": [Pick.to_json(), …]}`` (``campfire digest --json``);
        ``item_id`` is the Discord message id for imported messages."""
        return {"guild_id": self.guild_id, "member_id": self.member_id, "member": self.member,
                "picks": [p.to_json() for p in self.picks]}


@dataclass(frozen=True)
class DigestDue:
    """A guild whose daily post is due: its settings (read once, passed down) and its local date (YYYY-MM-DD)."""

    guild: GuildSettings
    date: str


@dataclass(frozen=True)
class DigestRun:
    """One guild's daily picks for one guild-local ``date`` (YYYY-MM-DD).

    ``guild``: the settings the run used (read once: the digest channel comes from here).
    ``picks``: one entry per member with at least one pick, by member id. ``dry_run``: nothing was
    recorded. ``where`` (after :func:`campfire.features.digest.post`): ``channel`` | ``thread`` | ``dm``
    | ``none`` — '' for a run nobody sent. ``took_s``: seconds spent ranking.
    """

    guild: GuildSettings
    date: str
    picks: tuple[MemberPicks, ...]
    dry_run: bool
    where: str = ""
    took_s: float = 0.0

    @property
    def pick_count(self) -> int:
        """Picks over all members."""
        return sum(len(mp.picks) for mp in self.picks)

# ---- recording and privacy (features/recording.py, features/privacy.py) --------------------------
# (and guild settings: features/guilds.py)

@dataclass(frozen=True)
class MemberRecord(Member):
    """A member as seen on Discord just now, with ``role_ids`` (the guild's @everyone role left out),
    which the visibility filter needs. ``role_ids`` None keeps the stored roles."""

    role_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class MessageRecord:
    """A member's guild message, as the recorder needs it. ``created_at`` in UNIX seconds;
    ``parent_channel_id`` is a thread's parent channel (learn/ignore lists apply to it too);
    ``reply_to_id`` the message it replies to; ``url`` its jump URL. ``author`` is a
    :class:`MemberRecord` when their roles are known (their name and roles are then refreshed)."""

    guild_id: int
    channel_id: int
    id: int
    author: Member
    text: str
    created_at: float
    parent_channel_id: int | None = None
    reply_to_id: int | None = None
    url: str = ""
    nsfw: bool = False
    channel_name: str = ""

    @property
    def channel_ids(self) -> tuple[int, ...]:
        """The channel, then its parent when it is a thread."""
        return (self.channel_id, self.parent_channel_id) if self.parent_channel_id else (self.channel_id,)


@dataclass(frozen=True)
class ReactionRecord:
    """``member`` reacted to (or un-reacted from) message ``message_id``. ``message`` is the message
    reacted to: needed to record an addition (it becomes an item), not a removal."""

    guild_id: int
    message_id: int
    member: Member
    message: MessageRecord | None = None


@dataclass(frozen=True)
class ChannelRecord:
    """A guild channel: ``kind`` is ``text``, ``thread``, ``forum``, ``voice`` or ``category``;
    ``visibility`` the permission snapshot ``{"public": bool, "roles": [role ids that may view],
    "members": [member ids allowed by an overwrite], "denied_members": [member ids denied]}``."""

    guild_id: int
    id: int
    name: str = ""
    kind: str = "text"
    parent_id: int | None = None
    nsfw: bool = False
    visibility: dict[str, Any] | None = None


@dataclass(frozen=True)
class ForgetResult:
    """What ``/privacy forget`` deleted: ``counts`` per table plus ``item_vectors`` /
    ``interaction_vectors`` (see ``Recommender.forget_user``); ``opted_out`` whether recording stays
    off for the member: True after every forget (nothing of theirs is recorded until ``/privacy
    optin``; see ``campfire.features.privacy.forget``)."""

    counts: dict[str, int]
    opted_out: bool


@dataclass(frozen=True)
class ExportFile:
    """Everything stored about a member as a file: ``data`` is indented UTF-8 JSON, gzip-compressed
    when the JSON was over the size limit (then ``name`` ends in ``.json.gz``). ``too_large``: even
    compressed it exceeds the limit (nothing can be sent)."""

    name: str
    data: bytes
    gzipped: bool
    too_large: bool


@dataclass(frozen=True)
class SettingsRequest:
    """What an admin asked to change (None: leave as is). ``time`` is HH:MM text and ``timezone`` an
    IANA name, as typed; ``persona`` "default"/"reset"/"" resets it; ``learn_from`` / ``ignore`` add a
    channel to one list (removing it from the other); ``learn_everywhere`` clears both lists.
    ``channel_persona`` is the persona of ``channel`` (a text channel; its threads inherit it; the
    same reset words make it speak with the server's persona again)."""

    digest_channel_id: int | None = None
    digest_in_dms: bool | None = None
    time: str | None = None
    timezone: str | None = None
    persona: str | None = None
    nsfw_allowed: bool | None = None
    learn_from: int | None = None
    ignore: int | None = None
    learn_everywhere: bool | None = None
    channel_persona: str | None = None
    channel: ChannelRecord | None = None


@dataclass(frozen=True)
class SettingsUpdate:
    """The guild's settings after a change, and the names of the settings that changed (empty: none).
    ``channel_persona``: ``(channel id, persona)`` when a channel's persona was set (persona None:
    reset to the server's), else None."""

    settings: GuildSettings
    changed: tuple[str, ...] = ()
    channel_persona: tuple[int, str | None] | None = None


@dataclass(frozen=True)
class GuildStatus:
    """``/campfire status``: ``healthy`` None when no generator is connected; ``in_flight`` /
    ``queue_depth`` generation requests running / waiting; ``index`` the recommender's stats for the
    guild (``item_vectors``, ``interaction_vectors``, ``pending``, ``model``, …)."""

    healthy: bool | None
    in_flight: int
    queue_depth: int
    index: dict[str, Any]
    last_digest_date: str | None
