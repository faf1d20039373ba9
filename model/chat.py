"""The chat journey: persona + history (under a token budget) → a streamed reply that ends on a
complete sentence.

The reply is streamed through a :class:`SentenceGate`, which lets text out one complete sentence at a
time and holds back the sentence being written. When the model ends on its own the held tail follows;
when the token cap cuts it (``finish_reason`` ``length``) the tail is dropped, so a member never sees
a reply cut mid-sentence, and nothing already shown ever has to be taken back. The gate also strips
a leading ``<name>:`` echo (the model starting "in the member's voice"), ends the reply where the
model starts writing a member's line, and ends it when the model starts to loop
(:class:`model.loops.LoopGuard`, plus a sentence said a second time).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing
from typing import Any

from campfire.config import ChatSettings
from model.client import GeneratorClient, QueueCallback
from model.loops import LoopGuard
from model.prompts import Turn, build_chat_messages, reply_word_budget, system_prompt
from model.slots import PRIORITY_CHAT
from model.tokens import TokenCounter

EMPTY_REPLY_APOLOGY = "Sorry, I couldn't come up with a reply just now. Could you say that again?"
UNFINISHED_APOLOGY = "Sorry, I lost the thread of my answer. Could you ask again, perhaps a little more simply?"

# Names a model may put before its own line or a member's (besides the members' display names).
ROLE_NAMES = ("Campfire", "Assistant", "User", "AI", "Bot")
# A sentence's last mark (English and Chinese), with closing quotes/brackets/markdown after it.
_END = re.compile(r"(?:[.!?…]+|[。！？]+)[\"'”’»)）」』】*_]*")
_CJK_END = frozenset("。！？")
_LIST_NUMBER = re.compile(r"(?:^|\n)[ \t]*(?:\d{1,3}|[a-zA-Z])$")  # "1." / "a." opening a list item
_ABBREVIATION = re.compile(r"(?:^|[\s(])(?:e\.g|i\.e|mr|mrs|ms|dr|vs)$", re.IGNORECASE)
_FENCED = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_MIN_LOOP_SENTENCE = 16  # characters: shorter sentences ("Yes.", "谢谢。") may well repeat


def _normal(sentence: str) -> str:
    return re.sub(r"\W+", " ", sentence.lower()).strip()


def _mask_code(text: str) -> str:
    """``text`` with fenced code blocks (an unclosed one to the end) blanked out, newlines kept: the
    same length, so offsets still point into ``text``."""
    return _FENCED.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)


def sentence_ends(text: str, *, final: bool) -> list[int]:
    """Offsets just after each complete sentence of ``text`` (English ``. ! ? …`` and Chinese
    ``。！？`` marks with any closing quotes or brackets), outside fenced code blocks. A Latin mark
    counts only when whitespace follows it (so ``3.14``, ``e.g.`` and list numbers ``1.`` do not);
    with ``final`` False the last mark must be followed by something (more text may change it)."""
    ends: list[int] = []
    for m in _END.finditer(text):
        end = m.end()
        nxt = text[end : end + 1]
        if text.count("```", 0, m.start()) % 2:
            continue  # inside a code block
        if m.group()[0] not in _CJK_END:
            if nxt and not nxt.isspace():
                continue
            if m.group()[0] == "." and (_LIST_NUMBER.search(text, 0, m.start())
                                        or _ABBREVIATION.search(text, 0, m.start())):
                continue
        if not nxt and not final:
            continue
        ends.append(end)
    return ends


class SentenceGate:
    """Holds a streamed reply back to its last complete sentence.

    ``names``: display names of the members in the conversation (with :data:`ROLE_NAMES`, the names
    whose ``name:`` may open a line). :meth:`feed` takes a delta and returns the text that may be
    shown now (possibly ``""``); :meth:`finish` returns what is left to show at the end. ``text`` is
    everything let out; ``stopped`` is ``"echo"`` (the model began a member's line) or ``"loop"``
    (it began to repeat itself) once the reply has ended early — stop generating then.
    """

    def __init__(self, names: Iterable[str] = ()) -> None:
        wanted = {n.strip() for n in (*names, *ROLE_NAMES) if n and n.strip()}
        self._names = sorted(wanted, key=len, reverse=True)
        alternatives = "|".join(re.escape(n) for n in self._names)
        speaker = rf"(?:\*\*)?(?:{alternatives})(?:\*\*)?[ \t]*[:：]"
        self._lead = re.compile(rf"\s*{speaker}[ \t]*", re.IGNORECASE)
        self._turn = re.compile(rf"\n[ \t]*{speaker}", re.IGNORECASE)
        self.raw = ""  # everything the model wrote
        self.text = ""  # everything let out
        self.stopped: str | None = None
        self._spoken = ""  # raw without a leading echo
        self._clean = ""  # _spoken up to an echo or loop
        self._guard = LoopGuard()

    def _lead_pending(self, text: str) -> bool:
        """True while ``text`` could still become a ``name:`` echo (it is the start of one)."""
        head = text.lstrip().lower().removeprefix("**")
        return bool(head) and any(f"{n.lower()}:".startswith(head) or f"{n.lower()}**:".startswith(head)
                                  for n in self._names)

    def _update(self, *, final: bool = False) -> bool:
        """Recompute the shown-to-be text from :attr:`raw`; False while a leading echo is undecided
        (never with ``final``: the model has stopped)."""
        text = self.raw
        while m := self._lead.match(text):
            text = text[m.end() :]
        if self._lead_pending(text) and not final:
            return False
        text = self._spoken = text.lstrip()
        if m := self._turn.search(text):
            text, self.stopped = text[: m.start()], "echo"
        self._clean = self._cut_loops(text, final=final)
        return True

    def _cut_loops(self, text: str, *, final: bool) -> str:
        """``text`` up to where it starts looping (setting :attr:`stopped`), else unchanged: where
        :class:`model.loops.LoopGuard` finds a loop outside code blocks (an 8-gram or a line seen 3
        times, a run of one character; code legitimately repeats lines), or where a sentence of :data:`_MIN_LOOP_SENTENCE` characters or more comes a
        second time — caught before it is let out, which the 3-times rules alone would not be. Text
        already let out is never cut."""
        masked = _mask_code(text)
        if not masked.startswith(self._guard.text):  # the start was decided differently: start over
            self._guard = LoopGuard()
        self._guard.feed(masked[len(self._guard.text) :])
        if final:
            self._guard.finish()  # the last word and line count too
        cut = self._guard.loop.start if self._guard.loop is not None else len(text)
        seen: set[str] = set()
        start = 0
        for end in sentence_ends(text, final=True):
            key = _normal(text[start:end])
            if len(key) >= _MIN_LOOP_SENTENCE and key in seen:
                cut = min(cut, start)
                break
            seen.add(key)
            start = end
        if cut < len(text):
            self.stopped = "loop"
            return text[: max(cut, len(self.text))].rstrip()
        return text

    def _release(self, upto: int) -> str:
        out = self._clean[len(self.text) : upto]
        self.text += out
        return out

    def feed(self, delta: str) -> str:
        """Add ``delta``; returns the newly complete sentences (``""`` when none)."""
        if self.stopped:
            return ""
        self.raw += delta
        if not self._update():
            return ""
        ends = [e for e in sentence_ends(self._clean, final=self.stopped is not None) if e > len(self.text)]
        return self._release(ends[-1]) if ends else ""

    def finish(self, *, complete: bool) -> str:
        """What is left to show: the held tail when the model ended on its own (``complete``) or began
        a member's line, else only up to the last complete sentence. Returns ``""`` when nothing."""
        self._update(final=True)
        if (complete and self.stopped != "loop") or self.stopped == "echo":
            return self._release(len(self._clean.rstrip()))
        ends = [e for e in sentence_ends(self._clean, final=True) if e > len(self.text)]
        return self._release(ends[-1]) if ends else ""

    @property
    def trimmed(self) -> bool:
        """True when some of what the model wrote is not shown (cut at the cap, a loop or an echo)."""
        return len(self.text.strip()) < len(self._spoken.strip())


def _penalties(chat: ChatSettings) -> dict[str, float]:
    """The repetition penalties of ``[chat]`` that are set (``frequency_penalty``, ``presence_penalty``,
    ``repetition_penalty``; settings without them send none)."""
    names = ("frequency_penalty", "presence_penalty", "repetition_penalty")
    return {name: float(getattr(chat, name)) for name in names if getattr(chat, name, None) is not None}


def _capped(usage: dict[str, Any], max_tokens: int) -> bool:
    """Did the token cap end the reply? The server's ``finish_reason`` when the client reports it,
    else ``completion_tokens`` reaching ``max_tokens``."""
    reason = usage.get("finish_reason")
    if reason:
        return reason == "length"
    return int(usage.get("completion_tokens") or 0) >= max_tokens


async def stream_reply(
    client: GeneratorClient,
    *,
    persona: str,
    turns: list[Turn],
    chat: ChatSettings,
    counter: TokenCounter,
    user: str | None = None,
    on_queued: QueueCallback | None = None,
    stats: dict[str, Any] | None = None,
) -> AsyncIterator[str]:
    """Stream the assistant's reply to the last of ``turns`` (oldest first), as text deltas that
    always end on a complete sentence (see the module docstring; nothing shown is taken back).

    Uses the new turn plus up to ``chat.history_messages`` earlier turns that fit
    ``chat.history_token_budget`` tokens, at most ``chat.max_reply_tokens`` reply tokens (the prompt
    asks for :func:`model.prompts.reply_word_budget` words), ``chat.temperature``, and the
    ``[chat]`` repetition penalties the settings have (:func:`_penalties`). The request has
    :data:`model.slots.PRIORITY_CHAT`: it is served before waiting stories. An empty model reply is
    retried once; a second yields :data:`EMPTY_REPLY_APOLOGY`; a reply cut (by the cap or a loop) before
    its first sentence ended yields :data:`UNFINISHED_APOLOGY`. ``stats``, when given, is filled with
    ``finish_reason`` (``stop`` | ``length`` | ``loop`` | ``echo`` | ``empty``), ``trimmed`` (bool),
    ``prompt_tokens``, ``completion_tokens`` and ``ttft_s``. Raises the client's
    :class:`model.errors.GeneratorError` subclasses and ``ValueError`` for no turns. Close it with
    ``contextlib.aclosing`` when stopping early.
    """
    if not turns:
        raise ValueError("There is no message to reply to.")
    system = system_prompt(persona, max_words=reply_word_budget(chat.max_reply_tokens))
    # Tokenising the history is CPU work (≈ 20 ms for 20 turns): keep it off the event loop.
    messages = await asyncio.to_thread(
        build_chat_messages, system, turns[-(chat.history_messages + 1) :],
        budget_tokens=chat.history_token_budget, counter=counter,
    )
    names = {t.name for t in turns if t.name}
    stats = stats if stats is not None else {}
    for _ in range(2):
        usage: dict[str, Any] = {}
        gate = SentenceGate(names)
        async with aclosing(client.stream_chat(
            messages, max_tokens=chat.max_reply_tokens, temperature=chat.temperature,
            user=user, on_queued=on_queued, usage=usage, priority=PRIORITY_CHAT, **_penalties(chat),
        )) as stream:
            async for delta in stream:
                if out := gate.feed(delta):
                    yield out
                if gate.stopped:
                    break  # closing the stream stops the generation on the server
        capped = gate.stopped is None and _capped(usage, chat.max_reply_tokens)
        if tail := gate.finish(complete=not capped):
            yield tail
        stats.update(usage, finish_reason=gate.stopped or ("length" if capped else "stop"), trimmed=gate.trimmed)
        if gate.text.strip():
            return
        if gate.raw.strip():
            yield UNFINISHED_APOLOGY
            return
    stats.update(finish_reason="empty", trimmed=False)
    yield EMPTY_REPLY_APOLOGY
