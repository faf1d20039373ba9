"""The llama.cpp engine's threads follow the cores actually free (issue 16).

llama-server's threads wait for each other at every step of a token (OpenMP barriers that spin): on
an idle machine every core decoding is fastest, and one core taken by another process (the bot
embedding a burst of messages, a backup, a second service) stalls them all — on this project's
2-core machine llama-server's default 2 threads fell from 116–122 to 31 tok/s (one chat stream) while
one CPU-bound process ran beside it, where one thread held 74 (README "Generator engines", run 6).
So the front watches what the rest of the machine uses and tells llama-server how many threads to
decode with, between two steps, without a restart (the build's patch, :mod:`model.llama_patch`:
``SIGUSR1`` + the file named by ``CAMPFIRE_THREADS_FILE``).

Every :data:`SAMPLE_S` seconds: ``others`` = cores busy (``/proc/stat``) − the cores used by the
generator's own processes (the front and llama-server, ``/proc/PID/stat``); the wanted thread count is
``floor(cores − others + SLACK)`` within 1 … the count llama-server started with. Fewer threads apply
at once; more only after :data:`CALM_SAMPLES` samples in a row wanted more (a bot's burst does not
make it flap). Measured side by side (run 6): idle, llama-server's defaults' speed (0.95–1.03× at 8
concurrent streams); beside a CPU-bound process 1.60–2.40× (one thread instead of the collapse).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from model.engine import free_cores, own_cpus

log = logging.getLogger(__name__)

SAMPLE_S = 0.25  # seconds between samples: a stall lasts at most this long before threads drop
CALM_SAMPLES = 4  # samples in a row that want more threads before they are added (1 s)
SLACK = 0.5  # cores: other processes using less than half a core together (a client reading streams) do not cost a thread
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # /proc's time unit (1/s)


def busy_ticks(stat_text: str, cpus: set[int] | None = None) -> int:
    """Busy time in clock ticks from ``/proc/stat``: user + nice + system + irq + softirq + steal (not idle,
    not iowait; guest time is already inside user), summed over the ``cpuN`` lines of ``cpus`` (this
    process's affinity: a container's ``--cpuset-cpus``) when every one of them has its line, else (no
    ``cpus``; lxcfs, which renumbers the lines) the all-CPU ``cpu`` line. Raises ValueError without one."""
    lines = {}
    for line in stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith("cpu"):
            v = [int(x) for x in rest.split()[:8]]
            lines[name] = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    if cpus and all(f"cpu{c}" in lines for c in cpus):
        return sum(lines[f"cpu{c}"] for c in cpus)
    if "cpu" not in lines:
        raise ValueError("no cpu line in /proc/stat")
    return lines["cpu"]


def process_ticks(stat_text: str) -> int:
    """utime + stime (all its threads, clock ticks) from a ``/proc/PID/stat`` line. Its ``comm`` field may
    hold spaces and parentheses, so the fields are counted after the last ``)``."""
    fields = stat_text[stat_text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


@dataclass(frozen=True)
class Sample:
    """One reading: ``busy`` (ticks of all CPUs), ``own`` (ticks of the generator's processes), ``at`` (monotonic s)."""

    busy: int
    own: int
    at: float


def sample(pids: list[int], cpus: set[int] | None = None) -> Sample:
    """Read ``/proc`` now (busy ticks of ``cpus``, :func:`busy_ticks`). Raises OSError when ``/proc/stat``
    cannot be read (a process in ``pids`` that exited counts 0)."""
    own = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            own += process_ticks(_read(f"/proc/{pid}/stat"))
    return Sample(busy_ticks(_read("/proc/stat"), cpus), own, time.monotonic())


def others_cores(before: Sample, after: Sample) -> float:
    """Cores used by every process but the generator's between two samples (≥ 0)."""
    seconds = after.at - before.at
    if seconds <= 0:
        return 0.0
    return max(0.0, ((after.busy - before.busy) - (after.own - before.own)) / TICKS / seconds)


def wanted_threads(others: float, cores: int, most: int) -> int:
    """``floor(cores − others + SLACK)`` within 1 … ``most``."""
    return max(1, min(most, math.floor(cores - others + SLACK)))


def step(current: int, wanted: int, calm: int) -> tuple[int, int]:
    """``(threads, calm)`` after one sample: fewer threads at once; more after :data:`CALM_SAMPLES`
    samples in a row wanted more (``calm`` counts them)."""
    if wanted < current:
        return wanted, 0
    if wanted == current:
        return current, 0
    calm += 1
    return (wanted, 0) if calm >= CALM_SAMPLES else (current, calm)


def tell(pid: int, path: Path, threads: int) -> None:
    """Ask llama-server ``pid`` to decode with ``threads`` threads (and as many for batches) from its next
    step: write them to ``path`` (atomically) and send ``SIGUSR1``. Raises OSError when it is gone."""
    path.parent.mkdir(parents=True, exist_ok=True)  # a /tmp cleaner may have removed it while idle
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{threads} {threads}\n", encoding="ascii")
    os.replace(tmp, path)
    os.kill(pid, signal.SIGUSR1)


class Follower:
    """The loop (:meth:`run`) for llama-server ``server_pid`` (started with ``most`` threads and
    ``CAMPFIRE_THREADS_FILE=path``; ``own_pids``: the generator's other processes, e.g. the front) and its
    state: ``threads`` now, ``others`` (cores, last sample), ``changes``. ``on_change(threads)`` is called
    after each change (the front's ``/metrics`` gauge); ``alive()`` says whether ``server_pid`` is still
    llama-server (the loop ends when it is not: a signal never goes to a process that reused its pid)."""

    def __init__(self, server_pid: int, own_pids: list[int], path: Path, most: int, cores: int | None = None,
                 on_change: Callable[[int], None] | None = None, alive: Callable[[], bool] | None = None) -> None:
        self.server_pid, self.own_pids, self.path = server_pid, own_pids, path
        self.alive = alive or (lambda: True)  # False once llama-server has exited: its pid may be reused
        self.most = most
        self.cores = cores or free_cores()
        self.threads = most
        self.others = 0.0
        self.changes = 0
        self.on_change = on_change

    def apply(self, threads: int) -> None:
        """Tell llama-server ``threads`` when that is a change. Raises OSError when it is gone."""
        if threads == self.threads:
            return
        tell(self.server_pid, self.path, threads)
        log.debug("llama-server threads %d -> %d (other processes use %.1f of %d cores)",
                  self.threads, threads, self.others, self.cores)
        self.threads = threads
        self.changes += 1
        if self.on_change is not None:
            self.on_change(threads)

    async def run(self, interval: float = SAMPLE_S) -> None:
        """Sample and adjust until cancelled or llama-server is gone (reads in a worker thread: ``/proc`` is cheap
        but still a file read)."""
        calm, pids, cpus = 0, [self.server_pid, *self.own_pids], own_cpus()
        before: Sample | None = None
        while True:
            try:
                after = await asyncio.to_thread(sample, pids, cpus)
            except (OSError, ValueError) as err:
                log.warning("llama-server threads stay at %d: cannot read /proc (%s)", self.threads, err)
                return
            if before is not None:
                self.others = others_cores(before, after)
                threads, calm = step(self.threads, wanted_threads(self.others, self.cores, self.most), calm)
                if not self.alive():
                    return
                try:
                    self.apply(threads)
                except ProcessLookupError:
                    return
                except OSError as err:
                    log.warning("llama-server threads stay at %d: cannot tell it (%s)", self.threads, err)
                    return
            before = after
            await asyncio.sleep(interval)
