"""The embedded generator: ``campfire serve`` as a child process on a free loopback port, supervised.

Used when ``generator.url`` is empty. The child runs ``python -m model.server`` (the same code as
``campfire serve``) with the generator settings passed as ``CAMPFIRE_GENERATOR__*`` environment
variables; its output goes to ``<data_dir>/logs/generator.log``. A watchdog restarts it on the same
port when the process exits or ``/health`` answers 503 twice, half a second apart (transformers'
"CB worker is dead" state, from which it never recovers by itself, or the llama.cpp engine's
``llama-server`` child gone: :mod:`model.llama_server`). The child also exits by itself if Campfire
dies without stopping it (it watches its parent's pid).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import httpx

from campfire.config import Settings
from model.errors import GeneratorUnavailable

log = logging.getLogger(__name__)

PARENT_PID_ENV = "CAMPFIRE_PARENT_PID"
# A 503 from /health must still be there this much later (seconds) before the generator is restarted:
# a restart costs every reply in flight, and the engine-dead states it is for do not go away by themselves
CONFIRM_S = 0.5


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedServer:
    """Start, watch and stop the generator child process.

    ``url`` (``http://127.0.0.1:PORT/v1``) and ``model_name`` (the served model's id) are valid after
    :meth:`start`. ``restarts`` counts restarts since start. ``check_interval_s`` is the watchdog period
    (seconds).
    """

    def __init__(self, settings: Settings, *, check_interval_s: float = 2.0) -> None:
        self.settings = settings
        self.check_interval_s = check_interval_s
        self.port = 0
        self.restarts = 0
        self.model_path = Path(settings.generator_model_path).resolve()
        self.log_path = Path(settings.data_dir) / "logs" / "generator.log"
        self._proc: asyncio.subprocess.Process | None = None
        self._watchdog: asyncio.Task | None = None
        self._http = httpx.AsyncClient(timeout=5.0)
        self._lock = asyncio.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model_name(self) -> str:
        """The id the server lists in ``/v1/models`` (transformers uses the folder path it was given)."""
        return str(self.model_path)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("DISCORD_TOKEN", None)  # the generator never talks to Discord: keep the bot's secret out of it
        for key, value in self.settings.generator.model_dump().items():
            # lists and dicts as JSON, which pydantic-settings parses back (str() of a list is not JSON)
            env[f"CAMPFIRE_GENERATOR__{key.upper()}"] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        env["CAMPFIRE_GENERATOR__URL"] = ""
        env["CAMPFIRE_GENERATOR__MODEL_PATH"] = str(self.model_path)
        env["CAMPFIRE_DATA_DIR"] = str(self.settings.data_dir)
        env[PARENT_PID_ENV] = str(os.getpid())
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env.setdefault("HF_HUB_OFFLINE", "1")
        return env

    async def start(self) -> None:
        """Start the child and wait for ``/health`` (at most ``generator.startup_timeout_s``), then watch it.

        Raises :class:`GeneratorUnavailable` when it does not become healthy; the log's tail is in the message.
        """
        if not self.port:
            self.port = _free_port()
        await self._spawn()
        self._watchdog = asyncio.create_task(self._watch(), name="generator-watchdog")

    async def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "model.server", "--host", "127.0.0.1", "--port", str(self.port),
                env=self._env(), stdout=out, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                cwd=str(Path(__file__).resolve().parent.parent),
                # its own session: a Ctrl-C at the terminal (the console's "stop this story") must not
                # reach the generator; the supervisor stops it itself
                start_new_session=True,
            )
        log.info("generator starting (pid %d, port %d, log %s)", self._proc.pid, self.port, self.log_path)
        deadline = time.monotonic() + self.settings.generator.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.returncode is not None:
                tail = await asyncio.to_thread(self._tail)
                raise GeneratorUnavailable(f"the generator exited at start (code {self._proc.returncode}): {tail}", retry_after_s=5)
            if await self._health() == 200:
                log.info("generator ready at %s (pid %d)", self.url, self._proc.pid)
                return
            await asyncio.sleep(0.25)
        await self._kill()
        tail = await asyncio.to_thread(self._tail)
        raise GeneratorUnavailable(
            f"the generator did not answer /health within {self.settings.generator.startup_timeout_s:.0f} s: {tail}",
            retry_after_s=5,
        )

    def _tail(self, lines: int = 5, max_bytes: int = 8192) -> str:
        """The last ``lines`` lines of the child's log (read from its last ``max_bytes`` bytes only:
        the log grows across restarts), joined with `` | ``; ``(no log)`` when it cannot be read.
        Blocking file I/O: call it through ``asyncio.to_thread``."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - max_bytes))
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    async def _health(self) -> int | None:
        answer = await self._probe()
        return answer.status_code if answer is not None else None

    async def _probe(self) -> httpx.Response | None:
        try:
            return await self._http.get(f"http://127.0.0.1:{self.port}/health")
        except httpx.HTTPError:
            return None

    async def _engine_dead(self) -> str | None:
        """What the child's ``/health`` said (its body, e.g. ``{"status":"llama_server_dead"}``) when it
        answered 503 twice, :data:`CONFIRM_S` apart; None when it did not (healthy, or a passing 503)."""
        for attempt in range(2):
            answer = await self._probe()
            if answer is None or answer.status_code != 503:
                return None
            if attempt == 0:
                await asyncio.sleep(CONFIRM_S)
        return answer.text[:200]

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval_s)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("generator restart failed; trying again in %.0f s", self.check_interval_s)

    async def check(self) -> bool:
        """Restart the child if it has exited or reports its engine dead (``/health`` 503, confirmed
        :data:`CONFIRM_S` later). Returns whether it restarted."""
        async with self._lock:
            proc = self._proc
            reason = None
            if proc is None or proc.returncode is not None:
                reason = f"exited with code {proc.returncode if proc else None}"
            elif (said := await self._engine_dead()) is not None:
                reason = f"reports its engine dead (/health 503: {said})"
            if reason is None:
                return False
            log.warning("generator %s; restarting it", reason)
            await self._kill()
            self.restarts += 1
            await self._spawn()
            return True

    async def _kill(self) -> None:
        await stop_process(self._proc)

    async def stop(self) -> None:
        """Stop the watchdog and the child (SIGTERM, then SIGKILL after 5 s)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        async with self._lock:
            await self._kill()
        await self._http.aclose()
        log.info("generator stopped")


async def stop_process(proc: asyncio.subprocess.Process | None, timeout_s: float = 5.0) -> None:
    """Stop a child process: SIGTERM, then SIGKILL after ``timeout_s`` seconds; nothing when it is
    None or already gone."""
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout=timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def exit_with_parent() -> None:
    """In the child: exit when the parent named by ``CAMPFIRE_PARENT_PID`` is gone (checked every second)."""
    import threading

    pid = int(os.environ.get(PARENT_PID_ENV) or 0)
    if not pid:
        return

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:
                pass

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
