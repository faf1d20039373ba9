"""Build llama.cpp's ``llama-server`` once, for the llama.cpp engine of ``campfire serve`` (:mod:`model.engine`).

Source: the source distribution of llama-cpp-python pinned with its sha256 in
``requirements/llama-server.txt`` (MIT; it vendors llama.cpp under ``vendor/llama.cpp``, whose
``tools/server`` is ``llama-server``). ``pip download --no-deps --no-binary :all: --require-hashes``
fetches it (pip's cache keeps it), only the vendored llama.cpp is extracted and compiled with cmake
(target ``llama-server`` only, static libraries, no HTTPS, no web-UI download), and the binary is
installed at ``<cache>/llama.cpp-<version>-<variant>/bin/llama-server`` where ``<cache>`` is
``$CAMPFIRE_LLAMA_CACHE``, else ``$XDG_CACHE_HOME/campfire``, else ``~/.cache/campfire``.

Variants: ``portable`` (default: ``GGML_NATIVE=OFF``, i.e. llama.cpp's x86-64 default set SSE4.2, AVX,
AVX2, BMI2, FMA, F16C — runs on any x86-64 CPU since 2013 (Haswell/Zen), so a cache or image built
on one machine runs on another) or ``native`` (``GGML_NATIVE=ON``: this CPU's instruction set, e.g.
AVX-512; the binary may not start elsewhere). ``make install`` runs ``python -m model.build_llama``;
a second run finds the binary and returns at once. On failure it prints one line and exits 0, and
``campfire serve`` uses the transformers engine (``--strict``: exit 1 instead).

Measured on this project's 2-core Xeon (shared): configure + build ≈ see README "Generator engines".
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

PIN_FILE = Path(__file__).resolve().parent.parent / "requirements" / "llama-server.txt"
SERVER_ENV = "CAMPFIRE_LLAMA_SERVER"  # an explicit llama-server binary, overriding the cache
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DGGML_CCACHE=OFF",
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF",
)


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


def install_dir(variant: str = "portable", version: str | None = None) -> Path:
    """``<cache>/llama.cpp-<version>-<variant>`` (the pinned version by default)."""
    return cache_root() / f"llama.cpp-{version or pinned()[0]}-{variant}"


def server_binary() -> Path | None:
    """The ``llama-server`` to run: ``$CAMPFIRE_LLAMA_SERVER`` when set (None if it is not an executable
    file), else the cached build of the pinned version (``native`` preferred over ``portable``; any cached
    version when the pin file is not installed), else None."""
    explicit = os.environ.get(SERVER_ENV)
    if explicit:
        path = Path(explicit)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    try:
        folders = [install_dir(variant, pinned()[0]) for variant in ("native", "portable")]
    except BuildError:  # installed without requirements/ (a wheel, an image): any cached build
        folders = sorted(cache_root().glob("llama.cpp-*"), reverse=True)
    for folder in folders:
        path = folder / "bin" / "llama-server"
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    if _sha256(sdist) != digest:
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


def build(variant: str = "portable", jobs: int = 2, sdist: Path | None = None, say=print) -> Path:
    """Build ``llama-server`` of the pinned version into :func:`install_dir` (``variant``: ``portable`` |
    ``native``; ``jobs``: parallel compile jobs); returns the binary. Prints each step and its seconds
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
        say(f"llama-server: llama-cpp-python {version} sdist fetched and llama.cpp extracted ({time.perf_counter() - t0:.0f} s)")
        build_dir = Path(tmp) / "build"
        flags = [*CMAKE_FLAGS, f"-DGGML_NATIVE={'ON' if variant == 'native' else 'OFF'}"]
        t1 = time.perf_counter()
        _run(["cmake", "-S", str(source), "-B", str(build_dir), *flags], log, "cmake configure")
        say(f"llama-server: configured ({variant}; {time.perf_counter() - t1:.0f} s); compiling with {jobs} jobs (≈ 5–10 min on 2 cores)…")
        t2 = time.perf_counter()
        _run(["cmake", "--build", str(build_dir), "--target", "llama-server", "-j", str(jobs)], log, "compilation")
        built = next(build_dir.rglob("bin/llama-server"), None)
        if built is None:
            raise BuildError(f"the build produced no llama-server (log: {log_path})")
        (target / "bin").mkdir(exist_ok=True)
        tmp_bin = target / "bin" / "llama-server.tmp"
        shutil.copy2(built, tmp_bin)
        os.replace(tmp_bin, target / "bin" / "llama-server")
        say(f"llama-server: compiled in {time.perf_counter() - t2:.0f} s; total {time.perf_counter() - t0:.0f} s")
    return target / "bin" / "llama-server"


def main(argv: list[str] | None = None) -> int:
    """``python -m model.build_llama [--native] [--jobs N] [--sdist FILE] [--force] [--strict]``.
    Returns 0 (also on a failed build, after one line saying the transformers engine will be used,
    unless ``--strict``: then 1)."""
    parser = argparse.ArgumentParser(prog="python -m model.build_llama", description=__doc__.splitlines()[0])
    parser.add_argument("--native", action="store_true", help="optimise for this CPU (the binary may not run elsewhere)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("CAMPFIRE_BUILD_JOBS", "2")))
    parser.add_argument("--sdist", type=Path, default=None, help="a local copy of the pinned sdist (sha256 checked)")
    parser.add_argument("--force", action="store_true", help="build again even when the binary is cached")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the build fails")
    args = parser.parse_args(argv)
    variant = "native" if args.native else "portable"
    try:
        binary = install_dir(variant) / "bin" / "llama-server"
        if binary.is_file() and not args.force:
            print(f"llama-server: cached at {binary}")
            return 0
        print(f"llama-server: building llama.cpp's server once ({variant}) into {binary.parent.parent}", flush=True)
        build(variant, max(1, args.jobs), args.sdist, say=lambda line: print(line, flush=True))
    except (BuildError, OSError) as err:
        print(f"llama-server: not built ({err}); campfire serve will use the transformers engine")
        return 1 if args.strict else 0
    print(f"llama-server: ready at {binary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
