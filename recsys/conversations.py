"""Conversations from chat lines: :func:`build_conversations` groups a channel's messages into the
exchanges they belong to, so that a recommendation can point at a whole conversation (its question and
its answers) instead of one half-line of it (issue 11).

How lines are linked (union-find over one channel's lines in time order; pure, no I/O):

1. **reply**: a line's Discord ``reference`` (``reply_to``) links it to that message;
2. **addressing**: a line that addresses a member (``nick: …``, ``nick, …``, ``@nick``, ``<@id>`` /
   mentions; :func:`recsys.conversations_text.addressed_ids`) links to that member's latest line
   addressed to its author, else to their latest line whoever it addressed, within ``gap_s`` (a
   follow-up to a helper's answer to a third member joins that conversation); and the addressed
   member's next line links back to it when it addresses nobody and only one member was waiting for
   them (the answer to "nick: did you try …?");
3. **continuation** (weak): a line linked by neither rule follows its author's own previous line of
   at most :data:`CONTINUE_S` before (a question or an answer typed over several lines), unless its
   author addressed two members or more in that time;
4. **answer shape** (weak): a short answer-shaped line ("yes …", "try …") that still belongs nowhere,
   right after another member's unaddressed question (within :data:`ANSWER_S`, no other question
   open), answers it.

Explicit links (1, 2) are merged first. A weak link never joins two groups that both already have
two participants, and no merge may make a conversation span more than :data:`MAX_SPAN_S`, so a busy
channel never collapses into one blob. Only groups with at least two participants (authors) are
conversations; every other line stays single. A Discord thread or forum post is one conversation
(``thread=True``).

The constants and the weak-link rule were chosen on the human-annotated reply links of
``ubuntu_irc`` (Kummerfeld et al., ACL 2019) with ``python -m bench.conversations`` (references
removed; 1,417 links in 7 files): link recall 0.684, pairwise precision 0.856, F1 0.579, 7.7 lines a
conversation (max 102). Rule 2 linked to the addressed member's latest line to nobody only until
2026-12-02: link recall 0.675, precision 0.865, F1 0.553, 7.1 lines (a follow-up to a helper's answer
to someone else started a conversation of its own); the newer of their latest lines to the author
and to nobody, their latest line only when neither: recall 0.655, F1 0.44. Letting weak links join two conversations gives link recall 0.74 and F1 0.59 but
precision 0.63 and conversations of up to 164 lines: refused, since a recommended conversation that
mixes two topics is worse than one cut short. ``gap_s`` 900 s instead of 600: precision 0.82; 300 s:
pairwise recall 0.32; continuation 60 s instead of 120: F1 0.53.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from recsys.conversations_text import (
    addressed_ids,
    conversation_text,
    conversation_title,
    mentioned_ids,
    names_index,
    strip_addressing,
)
from recsys.substance import is_low_substance, is_trigger, text_length

__all__ = ["ANSWER_S", "BOT_MIN_LINES", "BOT_SHARE", "CONTINUE_S", "GAP_S", "MAX_SPAN_S", "ChatLine", "Conversation",
           "addressed_ids", "bot_authors", "build_conversations", "conversation_text", "conversation_title",
           "strip_addressing"]

# s: an addressed member's line older than this is not what the line answers (ubuntu_irc: 95% of
# annotated links join lines ≤ 240 s apart, 98% ≤ 660 s; precision falls from 0.865 to 0.82 at 900 s)
GAP_S = 600.0
# s: an author's unaddressed line this soon after their previous one continues it (90% of annotated
# links are ≤ 120 s; 27% of them join two lines of one author)
CONTINUE_S = 120.0
ANSWER_S = 60.0  # s: a short reply this soon after another member's question answers it
# s: no conversation spans longer (first to last line). Not reached on ubuntu_irc (annotated
# conversations span ≤ 35 min); it bounds slow channels where two members talk all day
MAX_SPAN_S = 3 * 3600.0
ANSWER_MAX_WORDS = 12
# An author is a bot when at least BOT_SHARE of their lines (BOT_MIN_LINES or more) answer another
# member's ``!`` trigger of the last TRIGGER_S, at most TRIGGER_LINES lines back. On the 7 ubuntu_irc
# logs (times to the minute in some) the channel's factoid bot (not flagged in the export) scores
# 0.91–1.0 in each log, 0.97 over all 155 of its lines; the highest human 0.43 (3 of 7 lines)
BOT_SHARE = 0.9
BOT_MIN_LINES = 5
TRIGGER_S = 60.0
TRIGGER_LINES = 3
# how a short answer starts ("yes", "no, …", "try …", "use …", "sudo …"); English only, other languages never match
_ANSWER_START = re.compile(r"(?:yes|yeah|yep|yup|no|nope|nah|sure|try|use|install|run|type|sudo|apt|it's|its|you can|you need)\b",
                           re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ChatLine:
    """One member message of a channel: ids are Discord snowflakes, ``created_at`` UNIX s,
    ``reply_to`` the message it references (``None`` when unknown or removed), ``mention_ids`` the
    members it @mentions."""

    id: int
    channel_id: int
    author_id: int
    created_at: float
    text: str
    reply_to: int | None = None
    mention_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Conversation:
    """A conversation: ``id`` its opener's message id (the smallest of its message ids),
    ``message_ids`` in time order, ``participants`` authors (bots left out) in order of their first
    line — one for a monologue (``build_conversations(monologues=True)``), ``addressed`` members
    addressed, replied to or mentioned anywhere in it who wrote no line of it, ``title`` ≤ 120
    chars, ``text`` the embedding text (≤ 1,500 chars), ``first_at`` / ``last_at`` UNIX s."""

    id: int
    channel_id: int
    message_ids: tuple[int, ...]
    participants: tuple[int, ...]
    addressed: tuple[int, ...]
    title: str
    text: str
    first_at: float
    last_at: float


class _Groups:
    """Union-find over line positions that refuses a merge spanning more than ``max_span`` s, and a
    weak merge (continuation, answer shape) of two groups that both already have two participants."""

    def __init__(self, lines: Sequence[ChatLine], max_span: float):
        self.parent = list(range(len(lines)))
        self.first = [ln.created_at for ln in lines]
        self.last = list(self.first)
        self.authors = [(ln.author_id,) for ln in lines]  # up to two authors of each group
        self.max_span = max_span

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int, weak: bool = False) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        first, last = min(self.first[ra], self.first[rb]), max(self.last[ra], self.last[rb])
        if last - first > self.max_span or (weak and len(self.authors[ra]) > 1 and len(self.authors[rb]) > 1):
            return False
        self.parent[rb] = ra
        self.first[ra], self.last[ra] = first, last
        self.authors[ra] = tuple(dict.fromkeys(self.authors[ra] + self.authors[rb]))[:2]
        return True


def _explicit_links(lines: Sequence[ChatLine], index: Mapping[str, int], gap_s: float
                    ) -> tuple[list[tuple[int, int]], list[set[int]]]:
    """Rules 1 and 2: ``(links as (later, earlier) positions, members each line addresses)``. A line
    addressing member X links to X's latest line addressed to its author, else to X's latest line
    whoever it addressed (a follow-up to X's answer to someone else joins that conversation)."""
    pos = {ln.id: i for i, ln in enumerate(lines)}
    to_me: dict[tuple[int, int], int] = {}  # (member, addressee) -> position of member's latest line to them
    last_line: dict[int, int] = {}  # member -> position of their latest line
    waiting: dict[int, dict[int, int]] = {}  # addressed member -> {addresser: position of the addressing line}
    links: list[tuple[int, int]] = []
    addressed: list[set[int]] = []
    for i, ln in enumerate(lines):
        t, me = ln.created_at, ln.author_id
        ids = addressed_ids(ln.text, index, ln.mention_ids)
        ids.discard(me)
        addressed.append(ids)
        target = pos.get(ln.reply_to) if ln.reply_to is not None else None
        if target is not None and target != i:
            links.append((i, target))
        for member in ids:
            j = to_me.get((member, me), last_line.get(member))
            if j is not None and t - lines[j].created_at <= gap_s:
                links.append((i, j))
            waiting.setdefault(member, {})[me] = i
            to_me[(me, member)] = i
        pending = {a: j for a, j in waiting.pop(me, {}).items() if t - lines[j].created_at <= gap_s}
        if not ids and target is None and len(pending) == 1:
            links.append((i, next(iter(pending.values()))))
        last_line[me] = i
    return links, addressed


def _is_question(text: str) -> bool:
    return "?" in text or "？" in text


def _answer_shaped(text: str) -> bool:
    words = text.split()
    return 0 < len(words) <= ANSWER_MAX_WORDS and not _is_question(text) and bool(_ANSWER_START.match(text))


def _implicit_links(lines: Sequence[ChatLine], claimed: Sequence[bool], addressed: Sequence[set[int]]
                    ) -> list[tuple[int, int]]:
    """Rules 3 and 4 for the lines no explicit link starts from (``claimed[i]`` false). A
    continuation is ambiguous, and not made, when its author addressed two members or more in the
    last :data:`CONTINUE_S` (a helper answering several people at once)."""
    links: list[tuple[int, int]] = []
    recent: dict[int, deque[int]] = {}  # author -> positions of their lines within CONTINUE_S, oldest first
    told: dict[int, dict[int, int]] = {}  # author -> {member: their lines in that window addressing them}
    questions: deque[int] = deque()  # positions of the questions within ANSWER_S, oldest first
    for i, ln in enumerate(lines):
        t, me = ln.created_at, ln.author_id
        mine, counts = recent.setdefault(me, deque()), told.setdefault(me, {})
        while mine and t - lines[mine[0]].created_at > CONTINUE_S:
            for m in addressed[mine.popleft()]:
                counts[m] -= 1
                if not counts[m]:
                    del counts[m]
        while questions and t - lines[questions[0]].created_at > ANSWER_S:
            questions.popleft()
        if not claimed[i]:
            if mine:
                if len(counts) <= 1:
                    links.append((i, mine[-1]))
            elif (i > 0 and len(questions) == 1 and questions[0] == i - 1 and lines[i - 1].author_id != me
                  and not addressed[i - 1] and _answer_shaped(ln.text)):
                links.append((i, i - 1))
        if _is_question(ln.text):
            questions.append(i)
        mine.append(i)
        for m in addressed[i]:
            counts[m] = counts.get(m, 0) + 1
    return links


def _channel_groups(lines: Sequence[ChatLine], index: Mapping[str, int], gap_s: float
                    ) -> tuple[list[list[int]], list[set[int]]]:
    """Positions of each linked group of one channel's ``lines`` (time order), and who each line
    addresses. Explicit links are merged first, then the weak ones."""
    links, addressed = _explicit_links(lines, index, gap_s)
    claimed = [False] * len(lines)
    for i, _ in links:
        claimed[i] = True
    groups = _Groups(lines, MAX_SPAN_S)
    for i, j in sorted(links):
        groups.union(j, i)
    for i, j in _implicit_links(lines, claimed, addressed):
        groups.union(j, i, weak=True)
    members: dict[int, list[int]] = {}
    for i in range(len(lines)):
        members.setdefault(groups.find(i), []).append(i)
    return list(members.values()), addressed


def bot_authors(lines: Sequence[ChatLine]) -> set[int]:
    """Authors whose lines are at least :data:`BOT_SHARE` answers to ``!`` triggers (IRC factoid
    bots: ``!iso | nick`` → "nick: To mount an ISO disc image, type …"), among authors of
    :data:`BOT_MIN_LINES` lines or more of ``lines`` (any channels; read per channel in time order).
    A line answers a trigger when another member's line at most :data:`TRIGGER_LINES` lines and
    :data:`TRIGGER_S` s before it is one (:func:`recsys.substance.is_trigger`)."""
    by_channel: dict[int, list[ChatLine]] = {}
    for ln in sorted(lines, key=lambda ln: (ln.created_at, ln.id)):
        by_channel.setdefault(ln.channel_id, []).append(ln)
    total: dict[int, int] = {}
    answers: dict[int, int] = {}
    for chan in by_channel.values():
        trig = [is_trigger(ln.text) for ln in chan]
        for i, ln in enumerate(chan):
            total[ln.author_id] = total.get(ln.author_id, 0) + 1
            if any(trig[j] and chan[j].author_id != ln.author_id and ln.created_at - chan[j].created_at <= TRIGGER_S
                   for j in range(max(0, i - TRIGGER_LINES), i)):
                answers[ln.author_id] = answers.get(ln.author_id, 0) + 1
    return {a for a, n in total.items() if n >= BOT_MIN_LINES and answers.get(a, 0) >= BOT_SHARE * n}


def _conversation(lines: Sequence[ChatLine], addressed: Sequence[set[int]], names: Mapping[int, str],
                  index: Mapping[str, int], bots: Collection[int], author_of: Mapping[int, int]) -> Conversation:
    """One conversation of ``lines`` (time order); ``author_of``: message id -> author of every line
    given to the builder (a reply to a line outside the conversation still addresses its author)."""
    participants = tuple(dict.fromkeys(ln.author_id for ln in lines if ln.author_id not in bots))
    others = {m for ids in addressed for m in ids}
    for ln in lines:
        others |= mentioned_ids(ln.text, index)
    others |= {author_of[ln.reply_to] for ln in lines if ln.reply_to in author_of}
    return Conversation(
        id=min(ln.id for ln in lines), channel_id=lines[0].channel_id,
        message_ids=tuple(ln.id for ln in lines), participants=participants,
        addressed=tuple(sorted(others - set(participants) - set(bots))),
        title=conversation_title(lines, names, names_lower=index, bots=bots),
        text=conversation_text(lines, names, names_lower=index, bots=bots),
        first_at=lines[0].created_at, last_at=lines[-1].created_at)


def _kept(lines: Sequence[ChatLine], bots: Collection[int], monologues: bool, min_chars: float) -> bool:
    """Whether a linked group is an item: two members or more (bots not counted), or with
    ``monologues`` one member's two substantive lines or more (greetings, thanks and bot triggers
    not counted: a question and its "thanks" stay the question's item) of ``min_chars`` or more together."""
    humans = [ln for ln in lines if ln.author_id not in bots]
    people = len({ln.author_id for ln in humans})
    if people != 1 or not monologues:
        return people >= 2
    said = [text_length(ln.text) for ln in humans if not is_low_substance(ln.text)]
    return len(said) >= 2 and sum(said) >= min_chars


def build_conversations(lines: Sequence[ChatLine], names: Mapping[int, str], *, gap_s: float = GAP_S,
                        thread: bool = False, bots: Collection[int] = (), monologues: bool = False,
                        min_chars: float = 0) -> list[Conversation]:
    """The conversations among ``lines`` (any order, any channels; a repeated id counts once):
    groups of lines linked by replies, addressing, continuation and answer shape (module docstring),
    with at least two participants, each within one channel and :data:`MAX_SPAN_S`. ``names``:
    member id -> display name (how members address each other). ``gap_s``: s, how far back an
    addressed member's line may be. ``bots``: member ids of bots (:func:`bot_authors`, members
    flagged bot): their lines link like any, but they are no participant and never a title.
    ``monologues``: also one member's lines linked by continuation (two or more, nobody else in the
    group: a question typed over several lines) as one item, ``participants`` of length 1, when its
    lines hold ``min_chars`` or more together (:func:`recsys.substance.text_length`).
    ``thread=True``: the lines are one Discord thread or forum post, returned as one conversation
    whatever its participants (``[]`` when there are no lines). Returned in order of first line.
    Cost: linear in lines (times the number of distinct name lengths)."""
    ordered = sorted({ln.id: ln for ln in lines}.values(), key=lambda ln: (ln.created_at, ln.id))
    if not ordered:
        return []
    index = names_index(names)
    bots = frozenset(bots)
    author_of = {ln.id: ln.author_id for ln in ordered}
    if thread:
        addressed = [addressed_ids(ln.text, index, ln.mention_ids) - {ln.author_id} for ln in ordered]
        return [_conversation(ordered, addressed, names, index, bots, author_of)]
    by_channel: dict[int, list[ChatLine]] = {}
    for ln in ordered:
        by_channel.setdefault(ln.channel_id, []).append(ln)
    out: list[Conversation] = []
    for channel_lines in by_channel.values():
        groups, addressed = _channel_groups(channel_lines, index, gap_s)
        for group in groups:
            chosen = [channel_lines[i] for i in group]
            if _kept(chosen, bots, monologues, min_chars):
                out.append(_conversation(chosen, [addressed[i] for i in group], names, index, bots, author_of))
    out.sort(key=lambda c: (c.first_at, c.id))
    return out
