"""``campfire console``'s entry point: its flags, opening the app, and feeding a
:class:`campfire.console.ConsoleSession` from a script, a pipe or the terminal.

Top-level imports stay light: ``campfire --help`` imports this module to read its flags.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from campfire.config import Settings
from campfire.console import ConsoleSession, UsageError
from campfire.console_output import PlainOutput, RichOutput, _read_in_thread

if TYPE_CHECKING:
    from campfire.app import App


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


async def run_console(
    app: App,
    *,
    out: PlainOutput,
    stdin: TextIO | None = None,
    script: str | None = None,
    guild_id: int | None = None,
    as_member: str | None = None,
    max_story_tokens: int | None = None,
    digest_all_members: bool = False,
) -> int:
    """Run a console session over a ready ``app``; lines come from ``script`` (a file path),
    else ``stdin`` (a terminal gets a prompt; a pipe is read line by line). Ctrl-C stops the
    generation in progress; a second Ctrl-C (or one at the prompt, or Ctrl-D) quits. Returns an
    exit code (130 when Ctrl-C ended the session)."""
    session = ConsoleSession(app, out, max_story_tokens=max_story_tokens, digest_all_members=digest_all_members)
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

    with _ctrl_c(session):
        return await session.run(read_line)


@contextmanager
def _ctrl_c(session: ConsoleSession) -> Iterator[None]:
    """While the session runs, SIGINT (Ctrl-C) goes to :meth:`ConsoleSession.interrupt` — it stops
    the story or reply being written, and quits when nothing is — instead of ending the process
    (``asyncio.run`` would cancel everything: the partial story lost, 20–50 s to start again).
    Only on the main thread of a loop that can take signal handlers (not on Windows)."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, session.interrupt)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no support
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def main(args: argparse.Namespace, settings: Settings) -> int:
    """``campfire console``: open the app (starting the embedded generator when
    ``generator.url`` is empty), then run the session. Exit code 0; 1 when set-up fails or a command hit an internal error; 2 for an
    unreadable ``--script`` or an unknown ``--guild``."""
    from campfire.app import open_app
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
            app = await stack.enter_async_context(open_app(settings))
        except GeneratorError as err:
            print(f"campfire console: the generator did not start: {err}", file=sys.stderr)
            return 1
        except (FileNotFoundError, ModelNotFound, EmbedderNotFound) as err:
            print(f"campfire console: {err} (run `campfire model prepare` first)", file=sys.stderr)
            return 1
        t = app.timings
        gen = (f"generator {settings.generator.url} (external, connected in {t.get('generator', 0):.1f} s)"
               if settings.generator.url else f"embedded generator: model load {t.get('generator', 0):.1f} s")
        out.stats(
            f"ready in {time.perf_counter() - t0:.1f} s: embedder {t.get('embedder', 0):.1f} s, "
            f"indexes {t.get('indexes', 0):.1f} s, {gen}"
        )
        return await run_console(
            app,
            out=out,
            script=args.script,
            guild_id=args.guild,
            as_member=args.as_member,
            max_story_tokens=args.max_story_tokens,
            digest_all_members=args.digest_all_members,
        )
