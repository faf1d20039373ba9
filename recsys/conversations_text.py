"""The words of chat lines as a conversation sees them: who a line addresses
(:func:`addressed_ids`), a line without its addressing (:func:`strip_addressing`), and a
conversation's title and embedding text (:func:`conversation_title`, :func:`conversation_text`).

Addressing is how chat members point a line at someone (IRC and Discord alike): a member's display
name at the start of a line followed by a separator (``nick: …``, ``nick, …``, ``nick> …``, CJK
``小明：…``), ``@name`` anywhere, a Discord raw mention ``<@id>`` / the message's mentions, and the
IRC habit of naming the member at the end (``!sound | nick``, ``…, nick``). Names are matched
case-insensitively, longest name first, so display names with spaces and CJK names work; a name
shared by two members addresses neither. A member is **mentioned** (:func:`mentioned_ids`) when
their name (3 characters or more) stands anywhere in a line as a whole word: IRC clients alert a
member on that, so they saw it (eligibility), though only addressing links lines. Pure functions, no I/O.

:func:`strip_addressing` is the one home of "a line without whom it addresses": titles, conversation
texts and every embedded text (:func:`recsys.embed.embedding_text` calls it with ``drop=True``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from recsys.substance import is_low_substance, is_question, says_little

if TYPE_CHECKING:
    from recsys.conversations import ChatLine

__all__ = ["addressed_ids", "conversation_text", "conversation_title", "index_of", "mentioned_ids", "names_index",
           "strip_addressing"]

TITLE_MAX = 120  # chars (design: title ≤ 120 chars, one line)
TEXT_MAX = 1500  # chars of embedding text (design: opening + most substantive turns, ~1,500)
TITLE_LOOK = 8  # the title is chosen among the first lines of a conversation
TITLE_DECAY = 0.85  # weight of each later line when choosing it
OPENER_WEIGHT = 1.5  # weight of the opener's own lines when choosing it
WEAK_WEIGHT = 0.02  # weight of a line that says little (below any line that says something, 8 lines later)

_SEPARATORS = frozenset(":,;>：，；")
_RAW_MENTION = re.compile(r"<@!?(\d+)>")
_ANY_MENTION = re.compile(r"<(?:@[!&]?|#)\d+>")  # raw user, role and channel mentions
_UNKNOWN_AT = re.compile(r"@[^\s@]+\s+(?=\S)")  # "@someone " at the start: a name we do not know
_TOKEN_EDGE = ".,:;!?()[]{}<>\"'`*~|/"  # punctuation stripped from a word's ends before a name lookup
MENTION_MIN_CHARS = 3  # shorter names ("al", "k") are words too often to count as a mention mid-line
MENTION_MAX_WORDS = 4  # longest display name (words) looked for mid-line
_SPACE = re.compile(r"\s+")


class _NameIndex(dict):
    """A names index that knows its distinct name lengths (longest first) and its names without
    spaces between words (CJK names, matched as substrings by :func:`mentioned_ids`)."""

    lengths: list[int]
    unspaced: list[str]


def names_index(names: Mapping[int, str]) -> dict[str, int]:
    """``{lowercased display name: member id}`` for :func:`addressed_ids`: names stripped of spaces at
    both ends and of a leading ``@``; empty names and names shared by two members left out."""
    index: dict[str, int] = {}
    shared: set[str] = set()
    for mid, name in names.items():
        key = (name or "").strip().lstrip("@").lower()
        if not key:
            continue
        if key in index and index[key] != mid:
            shared.add(key)
        index[key] = mid
    for key in shared:
        del index[key]
    out = _NameIndex(index)
    out.lengths = sorted({len(k) for k in out}, reverse=True)
    out.unspaced = [k for k in out if len(k) >= 2 and not k.isascii() and _wide(k)]
    return out


def _wide(name: str) -> bool:
    return any("\u2e80" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" for ch in name)


@lru_cache(maxsize=16)
def _index_of_names(names: frozenset[str]) -> dict[str, int]:
    return names_index(dict(enumerate(sorted(names))))


def index_of(names: Mapping[str, int] | Collection[str]) -> Mapping[str, int]:
    """A names index (:func:`names_index`) for ``names``: returned as is when it already is one (a
    mapping), else built from a collection of display names (lower-case or not; member ids unknown,
    so only membership counts) — cached for the last 16 frozensets, so a guild's cached name set
    costs its index once."""
    if isinstance(names, Mapping):
        return names
    return _index_of_names(names if isinstance(names, frozenset) else frozenset(names))


def _lengths(names_lower: Mapping[str, int]) -> list[int]:
    cached = getattr(names_lower, "lengths", None)
    return cached if cached is not None else sorted({len(k) for k in names_lower}, reverse=True)


def _name_at(low: str, start: int, names_lower: Mapping[str, int], lengths: Sequence[int]) -> tuple[int, int] | None:
    """``(member id, end)`` of the longest known name at ``low[start:]`` that ends at a word boundary."""
    for n in lengths:
        end = start + n
        if end > len(low):
            continue
        mid = names_lower.get(low[start:end])
        if mid is not None and (end == len(low) or not (low[end].isalnum() or low[end] == "_") or not low[end - 1].isascii()):
            return mid, end
    return None


def _leading(low: str, names_lower: Mapping[str, int], lengths: Sequence[int]) -> tuple[list[int], int]:
    """Members addressed at the start of ``low`` ("a, b: …", "@a …", "a: …") and where the text after them begins."""
    found: list[int] = []
    pos = 0
    while pos < len(low):
        at = low[pos] == "@"
        hit = _name_at(low, pos + at, names_lower, lengths)
        if hit is None:
            break
        mid, end = hit
        rest = low[end:end + 2]
        sep = rest[:1] in _SEPARATORS
        if not (sep or at):
            break
        found.append(mid)
        pos = end + sep
        while pos < len(low) and (low[pos].isspace() or low[pos] in _SEPARATORS):
            pos += 1
    return found, pos


def addressed_ids(text: str, names_lower: Mapping[str, int], mention_ids: Iterable[int] = ()) -> set[int]:
    """Member ids a line addresses: names at its start before a separator (``nick: ``, ``nick, ``,
    ``a, b: ``, ``小明：``), ``@name`` anywhere, raw ``<@id>`` mentions, a name closing the line after
    ``|`` or ``,`` (``!sound | nick``), and ``mention_ids`` (the message's mentions). ``names_lower``
    as :func:`names_index` builds it. Never raises."""
    out = {int(m) for m in mention_ids}
    text = text or ""
    if "<@" in text:
        out.update(int(m) for m in _RAW_MENTION.findall(text))
    if not names_lower:
        return out
    low = text.split("\n", 1)[0].strip().lower()
    lengths = _lengths(names_lower)
    out.update(_leading(low, names_lower, lengths)[0])
    at = low.find("@", 1)
    while at != -1:
        hit = _name_at(low, at + 1, names_lower, lengths)
        if hit is not None and (at == 0 or not low[at - 1].isalnum()):
            out.add(hit[0])
        at = low.find("@", at + 1)
    cut = max(low.rfind("|"), low.rfind(","))
    if cut != -1:
        tail = low[cut + 1:].strip().rstrip(".!?:)").lstrip("@")
        if tail in names_lower:
            out.add(names_lower[tail])
    return out


def mentioned_ids(text: str, names_lower: Mapping[str, int]) -> set[int]:
    """Member ids whose name stands anywhere in ``text`` (every line) as a whole word or run of words
    ("ask jolly_quail809 about it", "thanks Ben Lee!"), names of :data:`MENTION_MIN_CHARS` characters
    or more; a CJK name anywhere inside CJK text. ``names_lower`` as :func:`names_index` builds it.
    What :func:`addressed_ids` finds is not repeated here. Never raises."""
    if not names_lower or not text:
        return set()
    low = text.lower()
    words = [w.strip(_TOKEN_EDGE).lstrip("@") for w in low.split()]
    out: set[int] = set()
    for i in range(len(words)):
        for n in range(1, min(MENTION_MAX_WORDS, len(words) - i) + 1):
            key = " ".join(words[i:i + n]) if n > 1 else words[i]
            mid = names_lower.get(key)
            if mid is not None and len(key) >= MENTION_MIN_CHARS:
                out.add(mid)
    if not low.isascii():
        out.update(names_lower[k] for k in getattr(names_lower, "unspaced", ()) if k in low)
    return out


def strip_addressing(text: str, names_lower: Mapping[str, int], names: Mapping[int, str] | None = None, *,
                     whole: bool = False, drop: bool = False) -> str:
    """``text``'s first line (``whole``: all its lines, joined by spaces) without the names addressed
    at its start, raw ``<@id>`` mentions shown as ``@name`` (or dropped when unknown), spaces collapsed.
    ``drop`` (for embedding): all lines, every raw user / role / channel mention removed, a leading
    ``@word`` removed even when no member has that name, and ``text`` returned unchanged when nothing
    else would remain."""
    whole = whole or drop
    first = (text or "").strip() if whole else (text or "").strip().split("\n", 1)[0].strip()
    if drop and "<" in first:
        first = _ANY_MENTION.sub(" ", first)
    elif "<@" in first:
        first = _RAW_MENTION.sub(lambda m: f"@{(names or {}).get(int(m.group(1)), '')}".rstrip("@"), first)
    first = _SPACE.sub(" ", first).strip()
    while True:
        before = first
        low = first.lower()
        if names_lower and len(low) == len(first):  # (a few characters change length when lowercased)
            _, pos = _leading(low, names_lower, _lengths(names_lower))
            if pos and first[pos:].strip():
                first = first[pos:].strip()
        if drop and first.startswith("@") and (m := _UNKNOWN_AT.match(first)):
            first = first[m.end():]
        if first == before or not drop:
            break
    if drop and not first:
        return text or ""
    return first


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:-") + "…"


def _substance(text: str) -> float:
    """How much a turn tells (higher first): its length in words (capped at 40), half as much again
    for a question (:func:`recsys.substance.is_question`); a line that says little
    (:func:`recsys.substance.says_little`: "i didn't know, thanks", "it doent work") :data:`WEAK_WEIGHT`
    times that, so a line that says what the conversation is about wins over it; 0 for a
    low-substance line (:func:`recsys.substance.is_low_substance`)."""
    if not text or is_low_substance(text):
        return 0.0
    words = min(len(text.split()), 40) + len(text) / 200
    words *= 1.5 if is_question(text) else 1.0
    return words * (WEAK_WEIGHT if says_little(text) else 1.0)


def _opening(lines: Sequence[ChatLine], index: Mapping[str, int], names: Mapping[int, str],
             bots: Collection[int] = ()) -> tuple[int, str]:
    """``(position, cleaned text)`` of the line that opens a conversation: among the first
    :data:`TITLE_LOOK` lines, the most substantive one (:func:`_substance`, each later line weighing
    :data:`TITLE_DECAY` times the one before, the opener's :data:`OPENER_WEIGHT` times: the opening
    question wins over a follow-up, but a conversation found mid-exchange — its first line "it
    doesn't work" or "i didn't know, thanks" — is titled by the question in it), else the first
    non-empty; ``(-1, "")`` when all are empty. A bot's line (``bots``) is never the opening while
    another is there."""
    cleaned = [strip_addressing(ln.text, index, names) for ln in lines[:TITLE_LOOK]]
    if bots and any(ln.author_id not in bots for ln in lines[:TITLE_LOOK]):
        cleaned = [("" if ln.author_id in bots else t) for ln, t in zip(lines, cleaned, strict=False)]
    opener = lines[0].author_id if lines else None
    scored = [(_substance(t) * TITLE_DECAY**i * (OPENER_WEIGHT if lines[i].author_id == opener else 1.0), -i)
              for i, t in enumerate(cleaned) if t]
    best = max(scored, default=(0.0, 0))
    if best[0] > 0:
        return -best[1], cleaned[-best[1]]
    return next(((i, t) for i, t in enumerate(cleaned) if t), (-1, ""))


def conversation_title(lines: Sequence[ChatLine], names: Mapping[int, str], *,
                       names_lower: Mapping[str, int] | None = None, bots: Collection[int] = ()) -> str:
    """The title of a conversation (``lines`` in time order): its opening line (:func:`_opening`:
    the opener's most substantive early line, a question preferred, never a greeting, thanks or bot
    command while another line is there), cleaned of addressing, one line, at most 120 chars (cut at a
    word, "…"). "" when every line is empty. ``names_lower``: :func:`names_index` of ``names`` when
    already built; ``bots``: authors whose lines never title it while another line is there."""
    index = names_index(names) if names_lower is None else names_lower
    return _shorten(_opening(lines, index, names, bots)[1], TITLE_MAX)


def conversation_text(lines: Sequence[ChatLine], names: Mapping[int, str], max_chars: int = TEXT_MAX, *,
                      names_lower: Mapping[str, int] | None = None, bots: Collection[int] = ()) -> str:
    """A conversation's embedding text: its opening line first (the title's, uncut), then its most
    substantive turns (:func:`_substance`: words, questions; low-substance lines never) in time order after it,
    each cleaned of addressing and on one line, until ``max_chars`` chars (a turn cut at a word only
    when at least 40 chars of it fit). "" when every line is empty. ``bots``' lines come after the
    members' turns (a factoid answer repeats what the channel's wiki says)."""
    index = names_index(names) if names_lower is None else names_lower
    at, opening = _opening(lines, index, names, bots)
    turns = [(i, strip_addressing(ln.text, index, names, whole=True)) for i, ln in enumerate(lines) if i != at]
    ranked = sorted(((s * (0.01 if lines[i].author_id in bots else 1.0), i, t) for i, t in turns
                     if (s := _substance(t)) > 0), key=lambda x: (-x[0], x[1]))
    opening = strip_addressing(lines[at].text, index, names, whole=True) if at >= 0 else ""
    chosen: list[tuple[int, str]] = [(at, _shorten(opening, max_chars))] if opening else []
    budget = max_chars - len(chosen[0][1]) if chosen else max_chars
    for _, i, t in ranked:
        if budget <= 1:
            break
        piece = _shorten(t, budget - 1)
        if len(piece) < min(len(t), 40):
            continue
        chosen.append((i, piece))
        budget -= len(piece) + 1
    return "\n".join(t for _, t in chosen[:1] + sorted(chosen[1:]))[:max_chars]
