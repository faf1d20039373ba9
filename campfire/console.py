"""``campfire console``: Campfire in the terminal, on the same application core as the Discord bot.

Plain text is a chat turn (the session's turns are its memory); slash commands tell stories, rate
them, show recommendations, switch to an imported member and preview the daily digest. On a
terminal the output uses rich (streamed tokens, tables); from a pipe or ``--script`` it is plain
text, one command per input line, each echoed after ``campfire>``, so a session can be scripted
and its transcript read.

Every generation prints its TTFT (seconds to the first token) and tokens/s; the start prints how
long the embedder and the generator (the model load, for the embedded server) took to get ready.

Top-level imports stay light: ``campfire --help`` imports this module to read its flags.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from campfire.config import Settings
from campfire.console_output import PROMPT, Generation, Interrupts, PlainOutput, RichOutput, _read_in_thread  # noqa: F401
from campfire.features.text import clip

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from campfire.app import App
    from campfire.features.types import Member, SavedStory

# The console acts in a guild and as a member. Without imported data it uses these ids (real
# Discord snowflakes are > 2**22, so they never collide with an imported guild or member).
CONSOLE_GUILD_ID = 1
CONSOLE_USER_ID = 1
CONSOLE_USER_NAME = "console"

USAGE: dict[str, str] = {
    "story": "/story THEME [--genre G] [--length short|medium|long] [--lang auto|en|zh]",
    "rate": "/rate up|down",
    "recommend": "/recommend [MEMBER]",
    "as": "/as MEMBER",
    "digest": "/digest [--all]",
    "help": "/help",
    "quit": "/quit",
}
HELP: dict[str, str] = {
    "story": "write a story on THEME, save it and recommend it later",
    "rate": "rate the last story",
    "recommend": "today's picks for you, or for MEMBER (display name or id)",
    "as": "act as a member imported from an export (display name or id)",
    "digest": "preview today's daily post for subscribed members (--all: every member with ≥ 3 interactions); nothing is sent or recorded",
    "help": "this list",
    "quit": "leave (also /exit or end of input)",
}


class UsageError(ValueError):
    """A command's arguments are wrong; ``str()`` is the one-line usage hint."""


# ---- the session --------------------------------------------------------------------------------
@dataclass
class ConsoleSession:
    """One console conversation over ``app``: who we are, where, and what was said.

    ``max_story_tokens`` caps stories (``None``: the length's budget); ``digest_all_members`` makes
    ``/digest`` cover every member with ≥ 3 interactions.
    """

    app: App
    out: PlainOutput
    guild_id: int = CONSOLE_GUILD_ID
    member_id: int = CONSOLE_USER_ID
    member_name: str = CONSOLE_USER_NAME
    max_story_tokens: int | None = None
    digest_all_members: bool = False
    turns: list[Any] = field(default_factory=list)  # model.prompts.Turn
    last_story: SavedStory | None = None
    generations: list[Generation] = field(default_factory=list)
    failures: int = 0  # commands that failed with an unexpected error (exit code 1)
    interrupts: Interrupts = field(default_factory=Interrupts)  # Ctrl-C: see interrupt()
    _member_saved: bool = False

    @property
    def settings(self) -> Settings:
        return self.app.settings

    # -- set-up --------------------------------------------------------------------------------
    async def choose_guild(self, guild_id: int | None = None) -> None:
        """Act in ``guild_id``, else the first imported guild, else the console's own guild (created
        on first use). Raises :class:`UsageError` for a ``guild_id`` the store does not know."""
        from campfire.features import picks

        try:
            guild, members = await picks.choose_guild(self.app, guild_id, fallback_id=CONSOLE_GUILD_ID,
                                                      fallback_name="console")
        except ValueError as err:
            raise UsageError(str(err)) from None
        self.guild_id = guild.id
        self.out.info(f"guild: {guild.name or guild.id} ({guild.id}), {members} members")

    async def _ensure_member(self) -> None:
        """The console's own member row, written the first time it records something."""
        from campfire.features.recording import upsert_member
        from campfire.features.types import Member

        if self.member_id == CONSOLE_USER_ID and not self._member_saved:
            await upsert_member(self.app, Member(guild_id=self.guild_id, id=CONSOLE_USER_ID, name=CONSOLE_USER_NAME))
            self._member_saved = True

    async def find_member(self, name: str) -> Member | None:
        """A member of this guild by display name (case-insensitive, leading ``@`` ignored) or id."""
        from campfire.features import picks

        member = await picks.find_member(self.app, self.guild_id, name)
        if member is None:
            self.out.error(f"no member {name.strip().lstrip('@')!r} in this guild. {await self._member_hint()}")
        return member

    async def _member_hint(self) -> str:
        from campfire.features import picks

        names = [m.name or str(m.id) for m in await picks.active_members(self.app, self.guild_id)]
        return f"Try one of: {', '.join(names)}" if names else "Import an export first: campfire import FILE"

    # -- the loop --------------------------------------------------------------------------------
    async def run(self, read_line: Callable[[], Any]) -> int:
        """Handle lines from ``read_line`` (an async callable returning ``None`` at the end) until
        ``/quit``, end of input or a Ctrl-C with no command in progress (:meth:`interrupt`). Returns
        0, 1 when a command failed with an unexpected error, 130 when Ctrl-C ended the session."""
        steps = self.interrupts
        while not steps.ended:
            done, line = await steps.step(read_line(), stoppable=False)
            if not done or line is None:
                break
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            self.out.command(line)
            done, keep = await steps.step(self.handle(line), stoppable=True)
            if not done:
                self.out.end_stream()
                self.out.info("⏹ stopped: nothing of it was saved. Ctrl-C again or Ctrl-D quits.")
            elif not keep:
                break
        if steps.ended and self.out.rich:
            self.out.end_stream()  # leave the prompt's line
        self.summary()
        return 130 if steps.ended else 1 if self.failures else 0

    def interrupt(self) -> bool:
        """Ctrl-C. With a command in progress (a story or a reply being written) stop it: what was
        streamed stays on screen, nothing of it is saved or kept in the conversation, the session
        goes on (True). With none, or again while one is stopping, end the session (False)."""
        return self.interrupts.interrupt()

    async def handle(self, line: str) -> bool:
        """Handle one line; ``False`` after ``/quit``. Errors print one line and never end the session."""
        from model.errors import GeneratorError

        if not line.startswith("/"):
            await self._guard(self.chat(line), GeneratorError)
            return True
        name, _, rest = line[1:].partition(" ")
        name = name.lower()
        if name in ("quit", "exit", "q"):
            return False
        handlers = {
            "story": self.story,
            "rate": self.rate,
            "recommend": self.recommend,
            "as": self.act_as,
            "digest": self.digest,
            "help": self.help,
        }
        if name not in handlers:
            self.out.error(f"unknown command /{name}. Commands: {' '.join('/' + c for c in USAGE)} (/help explains them)")
            return True
        await self._guard(handlers[name](rest.strip()), GeneratorError)
        return True

    async def _guard(self, coro: Any, generator_error: type[Exception]) -> None:
        try:
            await coro
        except UsageError as err:
            self.out.error(str(err))
        except generator_error as err:
            self.out.end_stream()
            self.out.error(f"{err} (the session goes on; try again)")
        except Exception as err:  # a bug: say so, keep the session, fail the exit code
            log.exception("console command failed")
            self.failures += 1
            self.out.end_stream()
            self.out.error(f"internal error ({type(err).__name__}: {err}); the session goes on")

    # -- commands --------------------------------------------------------------------------------
    async def help(self, rest: str) -> None:
        self.out.info("Type a message to chat, or a command:")
        for key, usage in USAGE.items():
            self.out.info(f"  {usage}")
            self.out.info(f"      {HELP[key]}")

    async def chat(self, text: str) -> None:
        """A chat turn (:mod:`campfire.features.chat`): the reply streams, the turn pair joins the
        session's memory."""
        from contextlib import aclosing

        from campfire.features import chat
        from model.prompts import Turn

        self._generator()
        history = self.settings.chat.history_messages
        turns = [*self.turns, Turn(role="user", content=text, name=self.member_name)][-history:]
        persona = await chat.persona(self.app, guild_id=self.guild_id)
        t0 = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        async with aclosing(chat.reply(self.app, persona, turns, member_id=self.member_id)) as deltas:
            async for delta in deltas:
                if not delta:
                    continue
                if first is None:
                    first = time.perf_counter()
                parts.append(delta)
                self.out.delta(delta)
        total = time.perf_counter() - t0
        self.out.end_stream()
        reply = "".join(parts)
        self.turns = [*turns, Turn(role="assistant", content=reply)][-history:]
        tokens = await asyncio.to_thread(self.app.counter.count, reply) if reply else 0
        self._report(Generation("chat", (first or time.perf_counter()) - t0, total, tokens))

    async def story(self, rest: str) -> None:
        """``/story THEME [--genre G] [--length L] [--lang X]``: told and saved by
        :func:`campfire.features.stories.tell` exactly as the bot's ``/story`` (a story item and the
        member's ``requested`` interaction, embedded and indexed by the recommender)."""
        from campfire.features import stories
        from campfire.features.types import Member

        opts = _parse_story(rest)
        try:
            plan = stories.plan(self.app, " ".join(opts.theme), genre=opts.genre, length=opts.length, language=opts.lang)
        except stories.StoryDeclined as err:  # an honest answer, not a mistake of the member's
            self.out.info(str(err))
            return
        except ValueError as err:
            raise UsageError(str(err)) from None
        self._generator()
        await self._ensure_member()
        requester = Member(guild_id=self.guild_id, id=self.member_id, name=self.member_name)

        def retry() -> None:
            self.out.end_stream()
            self.out.info("that one did not come out well — writing it once more with stronger repetition penalties")

        story = await stories.tell(self.app, plan, requester=requester, source="console", on_delta=self.out.delta,
                                   on_retry=retry, max_tokens=self.max_story_tokens)
        self.out.end_stream()
        if story.rejected:  # shown (streamed above), never saved or recommended
            self.out.info(f"{story.notice} (/story again to retry)")
            self.out.info(f"kept text ({len(story.text)} characters, cut before any loop):\n{story.text}")
        elif not story.saved:
            self.out.info(f"{story.title!r} was not saved: this member opted out of recording")
        else:
            self.last_story = story
            self.out.info(f"saved story #{story.item_id}: {story.title!r} ({story.language}); /rate up|down")
        self._report(Generation("story", story.ttft_s, story.total_s, story.completion_tokens))

    async def rate(self, rest: str) -> None:
        """``/rate up|down``: rate the last story told in this session, exactly as the bot's 👍/👎
        (:func:`campfire.features.stories.rate`): a new rating replaces the member's earlier one on
        the story, in the store and the FAISS interaction index, and the story's stored rating moves
        by the difference."""
        from campfire.features import stories

        choice = rest.lower()
        if choice not in ("up", "down"):
            raise UsageError(f"usage: {USAGE['rate']}")
        story = self.last_story
        if story is None or story.item_id is None:
            self.out.error("no story to rate yet: tell one with /story THEME")
            return
        await self._ensure_member()
        outcome = await stories.rate(self.app, story.item_id, self.member_id, choice)
        if outcome == "opted_out":
            self.out.info(f"not kept: {self.member_name} opted out of recording")
        elif outcome == "gone":
            self.out.error(f"story #{story.item_id} is no longer stored")
        else:
            self.out.info(f"rated {choice}: {story.title!r}")

    async def recommend(self, rest: str) -> None:
        """``/recommend [MEMBER]``: the member's picks now (a preview; nothing is recorded)."""
        from campfire.features import picks
        from campfire.features.types import Member

        member = await self.find_member(rest) if rest else Member(self.guild_id, self.member_id, self.member_name)
        if member is None:
            return
        name = member.name or str(member.id)
        t0 = time.perf_counter()
        found = await picks.now(self.app, member)
        took = time.perf_counter() - t0
        if not found:
            self.out.info(f"no picks for {name} yet: they need a few interactions (messages, replies, stories, ratings)")
            return
        self.out.table(
            f"picks for {name} ({took * 1000:.0f} ms)",
            ["#", "score", "kind", "item", "why"],
            [[str(i), f"{p.score:.2f}", p.kind, clip(p.title, 72), p.reason] for i, p in enumerate(found, 1)],
        )

    async def act_as(self, rest: str) -> None:
        """``/as MEMBER``: act as an imported member (a new conversation starts)."""
        from campfire.features import picks

        if not rest:
            raise UsageError(f"usage: {USAGE['as']}. {await self._member_hint()}")
        member = await self.find_member(rest)
        if member is None:
            return
        self.member_id, self.member_name = member.id, member.name or str(member.id)
        self.turns = []
        self.last_story = None
        n = await picks.interaction_count(self.app, self.guild_id, self.member_id)
        self.out.info(f"you are now {self.member_name} ({self.member_id}), {n} interactions; new conversation")

    async def digest(self, rest: str) -> None:
        """``/digest [--all]``: today's daily picks (guild local date), a dry run: nothing is sent
        or recorded."""
        from campfire.features import digest

        if rest not in ("", "--all"):
            raise UsageError(f"usage: {USAGE['digest']}")
        all_members = self.digest_all_members or rest == "--all"
        run = await digest.run(self.app, self.guild_id, dry_run=True, all_members=all_members)
        if not run.picks:
            who = "member with ≥ 3 interactions" if all_members else "subscribed member (/digest --all previews every active member)"
            self.out.info(f"digest {run.date}: no picks — no {who}")
            return
        rows = [[mp.member, " | ".join(clip(p.title, 48) for p in mp.picks)] for mp in run.picks]
        self.out.table(
            f"digest {run.date} (dry run, nothing sent): {len(run.picks)} members, {run.pick_count} picks, {run.took_s:.1f} s",
            ["member", "picks"],
            rows,
        )

    # -- helpers ---------------------------------------------------------------------------------
    def _generator(self) -> Any:
        gen = self.app.generator
        if gen is None:
            raise UsageError("no generator in this session (started without one)")
        return gen

    def _report(self, g: Generation) -> None:
        self.generations.append(g)
        self.out.stats(f"{g.kind}: TTFT {g.ttft_s:.2f} s · {g.tokens_per_s:.1f} tokens/s · {g.tokens} tokens in {g.total_s:.1f} s")

    def summary(self) -> None:
        if not self.generations:
            return
        n = len(self.generations)
        ttft = sum(g.ttft_s for g in self.generations) / n
        tokens = sum(g.tokens for g in self.generations)
        secs = sum(g.total_s for g in self.generations)
        self.out.stats(f"{n} generations: mean TTFT {ttft:.2f} s · {tokens} tokens in {secs:.1f} s ({tokens / secs if secs else 0:.1f} tokens/s overall)")


class _StoryArgs(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # never exit the session
        raise UsageError(f"usage: {USAGE['story']} ({message})")


def _parse_story(rest: str) -> argparse.Namespace:
    parser = _StoryArgs(prog="/story", add_help=False)
    parser.add_argument("theme", nargs="*")
    parser.add_argument("--genre", default="any")
    parser.add_argument("--length", choices=["short", "medium", "long"], default="short")
    parser.add_argument("--lang", choices=["auto", "en", "zh"], default="auto")
    opts = parser.parse_intermixed_args(rest.split())
    if not opts.theme:
        raise UsageError(f"usage: {USAGE['story']}")
    return opts
