"""The quality gate a generated story passes before it is posted as finished, saved as an item or
offered for recommendation.

:func:`check_story` looks at the finished (already trimmed) text and returns a
:class:`QualityReport`: ``ok`` and the reasons it is not, as stable codes —

- ``loop``: the text still loops (:func:`model.loops.find_loop`: an 8-gram seen 3 times, a line
  repeated 3 times, a run of one character);
- ``replacement_char``: it contains U+FFFD (bytes of a character were lost on the way);
- ``language``: less than :data:`MIN_SCRIPT_SHARE` of its words/characters are in the requested
  language's script (:func:`script_share`);
- ``too_short``: fewer than ``min_units`` words (English) or CJK characters (Chinese)
  (:func:`min_story_units`);
- ``unfinished``: it does not end on a complete sentence (:func:`model.loops.ends_on_sentence`).

:data:`REASON_TEXT` says each in a few words for a member or a log. The gate decides nothing
itself: what a failing story becomes (regenerated once, then shown but not saved) is
``campfire.features.stories``'s policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from model.loops import ends_on_sentence, find_loop
from model.prompts import LENGTH_WORDS, LENGTH_ZH_CHARS, TOKENS_PER_UNIT

__all__ = ["QualityReport", "check_story", "script_share", "story_units", "min_story_units", "REASON_TEXT",
           "MIN_SCRIPT_SHARE"]

_CJK_CHARS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK = re.compile(rf"[{_CJK_CHARS}]")
_LATIN_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
# a word of letters in any other script (Cyrillic, Arabic, Hangul, kana, accented Latin…)
_OTHER_WORD = re.compile(rf"[^\W\d_A-Za-z{_CJK_CHARS}]+")

#: The least share of the text's words (Latin script; a CJK character counts as one) that must be in
#: the requested language's script. 0.85: a Chinese story may name a place or brand in Latin letters
#: (one in seven), an English one may quote a Chinese word or two.
MIN_SCRIPT_SHARE = 0.85

#: Shortest acceptable story as a share of the requested length (words / CJK characters): a
#: "short" story (150 words asked) needs 40 words. Also never more than this share of what the
#: token budget can hold (``min_story_units`` with ``max_tokens``).
MIN_SHARE_OF_REQUESTED = 0.27
MIN_SHARE_OF_BUDGET = 0.3

REASON_TEXT = {
    "loop": "it kept repeating itself",
    "replacement_char": "it contains broken characters",
    "language": "it is not in the language asked for",
    "too_short": "it is too short",
    "unfinished": "it stops mid-sentence",
}


@dataclass(frozen=True)
class QualityReport:
    """The gate's verdict on one text: ``ok`` when ``reasons`` is empty; ``reasons`` codes in the
    order of :data:`REASON_TEXT`; ``script_share`` in [0, 1]; ``units`` words or CJK characters."""

    reasons: tuple[str, ...]
    script_share: float
    units: int

    @property
    def ok(self) -> bool:
        return not self.reasons

    def describe(self) -> str:
        """The reasons in words, e.g. ``"it kept repeating itself and it is too short"`` ('' when ok)."""
        words = [REASON_TEXT[r] for r in self.reasons]
        return ", ".join(words[:-1]) + (" and " if len(words) > 1 else "") + words[-1] if words else ""


def _counts(text: str) -> tuple[int, int, int]:
    """(CJK characters, Latin-script words, words in other scripts) of ``text``."""
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN_WORD.findall(text))
    other = len(_OTHER_WORD.findall(_CJK.sub(" ", text)))
    return cjk, latin, other


def script_share(text: str, language: str) -> float:
    """Share of ``text``'s units in ``language``'s script: for ``zh`` CJK characters, for ``en``
    Latin-script words, over CJK characters + Latin words + words in other scripts (digits and
    punctuation not counted). 0.0 for a text without letters."""
    cjk, latin, other = _counts(text)
    total = cjk + latin + other
    if not total:
        return 0.0
    return (cjk if language == "zh" else latin) / total


def story_units(text: str, language: str) -> int:
    """The story's length in the unit its length is asked in: CJK characters (``zh``) or words."""
    cjk, latin, other = _counts(text)
    return cjk if language == "zh" else latin + other


def min_story_units(length: str, language: str, max_tokens: int | None = None) -> int:
    """The shortest acceptable story (words, or CJK characters for ``zh``): 27 % of the requested
    length (``model.prompts.LENGTH_WORDS`` / ``LENGTH_ZH_CHARS``: 40 words or 67 characters for
    "short"), and at most 30 % of what ``max_tokens`` can hold (``TOKENS_PER_UNIT``) when a
    smaller budget than the length's is imposed (tests, benchmarks). At least 3."""
    requested = LENGTH_ZH_CHARS[length] if language == "zh" else LENGTH_WORDS[length]
    floor = requested * MIN_SHARE_OF_REQUESTED
    if max_tokens:
        floor = min(floor, max_tokens / TOKENS_PER_UNIT.get(language, 1.3) * MIN_SHARE_OF_BUDGET)
    return max(3, int(floor))


def check_story(text: str, language: str, *, min_units: int, title: str = "") -> QualityReport:
    """Gate ``text`` (the story body, already trimmed) written in ``language`` (``en`` / ``zh``)
    with ``title``: see the module docstring for the checks. Never raises."""
    reasons = []
    if find_loop(text) is not None:
        reasons.append("loop")
    if "\ufffd" in text or "\ufffd" in title:
        reasons.append("replacement_char")
    share = script_share(text, language)
    if share < MIN_SCRIPT_SHARE:
        reasons.append("language")
    units = story_units(text, language)
    if units < min_units:
        reasons.append("too_short")
    if not ends_on_sentence(text):
        reasons.append("unfinished")
    return QualityReport(reasons=tuple(reasons), script_share=share, units=units)
