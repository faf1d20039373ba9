"""Loops in generated text: found while it streams, and cut off.

Small models loop: the same phrase over and over ("Likes: 1" ×30), a line repeated, one character
or mark without end ("；；；；", "茧茧茧"). :class:`LoopGuard` watches a stream and says when it has
started to loop, so the caller can close the stream early; :meth:`LoopGuard.trimmed` is the text
cut back to before the loop and then to its last complete sentence. Chat and stories both use it::

    guard = LoopGuard()
    async with aclosing(client.stream_chat(...)) as stream:
        async for delta in stream:
            if guard.feed(delta):        # True once the text loops: stop reading (closes the stream)
                break
    text = guard.trimmed()               # before the loop, ending on a complete sentence

What counts as a loop (:func:`find_loop`, the same rules in one pass over a finished text):

- **n-gram**: the same ``ngram`` units (default 8) seen ``repeats`` times (default 3). A unit is a
  word for Latin-script text (case-folded; punctuation ignored) and a single character for CJK, so
  "a b c d e f g h" three times and "我们一起走过这条路" three times both count. This is the
  benchmark's loop metric (an 8-gram seen ≥ 3 times), so text that passes the guard passes it.
- **line**: the same block of 1–3 lines (stripped, case-folded, each with ≥ 3 letters or digits)
  ``repeats`` times in a row ("Likes: 1" line after line; not a heading over different entries).
- **run**: one character repeated in a row: clause punctuation (``，,；;：:、``) 3 times; a CJK
  character 3 times (6 for common onomatopoeia such as 哈 or 呜: "哈哈哈" is laughter); any other
  mark or symbol 10 times ("█████" redactions and "……" are fine); a letter or digit 12 times.

The loop starts where the *second* occurrence of the repeated n-gram or line begins (the first is
ordinary text), or where the run begins (one character of it kept when it is a CJK character).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["Loop", "LoopGuard", "find_loop", "trim_loop", "trim_to_sentence", "ends_on_sentence", "SENTENCE_END"]

#: Sentence-final punctuation (English and Chinese), optionally followed by closing quotes/brackets.
SENTENCE_END = re.compile(r"[.!?…。！？](?:[\"'”’»)）」』】]*)")
_ENDS_ON_SENTENCE = re.compile(r"[.!?…。！？][\"'”’»)）」』】]*\s*$")

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
# one unit: a CJK character, or a run of other word characters (a word, a number)
_UNIT = re.compile(rf"[{_CJK}]|[^\W{_CJK}_]+(?:'[^\W{_CJK}_]+)*")
_IS_CJK = re.compile(rf"[{_CJK}]")
_CLAUSE_MARKS = set("，,；;：:、")
#: A line repeated with at most this many lines between its occurrences (counting itself) is a loop.
LINE_CYCLE = 3
_ONOMATOPOEIA = set("哈呵嘿嘻呜啦嗯啊哦噢咚砰滴嗒哒嘀轰隆咕噜喵汪嘤呼嘘咯")


@dataclass(frozen=True)
class Loop:
    """A loop found in a text: ``kind`` what repeats (``ngram`` / ``line`` / ``run``), ``start`` the
    character offset where the loop begins (keep ``text[:start]``), ``unit`` the repeated text,
    ``count`` how many times it was seen when the loop was called."""

    kind: Literal["ngram", "line", "run"]
    start: int
    unit: str
    count: int


def _run_limit(ch: str) -> int:
    """How many times in a row ``ch`` may appear before it is a loop."""
    if ch in _CLAUSE_MARKS:
        return 3
    if _IS_CJK.match(ch):
        return 6 if ch in _ONOMATOPOEIA else 3
    if ch.isalnum():
        return 12
    return 10


class LoopGuard:
    """Watches streamed text for a loop (see the module docstring for the rules).

    :meth:`feed` each delta; it returns True from the delta on which the text first loops (and
    keeps returning True). :attr:`loop` is then the :class:`Loop` found; :attr:`text` holds
    everything fed; :meth:`trimmed` the usable text. Work per delta is proportional to the delta
    (units and lines are indexed as they complete), so a long stream costs O(length) in all.
    ``ngram`` ≥ 2 units, ``repeats`` ≥ 2; ``ValueError`` otherwise.
    """

    def __init__(self, *, ngram: int = 8, repeats: int = 3) -> None:
        if ngram < 2 or repeats < 2:
            raise ValueError("ngram and repeats must be at least 2")
        self.ngram, self.repeats = ngram, repeats
        self.text = ""
        self.loop: Loop | None = None
        self._units: list[tuple[str, int]] = []  # (unit, start offset)
        self._grams: dict[tuple[str, ...], list[int]] = {}  # n-gram → start offsets of its occurrences
        self._lines: dict[str, list[tuple[int, int]]] = {}  # line → (line number, start offset) of each
        self._line_keys: list[str] = []  # every line with letters so far, case-folded
        self._unit_pos = 0  # units are final up to here
        self._line_pos = 0  # lines are final up to here
        self._run_char, self._run_start, self._run_len = "", 0, 0

    def feed(self, delta: str) -> bool:
        """Add ``delta`` (a streamed piece of text); True once the text loops (stop the stream)."""
        if self.loop is not None:
            self.text += delta
            return True
        start = len(self.text)
        self.text += delta
        self.loop = self._runs(start) or self._scan_units(final=False) or self._scan_lines(final=False)
        return self.loop is not None

    def finish(self) -> Loop | None:
        """Call once the stream has ended: the last word and line are checked too. Returns :attr:`loop`."""
        if self.loop is None:
            self.loop = self._scan_units(final=True) or self._scan_lines(final=True)
        return self.loop

    def trimmed(self) -> str:
        """The text without the loop (cut where it starts) and without an unfinished last sentence
        (:func:`trim_to_sentence`), stripped. Calls :meth:`finish` first."""
        self.finish()
        kept = self.text if self.loop is None else self.text[: self.loop.start]
        return trim_to_sentence(kept)

    # ---- the three detectors ---------------------------------------------------------------------
    def _runs(self, start: int) -> Loop | None:
        for i in range(start, len(self.text)):
            ch = self.text[i]
            if ch == self._run_char:
                self._run_len += 1
            else:
                self._run_char, self._run_start, self._run_len = ch, i, 1
            if not ch.isspace() and self._run_len >= _run_limit(ch):
                keep = 1 if _IS_CJK.match(ch) else 0
                return Loop("run", self._run_start + keep, ch, self._run_len)
        return None

    def _scan_units(self, *, final: bool) -> Loop | None:
        for m in _UNIT.finditer(self.text, self._unit_pos):
            if not final and m.end() == len(self.text) and not _IS_CJK.match(m.group()):
                break  # a word may still be growing
            self._unit_pos = m.end()
            self._units.append((m.group().casefold(), m.start()))
            if len(self._units) >= self.ngram:
                window = self._units[-self.ngram :]
                seen = self._grams.setdefault(tuple(u for u, _ in window), [])
                seen.append(window[0][1])
                if len(seen) >= self.repeats:
                    return Loop("ngram", seen[1], " ".join(u for u, _ in window), len(seen))
        return None

    def _scan_lines(self, *, final: bool) -> Loop | None:
        while True:
            end = self.text.find("\n", self._line_pos)
            if end < 0:
                if not final or self._line_pos >= len(self.text):
                    return None
                end = len(self.text)
            line, line_start = self.text[self._line_pos : end].strip(), self._line_pos
            self._line_pos = end + 1
            if sum(ch.isalnum() for ch in line) < 3:  # blank, or a "* * *" separator
                continue
            key = line.casefold()
            self._line_keys.append(key)
            seen = self._lines.setdefault(key, [])
            seen.append((len(self._line_keys) - 1, line_start))
            if self._cycles(seen):
                return Loop("line", seen[-self.repeats + 1][1], line, len(seen))

    def _cycles(self, seen: list[tuple[int, int]]) -> bool:
        """True when the last ``repeats`` occurrences of a line (``seen``: (line number, offset)) close
        the same block of at most LINE_CYCLE lines each time ("A B A B A B"), not a "Dear Diary,"
        heading over different entries."""
        if len(seen) < self.repeats:
            return False
        at = [n for n, _ in seen[-self.repeats :]]
        period = at[1] - at[0]
        if period > LINE_CYCLE or any(b - a != period for a, b in zip(at, at[1:])):
            return False
        keys = self._line_keys
        return all(keys[a : a + period] == keys[at[0] : at[0] + period] for a in at[1:-1])


def find_loop(text: str, *, ngram: int = 8, repeats: int = 3) -> Loop | None:
    """The first loop in a finished ``text`` (see the module docstring), or None."""
    guard = LoopGuard(ngram=ngram, repeats=repeats)
    guard.feed(text)
    return guard.finish()


def trim_loop(text: str, *, ngram: int = 8, repeats: int = 3) -> str:
    """``text`` cut where its first loop starts, then to its last complete sentence (stripped)."""
    guard = LoopGuard(ngram=ngram, repeats=repeats)
    guard.feed(text)
    return guard.trimmed()


def trim_to_sentence(text: str) -> str:
    """Drop an unfinished last sentence: cut after the last sentence-final mark (``. ! ? … 。 ！ ？``,
    with any closing quotes/brackets). Text without any such mark is returned stripped, unchanged."""
    text = text.rstrip()
    last = None
    for match in SENTENCE_END.finditer(text):
        last = match
    return text if last is None else text[: last.end()]


def ends_on_sentence(text: str) -> bool:
    """True when ``text`` ends (trailing whitespace aside) on a sentence-final mark, with any closing
    quotes/brackets after it."""
    return bool(_ENDS_ON_SENTENCE.search(text))
