"""The generator client's concurrency limit: a FIFO queue whose waiters know their place.

:class:`Slots` admits at most ``limit`` requests at once (``generator.max_concurrency``); the others
wait in arrival order and are told their position (1 = next) through ``on_queued`` — once when they
start waiting and again whenever it changes. A slot freed by a finishing request passes straight to
the next waiter. Everything runs on one event loop; nothing here blocks.
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
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.granted = False


class Slots:
    """A FIFO concurrency limit of ``limit`` slots whose waiters know their position (1 = next).

    ``in_flight``: slots held now; ``waiters``: requests queued now (``len`` = queue depth).
    Call :meth:`acquire` then, whatever happens, :meth:`release` once.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.waiters: collections.deque[_Waiter] = collections.deque()

    async def acquire(self, on_queued: QueueCallback | None) -> None:
        """Take a slot, waiting in line when none is free. Cancellation while waiting leaves the line
        cleanly (a slot granted at that moment is passed on)."""
        if self.in_flight < self.limit and not self.waiters:
            self.in_flight += 1
            return
        waiter = _Waiter()
        self.waiters.append(waiter)
        position = len(self.waiters)
        try:
            await invoke_callback(on_queued, position)
            while not waiter.granted:
                waiter.event.clear()
                await waiter.event.wait()
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
