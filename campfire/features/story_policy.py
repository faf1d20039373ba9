"""What a story request may become besides a saved story — part of :mod:`campfire.features.stories`.

- **Language honesty**: :func:`check_language` raises :class:`StoryDeclined` when the request's
  language is not one the served model writes well (:func:`model_languages`: ``generator.languages``,
  ``["en"]`` for the packaged SmolLM2). Its ``str()`` is a sentence in the *member's* language (the
  theme's script) saying so and how an admin changes it — instead of posting gibberish.
- **Rejected stories**: :func:`rejection_notice` is what a member reads under a story that failed the
  quality gate twice (shown, never saved); :class:`Drafts` remembers its plan for a while so its
  Regenerate button works although nothing was stored.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from model.prompts import detect_language
from model.story import resolve_language

if TYPE_CHECKING:
    from campfire.features.types import StoryPlan
    from model.story import StoryRequest

__all__ = ["StoryDeclined", "Drafts", "model_languages", "check_language", "decline_text", "rejection_notice"]

#: A language's name, as an English and as a Chinese speaker says it.
LANGUAGE_NAMES = {"en": ("English", "英文"), "zh": ("Chinese", "中文")}

_DECLINE = {
    "en": ("Sorry — this server's storyteller model cannot write {lang} well, so I won't post a story that "
           "would read as gibberish. A server admin can switch to a multilingual model (for example a Qwen2.5 "
           "instruct model, via `campfire model pull` or `campfire model prepare --gguf`) and add \"{code}\" to "
           "`generator.languages` in config.toml — see the README. {other}"),
    "zh": ("抱歉，这个服务器的故事模型写不好{lang}，为了不发出一篇看不懂的故事，这次就不写了。服务器管理员可以换用"
           "多语言模型（例如用 `campfire model pull` 或 `campfire model prepare --gguf` 准备 Qwen2.5 指令模型），"
           "并在 config.toml 的 `generator.languages` 里加上 \"{code}\"（见 README）。{other}"),
}
_TRY_INSTEAD = {"en": "Meanwhile, a theme in {lang} works.", "zh": "现在可以先用{lang}主题试试。"}

_REASONS = {
    "en": {"loop": "it kept repeating itself", "replacement_char": "it contains broken characters",
           "language": "it is not in the language asked for", "too_short": "it came out too short",
           "unfinished": "it stops mid-sentence"},
    "zh": {"loop": "内容不断重复", "replacement_char": "含有乱码", "language": "不是所要求的语言",
           "too_short": "太短", "unfinished": "最后一句没有写完"},
}
_REJECTED = {
    "en": ("⚠️ This story did not come out well ({why}), even on a second try, so it was not saved and will "
           "not be recommended to anyone. Press Regenerate to try again, or try another theme."),
    "zh": "⚠️ 这个故事写得不好（{why}），重写一次后仍然如此，所以没有保存，也不会推荐给任何人。可以点“重新生成”再试，或换一个主题。",
}


class StoryDeclined(ValueError):
    """The served model cannot write the requested language; ``str()`` is the sentence for the member
    (in their language), ``language`` the code asked for. A ``ValueError``, so front ends that show a
    bad theme politely show this too."""

    def __init__(self, message: str, language: str) -> None:
        super().__init__(message)
        self.language = language


def model_languages(settings: Any) -> tuple[str, ...]:
    """Codes of the languages the served model writes well: ``model.languages.languages_of(settings)``
    when that exists, else ``settings.generator.languages``, else ``("en",)`` (the packaged SmolLM2
    is English-only)."""
    try:
        from model.languages import languages_of  # type: ignore[import-not-found]
    except ImportError:
        return tuple(getattr(settings.generator, "languages", None) or ("en",))
    return tuple(languages_of(settings))


def decline_text(asked: str, member_language: str, supported: tuple[str, ...]) -> str:
    """The sentence a member reads when ``asked`` (a language code) is not in ``supported``: in
    ``member_language`` (``en`` / ``zh``; other codes read English)."""
    lang = member_language if member_language in _DECLINE else "en"
    names = LANGUAGE_NAMES.get(asked, (asked, asked))
    alternatives = [LANGUAGE_NAMES[c][lang == "zh"] for c in supported if c in LANGUAGE_NAMES]
    other = _TRY_INSTEAD[lang].format(lang=alternatives[0]) if alternatives else ""
    return _DECLINE[lang].format(lang=names[lang == "zh"], code=asked, other=other).strip()


def check_language(settings: Any, request: StoryRequest, text: str = "") -> str:
    """The story's language (``model.story.resolve_language`` of ``request`` on its theme, or on
    ``text`` — a story being continued). Raises :class:`StoryDeclined` when the model does not write
    it (:func:`model_languages`)."""
    language = resolve_language(request, text or request.theme)
    supported = model_languages(settings)
    if language not in supported:
        raise StoryDeclined(decline_text(language, detect_language(request.theme or text), supported), language)
    return language


def rejection_notice(reasons: tuple[str, ...], member_language: str) -> str:
    """What a member reads with a story that failed the quality gate twice (``reasons``: gate codes),
    in ``member_language`` (``en`` / ``zh``)."""
    lang = member_language if member_language in _REJECTED else "en"
    words = [_REASONS[lang].get(r, r) for r in reasons] or [_REASONS[lang]["unfinished"]]
    why = "、".join(words) if lang == "zh" else ", ".join(words)
    return _REJECTED[lang].format(why=why)


class Drafts:
    """Plans of stories shown but not saved (rejected by the gate), by a key the front end chooses
    (the bot: the Discord message id; at most ``size`` kept, oldest dropped), so their Regenerate
    button works. Lost on restart: the button then answers that the story is gone."""

    def __init__(self, size: int = 1000) -> None:
        self.size = size
        self._plans: OrderedDict[int, tuple[StoryPlan, int]] = OrderedDict()

    def remember(self, key: int, plan: StoryPlan, requester_id: int) -> None:
        """Keep ``plan`` (told for member ``requester_id``) under ``key``."""
        self._plans[key] = (plan, requester_id)
        self._plans.move_to_end(key)
        while len(self._plans) > self.size:
            self._plans.popitem(last=False)

    def get(self, key: int) -> tuple[StoryPlan, int] | None:
        """(plan, requester id) kept under ``key``, or None."""
        return self._plans.get(key)
