"""The generator client's concurrency limit: a priority queue whose waiters know their place.

:class:`Slots` admits at most ``limit`` requests at once (``generator.max_concurrency``); the others
wait — higher ``priority`` first (:data:`PRIORITY_CHAT` before :data:`PRIORITY_STORY`, so an
interactive turn never waits behind long stories), in arrival order within a priority — and are told
their position (1 = next) through ``on_queued``: once when they start waiting and again whenever it
changes (a chat turn queued ahead of a story moves the story back one place). A slot freed by a
finishing request passes straight to the first waiter. A running request is never pre-empted, and a
steady stream of chat can delay stories indefinitely (chat turns are short). Everything runs on one
event loop; nothing here blocks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

PRIORITY_STORY = 0
"""Priority of long generations (stories, continuations) and the default of :meth:`Slots.acquire`."""
PRIORITY_CHAT = 10
"""Priority of interactive chat turns: served before every waiting story."""

QueueCallback = Callable[[int], Awaitable[None] | None]
"""``on_queued(position)``: sync or async; ``position`` ≥ 1, 1 = the next request to be served."""


async def invoke_callback(callback: Callable[..., Any] | None, *args: Any) -> None:
    """Call a sync or async callback; its errors are logged, never raised into the generation."""
    if callback is None:
        return
    try:
        result = callback(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:  # a front end's progress hook must not break a reply
        log.exception("generator callback failed")


class _Waiter:
    __slots__ = ("event", "granted", "priority")

    def __init__(self, priority: int) -> None:
        self.event = asyncio.Event()
        self.granted = False
        self.priority = priority


class Slots:
    """A concurrency limit of ``limit`` slots whose waiters know their position (1 = next): higher
    priority first, FIFO within a priority.

    ``in_flight``: slots held now; ``waiters``: requests queued now, in serving order (``len`` = queue depth).
    Call :meth:`acquire` then, whatever happens, :meth:`release` once.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.waiters: collections.deque[_Waiter] = collections.deque()

    async def acquire(self, on_queued: QueueCallback | None, priority: int = PRIORITY_STORY) -> None:
        """Take a slot, waiting in line when none is free: behind every waiter of the same or a higher
        ``priority``, ahead of those of a lower one (they are told their new position). Cancellation
        while waiting leaves the line cleanly (a slot granted at that moment is passed on)."""
        if self.in_flight < self.limit and not self.waiters:
            self.in_flight += 1
            return
        waiter = _Waiter(priority)
        position = self._enqueue(waiter)
        try:
            waiter.event.clear()  # a change while on_queued runs below leaves the event set: not missed
            await invoke_callback(on_queued, position)
            while not waiter.granted:
                await waiter.event.wait()
                waiter.event.clear()
                if not waiter.granted and waiter in self.waiters:
                    new_position = self.waiters.index(waiter) + 1
                    if new_position != position:
                        position = new_position
                        await invoke_callback(on_queued, position)
        except BaseException:
            if waiter.granted:
                self.release()  # granted while being cancelled: pass the slot on
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
                self._notify()
            raise

    def _enqueue(self, waiter: _Waiter) -> int:
        """Put ``waiter`` in line; returns its position (1 = next). Waiters it passes are notified."""
        index = len(self.waiters)
        while index > 0 and self.waiters[index - 1].priority < waiter.priority:
            index -= 1
        self.waiters.insert(index, waiter)
        if index < len(self.waiters) - 1:
            self._notify()  # those behind it moved back one place
        return index + 1

    def release(self) -> None:
        """Give a slot back: to the next waiter when there is one, else to the pool."""
        if self.waiters:
            waiter = self.waiters.popleft()
            waiter.granted = True  # the slot passes straight to the next waiter; in_flight unchanged
            waiter.event.set()
            self._notify()
        else:
            self.in_flight -= 1

    def _notify(self) -> None:
        for other in self.waiters:
            other.event.set()
