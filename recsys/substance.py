"""Which chat messages carry too little to be recommended: :func:`is_low_substance`.

A recommendation should point a member at something worth opening. These never are, however many
reactions or replies they drew (a spam link members replied "delete this" to is *replied to*):

* greetings, thanks and acknowledgements ("Hello 👏", "thanks!", "ok", "gg", "good morning all");
* bot triggers: a command word behind a bot prefix (``!play …``, ``?rank``, ``;;skip``, ``-p song``);
* bare links and GIFs: a message whose own words (the first line — importers append a link
  preview's title and description below it) are only links, emoji and filler ("look 👇 https://…");
* giveaway / "free nitro" spam: ``discord.gift/`` links, "free nitro", and giveaway, airdrop or
  free-skins wording next to a link or an ``@everyone``.

Pure text rules, no model (substring checks first, so most messages cost one ``str.lower`` and a
split). :class:`LowSubstance` judges each stored message item once and gives the ranking pipeline
the low ones (``GuildStats.low_substance``, which its candidate filter drops for every member). The word lists are English; other languages
pass unless they are bare links, emoji or commands.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from recsys.store import Item, Store

__all__ = ["LowSubstance", "is_low_substance"]

RESCAN_S = 3600.0  # LowSubstance judges a guild anew this often (an edited message is judged again)
JUDGE_BATCH = 2000  # items read and judged at once

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
# Discord markup without words: raw mentions, custom emoji, :shortcodes:, spoiler / bold / italic marks
_MARKUP = re.compile(r"<(?:@[!&]?|#)\d+>|<a?:\w+:\d+>|:[\w+-]+:|\|\||[*_~`>]+")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?|\d+")
# A bot command: a prefix, then a command word right after it (``!play``, ``;;skip``, ``-p``)
_COMMAND = re.compile(r"^(?:[!?$%=+~-]|;;|\$\$)[a-z][\w-]*(?:\s|$)", re.IGNORECASE)  # not "." (".NET 8 is out")
_COMMAND_PREFIXES = frozenset("!?$%=+~-;")
_COMMAND_MAX_WORDS = 8  # "!play never gonna give you up" is a command; a paragraph starting "-" is not
_SPAM_ALWAYS = re.compile(r"discord(?:app)?\.gifts?/|\bfree\s+(?:discord\s+)?nitro\b|\bnitro\s+(?:for\s+free|giveaway|gift)\b", re.IGNORECASE)
_SPAM_WITH_LINK = re.compile(
    r"\b(?:give-?aways?|airdrops?|free\s+(?:steam|robux|v-?bucks|skins?|crypto|nfts?|gift)|claim\s+(?:your|it|now|here)|"
    r"steam\s+gift|gift\s+for\s+you)\b",
    re.IGNORECASE,
)
_BROADCAST = re.compile(r"@(?:everyone|here)\b", re.IGNORECASE)
_GIF_HOST = re.compile(r"(?:tenor\.com|giphy\.com|gfycat\.com|imgur\.com/\S+\.gifv?)|\.gifv?(?:\?\S*)?$", re.IGNORECASE)

# Words that carry no topic on their own: greetings, thanks, acknowledgements, reactions, pointers.
_FILLER = frozenset("""
hi hello hey heya hiya howdy yo sup hai helo hallo hola ciao gm gn morning evening night afternoon good
welcome wb back thanks thank thx thnx tnx tks ty tysm tyvm thankyou thanx cheers appreciated appreciate
ok okay k kk okie okey alright aight sure yes yeah yep yup ya yea no nope nah np yw
lol lmao lmfao rofl haha hahaha hehe xd omg wow woah whoa nice cool great awesome amazing neat sweet
same agreed agree true indeed exactly this that it is so much very a lot all everyone everybody guys
folks y'all you u too again bye cya gg ggs wp glhf brb afk done noted fine oh ah uh hmm mhm yay
look see check out here there it's its just lmk pls plz please and the for to of 1
""".split())
_ONLY_FILLER_MAX_WORDS = 8
# A greeting or thanks with a couple of other words is still one ("thanks Adam", "hi from Lisbon"
# is not: three other words are a message)
_POLITE = frozenset("hi hello hey heya hiya howdy yo gm gn morning welcome thanks thank thx ty tysm tyvm cheers bye cya gg".split())
_POLITE_MAX_OTHER_WORDS = 2


def _words(text: str) -> list[str]:
    return _WORD.findall(_MARKUP.sub(" ", text).lower())


def _only_filler(words: list[str]) -> bool:
    if not words:
        return True  # emoji, markup or punctuation only
    other = [w for w in words if w not in _FILLER]
    if not other:
        return len(words) <= _ONLY_FILLER_MAX_WORDS
    return (len(other) <= _POLITE_MAX_OTHER_WORDS and len(words) <= _POLITE_MAX_OTHER_WORDS + 3
            and any(w in _POLITE for w in words))


def is_low_substance(text: str) -> bool:
    """Whether a chat message's ``text`` is too thin to recommend: a greeting, thanks or
    acknowledgement, a bot command, a bare link or GIF without words of its own, or giveaway /
    "free nitro" spam (see the module docstring for each rule). Empty text is low-substance.
    Never raises; any ``str`` (Discord markup included) is accepted."""
    text = (text or "").strip()
    if not text:
        return True
    low = text.lower()  # cheap substring checks first: most messages skip every regex but one
    has_link = ("http" in low or "www." in low) and bool(_URL.search(text))
    if ("nitro" in low or "gift" in low) and _SPAM_ALWAYS.search(text):
        return True
    if (has_link or "@everyone" in low or "@here" in low) and _SPAM_WITH_LINK.search(text):
        return True
    first = text.split("\n", 1)[0].strip()
    if first[:1] in _COMMAND_PREFIXES and "\n" not in text and len(first.split()) <= _COMMAND_MAX_WORDS \
            and _COMMAND.match(first):
        return True
    if has_link and _URL.search(first):  # a link preview's title and description sit below the first line
        own = _words(_URL.sub(" ", first))
        return _only_filler(own) or (bool(_GIF_HOST.search(first)) and len(own) <= 3)
    rest = _URL.sub(" ", text) if has_link else text
    tokens = rest.lower().split()
    if len(tokens) > 3 * _ONLY_FILLER_MAX_WORDS:
        return False  # too many words for a greeting or a row of emoji
    own = 0
    for t in tokens:  # plain words of its own: three are a message (the exact test below is slower)
        if t.isalpha() and t not in _FILLER:
            own += 1
            if own > _POLITE_MAX_OTHER_WORDS:
                return False
    return _only_filler(_words(rest))


def _judge(items: dict[int, Item]) -> list[int]:
    """The low-substance ones of ``items``: untitled chat messages by their text, and conversations
    by their title — their opening question or first substantive line, so one whose best line is a
    greeting or a thanks is low (a spam line somewhere inside a real exchange does not sink it)."""
    def low(it: Item) -> bool:
        if (it.meta or {}).get("conversation"):
            return is_low_substance(it.title)
        return not it.title and is_low_substance(it.text)

    return [i for i, it in items.items() if it.kind == "message" and low(it)]


class LowSubstance:
    """The low-substance message items of each guild, each item judged once: a call reads the
    guild's item ids (``Store.item_columns``), judges those not judged before (their stored kind,
    title and text, :func:`is_low_substance`; only untitled ``message`` items and conversations can
    be low) and returns the low ones. Every ``rescan_s`` seconds a guild is judged anew from scratch,
    so an edited message is judged again within that time. Memory: 8 bytes per judged id, plus the low ids."""

    def __init__(self, rescan_s: float = RESCAN_S):
        self.rescan_s = rescan_s
        self._judged: dict[int, np.ndarray] = {}  # guild -> sorted judged item ids
        self._low: dict[int, set[int]] = {}
        self._at: dict[int, float] = {}

    async def ids(self, store: Store, guild_id: int) -> frozenset[int]:
        """Ids of ``guild_id``'s low-substance message items now (ids of removed items may remain:
        they match nothing)."""
        now = time.monotonic()
        if now - self._at.get(guild_id, -math.inf) > self.rescan_s:
            self._judged[guild_id], self._low[guild_id], self._at[guild_id] = np.empty(0, np.int64), set(), now
        ids = (await store.item_columns(guild_id))["id"]
        new = np.setdiff1d(ids, self._judged[guild_id], assume_unique=True)
        low = self._low[guild_id]
        for start in range(0, len(new), JUDGE_BATCH):
            chunk = [int(i) for i in new[start : start + JUDGE_BATCH]]
            low.update(await asyncio.to_thread(_judge, await store.get_items(chunk)))
        if len(new):
            self._judged[guild_id] = np.union1d(self._judged[guild_id], new)
        return frozenset(low)
