"""The llama.cpp engine's threads follow the cores actually free: the build's patch (a real llama-server
told its threads by signal), the policy (what ``/proc`` readings make it do), and the follower dropping
a thread while a real CPU-bound process runs beside it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from model import llama_patch
from model.build_llama import server_binary
from model.engine import fixed_threads_reason, free_cores, llama_server_command, quota_cores
from model.llama_server import child_env, threads_folder
from model.prepare import packaged_gguf
from model.threads_follow import (
    CALM_SAMPLES,
    TICKS,
    Follower,
    Sample,
    busy_ticks,
    others_cores,
    process_ticks,
    step,
    tell,
    wanted_threads,
)
from model.server import free_port

PROC_STAT = """cpu  1000 20 300 5000 40 5 6 7 0 0
cpu0 600 10 200 2000 20 3 4 5 0 0
cpu1 400 10 100 3000 20 2 2 2 0 0
intr 123 0 0
ctxt 456
"""


def test_busy_time_counts_user_nice_system_irq_softirq_steal_of_the_cpus_we_may_use():
    assert busy_ticks(PROC_STAT) == 1000 + 20 + 300 + 5 + 6 + 7  # not idle (5000), not iowait (40)
    assert busy_ticks(PROC_STAT, {1}) == 400 + 10 + 100 + 2 + 2 + 2  # a container pinned to cpu1
    assert busy_ticks(PROC_STAT, {0, 1}) == 822 + 516
    assert busy_ticks(PROC_STAT, {7}) == 1338  # lxcfs renumbers its lines: the all-CPU line then
    with pytest.raises(ValueError):
        busy_ticks("intr 1\n")


def test_process_time_is_read_after_the_command_name_whatever_it_holds():
    line = "4242 (llama (srv) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 0 0\n"
    assert process_ticks(line) == 300  # utime 250 + stime 50


def test_others_are_what_is_busy_minus_the_generators_own_processes():
    before, after = Sample(busy=1000, own=400, at=10.0), Sample(busy=1000 + 2 * TICKS, own=400 + TICKS, at=11.0)
    assert others_cores(before, after) == pytest.approx(1.0)  # 2 cores busy for 1 s, 1 of them ours
    assert others_cores(after, Sample(busy=after.busy, own=after.own + 5, at=12.0)) == 0.0  # never below 0
    assert others_cores(after, after) == 0.0


@pytest.mark.parametrize(("others", "cores", "most", "threads"), [
    (0.0, 2, 2, 2),  # idle: every core
    (0.4, 2, 2, 2),  # a client reading streams: still every core
    (0.7, 2, 2, 1),  # a CPU-bound process sharing the cores with 2 spinning threads gets ≈ 2/3 of a core
    (1.0, 2, 2, 1),
    (5.0, 2, 2, 1),  # never 0
    (3.2, 8, 8, 5),
    (0.0, 8, 6, 6),  # never more than llama-server started with
])
def test_the_wanted_threads_are_the_free_cores(others, cores, most, threads):
    assert wanted_threads(others, cores, most) == threads


def test_threads_drop_at_once_and_come_back_after_a_calm_second():
    threads, calm = step(2, 1, 0)
    assert (threads, calm) == (1, 0)
    for _ in range(CALM_SAMPLES - 1):
        threads, calm = step(threads, 2, calm)
        assert threads == 1
    assert step(threads, 2, calm) == (2, 0)
    assert step(1, 2, CALM_SAMPLES - 2) == (1, CALM_SAMPLES - 1)
    assert step(1, 1, 3) == (1, 0)  # a busy sample in between starts the count again


SOURCE = 'x\n#include <algorithm>\n#include <cstddef>\nvoid f() {\n' + llama_patch.DECODE_ANCHOR + "}\n"


def test_the_patch_applies_once_and_refuses_other_sources(tmp_path):
    path = tmp_path / llama_patch.SOURCE
    path.parent.mkdir(parents=True)
    path.write_text(SOURCE)
    llama_patch.apply(tmp_path)
    text = path.read_text()
    assert "SIGUSR1" in text and "llama_set_n_threads(ctx_tgt" in text
    assert text.index("campfire_threads_signalled.exchange") < text.index("int32_t off_next = 0;")
    with pytest.raises(ValueError, match="carries the thread patch already"):
        llama_patch.apply(tmp_path)
    path.write_text(SOURCE.replace("int32_t off_next = 0;", "int off_next = 0;"))
    with pytest.raises(ValueError, match="does not match the thread patch"):
        llama_patch.apply(tmp_path)


def test_only_a_patched_binary_with_no_pinned_count_follows(tmp_path, make_settings, monkeypatch):
    binary = tmp_path / "llama-server"
    binary.write_text("built with the patch")
    gen = make_settings().generator
    assert fixed_threads_reason(gen, binary) is not None  # an admin's own llama-server: never sent SIGUSR1
    llama_patch.write_marker(tmp_path)
    assert (fixed_threads_reason(gen, binary) is None) == (quota_cores() is None or quota_cores() >= free_cores())
    binary.write_text("rebuilt without it, next to the old marker")
    assert not llama_patch.patched(binary)
    binary.write_text("built with the patch")
    assert llama_patch.patched(binary)
    assert fixed_threads_reason(make_settings(generator={"threads": 1}).generator, binary) == "generator.threads = 1"
    monkeypatch.setenv("CAMPFIRE_GENERATOR_THREADS", "1")
    assert fixed_threads_reason(make_settings().generator, binary) == "CAMPFIRE_GENERATOR_THREADS = 1"
    monkeypatch.delenv("CAMPFIRE_GENERATOR_THREADS")
    assert "is not Campfire's patched build" in fixed_threads_reason(gen, tmp_path / "other-llama-server")
    cmd = llama_server_command(binary, Path("/m.gguf"), 4321, gen, "smollm", follow=True)
    args = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    assert args["--threads"] == args["--threads-batch"] == str(free_cores())  # the most it may be given
    env = child_env(tmp_path / "threads")
    assert env[llama_patch.ENV] == str(tmp_path / "threads")
    assert env.get("OMP_WAIT_POLICY") == os.environ.get("OMP_WAIT_POLICY")  # OpenMP's own policy, or the admin's


def _complete(port: int) -> int:
    body = json.dumps({"prompt": "Around the campfire we told", "n_predict": 4}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/completion", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.load(answer)["tokens_predicted"]


@pytest.fixture
def patched_server(tmp_path):
    """The real built llama-server on the packaged model, 2 threads, told its threads through a file."""
    binary = server_binary()
    if binary is None or not llama_patch.patched(binary):
        pytest.skip("no llama-server built with Campfire's thread patch here (make install builds it)")
    port, path, log = free_port(), tmp_path / "threads", tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(binary), "-m", str(packaged_gguf()), "--host", "127.0.0.1", "--port", str(port),
                                 "-t", "2", "-tb", "2", "-c", "512", "-np", "1"], stdout=out, stderr=subprocess.STDOUT,
                                env=child_env(path))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if _complete(port):
                break
        except OSError:
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
    try:
        yield proc, port, path, log
    finally:
        proc.kill()
        proc.wait()


def test_a_patched_llama_server_takes_its_threads_by_signal_and_keeps_answering(patched_server):
    proc, port, path, log = patched_server
    tell(proc.pid, path, 1)
    assert _complete(port) == 4 and proc.poll() is None
    tell(proc.pid, path, 9)  # more than it started with: clamped to its 2
    assert _complete(port) == 4
    text = log.read_text()
    assert "campfire: 1 decode thread(s), 1 batch thread(s)" in text
    assert text.index("campfire: 2 decode thread(s), 2 batch thread(s)") > text.index("campfire: 1 decode thread(s)")


async def test_the_follower_drops_a_thread_while_another_process_takes_a_core(patched_server):
    proc, port, path, log = patched_server
    seen: list[int] = []
    follower = Follower(proc.pid, [os.getpid()], path, most=2, cores=2, on_change=seen.append)
    burner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"])
    task = asyncio.create_task(follower.run(interval=0.1))
    try:
        deadline = time.monotonic() + 10
        while follower.threads == 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert follower.threads == 1 and seen == [1], f"others measured {follower.others:.2f} cores"
        assert follower.others >= 0.5  # the burner's core, whatever else runs here
        assert await asyncio.to_thread(_complete, port) == 4
        assert "campfire: 1 decode thread(s)" in log.read_text()
    finally:
        burner.kill()
        burner.wait()
        task.cancel()


def test_the_cpu_quota_is_the_smallest_along_the_process_cgroup_path(tmp_path):
    root, me = tmp_path / "cgroup", tmp_path / "self_cgroup"
    service = root / "system.slice" / "campfire.service"
    service.mkdir(parents=True)
    me.write_text("0::/system.slice/campfire.service\n")
    assert quota_cores(root, me) is None  # no cpu.max anywhere
    (root / "cpu.max").write_text("max 100000\n")
    (service / "cpu.max").write_text("150000 100000\n")  # CPUQuota=150% (docker --cpus 1.5)
    assert quota_cores(root, me) == 2
    (root / "system.slice" / "cpu.max").write_text("50000 100000\n")  # a parent's is smaller
    assert quota_cores(root, me) == 1
    me.write_text("garbage")
    assert quota_cores(root, me) is None  # read at the root then: "max"


async def test_the_follower_never_signals_a_server_that_has_exited(tmp_path):
    """After llama-server exits its pid may go to another process, which SIGUSR1 would kill."""
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        follower = Follower(bystander.pid, [], tmp_path / "threads", most=4, cores=1, alive=lambda: False)
        await asyncio.wait_for(follower.run(interval=0.05), 5)  # wants 1 thread, but the server is gone: it ends
        assert follower.changes == 0 and bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_threads_folders_of_fronts_that_no_longer_run_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale, live = tmp_path / f"campfire-threads-{gone.pid}-abc", tmp_path / f"campfire-threads-{os.getpid()}-def"
    stale.mkdir()
    live.mkdir()
    made = threads_folder()
    assert made.is_dir() and made.name.startswith(f"campfire-threads-{os.getpid()}-")
    assert not stale.exists() and live.exists()  # a SIGKILLed front's folder goes, a running one's stays
