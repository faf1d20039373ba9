"""Build llama.cpp's ``llama-server`` once, for the llama.cpp engine of ``campfire serve`` (:mod:`model.engine`).

Source: the source distribution of llama-cpp-python pinned with its sha256 in
``requirements/llama-server.txt`` (MIT; it vendors llama.cpp under ``vendor/llama.cpp``, whose
``tools/server`` is ``llama-server``). ``pip download --no-deps --no-binary :all: --require-hashes``
fetches it (pip's cache keeps it), only the vendored llama.cpp is extracted, patched so its threads can
change while it serves (:mod:`model.llama_patch`) and compiled with cmake
(targets :data:`TARGETS`: ``llama-server``, and ``llama-quantize`` for quantising fine-tuned GGUFs; static
libraries, no HTTPS, no web-UI download), the server must pass a smoke test (:func:`smoke`: it
generates 4 tokens with the packaged model, which runs the matrix kernels ``--version`` never does),
and both binaries are installed in ``<cache>/llama.cpp-<version>-<variant>/bin/`` where ``<cache>`` is
``$CAMPFIRE_LLAMA_CACHE``, else ``$XDG_CACHE_HOME/campfire``, else ``~/.cache/campfire``
(:func:`server_binary`, :func:`quantize_binary` find them).

Variants (``--portable`` / ``--native``, else ``$CAMPFIRE_LLAMA_VARIANT``, else portable):
``portable`` (``GGML_NATIVE=OFF``, i.e. llama.cpp's x86-64 default set SSE4.2, AVX, AVX2, BMI2, FMA,
F16C — runs on any x86-64 CPU since 2013 (Haswell/Zen), so a cache or image built on one machine runs
on another) or ``native`` (``GGML_NATIVE=ON``: this CPU's instruction set, e.g. AVX-512, less AMX —
:data:`NATIVE_FLAGS`; cached per CPU, ``llama.cpp-<version>-native-<cpu_tag()>``, as it may not run
elsewhere; a native build that fails falls back to the portable one). On this project's AVX-512 Xeon
the portable build was the faster (README "Generator engines"), so ``make install`` builds portable
(``LLAMA_VARIANT=native`` for the other). A second run finds the binaries and returns at once. On
failure it prints one line and exits 0, and ``campfire serve`` uses the transformers engine
(``--strict``: exit 1 instead).

Measured on this project's 2-core Xeon (shared): configure + build ≈ see README "Generator engines".
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from model import llama_patch
from model.pull import sha256_file

PIN_FILE = Path(__file__).resolve().parent.parent / "requirements" / "llama-server.txt"
SERVER_ENV = "CAMPFIRE_LLAMA_SERVER"  # an explicit llama-server binary, overriding the cache
TARGETS = ("llama-server", "llama-quantize")  # the engine; quantising fine-tuned GGUFs (issue 12)
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DGGML_CCACHE=OFF",
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF",
)


# native: this CPU's instruction set, less AMX — llama.cpp's AMX kernel for Q4_1 (the packaged SmolLM2)
# died with SIGILL at its first decode on this project's Xeon (tinygemm_kernel_amx, `tilezero`), which
# `--version` does not show; AVX-512 (VNNI, BF16, VBMI) stays
NATIVE_FLAGS = ("-DGGML_NATIVE=ON", "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16",
                "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16")


def _variant_flags(variant: str) -> tuple[str, ...]:
    if variant != "native":
        return ("-DGGML_NATIVE=OFF",)
    return NATIVE_FLAGS if platform.machine().lower() in ("x86_64", "amd64") else ("-DGGML_NATIVE=ON",)


class BuildError(RuntimeError):
    """The build could not be done; the message is one line for the admin."""


def pinned(pin_file: Path = PIN_FILE) -> tuple[str, str]:
    """``(version, sha256)`` of the llama-cpp-python sdist pinned in ``requirements/llama-server.txt``.
    Raises :class:`BuildError` when the file has no ``llama-cpp-python==V --hash=sha256:H`` pin."""
    text = pin_file.read_text(encoding="utf-8") if pin_file.exists() else ""
    version = re.search(r"^llama-cpp-python==([\w.]+)", text, re.MULTILINE)
    digest = re.search(r"--hash=sha256:([0-9a-f]{64})", text)
    if not version or not digest:
        raise BuildError(f"no llama-cpp-python pin with a sha256 in {pin_file}")
    return version[1], digest[1]


def cache_root() -> Path:
    """Where built binaries live (see the module docstring)."""
    if os.environ.get("CAMPFIRE_LLAMA_CACHE"):
        return Path(os.environ["CAMPFIRE_LLAMA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "campfire"


def cpu_tag() -> str:
    """A short fingerprint of this CPU (model name and instruction-set flags of ``/proc/cpuinfo``; "unknown"
    without it): a ``native`` build is kept per CPU, so a cache folder shared with or copied to another
    machine never hands it a binary with instructions its CPU lacks (they would fail mid-generation,
    not at ``--version``)."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown"
    fields = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in info.splitlines() if ":" in line}
    key = fields.get("model name", "") + "|" + " ".join(sorted(fields.get("flags", "").split()))
    return hashlib.sha256(key.encode()).hexdigest()[:10]


def install_dir(variant: str = "portable", version: str | None = None) -> Path:
    """``<cache>/llama.cpp-<version>-portable``, or ``…-native-<cpu_tag()>`` (the pinned version by default)."""
    suffix = f"native-{cpu_tag()}" if variant == "native" else variant
    return cache_root() / f"llama.cpp-{version or pinned()[0]}-{suffix}"


def _folders() -> list[Path]:
    """Cached build folders to look in, best first: the pinned version's ``native``, then ``portable``;
    any cached version when the pin file is not installed (a wheel, an image)."""
    try:
        return [install_dir(variant, pinned()[0]) for variant in ("native", "portable")]
    except BuildError:
        found = [f for f in cache_root().glob("llama.cpp-*") if "-native-" not in f.name or f.name.endswith(f"-native-{cpu_tag()}")]
        return sorted(found, key=lambda f: (_version_key(f.name.split("-")[1]), "-native-" in f.name), reverse=True)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))


def _executable(path: Path) -> Path | None:
    return path if path.is_file() and os.access(path, os.X_OK) else None


def server_binary() -> Path | None:
    """The ``llama-server`` to run: ``$CAMPFIRE_LLAMA_SERVER`` when set (None if it is not an executable
    file), else the cached build of the pinned version (``native`` preferred over ``portable``; any cached
    version when the pin file is not installed), else None."""
    explicit = os.environ.get(SERVER_ENV)
    if explicit:
        return _executable(Path(explicit))
    return next((p for f in _folders() if (p := _executable(f / "bin" / "llama-server"))), None)


def quantize_binary() -> Path | None:
    """llama.cpp's ``llama-quantize`` (e.g. to quantise a fine-tuned GGUF to the base model's Q4_1) from
    the same place as :func:`server_binary`: next to ``$CAMPFIRE_LLAMA_SERVER`` when that is set, else
    ``bin/`` of the cached build (``native`` before ``portable``). None when there is none (a build made
    before it was added: ``python -m model.build_llama --force`` builds both)."""
    explicit = os.environ.get(SERVER_ENV)
    if explicit:
        return _executable(Path(explicit).parent / "llama-quantize")
    return next((p for f in _folders() if (p := _executable(f / "bin" / "llama-quantize"))), None)


def fetch_sdist(dest: Path, sdist: Path | None = None) -> Path:
    """The pinned sdist in ``dest``: ``sdist`` (a local copy, checked against the pinned sha256) or
    ``pip download`` with ``--require-hashes``. Raises :class:`BuildError`."""
    version, digest = pinned()
    if sdist is None:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               "--require-hashes", "-r", str(PIN_FILE), "-d", str(dest)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["pip download failed"])[-1]
            raise BuildError(f"could not download llama-cpp-python {version}: {last}")
        found = sorted(dest.glob(f"llama_cpp_python-{version}.tar.gz"))
        if not found:
            raise BuildError(f"pip download gave no llama_cpp_python-{version}.tar.gz")
        sdist = found[0]
    if sha256_file(sdist) != digest:
        raise BuildError(f"{sdist} does not match the sha256 pinned in {PIN_FILE.name}")
    return sdist


def _extract_vendor(sdist: Path, dest: Path) -> Path:
    """Extract ``*/vendor/llama.cpp/`` of ``sdist`` under ``dest``; returns the llama.cpp source folder."""
    with tarfile.open(sdist, "r:gz") as tar:
        members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name]
        if not members:
            raise BuildError(f"{sdist.name} has no vendor/llama.cpp")
        tar.extractall(dest, members=members, filter="data")
    return next(dest.glob("*/vendor/llama.cpp"))


def _run(cmd: list[str], log, what: str) -> None:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode != 0:
        raise BuildError(f"{what} failed (log: {log.name})")


def smoke(server: Path, timeout_s: float = 60.0) -> str:
    """Run ``server`` (a ``llama-server`` binary) on the packaged SmolLM2 GGUF and have it write 4 tokens
    after a 20-token prompt (its matrix kernels, which ``--version`` never runs) on 2 threads, then — told
    to use 1 (:mod:`model.llama_patch`) — again; returns one line saying so, or that it was skipped (no
    packaged model). Raises :class:`BuildError` when it dies or
    does not answer within ``timeout_s`` seconds."""
    import json
    import socket
    import urllib.request

    from model.prepare import ModelNotFound, packaged_gguf

    try:
        gguf = packaged_gguf()
    except ModelNotFound:
        return "smoke test skipped (the packaged model is not installed)"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(server), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-t", "2", "-c", "512", "-np", "1"]
    folder = Path(tempfile.mkdtemp(prefix="campfire-smoke-"))
    threads_file, log_file = folder / "threads", folder / "server.log"
    threads_file.write_text("1 1\n", encoding="ascii")
    env = {**os.environ, llama_patch.ENV: str(threads_file)}
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    body = json.dumps({"prompt": "The campfire crackled as the friends told stories about the old lighthouse on the hill",
                       "n_predict": 4}).encode()
    deadline = time.monotonic() + timeout_s
    answered = 0
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BuildError(f"the built llama-server {'died when told its threads' if answered else 'does not run on this CPU'}"
                                 f" (exit {proc.returncode}); try --portable")
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/completion", data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                    if json.load(answer).get("tokens_predicted", 0) > 0:
                        answered += 1
                        if answered == 2:
                            if b"campfire: 1 decode thread(s)" not in log_file.read_bytes():
                                raise BuildError("the built llama-server ignored its thread signal (Campfire's patch is missing)")
                            return "smoke test passed (the packaged model wrote 4 tokens on 2 threads, then on 1)"
                        proc.send_signal(signal.SIGUSR1)  # the thread patch: from 2 threads to the file's 1
            except OSError:
                time.sleep(0.2)
        raise BuildError(f"the built llama-server did not answer within {timeout_s:.0f} s")
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def build(variant: str = "portable", jobs: int = 2, sdist: Path | None = None, say=print) -> Path:
    """Build ``llama-server`` and ``llama-quantize`` (:data:`TARGETS`) of the pinned version into :func:`install_dir` (``variant``: ``portable`` |
    ``native``; ``jobs``: parallel compile jobs); returns the server binary. Prints each step and its seconds
    through ``say``. Raises :class:`BuildError` (one line) when a tool is missing or a step fails."""
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise BuildError(f"`{tool}` is not installed (apt-get install cmake g++)")
    version, _ = pinned()
    target = install_dir(variant, version)
    target.mkdir(parents=True, exist_ok=True)
    log_path = target / "build.log"
    with tempfile.TemporaryDirectory(prefix="campfire-llama-", dir=target) as tmp, open(log_path, "w") as log:
        t0 = time.perf_counter()
        source = _extract_vendor(fetch_sdist(Path(tmp), sdist), Path(tmp))
        try:
            llama_patch.apply(source)
        except ValueError as err:
            raise BuildError(str(err)) from err
        say(f"llama-server: llama-cpp-python {version} sdist fetched, llama.cpp extracted and patched ({time.perf_counter() - t0:.0f} s)")
        build_dir = Path(tmp) / "build"
        flags = [*CMAKE_FLAGS, *_variant_flags(variant)]
        t1 = time.perf_counter()
        _run(["cmake", "-S", str(source), "-B", str(build_dir), *flags], log, "cmake configure")
        say(f"llama-server: configured ({variant}; {time.perf_counter() - t1:.0f} s); compiling with {jobs} jobs (≈ 5–10 min on 2 cores)…")
        t2 = time.perf_counter()
        _run(["cmake", "--build", str(build_dir), "--target", *TARGETS, "-j", str(jobs)], log, "compilation")
        (target / "bin").mkdir(exist_ok=True)
        for name in TARGETS:
            built = next(build_dir.rglob(f"bin/{name}"), None)
            if built is None:
                raise BuildError(f"the build produced no {name} (log: {log_path})")
            shutil.copy2(built, target / "bin" / f"{name}.tmp")
        say(f"llama-server: compiled in {time.perf_counter() - t2:.0f} s; total {time.perf_counter() - t0:.0f} s")
        say(f"llama-server: {smoke(target / 'bin' / 'llama-server.tmp')}")
        for name in TARGETS:
            os.replace(target / "bin" / f"{name}.tmp", target / "bin" / name)
        llama_patch.write_marker(target / "bin")
    return target / "bin" / "llama-server"


VARIANT_ENV = "CAMPFIRE_LLAMA_VARIANT"  # portable | native: the default when neither flag is given


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model.build_llama", description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--native", action="store_true", help="optimise for this CPU (the binary may not run elsewhere)")
    which.add_argument("--portable", action="store_true", help="any x86-64 CPU since 2013 (AVX2; an image's build)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("CAMPFIRE_BUILD_JOBS", "2")))
    parser.add_argument("--sdist", type=Path, default=None, help="a local copy of the pinned sdist (sha256 checked)")
    parser.add_argument("--force", action="store_true", help="build again even when the binary is cached")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the build fails")
    return parser


def variant_of(argv: list[str] | None = None) -> str:
    """``native`` or ``portable`` for the command line ``argv``: its flag, else ``$CAMPFIRE_LLAMA_VARIANT``,
    else ``portable``. Exits 2 (argparse's message) on an unknown variant."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.native or args.portable:
        return "native" if args.native else "portable"
    variant = os.environ.get(VARIANT_ENV) or "portable"
    if variant not in ("portable", "native"):
        parser.error(f"{VARIANT_ENV}={variant!r}: use portable or native")
    return variant


def main(argv: list[str] | None = None) -> int:
    """``python -m model.build_llama [--native|--portable] [--jobs N] [--sdist FILE] [--force] [--strict]``.
    Returns 0 (also on a failed build, after one line saying the transformers engine will be used,
    unless ``--strict``: then 1)."""
    args = _parser().parse_args(argv)
    variant = variant_of(argv)
    say = functools.partial(print, flush=True)
    try:
        binary = install_dir(variant) / "bin" / "llama-server"
        if all((binary.parent / name).is_file() for name in TARGETS) and not args.force:
            if llama_patch.patched(binary):
                print(f"llama-server: cached at {binary}")
                return 0
            print("llama-server: the cached build predates Campfire's thread patch; building it again", flush=True)
        print(f"llama-server: building llama.cpp's server once ({variant}) into {binary.parent.parent}", flush=True)
        try:
            binary = build(variant, max(1, args.jobs), args.sdist, say=say)
        except BuildError as err:
            if variant != "native":
                raise
            print(f"llama-server: the native build failed ({err}); building the portable one", flush=True)
            binary = build("portable", max(1, args.jobs), args.sdist, say=say)
    except (BuildError, OSError) as err:
        print(f"llama-server: not built ({err}); campfire serve will use the transformers engine")
        return 1 if args.strict else 0
    print(f"llama-server: ready at {binary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
