"""Prompts: the community persona, chat history under a token budget, story and continuation prompts.

Member text (messages, story themes) only ever goes into *user* turns — never concatenated into the
system prompt — so "ignore your instructions" in a theme is just part of the theme.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from model.tokens import TokenCounter

Language = Literal["en", "zh"]
Length = Literal["short", "medium", "long"]

# Requested story length: English words, Chinese characters (≈ 1.7 characters per English word of
# the same content; common translation ratio), and the model's tokens per unit measured with the
# SmolLM2 tokenizer on sample prose (1.24 tokens/word English, 1.9 tokens/character Chinese).
LENGTH_WORDS: dict[str, int] = {"short": 150, "medium": 400, "long": 800}
LENGTH_ZH_CHARS: dict[str, int] = {"short": 250, "medium": 650, "long": 1300}
TOKENS_PER_UNIT: dict[str, float] = {"en": 1.3, "zh": 1.9}

# C0 and C1 control characters except tab and newline, plus lone surrogates (they cannot be encoded as
# UTF-8 and would break the JSON request). CR is handled first: CR LF and lone CR become LF.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


@dataclass(frozen=True)
class Turn:
    """One message of a conversation. ``name``: the member's display name for user turns (optional;
    not sent to the model — chat uses it to recognise and strip a reply that echoes ``name:``)."""

    role: Literal["user", "assistant"]
    content: str
    name: str | None = None


def strip_controls(text: str) -> str:
    """Member text made safe to send to the generator (and to store): NUL and every other C0/C1 control
    character removed, tab and newline kept (CR LF and a lone CR become a newline), lone surrogates
    removed. Everything else — emoji and their zero-width joiners, CJK, RTL marks — is kept.
    The one sanitiser for chat messages, names, personas and stories; :func:`model.story.validate_theme`
    builds on it. Returns ``""`` for ``""``; never raises on a ``str``."""
    if not text:
        return text
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def reply_word_budget(max_tokens: int) -> int:
    """Words a chat reply is asked to stay under so that it finishes before ``max_tokens``: 60 % of the
    words that many tokens hold (:data:`TOKENS_PER_UNIT` English), rounded down to ten, at least 10
    (256 tokens → 110 words). The headroom is because small models overshoot a stated length."""
    return max(10, int(max_tokens / TOKENS_PER_UNIT["en"] * 0.6) // 10 * 10)


def system_prompt(persona: str, *, max_words: int | None = None) -> str:
    """The chat system prompt: the guild's (or channel's) persona plus Campfire's house rules
    (``max_words``: the reply's length budget, see :func:`reply_word_budget`). Names of members are
    never part of it, nor of the turns (:func:`build_chat_messages`): a transcript with ``name:``
    prefixes teaches the model to write the member's next line itself."""
    persona = strip_controls(persona).strip() or "You are Campfire, a friendly assistant for this Discord community."
    budget = f" Answer in at most {max_words} words and end with a complete sentence." if max_words else ""
    return (
        f"{persona}\n"
        f"Reply to the latest message. Keep it short, kind and on topic.{budget} "
        "Reply in the language the member writes in. Write only your own reply, never a member's message."
    )


def _render(turn: Turn) -> dict:
    return {"role": turn.role, "content": strip_controls(turn.content).strip()}


def build_chat_messages(system: str, turns: list[Turn], *, budget_tokens: int, counter: TokenCounter) -> list[dict]:
    """OpenAI messages for a chat turn: ``system`` first, then the most recent ``turns`` that fit.

    Turn contents pass through :func:`strip_controls` (NUL and other control characters removed,
    newlines and tabs kept); ``Turn.name`` is not shown to the model (no ``name:`` prefixes, which the
    model would copy and then speak as the member). ``budget_tokens`` bounds the whole prompt (chat template included, counted with ``counter``). The
    oldest turns are dropped first; the system prompt and the latest turn are always kept, even when
    they alone exceed the budget (the server then answers with a context error). ``turns`` are oldest
    first; an empty list gives just the system message. Returns ``[{"role", "content"}, ...]``.
    """
    head = [{"role": "system", "content": system}]
    if not turns:
        return head
    kept = [_render(turns[-1])]
    for turn in reversed(turns[:-1]):
        candidate = [_render(turn), *kept]
        if counter.count_messages(head + candidate) > budget_tokens:
            break
        kept = candidate
    return head + kept


def detect_language(text: str) -> Language:
    """``zh`` when Chinese characters are at least as common as Latin letters in ``text``, else ``en``."""
    cjk = len(_CJK.findall(text))
    return "zh" if cjk and cjk >= len(_LATIN.findall(text)) / 2 else "en"


def story_max_tokens(length: str, language: Language) -> int:
    """Completion budget (tokens) for a story of ``length``: the target plus 25 % headroom and a title line;
    the text is then trimmed back to its last full sentence."""
    units = LENGTH_ZH_CHARS[length] if language == "zh" else LENGTH_WORDS[length]
    return int(units * TOKENS_PER_UNIT[language] * 1.25) + 24


_GENRE_ZH = {
    "any": "", "fantasy": "奇幻", "sci-fi": "科幻", "scifi": "科幻", "mystery": "悬疑", "horror": "恐怖",
    "romance": "爱情", "comedy": "喜剧", "adventure": "冒险", "fairy tale": "童话",
}


def _story_system(language: Language) -> str:
    if language == "zh":
        return (
            "你是一位会讲故事的作家，为一个 Discord 社区写原创短篇故事。"
            "第一行只写故事的标题，然后空一行，再写故事正文。全部用简体中文写作。"
            "故事要有开头、发展和结尾，最后一句要完整。不要解释，不要写标题以外的前言。"
        )
    return (
        "You are a storyteller who writes original short stories for a Discord community. "
        "Write the title alone on the first line, then a blank line, then the story. "
        "Give the story a beginning, a middle and an ending, and finish the last sentence. "
        "Write only the story: no notes, no explanations."
    )


def build_story_messages(theme: str, *, genre: str = "any", length: Length = "short", language: Language = "en") -> list[dict]:
    """Messages asking for a new story on ``theme`` (already validated) in ``language``.

    Instructions are written in the requested language; the theme is quoted inside the user turn only.
    """
    genre = (genre or "any").strip().lower()
    if language == "zh":
        kind = f"{_GENRE_ZH.get(genre, genre)}故事" if genre != "any" else "故事"
        user = f"请写一个大约{LENGTH_ZH_CHARS[length]}字的{kind}。主题：\n{theme}"
    else:
        kind = f"{genre} story" if genre != "any" else "story"
        user = f"Write a {kind} of about {LENGTH_WORDS[length]} words. The theme:\n{theme}"
    return [{"role": "system", "content": _story_system(language)}, {"role": "user", "content": user}]


def build_continue_messages(
    title: str, text: str, *, genre: str = "any", length: Length = "short", language: Language = "en", max_chars: int = 3000
) -> list[dict]:
    """Messages asking to continue the story ``title``/``text``; only its last ``max_chars`` characters are
    quoted (the start of a long story is dropped, at a paragraph or sentence boundary when possible)."""
    title, text = strip_controls(title), strip_controls(text)
    if len(text) > max_chars:
        tail = text[-max_chars:]
        cut = max(tail.find("\n"), 0)
        text = "…" + tail[cut:].lstrip()
    if language == "zh":
        user = (
            f"这是一个名为《{title}》的故事：\n\n{text}\n\n"
            f"请接着写下去，大约{LENGTH_ZH_CHARS[length]}字。第一行写新的一章的标题，然后空一行写正文。"
        )
    else:
        user = (
            f'Here is a story titled "{title}":\n\n{text}\n\n'
            f"Continue this story with about {LENGTH_WORDS[length]} more words. "
            "Write a title for the new part on the first line, then a blank line, then the text."
        )
    return [{"role": "system", "content": _story_system(language)}, {"role": "user", "content": user}]
