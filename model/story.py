"""The ``/story`` pipeline: validate the theme → prompt in the requested language → stream within a
token budget set by the length → title line split off → text trimmed to its last full sentence.

Repetition is controlled by sampling (``story.temperature``, ``story.top_p``,
``story.frequency_penalty``), never by editing the text afterwards; the only post-processing is
taking the title line and dropping an unfinished last sentence.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Literal

from campfire.config import StorySettings
from model.client import GeneratorClient, QueueCallback, invoke_callback
from model.errors import EmptyOutput
from model.prompts import (
    Language,
    build_continue_messages,
    build_story_messages,
    detect_language,
    story_max_tokens,
    strip_controls,
)

DeltaCallback = Callable[[str], Awaitable[None] | None]

EMPTY_STORY_APOLOGY = "Sorry, the storyteller came up empty twice. Please try again, perhaps with a different theme."

# Sentence-final punctuation (English and Chinese), optionally followed by closing quotes/brackets.
_SENTENCE_END = re.compile(r"[.!?…。！？](?:[\"'”’»)）」』】]*)")
_TITLE_PREFIX = re.compile(r"^\s*(?:#+\s*|\*\*|title\s*[:：]\s*|标题\s*[:：]\s*)", re.IGNORECASE)


@dataclass(frozen=True)
class StoryRequest:
    """What a member asked for. ``theme`` is validated by :func:`validate_theme` in :func:`write_story`."""

    theme: str
    genre: str = "any"
    length: Literal["short", "medium", "long"] = "short"
    language: Literal["auto", "en", "zh"] = "auto"


@dataclass(frozen=True)
class StoryResult:
    """A finished story. Token counts are the server's (or the number of streamed deltas); times in seconds."""

    title: str
    text: str
    language: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    total_s: float

    @property
    def tokens_per_s(self) -> float:
        """Completion tokens per second of generation after the first token (0 when unknown)."""
        decode = self.total_s - self.ttft_s
        return self.completion_tokens / decode if decode > 0 and self.completion_tokens else 0.0


def validate_theme(theme: str, max_chars: int = 300) -> str:
    """Clean a member's theme: control characters removed (:func:`model.prompts.strip_controls`, then
    the other invisible format characters too), whitespace collapsed.

    Raises ``ValueError`` with a sentence a member can read when the theme is empty or longer than
    ``max_chars`` characters. Returns the cleaned theme.
    """
    if not isinstance(theme, str):
        raise ValueError("Please give your story a theme, in a few words.")
    cleaned = "".join(ch for ch in strip_controls(theme) if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    cleaned = re.sub(r"\s+", " ", cleaned).strip()
    if not cleaned:
        raise ValueError("Please give your story a theme, in a few words — for example: a chance meeting on a rainy day.")
    if len(cleaned) > max_chars:
        raise ValueError(f"That theme is {len(cleaned)} characters long; please keep it to {max_chars} characters or fewer.")
    return cleaned


def trim_to_sentence(text: str) -> str:
    """Drop an unfinished last sentence: cut after the last sentence-final mark (``. ! ? … 。 ！ ？``,
    with any closing quotes/brackets). Text without any such mark is returned stripped, unchanged."""
    text = text.rstrip()
    last = None
    for match in _SENTENCE_END.finditer(text):
        last = match
    if last is None:
        return text
    return text[: last.end()]


def split_title(raw: str, fallback: str) -> tuple[str, str]:
    """Split the model's output into (title, body). The first line is the title when it is short
    (≤ 15 words / 40 CJK characters) and not a full sentence; otherwise ``fallback`` is the title."""
    raw = raw.strip()
    first, _, rest = raw.partition("\n")
    candidate = _TITLE_PREFIX.sub("", first).strip().strip("*#\"'“”《》「」").strip()
    is_short = len(candidate.split()) <= 15 and len(candidate) <= 100 and (len(candidate) <= 40 or " " in candidate)
    if candidate and rest.strip() and is_short:
        return candidate, rest.strip()
    return fallback, raw


def _fallback_title(theme: str, language: str) -> str:
    if language == "zh":
        return theme[:16]
    words = theme.split()
    title = " ".join(words[:8]) + ("…" if len(words) > 8 else "")
    return title[:1].upper() + title[1:]


async def _generate(
    client: GeneratorClient,
    messages: list[dict],
    *,
    fallback_title: str,
    language: str,
    story: StorySettings,
    max_tokens: int,
    user: str | None,
    on_delta: DeltaCallback | None,
    on_queued: QueueCallback | None,
) -> StoryResult:
    t0 = time.perf_counter()
    for _attempt in range(2):  # one retry when the model returns nothing usable
        usage: dict = {}
        parts: list[str] = []
        async with aclosing(
            client.stream_chat(
                messages, max_tokens=max_tokens, temperature=story.temperature, top_p=story.top_p,
                frequency_penalty=story.frequency_penalty, user=user, on_queued=on_queued, usage=usage,
            )
        ) as stream:
            async for delta in stream:
                parts.append(delta)
                await invoke_callback(on_delta, delta)
        title, body = split_title("".join(parts), fallback_title)
        body = trim_to_sentence(body)
        if body:
            return StoryResult(
                title=title, text=body, language=language,
                prompt_tokens=int(usage.get("prompt_tokens") or 0), completion_tokens=int(usage.get("completion_tokens") or 0),
                ttft_s=float(usage.get("ttft_s") or 0.0), total_s=time.perf_counter() - t0,
            )
    raise EmptyOutput(EMPTY_STORY_APOLOGY)


def resolve_language(request: StoryRequest, theme: str) -> Language:
    """The story's language: ``request.language``, or for ``auto`` the script of ``theme``
    (:func:`model.prompts.detect_language`: ``zh`` or ``en``)."""
    return detect_language(theme) if request.language == "auto" else request.language  # type: ignore[return-value]


async def write_story(
    client: GeneratorClient,
    request: StoryRequest,
    *,
    story: StorySettings,
    user: str | None = None,
    on_delta: DeltaCallback | None = None,
    on_queued: QueueCallback | None = None,
    max_tokens: int | None = None,
) -> StoryResult:
    """Write a story for ``request``.

    ``on_delta(text)`` receives the raw streamed text (title line included) as it arrives;
    ``max_tokens`` overrides the budget derived from the length (tests, benchmarks).
    Raises ``ValueError`` (bad theme, member-readable), :class:`model.errors.EmptyOutput` (empty twice),
    and the client's :class:`model.errors.GeneratorError` subclasses.
    """
    theme = validate_theme(request.theme, story.max_theme_chars)
    language = resolve_language(request, theme)
    messages = build_story_messages(theme, genre=request.genre, length=request.length, language=language)
    return await _generate(
        client, messages, fallback_title=_fallback_title(theme, language), language=language, story=story,
        max_tokens=max_tokens or story_max_tokens(request.length, language), user=user, on_delta=on_delta, on_queued=on_queued,
    )


async def continue_story(
    client: GeneratorClient,
    title: str,
    text: str,
    request: StoryRequest,
    *,
    story: StorySettings,
    user: str | None = None,
    on_delta: DeltaCallback | None = None,
    on_queued: QueueCallback | None = None,
    max_tokens: int | None = None,
) -> StoryResult:
    """Write the next part of the story ``title``/``text`` (same genre, length and language as ``request``).
    The result's ``title`` is the new part's title (``"<title> (continued)"`` when the model gives none)."""
    theme = validate_theme(request.theme, story.max_theme_chars) if request.theme.strip() else title
    language = resolve_language(request, text or theme)
    messages = build_continue_messages(title, text, genre=request.genre, length=request.length, language=language)
    fallback = f"{title}（续）" if language == "zh" else f"{title} (continued)"
    return await _generate(
        client, messages, fallback_title=fallback, language=language, story=story,
        max_tokens=max_tokens or story_max_tokens(request.length, language), user=user, on_delta=on_delta, on_queued=on_queued,
    )
