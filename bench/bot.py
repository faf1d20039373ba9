"""Benchmark: does the bot stay responsive while the generator is saturated?

Measures, on the real bot (every cog it needs, real store, real Recommender with the real embedder,
a ``GeneratorClient`` over loopback HTTP) driven by real ``discord.Interaction`` objects
(``tests/bot/harness.py``; only Discord's HTTP API is answered locally):

1. **interaction → defer** (ms, p50/p99/max): from the moment an interaction is handed to the
   bot (what the gateway reader does) to the moment the bot sends its acknowledgement (the
   ``/interactions/…/callback`` HTTP call). Discord's deadline is 3 s; Campfire's target p99 ≤ 100 ms.
2. **event loop's longest block** (ms): asyncio debug mode's slow-callback report
   (``loop.slow_callback_duration``; asyncio logs every callback running longer, with its duration),
   plus every callback timed in wall and in CPU seconds of the loop thread (the difference is time
   the thread was descheduled: this machine's CPUs are shared), the loop thread's wait for a CPU
   (Linux schedstat), gen-2 garbage-collection pauses and a 5 ms ticker's worst lateness.
   Target ≤ 100 ms.

Three phases side by side in one run: *idle* (one ``/story`` at a time), *saturated* (``--stories``
concurrent ``/story`` commands, closed loop: each finished story is replaced at once, so the
generator's ``max_concurrency`` slots are full and the rest wait in its queue) and the same with
asyncio debug mode on (debug mode records a traceback for every callback scheduled, which slows the
loop itself, so the latency numbers come from the phase without it). Ratios are printed. Like
``bot.app.main``, the benchmark calls ``gc.freeze()`` after start-up (``--no-gc-freeze`` to compare:
without it a gen-2 collection over the loaded models' objects blocks the loop for hundreds of ms).

The generator is the loopback OpenAI-compatible fake (``tests/fakes/openai_server.py``) streaming a
~1,000-character story in 4-character chunks at ``--tokens-per-s`` per request (default 50, a
fast GPU server's per-stream rate under batching; 8 streams → 400 chunks/s into the bot) — the bot's work per story (stream parsing,
rate-limited edits, saving and embedding the story) is the same as with a real model, and the fake
keeps 16 stories in flight on a 2-core machine. ``--real`` uses the real SmolLM2 server instead
(``model.supervisor.EmbeddedServer`` on the prepared model; slow on CPU).

Run: ``.venv/bin/python -m bench.bot`` (``--stories 16 --duration 20``; ``--real``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
TARGET_DEFER_P99_MS = 100.0
TARGET_BLOCK_MS = 100.0
SLOW_CALLBACK_S = 0.02  # asyncio debug reports every callback longer than this
THEMES = ["a lighthouse keeper who collects storms", "a dragon afraid of heights", "the last bakery on the moon",
          "a cat that audits wizards", "two robots learning to garden", "a map that redraws itself at night"]
STORY_TEXT = ("Title: The Keeper of Storms\n\n" + " ".join(
    "The lamp turned and the sea listened while the keeper wrote down every storm in a careful hand." for _ in range(10)))


class SlowCallbacks(logging.Handler):
    """Collects the durations asyncio's debug mode logs as 'Executing <…> took 0.123 seconds'."""

    pattern = re.compile(r"took (\d+\.\d+) seconds")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.durations: list[float] = []
        self.worst = ""

    def emit(self, record: logging.LogRecord) -> None:
        m = self.pattern.search(record.getMessage())
        if m:
            d = float(m.group(1))
            if not self.durations or d > max(self.durations):
                self.worst = record.getMessage()[:160]
            self.durations.append(d)


def describe(handle: asyncio.Handle) -> str:
    """Which task (name, coroutine) a callback ran, or the callback's repr."""
    owner = getattr(getattr(handle, "_callback", None), "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return f"task {owner.get_name()!r} running {getattr(coro, '__qualname__', coro)!r}"
    return repr(handle)[:160]


class CallbackClock:
    """Times every event-loop callback (``asyncio.Handle._run``) in wall seconds and in the loop
    thread's CPU seconds (``time.thread_time``). On a shared, oversubscribed machine the wall time of
    a callback includes time the thread was descheduled or waiting for the GIL; its CPU time is what
    Campfire's code itself spent blocking the loop. The benchmark's driver task is not timed."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.worst_cpu = ""
        self._original = asyncio.events.Handle._run
        self.on = False
        self.exclude: asyncio.Task[Any] | None = None  # the benchmark's own driver task

    def install(self) -> None:
        clock, original = self, self._original

        def _run(handle: asyncio.Handle) -> None:
            if not clock.on or getattr(getattr(handle, "_callback", None), "__self__", None) is clock.exclude:
                return original(handle)
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return original(handle)
            finally:
                wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
                clock.wall.append(wall)
                if not clock.cpu or cpu > max(clock.cpu):
                    clock.worst_cpu = describe(handle)
                clock.cpu.append(cpu)

        asyncio.events.Handle._run = _run  # type: ignore[method-assign]

    def uninstall(self) -> None:
        asyncio.events.Handle._run = self._original  # type: ignore[method-assign]

    def take(self) -> tuple[list[float], list[float]]:
        wall, cpu = self.wall, self.cpu
        self.wall, self.cpu = [], []
        return wall, cpu


class GcPauses:
    """Durations (s) of the cyclic garbage collector's runs, by generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._t0)

    def take(self) -> dict[int, list[float]]:
        out, self.pauses = self.pauses, {0: [], 1: [], 2: []}
        return out


def runqueue_wait_s() -> float | None:
    """Seconds the loop's thread has spent runnable but waiting for a CPU (Linux schedstat), or None."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


async def ticker(stop: asyncio.Event, lateness: list[float], period_s: float = 0.005) -> None:
    """Sleep ``period_s`` repeatedly; record how late each wake-up was (seconds)."""
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(period_s)
        lateness.append(time.perf_counter() - t0 - period_s)


FAKE_SCRIPT = """
import sys, time
from campfire.testing.openai_fake import FakeOpenAI
fake = FakeOpenAI().start()
fake.reply = sys.argv[2]
fake.chunk_chars = 4
fake.first_token_delay_s = 0.2
fake.token_delay_s = 1.0 / float(sys.argv[1])
print(fake.url, flush=True)
while True:
    time.sleep(3600)
"""


class FakeProcess:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc, self.url = proc, url


def start_fake_process(tokens_per_s: float) -> FakeProcess:
    """The loopback fake generator in its own process (in a thread it would share this process's GIL
    with the bot's event loop and distort the measurement)."""
    proc = subprocess.Popen([sys.executable, "-c", FAKE_SCRIPT, str(tokens_per_s), STORY_TEXT], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError("the fake generator did not start")
    return FakeProcess(proc, url)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if q < 100 else max(values)


async def run_story(h: Any, i: int, results: dict[str, Any]) -> None:
    member = h.members[i % len(h.members)]
    inv = await h.invoke("story", theme=THEMES[i % len(THEMES)], member=member, wait=False)
    await inv.wait(timeout_s=600)
    if inv.defer_s is None:
        results["unacknowledged"] += 1
    else:
        results["defer_s"].append(inv.defer_s)
    if inv.callback_type != 5:
        results["not_deferred"] += 1
    if "went wrong" in inv.text or "can't reach" in inv.text:
        results["errors"] += 1
    results["done"] += 1


async def phase_idle(h: Any, n: int) -> dict[str, Any]:
    results: dict[str, Any] = {"defer_s": [], "done": 0, "errors": 0, "unacknowledged": 0, "not_deferred": 0}

    async def one_at_a_time() -> None:  # in its own task, like the saturated phase's workers
        for i in range(n):
            await run_story(h, i, results)

    await asyncio.create_task(one_at_a_time())
    return results


async def phase_saturated(h: Any, concurrency: int, duration_s: float) -> dict[str, Any]:
    results: dict[str, Any] = {"defer_s": [], "done": 0, "errors": 0, "unacknowledged": 0, "not_deferred": 0,
                               "max_queue": 0, "max_in_flight": 0}
    deadline = time.monotonic() + duration_s
    counter = iter(range(10**9))

    async def worker() -> None:
        while time.monotonic() < deadline:
            await run_story(h, next(counter), results)

    async def watch() -> None:
        gen = h.app.generator
        while time.monotonic() < deadline:
            results["max_queue"] = max(results["max_queue"], gen.queue_depth)
            results["max_in_flight"] = max(results["max_in_flight"], gen.in_flight)
            await asyncio.sleep(0.05)

    await asyncio.gather(watch(), *(worker() for _ in range(concurrency)))
    return results


async def main(args: argparse.Namespace) -> int:
    import discord  # noqa: F401  (imported before the harness so its log noise comes first)
    import pytest

    from campfire.config import Settings
    from model.client import GeneratorClient
    from model.tokens import TokenCounter
    from recsys.embed import Embedder
    from recsys.store import Store
    from bot.testing.harness import start_bot
    from campfire.testing.openai_fake import FakeOpenAI

    os.chdir(ROOT)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("discord").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="campfire-bench-bot-"))
    fake = server = None
    model_path = ROOT / ".cache" / "models" / "smollm2-135m-instruct"
    if args.real:
        from model.prepare import prepare_model
        from model.supervisor import EmbeddedServer

        model_path = prepare_model(model_path)
        boot = Settings(data_dir=tmp / "gen", generator={"model_path": str(model_path), "device": "auto"})
        server = EmbeddedServer(boot)
        await server.start()
        url, model_name = server.url, server.model_name
    else:
        fake = start_fake_process(args.tokens_per_s)
        url, model_name = fake.url, FakeOpenAI.model
    settings = Settings(
        data_dir=tmp / "data",
        generator={"url": url, "max_concurrency": args.max_concurrency},
        chat={"edit_interval_s": 1.0},
        story={"cooldown_s": 0.0},
        discord={"cooldown_message_s": 0.0},
    )
    store = await Store.open(settings.db_path)
    embedder = await asyncio.to_thread(Embedder)
    client = GeneratorClient(url, api_key=None, model=model_name, settings=settings.generator)
    counter = TokenCounter(model_path if model_path.exists() else None)
    monkeypatch = pytest.MonkeyPatch()
    extensions = ("bot.cogs.chat", "bot.cogs.events", "bot.cogs.story")
    try:
        async for h in start_bot(settings, store, embedder, client, counter, extensions, None, monkeypatch):
            if h.bot.tree.get_command("story") is None:
                print("bench/bot.py: /story is not available (bot.cogs.story missing); nothing to measure")
                return 1
            loop = asyncio.get_running_loop()
            slow = SlowCallbacks()
            asyncio_log = logging.getLogger("asyncio")
            asyncio_log.addHandler(slow)
            asyncio_log.propagate = False  # collected, not printed
            print(f"generator: {'real ' + model_name if args.real else 'loopback fake'} at {url}; "
                  f"max_concurrency {args.max_concurrency}; fake streams {args.tokens_per_s:.0f} chunks (≈ tokens)/s per request, "
                  f"{len(STORY_TEXT)} characters per story")

            if args.gc_freeze:
                gc.collect()
                gc.freeze()  # what bot.app.main does after loading the models
            gc_pauses = GcPauses()
            gc.callbacks.append(gc_pauses)
            callbacks = CallbackClock()
            callbacks.exclude = asyncio.current_task()
            callbacks.install()
            load_before = os.getloadavg()

            async def measure(run: Any, debug: bool) -> dict[str, Any]:
                """Run one phase, timing callbacks (and asyncio's debug report when ``debug``)."""
                loop.set_debug(debug)
                loop.slow_callback_duration = SLOW_CALLBACK_S
                slow.durations.clear()
                callbacks.take()
                gc_pauses.take()
                callbacks.on = True
                stop, lateness = asyncio.Event(), []
                tick = asyncio.create_task(ticker(stop, lateness))
                rq0, t0 = runqueue_wait_s(), time.perf_counter()
                result = await run()
                wall, rq1 = time.perf_counter() - t0, runqueue_wait_s()
                stop.set()
                await tick
                callbacks.on = False
                loop.set_debug(False)
                cb_wall, cb_cpu = callbacks.take()
                result.update(wall=wall, lateness=lateness, cb_wall=cb_wall, cb_cpu=cb_cpu,
                              slow=list(slow.durations) if debug else None, gc=gc_pauses.take(),
                              runqueue=(rq1 - rq0) / wall if rq0 is not None and rq1 is not None else None,
                              worst_cpu=callbacks.worst_cpu, worst_slow=slow.worst if debug else "")
                return result

            idle = await measure(lambda: phase_idle(h, args.idle), debug=False)
            sat = await measure(lambda: phase_saturated(h, args.stories, args.duration), debug=False)
            dbg = await measure(lambda: phase_saturated(h, args.stories, args.duration), debug=True)
            callbacks.uninstall()
            gc.callbacks.remove(gc_pauses)
            load_after = os.getloadavg()
            asyncio_log.removeHandler(slow)
            asyncio_log.propagate = True
            flush_error = ""
            try:
                await h.flush()
            except Exception as err:  # reported, not fatal: the numbers above are still valid
                flush_error = f"{type(err).__name__}: {err}"
            saved = len(await h.store.items(h.guild.id, kind="story"))
            phases = (idle, sat, dbg)

            def row(label: str, values: list[float | None], fmt: str = "{:10.1f}", extra: str = "") -> None:
                cells = "".join(("{:>10}".format("-") if v is None else fmt.format(v)) for v in values)
                print(f"{label:44}{cells}{extra}")

            def ms_list(key: str, f: Any) -> list[float | None]:
                return [None if p.get(key) is None else f(p[key]) * 1000 for p in phases]

            print()
            print(f"{'':44}{'idle':>10}{'saturated':>10}{'sat+debug':>10}   target")
            row("stories completed", [p["done"] for p in phases], "{:10d}")
            row("interaction → defer p50 (ms)", ms_list("defer_s", lambda v: pct(v, 50)))
            d99 = ms_list("defer_s", lambda v: pct(v, 99))
            row("interaction → defer p99 (ms)", d99,
                extra=f"   ≤ {TARGET_DEFER_P99_MS:.0f}  (saturated/target {d99[1] / TARGET_DEFER_P99_MS:.2f}, "
                      f"saturated/idle {d99[1] / d99[0]:.1f})")
            row("interaction → defer max (ms)", ms_list("defer_s", max))
            slow_max = ms_list("slow", lambda v: max(v, default=0.0))
            row("loop: longest callback, asyncio debug (ms)", slow_max,
                extra=f"   ≤ {TARGET_BLOCK_MS:.0f}  (measured/target {slow_max[2] / TARGET_BLOCK_MS:.2f})")
            wall_max = ms_list("cb_wall", lambda v: max(v, default=0.0))
            row("loop: longest callback, wall (ms)", wall_max, extra=f"   ≤ {TARGET_BLOCK_MS:.0f}")
            cpu_max = ms_list("cb_cpu", lambda v: max(v, default=0.0))
            row("loop: longest callback, CPU (ms)", cpu_max,
                extra=f"   ≤ {TARGET_BLOCK_MS:.0f}  (saturated/target {cpu_max[1] / TARGET_BLOCK_MS:.2f})")
            row("loop: callback CPU p99 (ms)", ms_list("cb_cpu", lambda v: pct(v, 99)))
            row("loop: busy (CPU s per wall s)", [sum(p["cb_cpu"]) / p["wall"] for p in phases], "{:10.2f}")
            row("loop thread: waiting for a CPU (s/s)", [p["runqueue"] for p in phases], "{:10.2f}")
            row("loop: 5 ms ticker worst late (ms)", ms_list("lateness", lambda v: max(v, default=0.0)))
            row("gc: longest gen-2 pause (ms)", [max(p["gc"][2], default=0.0) * 1000 for p in phases],
                extra=f"   gc.freeze {'on' if args.gc_freeze else 'off'}")
            row("generator: max in flight", [p.get("max_in_flight") for p in phases], "{:10d}")
            row("generator: max queued", [p.get("max_queue") for p in phases], "{:10d}")
            row("unacknowledged interactions", [p["unacknowledged"] for p in phases], "{:10d}")
            row("not deferred", [p["not_deferred"] for p in phases], "{:10d}")
            row("stories with an error message", [p["errors"] for p in phases], "{:10d}")
            print(f"saturated: {sat['done'] / sat['wall']:.2f} stories/s; {saved} stories saved as items in all")
            if dbg["worst_slow"]:
                print(f"worst slow callback (asyncio debug): {dbg['worst_slow']}")
            print(f"worst callback by CPU: {callbacks.worst_cpu}")
            print(f"machine load average (1 min) before/after: {load_before[0]:.1f} / {load_after[0]:.1f} "
                  f"on {os.cpu_count()} CPUs (wall-clock numbers include time other processes held the CPUs)")
            if flush_error:
                print(f"recorder/embedding flush failed after the run: {flush_error}")
            ok = d99[1] <= TARGET_DEFER_P99_MS and slow_max[2] <= TARGET_BLOCK_MS
            print("targets met" if ok else "TARGETS MISSED")
    finally:
        monkeypatch.undo()
        await client.aclose()
        await store.close()
        if fake is not None:
            fake.proc.terminate()
            fake.proc.wait(timeout=10)
        if server is not None:
            await server.stop()
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stories", type=int, default=16, help="concurrent /story commands in the saturated phase")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of the saturated phase")
    p.add_argument("--idle", type=int, default=8, help="stories, one at a time, in the idle phase")
    p.add_argument("--tokens-per-s", type=float, default=50.0,
                   help="chunks (4 characters ≈ 1 token) per second the fake streams to each request")
    p.add_argument("--max-concurrency", type=int, default=8, help="generator.max_concurrency (requests at once)")
    p.add_argument("--no-gc-freeze", dest="gc_freeze", action="store_false",
                   help="leave start-up objects to the garbage collector (default: gc.freeze() as bot.app.main does)")
    p.add_argument("--real", action="store_true", help="use the real SmolLM2 server instead of the loopback fake")
    return p.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse_args())))
