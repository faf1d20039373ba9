"""Which engine ``campfire serve`` runs, and how llama.cpp's ``llama-server`` is started for it.

Engines (``generator.engine`` / ``campfire serve --engine``):

- ``transformers`` — transformers' serve app with continuous batching (:mod:`model.server`): the GPU
  engine, and any model folder without a GGUF (e.g. a ``campfire model finetune`` output);
- ``llama.cpp`` — llama.cpp's ``llama-server`` (built once by :mod:`model.build_llama`) on the GGUF
  the folder was prepared from, as it is (quantised, no bf16 conversion), behind Campfire's thin
  front (:mod:`model.llama_server`): the CPU engine;
- ``auto`` (default) — ``transformers`` on CUDA; on a CPU ``llama.cpp`` when its binary and the GGUF
  are there, else ``transformers`` with one log line saying why.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
from pathlib import Path

from campfire.config import GeneratorSettings

log = logging.getLogger(__name__)

ENGINES = ("auto", "transformers", "llama.cpp")
# llama-server's host-RAM prompt cache (MiB; its default is 8192): prompts seen before — the persona, a
# channel's history, a story prompt — are not computed again, in any slot. 256 MiB ≈ 11,600 tokens of
# SmolLM2-135M's KV cache; it bounds the tree's memory (RSS ≤ 1.5 GB target of issue 16).
PROMPT_CACHE_MIB = 256


def cuda_visible() -> bool:
    """Whether a CUDA GPU can serve, decided without importing torch (≈ 1 s and ≈ 300 MB the CPU engine
    never needs): torch's CPU build (a ``+cpu`` version) or no NVIDIA driver (``/proc/driver/nvidia``) or
    ``CUDA_VISIBLE_DEVICES`` empty/-1 → False."""
    try:
        if "+cpu" in importlib.metadata.version("torch"):
            return False
    except importlib.metadata.PackageNotFoundError:
        return False
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/version").exists()


def gguf_of(model_path: Path) -> Path | None:
    """The GGUF file to serve for ``model_path``: the path itself when it is a ``.gguf`` file, else the
    ``gguf`` (or ``source``) the folder was prepared from (its ``campfire-prepared.json``; ``campfire model
    prepare`` and ``pull`` record it; a fine-tuned folder names its exported GGUF relative to itself) when that
    file still exists; None otherwise."""
    from model.prepare import read_marker

    path = Path(model_path)
    if path.suffix == ".gguf":
        return path if path.is_file() else None
    marker = read_marker(path)
    gguf = Path(str(marker.get("gguf") or marker.get("source") or ""))  # folders prepared before "gguf" was kept
    gguf = gguf if gguf.is_absolute() else path / gguf  # relative: inside the folder (model.export_gguf)
    return gguf if gguf.suffix == ".gguf" and gguf.is_file() else None


def resolve_engine(gen: GeneratorSettings, model_path: Path, engine: str | None = None) -> tuple[str, str]:
    """``(engine, reason)``: ``transformers`` or ``llama.cpp`` for ``engine`` (default ``gen.engine``) on
    ``model_path``; ``reason`` is one line for the log. An explicit ``llama.cpp`` that cannot run (no
    binary or no GGUF) raises :class:`RuntimeError` with the reason; ``auto`` falls back instead. A
    ``model_path`` that is neither a prepared folder nor a GGUF file raises
    :class:`model.prepare.ModelNotFound` (a RuntimeError) saying to run ``campfire model prepare``,
    before any engine is looked at."""
    from model.build_llama import server_binary
    from model.prepare import ModelNotFound, is_prepared

    if not is_prepared(Path(model_path)) and gguf_of(model_path) is None:
        raise ModelNotFound(f"no prepared model at {model_path}: run `campfire model prepare` first")
    engine = engine or gen.engine
    if engine == "transformers":
        return "transformers", "generator.engine = transformers"
    if engine == "auto" and gen.device == "cuda":
        return "transformers", "generator.device = cuda"
    if engine == "auto" and gen.device == "auto" and cuda_visible():
        return "transformers", "a CUDA GPU is visible"
    missing = None
    binary = server_binary()
    if binary is None:
        missing = "llama-server is not built (run `make install` or `python -m model.build_llama`)"
    elif not runs(binary):
        missing = f"{binary} does not run on this machine (try `python -m model.build_llama --force`)"
    elif gguf_of(model_path) is None:
        missing = f"no GGUF file for {model_path} (its campfire-prepared.json names none that exists)"
    if missing is None:
        return "llama.cpp", f"CPU, {gguf_of(model_path)}"
    if engine == "llama.cpp":
        raise RuntimeError(f"the llama.cpp engine cannot run: {missing}")
    return "transformers", f"using the transformers engine: {missing}"


def runs(binary: Path) -> bool:
    """Whether ``binary --version`` exits 0 within 10 s (a binary built for other CPU features or a
    missing shared library fails here, not in a restart loop)."""
    import subprocess

    try:
        return subprocess.run([str(binary), "--version"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def quota_cores(cgroup_root: Path = Path("/sys/fs/cgroup"), self_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """The CPU quota of this process's cgroup v2 and its parents, in cores rounded up (``cpu.max`` =
    ``QUOTA PERIOD`` in µs: ``docker --cpus 1.5`` → ``150000 100000`` → 2; systemd ``CPUQuota=``), the
    smallest along the path; None without one (``max``, cgroup v1, no cgroup file)."""
    try:
        line = next(x for x in self_cgroup.read_text(encoding="ascii").splitlines() if x.startswith("0::"))
    except (OSError, StopIteration):
        line = "0::/"
    folder, limits = cgroup_root / line[3:].strip("/"), []
    while True:
        try:
            quota, period = (folder / "cpu.max").read_text(encoding="ascii").split()[:2]
            if quota != "max" and int(period) > 0:
                limits.append(max(1, -(-int(quota) // int(period))))
        except (OSError, ValueError):
            pass
        if folder == cgroup_root or cgroup_root not in folder.parents:
            return min(limits) if limits else None
        folder = folder.parent


def own_cpus() -> set[int] | None:
    """The CPUs this process may run on (its affinity mask: ``taskset``, ``docker --cpuset-cpus``), or
    None where that is unknown."""
    with contextlib.suppress(AttributeError, OSError):
        return set(os.sched_getaffinity(0))
    return None


def free_cores() -> int:
    """CPU cores this process may run on: its affinity mask (:func:`own_cpus`; else every CPU), at most
    its cgroup CPU quota (:func:`quota_cores`)."""
    cpus = own_cpus()
    cores = len(cpus) if cpus else max(1, os.cpu_count() or 1)
    quota = quota_cores()
    return min(cores, quota) if quota else cores


def pinned_threads(gen: GeneratorSettings) -> tuple[int, str] | None:
    """The thread count an admin pinned and where: ``generator.threads`` when > 0, else
    ``CAMPFIRE_GENERATOR_THREADS`` when a positive integer; None when neither is."""
    if gen.threads > 0:
        return gen.threads, "generator.threads"
    env = os.environ.get("CAMPFIRE_GENERATOR_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env), "CAMPFIRE_GENERATOR_THREADS"
    return None


def generator_threads(gen: GeneratorSettings) -> int:
    """A fixed thread count for the generator (the transformers engine; the llama.cpp engine when its threads
    do not follow the free cores, :func:`fixed_threads_reason`): ``generator.threads`` when > 0 (or
    ``CAMPFIRE_GENERATOR_THREADS``), else the free cores less one for the bot on machines with ≤ 4 cores,
    less two above (at least 1).

    Why not every core: decoding threads wait at each step's barrier, so one core taken by another
    process stalls them all — issue 16 measured llama-server's default 2 threads collapse to 6.5 tok/s
    on 2 cores while another process held one (one thread: 38–60 tok/s)."""
    pinned = pinned_threads(gen)
    if pinned:
        return pinned[0]
    cores = free_cores()
    return max(1, cores - 1 if cores <= 4 else cores - 2)


def generator_batch_threads(gen: GeneratorSettings) -> int:
    """Threads for llama.cpp's batched steps (``--threads-batch``): every step holding more than one token —
    a prompt, and decoding two or more streams at once. ``generator.threads`` (or
    ``CAMPFIRE_GENERATOR_THREADS``) when set; else :func:`generator_threads` plus the core it leaves for
    the bot (at most the free cores): a batched step has enough work per matrix to split across both
    cores of a 2-core machine, while one stream decodes on one thread. Measured with bench/generator.py,
    8 concurrent requests, SmolLM2 Q4_1 (README "Generator engines")."""
    if pinned_threads(gen):
        return generator_threads(gen)
    return min(free_cores(), generator_threads(gen) + 1)


def fixed_threads_reason(gen: GeneratorSettings, binary: Path) -> str | None:
    """Why the llama.cpp engine's thread count stays fixed (one line for the log), or None when its threads
    follow the cores actually free (:mod:`model.threads_follow`): a count pinned by ``generator.threads``
    or ``CAMPFIRE_GENERATOR_THREADS``; a ``binary`` without Campfire's patch
    (:func:`model.llama_patch.patched`: an admin's own ``llama-server``); a cgroup CPU quota, under which
    ``/proc/stat`` (the whole host's CPUs) is the wrong measure of what is free (``docker --cpus``)."""
    from model.llama_patch import patched

    pinned = pinned_threads(gen)
    if pinned:
        return f"{pinned[1]} = {pinned[0]}"
    if not patched(binary):
        return f"{binary} is not Campfire's patched build (python -m model.build_llama --force builds it)"
    quota = quota_cores()
    if quota is not None and quota < free_cores():
        return f"a CPU quota of {quota} core(s) (free cores cannot be read from /proc/stat there)"
    return None


def llama_server_command(binary: Path, gguf: Path, port: int, gen: GeneratorSettings, alias: str,
                         follow: bool = False) -> list[str]:
    """The ``llama-server`` command line serving ``gguf`` on ``127.0.0.1:port``.

    ``follow`` (:func:`fixed_threads_reason` is None): ``--threads`` and ``--threads-batch`` = every core
    (:func:`free_cores`), the most the front may give it while nothing else runs (it gives fewer as other
    processes take cores). Otherwise ``--threads`` :func:`generator_threads` (one stream decoding),
    ``--threads-batch`` :func:`generator_batch_threads` (prompts, and several streams decoding at once),
    fixed. ``--parallel`` =
    ``generator.max_concurrency`` slots, each with its own part of the KV cache (llama-server's default
    when ``--parallel`` is given: ``kv_unified = false`` in its log; ``--kv-unified`` measured no faster:
    51.8 vs 53.6 tok/s chat, 44.7 vs 51.1 story, at 8 concurrent requests) of ``--ctx-size`` = slots ×
    ``generator.context_tokens`` tokens, so every slot can hold the whole window at once (f16, allocated
    at start: SmolLM2-135M ≈ 22.5 KB per token, 8 × 2048 ≈ 377 MB; q8_0 K/V measured no faster either).
    ``--cache-ram`` :data:`PROMPT_CACHE_MIB` instead of 8 GiB: prompts seen before (the persona, a story
    prompt) are not computed again. ``--alias``: the id ``/v1/models`` lists (the transformers
    engine's, so clients see one name)."""
    if follow:
        threads = batch = free_cores()
    else:
        threads, batch = generator_threads(gen), generator_batch_threads(gen)
    slots = gen.max_concurrency
    return [
        str(binary), "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
        "--alias", alias, "--threads", str(threads), "--threads-batch", str(batch),
        "--parallel", str(slots), "--ctx-size", str(slots * gen.context_tokens),
        "--cache-ram", str(PROMPT_CACHE_MIB), "--metrics", "--no-webui", "--jinja",
    ]
