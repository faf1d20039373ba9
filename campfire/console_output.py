"""The console's terminal I/O: :class:`PlainOutput` (pipes, scripts, tests), :class:`RichOutput` (a
terminal: rich colours, streamed tokens, tables), a generation's timing (:class:`Generation`),
Ctrl-C (:class:`Interrupts`) and reading a line without blocking the event loop."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

PROMPT = "campfire>"


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


# ---- Ctrl-C ---------------------------------------------------------------------------------------
class Interrupts:
    """Ctrl-C in a console session: each step (reading a line, running a command) is a task; a
    Ctrl-C stops a *stoppable* step (a command) the first time, and ends the session (``ended``)
    when the step is not stoppable (waiting for input) or is already being stopped."""

    def __init__(self) -> None:
        self.ended = False
        self._task: asyncio.Task | None = None
        self._stoppable = False
        self._stopping = False

    async def step(self, coro: Any, *, stoppable: bool) -> tuple[bool, Any]:
        """Run ``coro`` as the current step: ``(True, its result)``, or ``(False, None)`` when a
        Ctrl-C cancelled it. Its exceptions propagate; cancelling the caller cancels the step."""
        task = self._task = asyncio.ensure_future(coro)
        self._stoppable, self._stopping = stoppable, False
        try:
            await asyncio.wait({task})
        finally:
            self._task = None
            task.cancel()  # a no-op once done
        if task.cancelled():
            return False, None
        return True, task.result()

    def interrupt(self) -> bool:
        """A Ctrl-C: True when it stopped the step in progress, False when the session ends."""
        task = self._task
        if task is not None and not task.done() and self._stoppable and not self._stopping:
            self._stopping = True
            task.cancel()
            return True
        self.ended = True
        if task is not None and not task.done():
            task.cancel()
        return False


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
