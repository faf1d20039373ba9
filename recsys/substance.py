"""Which chat messages carry too little to be recommended: :func:`is_low_substance`.

A recommendation should point a member at something worth opening. These never are, however many
reactions or replies they drew (a spam link members replied "delete this" to is *replied to*):

* greetings, thanks and acknowledgements ("Hello 👏", "thanks!", "ok", "gg", "good morning all");
* bot triggers: a command word behind a bot prefix (``!play …``, ``?rank``, ``;;skip``, ``-p song``);
* bare links and GIFs: a message whose own words (the first line — importers append a link
  preview's title and description below it) are only links, emoji and filler ("look 👇 https://…");
* giveaway / "free nitro" spam: ``discord.gift/`` links, "free nitro", and giveaway, airdrop or
  free-skins wording next to a link or an ``@everyone``;
* conversations whose title — their most substantive early line — says little (:func:`says_little`:
  fewer than two topic words, "i didn't know, thanks", "it doent work", unless a question of four words
  or more with one): found mid-exchange, nothing in them says what they are about.

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

__all__ = ["LowSubstance", "is_low_substance", "is_question", "is_trigger", "says_little", "text_length", "topic_words"]

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


# A bot trigger anywhere a line's words start: "!iso | nick", "nick: !ubuntu" (IRC factoid bots)
_TRIGGER = re.compile(r"(?:^|[\s:,>])![a-z0-9][\w.-]*", re.IGNORECASE)  # "!iso", "!9.10"
# Characters per CJK character in text_length: one Han character or kana carries about what a word
# of 3 Latin letters does (a Chinese sentence is 2.5–3.5× shorter than its English translation,
# e.g. 这个驱动装好以后要重启吗？ 13 characters, "does this driver need a reboot after install?" 45);
# a Hangul syllable about 2
HAN_WEIGHT = 3.0
HANGUL_WEIGHT = 2.0
_HAN = re.compile(r"[\u2e80-\u2fdf\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")


def text_length(text: str) -> float:
    """``text``'s length in Latin-character equivalents, for length gates designed for Latin text
    (``recsys.min_message_chars``): each Han character or kana counts :data:`HAN_WEIGHT`, each Hangul
    :data:`HANGUL_WEIGHT`, every other character 1. Equals ``len(text)`` for text without CJK."""
    text = text or ""
    if text.isascii():
        return float(len(text))
    han = len(_HAN.findall(text))
    hangul = len(_HANGUL.findall(text))
    return len(text) + (HAN_WEIGHT - 1) * han + (HANGUL_WEIGHT - 1) * hangul


# Words that say nothing of what a line is about: function words, the verbs of "it doesn't work" / "i didn't
# know" / "i have tried that", generic nouns ("the problem"), and their usual IRC spellings (with _FILLER)
_UNTOPICAL_WORDS = """
i me my mine myself we us our ours you your yours he him his she her they them their it its this that these those
an or but if then than as at by from in into on onto with without about up down off over under out
am are was were be been being do does did doing have has had having will would shall should can could may might must
not don't doesn't didn't isn't aren't wasn't weren't won't wouldn't can't cannot couldn't shouldn't haven't hasn't
dont doesnt didnt isnt arent wasnt wont wouldnt cant couldnt shouldnt havent hasnt doent dosent dosnt doesent doesn
i'm i've i'd i'll you're you've you'd you'll he's she's we're we've they're they've that's there's what's it'll
im ive id youre thats theres whats
also still even only already now again really actually maybe probably well right
what which who whom whose when where why how
know knew known think thought guess mean meant see saw seen say said tell told try tried tries trying
work works worked working get got gets getting go goes going went gone make made want wanted need needs needed
like liked prefer start started use uses used using give gave take took come came let sorry
help thing things something anything nothing stuff way one ones some any more most many other another
problem problems issue issues error question idea ideas answer
"""
_UNTOPICAL = _FILLER | frozenset(_UNTOPICAL_WORDS.split())
_MENTIONS = re.compile(r"<(?:@[!&]?|#)\d+>|<a?:\w+:\d+>|:[\w+-]+:")  # raw mentions, custom emoji, :shortcodes:
_QUESTION = re.compile(r"[?？]|^(?:how|what|why|where|which|who|when|is|are|can|could|does|do|did|should|anyone|has)\b",
                       re.IGNORECASE)
QUESTION_MIN_WORDS = 4  # words of a question with one topic word that says enough ("is wine any good?")
TOPIC_MIN = 2  # topic words a line needs to title a conversation (topic_words): "it doent work" has 0
_CJK_TOPIC_CHARS = 8.0  # text_length per topic word of CJK text: 这个驱动装好以后要重启吗 (12 Han) counts 4.5, 谢谢大家 1.5


def topic_words(text: str) -> float:
    """How many words of ``text`` say what it is about: its words (split at spaces, punctuation at
    their ends stripped) that are not function words, acknowledgements, generic verbs such as
    "work" / "know" / "try" or generic nouns such as "problem" (English lists); ``@name`` mentions,
    links and raw mentions never count. A CJK run counts its :func:`text_length` / 8
    (``_CJK_TOPIC_CHARS``: one Han character ≈ 0.4 topic word). Examples: "i didn't know, thanks" 0,
    "id prefer lubuntu to start" 1, "is linux worth switching to ?" 3. Never raises."""
    count = 0.0
    for tok in _URL.sub(" ", _MENTIONS.sub(" ", text or "")).split():
        if tok.startswith("@"):
            continue
        if not tok.isascii() and (_HAN.search(tok) or _HANGUL.search(tok)):
            count += text_length(tok) / _CJK_TOPIC_CHARS
            continue
        word = tok.strip(".,:;!?()[]{}<>\"'`*_~|/-").lower().replace("\u2019", "'")
        if word and any(ch.isalnum() for ch in word) and word not in _UNTOPICAL:
            count += 1
    return count


def is_question(text: str) -> bool:
    """Whether ``text`` asks something: a ``?`` (or ``？``) anywhere, or an English question word first
    ("how …", "anyone …", "does …"). Never raises."""
    return bool(_QUESTION.search(text or ""))


def says_little(text: str) -> bool:
    """Whether ``text`` is too thin to title a conversation (what it is about): low-substance
    (:func:`is_low_substance`), or fewer than :data:`TOPIC_MIN` topic words (:func:`topic_words`)
    unless it is a question (:func:`is_question`) of :data:`QUESTION_MIN_WORDS` words or more with one
    — an acknowledgement ("i didn't know, thanks", "I have tried that too."), a bare complaint ("it
    doent work"), a bare question ("whats the problem you have", "iceland ?"); "how many partitions
    should i make?" says enough. A conversation whose title (its most substantive early line) says
    little is low-substance (:func:`_judge`). Never raises."""
    if is_low_substance(text):
        return True
    topic = topic_words(text)
    if topic >= TOPIC_MIN:
        return False
    return not (topic >= 1 and len(text.split()) >= QUESTION_MIN_WORDS and is_question(text))


def is_trigger(text: str) -> bool:
    """Whether a line calls a bot with a ``!`` command where its words start (``!iso``, ``!iso | nick``,
    ``nick: !ubuntu``), as IRC factoid bots answer. Never raises."""
    return "!" in (text or "") and bool(_TRIGGER.search(text))


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
    by their title — their opening question or first substantive line, so one whose best line says
    little (:func:`says_little`: a greeting, a thanks, "it doent work") is low (a spam line somewhere
    inside a real exchange does not sink it)."""
    def low(it: Item) -> bool:
        if (it.meta or {}).get("conversation"):
            return says_little(it.title)
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
