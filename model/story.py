"""The ``/story`` pipeline: validate the theme → prompt in the requested language → stream within a
token budget set by the length, watched by a :class:`model.loops.LoopGuard` → title line split off →
text cut back to before any loop and to its last full sentence.

Repetition is fought twice: by sampling (:class:`Sampling`: ``story.temperature``, ``top_p``,
``frequency_penalty``, and ``presence_penalty`` / ``repetition_penalty`` where the settings and the
client have them; :meth:`Sampling.stronger` for a second try), and by the loop guard, which closes
the stream as soon as the text loops. Whether the result is good enough to post and save is
:mod:`model.quality`'s verdict and ``campfire.features.stories``'s policy.
"""

from __future__ import annotations

import functools
import inspect
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any, Literal

from campfire.config import StorySettings
from model.client import GeneratorClient, QueueCallback, invoke_callback
from model.errors import EmptyOutput
from model.loops import LoopGuard, trim_to_sentence
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

_TITLE_PREFIX = re.compile(r"^\s*(?:#+\s*|\*\*|title\s*[:：]\s*|标题\s*[:：]\s*)", re.IGNORECASE)


@dataclass(frozen=True)
class StoryRequest:
    """What a member asked for. ``theme`` is validated by :func:`validate_theme` in :func:`write_story`."""

    theme: str
    genre: str = "any"
    length: Literal["short", "medium", "long"] = "short"
    language: Literal["auto", "en", "zh"] = "auto"


@dataclass(frozen=True)
class Sampling:
    """How a story is sampled: ``temperature`` (0–2), ``top_p`` (0–1], and the OpenAI
    ``frequency_penalty`` / ``presence_penalty`` (−2–2; 0 = none) and vLLM/llama.cpp/transformers
    ``repetition_penalty`` (> 0, multiplicative; 1 = none). Penalties the client cannot send yet are
    left out of the request (:func:`sampling_kwargs`)."""

    temperature: float = 0.8
    top_p: float = 0.95
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0

    @classmethod
    def of(cls, story: StorySettings) -> Sampling:
        """The settings' sampling (``story.presence_penalty`` / ``story.repetition_penalty`` when the
        settings have them, else none)."""
        return cls(
            temperature=story.temperature, top_p=story.top_p, frequency_penalty=story.frequency_penalty,
            presence_penalty=float(getattr(story, "presence_penalty", 0.0)),
            repetition_penalty=float(getattr(story, "repetition_penalty", 1.0)),
        )

    def stronger(self) -> Sampling:
        """The second try's sampling after a failed story: frequency and presence penalties +0.4
        (capped at 2), temperature at most 0.7; the repetition penalty is left as it is
        (bench/penalty_sweep.py: repetition_penalty ≥ 1.1 also penalises the prompt's words and broke
        Chinese and sentence endings on the packaged model, while frequency_penalty 1.0 did not)."""
        return replace(
            self, temperature=min(self.temperature, 0.7), frequency_penalty=min(2.0, self.frequency_penalty + 0.4),
            presence_penalty=min(2.0, self.presence_penalty + 0.4),
        )


@functools.lru_cache(maxsize=8)
def _accepted(stream_chat: Any) -> frozenset[str] | None:
    try:
        params = inspect.signature(stream_chat).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return frozenset(params)


def sampling_kwargs(client: GeneratorClient, sampling: Sampling) -> dict[str, float]:
    """``sampling`` as keyword arguments of ``client.stream_chat``: those its signature accepts (all
    of them when it takes ``**kwargs``); penalties at their neutral value are left out."""
    kwargs: dict[str, float] = {"temperature": sampling.temperature, "top_p": sampling.top_p}
    if sampling.frequency_penalty:
        kwargs["frequency_penalty"] = sampling.frequency_penalty
    if sampling.presence_penalty:
        kwargs["presence_penalty"] = sampling.presence_penalty
    if sampling.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = sampling.repetition_penalty
    accepted = _accepted(getattr(type(client), "stream_chat", None) or client.stream_chat)
    return kwargs if accepted is None else {k: v for k, v in kwargs.items() if k in accepted}


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
    #: ``stop`` (the model finished), ``length`` (the token budget ran out), ``loop`` (the loop guard
    #: closed the stream), or what the server reported.
    finish_reason: str = "stop"
    #: The sampling the story was written with.
    sampling: Sampling | None = None

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


async def _stream_once(
    client: GeneratorClient, messages: list[dict], *, sampling: Sampling, max_tokens: int, user: str | None,
    on_delta: DeltaCallback | None, on_queued: QueueCallback | None, guard: bool, usage: dict,
) -> tuple[str, str]:
    """One streamed generation: (raw text — cut before a loop, the title line still in it, finish reason)."""
    loops = LoopGuard() if guard else None
    parts: list[str] = []
    finish = ""
    async with aclosing(
        client.stream_chat(messages, max_tokens=max_tokens, user=user, on_queued=on_queued, usage=usage,
                           **sampling_kwargs(client, sampling))
    ) as stream:
        async for delta in stream:
            parts.append(delta)
            await invoke_callback(on_delta, delta)
            if loops is not None and loops.feed(delta):
                finish = "loop"
                break  # closes the stream: the server stops generating
    raw = "".join(parts)
    if not usage.get("completion_tokens"):  # closed before the server's count came: one delta ≈ one token
        usage["completion_tokens"] = len(parts)
    if loops is not None and loops.finish() is not None:
        finish, raw = "loop", raw[: loops.loop.start]  # type: ignore[union-attr]
    if not finish:
        completion = int(usage.get("completion_tokens") or 0)
        finish = str(usage.get("finish_reason") or ("length" if completion >= max_tokens else "stop"))
    return raw, finish


async def _generate(
    client: GeneratorClient,
    messages: list[dict],
    *,
    fallback_title: str,
    language: str,
    sampling: Sampling,
    max_tokens: int,
    user: str | None,
    on_delta: DeltaCallback | None,
    on_queued: QueueCallback | None,
    guard: bool = True,
) -> StoryResult:
    t0 = time.perf_counter()
    for _attempt in range(2):  # one retry when the model returns nothing usable
        usage: dict = {}
        raw, finish = await _stream_once(client, messages, sampling=sampling, max_tokens=max_tokens, user=user,
                                         on_delta=on_delta, on_queued=on_queued, guard=guard, usage=usage)
        title, body = split_title(raw, fallback_title)
        body = trim_to_sentence(body)
        if body:
            return StoryResult(
                title=title, text=body, language=language,
                prompt_tokens=int(usage.get("prompt_tokens") or 0), completion_tokens=int(usage.get("completion_tokens") or 0),
                ttft_s=float(usage.get("ttft_s") or 0.0), total_s=time.perf_counter() - t0, finish_reason=finish,
                sampling=sampling,
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
    sampling: Sampling | None = None,
    guard: bool = True,
) -> StoryResult:
    """Write a story for ``request``.

    ``on_delta(text)`` receives the raw streamed text (title line included) as it arrives;
    ``max_tokens`` overrides the budget derived from the length (tests, benchmarks); ``sampling``
    the settings' (:meth:`Sampling.of`); ``guard=False`` turns the loop guard off (benchmarks of
    the previous pipeline). A looping stream is closed early and the text cut before the loop
    (``finish_reason`` "loop").
    Raises ``ValueError`` (bad theme, member-readable), :class:`model.errors.EmptyOutput` (empty twice),
    and the client's :class:`model.errors.GeneratorError` subclasses.
    """
    theme = validate_theme(request.theme, story.max_theme_chars)
    language = resolve_language(request, theme)
    messages = build_story_messages(theme, genre=request.genre, length=request.length, language=language)
    return await _generate(
        client, messages, fallback_title=_fallback_title(theme, language), language=language,
        sampling=sampling or Sampling.of(story), max_tokens=max_tokens or story_max_tokens(request.length, language),
        user=user, on_delta=on_delta, on_queued=on_queued, guard=guard,
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
    sampling: Sampling | None = None,
    guard: bool = True,
) -> StoryResult:
    """Write the next part of the story ``title``/``text`` (same genre, length and language as ``request``).
    The result's ``title`` is the new part's title (``"<title> (continued)"`` when the model gives none);
    ``sampling`` and ``guard`` as for :func:`write_story`."""
    theme = validate_theme(request.theme, story.max_theme_chars) if request.theme.strip() else title
    language = resolve_language(request, text or theme)
    messages = build_continue_messages(title, text, genre=request.genre, length=request.length, language=language)
    fallback = f"{title}（续）" if language == "zh" else f"{title} (continued)"
    return await _generate(
        client, messages, fallback_title=fallback, language=language, sampling=sampling or Sampling.of(story),
        max_tokens=max_tokens or story_max_tokens(request.length, language), user=user, on_delta=on_delta,
        on_queued=on_queued, guard=guard,
    )
