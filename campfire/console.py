"""``campfire console``: Campfire in the terminal, on the same services as the Discord bot.

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
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from campfire.config import Settings

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from campfire.services import Services
    from recsys.service import Pick
    from recsys.store import Item

# The console acts in a guild and as a member. Without imported data it uses these ids (real
# Discord snowflakes are > 2**22, so they never collide with an imported guild or member).
CONSOLE_GUILD_ID = 1
CONSOLE_USER_ID = 1
CONSOLE_USER_NAME = "console"
PROMPT = "campfire>"

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


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """Flags of ``campfire console`` (called by :func:`campfire.cli.build_parser`)."""
    parser.add_argument("--script", metavar="FILE", default=None, help="read commands from FILE, one per line (default: the terminal or a pipe on stdin)")
    parser.add_argument("--guild", type=int, default=None, help="guild id to act in (default: the first imported guild)")
    parser.add_argument("--as", dest="as_member", metavar="MEMBER", default=None, help="start as this imported member (display name or id)")
    parser.add_argument("--max-story-tokens", type=_positive_int, default=None, metavar="N", help="cap every story at N tokens (default: the --length budget)")
    parser.add_argument("--max-reply-tokens", type=_positive_int, default=None, metavar="N", help="cap chat replies at N tokens (default chat.max_reply_tokens)")
    parser.add_argument("--digest-all-members", action="store_true", help="/digest previews every member with ≥ 3 interactions, not only subscribers")
    parser.add_argument("--plain", action="store_true", help="plain text output even on a terminal")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of tokens, got {text!r}") from None
    if not 1 <= value <= 8192:
        raise argparse.ArgumentTypeError(f"must be between 1 and 8192 tokens, got {value}")
    return value


# ---- output -------------------------------------------------------------------------------------
class PlainOutput:
    """Plain text for pipes, scripts and tests: streamed tokens as they come, aligned rows for tables."""

    rich = False

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def _line(self, text: str = "") -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def command(self, line: str) -> None:
        self._line(f"{PROMPT} {line}")

    def info(self, text: str) -> None:
        self._line(text)

    def error(self, text: str) -> None:
        self._line(f"! {text}")

    def delta(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def end_stream(self) -> None:
        self._line()

    def stats(self, text: str) -> None:
        self._line(f"[{text}]")

    def table(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        self._line(title)
        if not rows:
            return
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
        self._line("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
        for r in rows:
            self._line("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


class RichOutput(PlainOutput):
    """A terminal: rich colours, streamed tokens and tables."""

    rich = True

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(highlight=False)
        super().__init__(sys.stdout)

    def command(self, line: str) -> None:  # the member typed it; no echo
        pass

    def info(self, text: str) -> None:
        self.console.print(text, markup=False)

    def error(self, text: str) -> None:
        self.console.print(f"[red]{_escape(text)}[/red]")

    def delta(self, text: str) -> None:
        self.console.print(text, end="", markup=False, soft_wrap=True)

    def end_stream(self) -> None:
        self.console.print()

    def stats(self, text: str) -> None:
        self.console.print(f"[dim]{_escape(text)}[/dim]")

    def table(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        from rich.table import Table

        table = Table(title=title, title_justify="left", show_lines=False)
        for c in columns:
            table.add_column(c, overflow="fold")
        for r in rows:
            table.add_row(*(_escape(v) for v in r))
        self.console.print(table)

    def prompt(self, label: str) -> str:
        return self.console.input(f"[bold cyan]{_escape(label)} ›[/bold cyan] ")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# ---- reading input ------------------------------------------------------------------------------
async def _read_in_thread(read: Callable[[], str]) -> str | None:
    """One line from a blocking reader, on a daemon thread (so the event loop keeps running and
    Ctrl-C never waits for Enter). ``None`` at end of input."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str | None] = loop.create_future()

    def work() -> None:
        try:
            line: str | None = read()
            if line == "":  # readline() at EOF
                line = None
        except (EOFError, OSError, ValueError):
            line = None
        loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(line))

    threading.Thread(target=work, name="campfire-console-input", daemon=True).start()
    return await fut


# ---- the session --------------------------------------------------------------------------------
@dataclass
class Generation:
    """Timing of one generation: ``ttft_s`` and ``total_s`` in seconds, ``tokens`` of completion."""

    kind: str
    ttft_s: float
    total_s: float
    tokens: int

    @property
    def tokens_per_s(self) -> float:
        """Completion tokens per second after the first token (as ``model.story.StoryResult``)."""
        decode = self.total_s - self.ttft_s
        return self.tokens / decode if decode > 0 and self.tokens else 0.0


@dataclass
class ConsoleSession:
    """One console conversation over ``services``: who we are, where, and what was said.

    ``max_story_tokens`` caps stories (``None``: the length's budget); ``digest_all_members`` makes
    ``/digest`` cover every member with ≥ 3 interactions.
    """

    services: Services
    out: PlainOutput
    guild_id: int = CONSOLE_GUILD_ID
    member_id: int = CONSOLE_USER_ID
    member_name: str = CONSOLE_USER_NAME
    max_story_tokens: int | None = None
    digest_all_members: bool = False
    turns: list[Any] = field(default_factory=list)  # model.prompts.Turn
    last_story: Item | None = None
    generations: list[Generation] = field(default_factory=list)
    failures: int = 0  # commands that failed with an unexpected error (exit code 1)
    _member_saved: bool = False

    @property
    def settings(self) -> Settings:
        return self.services.settings

    # -- set-up --------------------------------------------------------------------------------
    async def choose_guild(self, guild_id: int | None = None) -> None:
        """Act in ``guild_id``, else the first imported guild, else the console's own guild (created
        on first use). Raises :class:`UsageError` for a ``guild_id`` the store does not know."""
        store = self.services.store
        if guild_id is None:
            # the first imported guild (id 0 is the store's opt-out placeholder)
            guilds = [g for g in await store.list_guilds() if g["id"] not in (0, CONSOLE_GUILD_ID)]
            guild_id = guilds[0]["id"] if guilds else CONSOLE_GUILD_ID
        guild = await store.get_guild(guild_id)
        if guild is None:
            if guild_id != CONSOLE_GUILD_ID:
                known = ", ".join(str(g["id"]) for g in await store.list_guilds() if g["id"]) or "none yet"
                raise UsageError(f"unknown guild {guild_id} (guilds in the store: {known})")
            await store.upsert_guild(guild_id, "console")
            guild = await store.get_guild(guild_id) or {}
        self.guild_id = guild_id
        members = await store.members(guild_id)
        self.out.info(f"guild: {guild.get('name') or guild_id} ({guild_id}), {len(members)} members")

    async def _ensure_member(self) -> None:
        """The console's own member row, written the first time it records something."""
        if self.member_id == CONSOLE_USER_ID and not self._member_saved:
            await self.services.store.upsert_member(self.guild_id, CONSOLE_USER_ID, CONSOLE_USER_NAME)
            self._member_saved = True

    async def find_member(self, name: str) -> dict[str, Any] | None:
        """A member of this guild by display name (case-insensitive, leading ``@`` ignored) or id."""
        name = name.strip().lstrip("@")
        found = await self.services.store.find_members(name, self.guild_id)
        if not found:
            self.out.error(f"no member {name!r} in this guild. {await self._member_hint()}")
            return None
        return found[0]

    async def _member_hint(self) -> str:
        active = await self.services.store.members_with_interactions(self.guild_id, 3)
        names = [m["display_name"] or str(m["user_id"]) for m in active[:5]]
        return f"Try one of: {', '.join(names)}" if names else "Import an export first: campfire import FILE"

    # -- the loop --------------------------------------------------------------------------------
    async def run(self, read_line: Callable[[], Any]) -> int:
        """Handle lines from ``read_line`` (an async callable returning ``None`` at the end) until
        ``/quit`` or end of input. Returns 0, or 1 when a command failed with an unexpected error."""
        while True:
            line = await read_line()
            if line is None:
                break
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            self.out.command(line)
            if not await self.handle(line):
                break
        self.summary()
        return 1 if self.failures else 0

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
        """A chat turn: the reply streams, the turn pair joins the session's memory."""
        from model.chat import stream_reply
        from model.prompts import Turn

        gen = self._generator()
        history = self.settings.chat.history_messages
        turns = [*self.turns, Turn(role="user", content=text, name=self.member_name)][-history:]
        persona = await self._persona()
        t0 = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        async for delta in stream_reply(
            gen,
            persona=persona,
            turns=turns,
            chat=self.settings.chat,
            counter=self.services.counter,
            user=str(self.member_id),
        ):
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
        tokens = await asyncio.to_thread(self.services.counter.count, reply) if reply else 0
        self._report(Generation("chat", (first or time.perf_counter()) - t0, total, tokens))

    async def story(self, rest: str) -> None:
        """``/story THEME [--genre G] [--length L] [--lang X]``: write, save as a story item, and
        record the member's ``requested`` interaction (embedded and indexed by the recommender)."""
        from model.story import StoryRequest, validate_theme, write_story

        opts = _parse_story(rest)
        try:
            theme = validate_theme(" ".join(opts.theme), self.settings.story.max_theme_chars)
        except ValueError as err:
            raise UsageError(str(err)) from None
        request = StoryRequest(theme=theme, genre=opts.genre, length=opts.length, language=opts.lang)
        gen = self._generator()
        result = await write_story(
            gen,
            request,
            story=self.settings.story,
            user=str(self.member_id),
            on_delta=self.out.delta,
            max_tokens=self.max_story_tokens,
        )
        self.out.end_stream()
        item = await self._save_story(request, result)
        if item is None:
            self.out.info(f"{result.title!r} was not saved: this member opted out of recording")
        else:
            self.last_story = item
            self.out.info(f"saved story #{item.id}: {result.title!r} ({result.language}); /rate up|down")
        self._report(Generation("story", result.ttft_s, result.total_s, result.completion_tokens))

    async def _save_story(self, request: Any, result: Any) -> Item | None:
        """Save like the bot's ``/story`` does (``bot/cogs/story.py``): an item of kind ``story``
        authored by the requester, and their ``requested`` interaction with the theme as its text.
        ``None`` when the member opted out of recording."""
        from recsys.store import Item, new_id

        await self._ensure_member()
        now = time.time()
        item = Item(
            id=new_id(now),
            guild_id=self.guild_id,
            kind="story",
            text=result.text,
            created_at=now,
            author_id=self.member_id,
            title=result.title,
            tags=[request.genre] if request.genre != "any" else [],
            meta={"theme": request.theme, "genre": request.genre, "length": request.length,
                  "language": result.language, "requested_language": request.language, "part": 1,
                  "completion_tokens": result.completion_tokens, "source": "console"},
        )
        rec = self.services.recommender
        if not await rec.add_items([item]):
            return None
        await rec.record([{
            "guild_id": self.guild_id, "member_id": self.member_id, "item_id": item.id,
            "kind": "requested", "text": request.theme, "created_at": now,
        }])
        return item

    async def rate(self, rest: str) -> None:
        """``/rate up|down``: rate the last story told in this session, exactly as the bot's 👍/👎
        (:func:`campfire.feedback.set_feedback`): a new rating replaces the member's earlier one on
        the story, in the store and the FAISS interaction index, and the story's stored rating moves
        by the difference."""
        from campfire.feedback import set_feedback

        choice = rest.lower()
        if choice not in ("up", "down"):
            raise UsageError(f"usage: {USAGE['rate']}")
        story = self.last_story
        if story is None:
            self.out.error("no story to rate yet: tell one with /story THEME")
            return
        await self._ensure_member()
        kind = "rated_up" if choice == "up" else "rated_down"
        services = self.services
        if not await set_feedback(services.store, services.recommender, story, self.guild_id, self.member_id, kind):
            self.out.info(f"not kept: {self.member_name} opted out of recording")
            return
        self.out.info(f"rated {choice}: {story.title!r}")

    async def recommend(self, rest: str) -> None:
        """``/recommend [MEMBER]``: the member's picks now (a preview; nothing is recorded)."""
        if rest:
            member = await self.find_member(rest)
            if member is None:
                return
            member_id, name = member["user_id"], member["display_name"] or str(member["user_id"])
        else:
            member_id, name = self.member_id, self.member_name
        t0 = time.perf_counter()
        picks = await self.services.recommender.recommend(self.guild_id, member_id)
        took = time.perf_counter() - t0
        if not picks:
            self.out.info(f"no picks for {name} yet: they need a few interactions (messages, replies, stories, ratings)")
            return
        self.out.table(
            f"picks for {name} ({took * 1000:.0f} ms)",
            ["#", "score", "kind", "item", "why"],
            [[str(i), f"{p.score:.2f}", p.item.kind, _label(p.item), p.reason] for i, p in enumerate(picks, 1)],
        )

    async def act_as(self, rest: str) -> None:
        """``/as MEMBER``: act as an imported member (a new conversation starts)."""
        if not rest:
            raise UsageError(f"usage: {USAGE['as']}. {await self._member_hint()}")
        member = await self.find_member(rest)
        if member is None:
            return
        self.member_id = member["user_id"]
        self.member_name = member["display_name"] or str(member["user_id"])
        self.turns = []
        self.last_story = None
        n = len(await self.services.store.interactions(self.guild_id, self.member_id))
        self.out.info(f"you are now {self.member_name} ({self.member_id}), {n} interactions; new conversation")

    async def digest(self, rest: str) -> None:
        """``/digest [--all]``: today's daily picks (guild local date), a dry run: nothing is sent
        or recorded."""
        from recsys.digest import daily_picks, local_date

        if rest not in ("", "--all"):
            raise UsageError(f"usage: {USAGE['digest']}")
        all_members = self.digest_all_members or rest == "--all"
        date = local_date(await self.services.store.get_guild(self.guild_id), self.settings.digest)
        t0 = time.perf_counter()
        results = await daily_picks(self.services.recommender, self.guild_id, date, dry_run=True, all_members=all_members)
        took = time.perf_counter() - t0
        if not results:
            who = "member with ≥ 3 interactions" if all_members else "subscribed member (/digest --all previews every active member)"
            self.out.info(f"digest {date}: no picks — no {who}")
            return
        rows = [[mp.member, " | ".join(_label(p.item, 48) for p in mp.picks)] for mp in results]
        n_picks = sum(len(mp.picks) for mp in results)
        self.out.table(
            f"digest {date} (dry run, nothing sent): {len(results)} members, {n_picks} picks, {took:.1f} s",
            ["member", "picks"],
            rows,
        )

    # -- helpers ---------------------------------------------------------------------------------
    def _generator(self) -> Any:
        gen = self.services.generator
        if gen is None:
            raise UsageError("no generator in this session (started without one)")
        return gen

    async def _persona(self) -> str:
        guild = await self.services.store.get_guild(self.guild_id)
        return (guild or {}).get("persona") or self.settings.chat.persona

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


def _label(item: Item, width: int = 72) -> str:
    """One line naming an item: its title, else the start of its text (``recsys.digest.pick_title``)."""
    from recsys.digest import pick_title

    label = pick_title(item, width)
    return label if len(label) <= width else label[: width - 1].rstrip() + "…"


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


# ---- entry point --------------------------------------------------------------------------------
async def run_console(
    services: Services,
    *,
    out: PlainOutput,
    stdin: TextIO | None = None,
    script: str | None = None,
    guild_id: int | None = None,
    as_member: str | None = None,
    max_story_tokens: int | None = None,
    digest_all_members: bool = False,
) -> int:
    """Run a console session over ready ``services``; lines come from ``script`` (a file path),
    else ``stdin`` (a terminal gets a prompt; a pipe is read line by line). Returns an exit code."""
    session = ConsoleSession(services, out, max_story_tokens=max_story_tokens, digest_all_members=digest_all_members)
    try:
        await session.choose_guild(guild_id)
    except UsageError as err:
        out.error(str(err))
        return 2
    if as_member and not await session.handle(f"/as {as_member}"):
        return 0
    if script is not None:
        text = await asyncio.to_thread(Path(script).read_text, encoding="utf-8")  # file I/O off the event loop
        it = iter(text.splitlines())

        async def read_line() -> str | None:
            return next(it, None)
    else:
        source = stdin or sys.stdin
        if isinstance(out, RichOutput):
            rich_out = out

            async def read_line() -> str | None:
                return await _read_in_thread(lambda: rich_out.prompt(session.member_name))
            out.info("Type a message to chat, /help for commands, /quit to leave.")
        else:

            async def read_line() -> str | None:
                return await _read_in_thread(source.readline)

    return await session.run(read_line)


async def main(args: argparse.Namespace, settings: Settings) -> int:
    """``campfire console``: open the services (starting the embedded generator when
    ``generator.url`` is empty), then run the session. Exit code 0; 1 when set-up fails or a command hit an internal error; 2 for an
    unreadable ``--script`` or an unknown ``--guild``."""
    from campfire.services import open_services
    from model.errors import GeneratorError
    from model.prepare import ModelNotFound
    from recsys.embed import EmbedderNotFound

    if args.max_reply_tokens is not None:
        settings = settings.model_copy(update={"chat": settings.chat.model_copy(update={"max_reply_tokens": args.max_reply_tokens})})
    interactive = args.script is None and sys.stdin.isatty() and sys.stdout.isatty() and not args.plain
    out: PlainOutput = RichOutput() if interactive else PlainOutput()
    if args.script is not None:
        try:
            open(args.script, encoding="utf-8").close()
        except OSError as err:
            print(f"campfire console: cannot read script {args.script}: {err.strerror}", file=sys.stderr)
            return 2
    out.info("starting Campfire (embedder, indexes, generator)…")
    t0 = time.perf_counter()
    async with AsyncExitStack() as stack:
        try:
            services = await stack.enter_async_context(open_services(settings))
        except GeneratorError as err:
            print(f"campfire console: the generator did not start: {err}", file=sys.stderr)
            return 1
        except (FileNotFoundError, ModelNotFound, EmbedderNotFound) as err:
            print(f"campfire console: {err} (run `campfire model prepare` first)", file=sys.stderr)
            return 1
        t = services.timings
        gen = (f"generator {settings.generator.url} (external, connected in {t.get('generator', 0):.1f} s)"
               if settings.generator.url else f"embedded generator: model load {t.get('generator', 0):.1f} s")
        out.stats(
            f"ready in {time.perf_counter() - t0:.1f} s: embedder {t.get('embedder', 0):.1f} s, "
            f"indexes {t.get('indexes', 0):.1f} s, {gen}"
        )
        return await run_console(
            services,
            out=out,
            script=args.script,
            guild_id=args.guild,
            as_member=args.as_member,
            max_story_tokens=args.max_story_tokens,
            digest_all_members=args.digest_all_members,
        )
