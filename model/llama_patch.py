"""Campfire's one change to llama.cpp's ``llama-server``, applied to the pinned source before it is compiled
(:func:`model.build_llama.build`): its decode threads can be changed while it serves, so they follow the
cores actually free (:mod:`model.threads_follow`).

llama.cpp sets a context's thread counts with ``llama_set_n_threads`` (its public API; with OpenMP every
step opens a parallel region of that many threads), but ``llama-server`` only calls it at start. The
patch adds, in ``tools/server/server-context.cpp``: when the environment has ``CAMPFIRE_THREADS_FILE``,
a ``SIGUSR1`` handler that sets a flag; before its next decode step the server reads ``THREADS
THREADS_BATCH`` from that file, clamps each to 1 … the ``--threads`` / ``--threads-batch`` it started
with (its thread pool's size), and applies them. Without the variable nothing changes (SIGUSR1 keeps its
default action). The build writes :data:`MARKER` (:data:`PATCH_ID` and the server's sha256) beside the
binaries; :func:`patched` tells the engine whether a binary takes the signal (an admin's own
``llama-server`` or an older cached build does not, and is never sent it).
"""

from __future__ import annotations

from pathlib import Path

from model.pull import sha256_file

PATCH_ID = "campfire-threads-1"
MARKER = "campfire-patch"  # file in bin/ beside llama-server: PATCH_ID when the patch is compiled in
SOURCE = "tools/server/server-context.cpp"
ENV = "CAMPFIRE_THREADS_FILE"

INCLUDE_ANCHOR = "#include <algorithm>\n"
INCLUDED = INCLUDE_ANCHOR + """#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>

// Campfire: with CAMPFIRE_THREADS_FILE set, SIGUSR1 makes the server read "THREADS THREADS_BATCH" from that
// file before its next decode step (each clamped to 1 .. the --threads / --threads-batch it started with).
static std::atomic<bool> campfire_threads_signalled{false};
static void campfire_threads_signal(int) { campfire_threads_signalled.store(true); }
static const bool campfire_threads_installed = [] {
    if (std::getenv("CAMPFIRE_THREADS_FILE") != nullptr) {
        std::signal(SIGUSR1, campfire_threads_signal);
    }
    return true;
}();
"""

DECODE_ANCHOR = "        int32_t off_next = 0;\n        int32_t n_batch = llama_n_batch(ctx_tgt);\n"
DECODE = """        if (campfire_threads_signalled.exchange(false)) {
            int n = 0, nb = 0;
            if (FILE * f = std::fopen(std::getenv("CAMPFIRE_THREADS_FILE"), "r")) {
                if (std::fscanf(f, "%d %d", &n, &nb) == 2) {
                    n  = std::max(1, std::min(n,  (int) params_base.cpuparams.n_threads));
                    nb = std::max(1, std::min(nb, (int) params_base.cpuparams_batch.n_threads));
                    llama_set_n_threads(ctx_tgt, n, nb);
                    SRV_INF("campfire: %d decode thread(s), %d batch thread(s)\\n", n, nb);
                }
                std::fclose(f);
            }
        }
""" + DECODE_ANCHOR


def apply(llama_source: Path) -> None:
    """Patch the llama.cpp source folder ``llama_source`` in place. Raises ValueError when it is patched
    already, or the code it anchors on is not there exactly once (another llama.cpp version: the pin and
    the patch move together)."""
    path = Path(llama_source) / SOURCE
    text = path.read_text(encoding="utf-8")
    if "campfire_threads_signalled" in text:
        raise ValueError(f"{SOURCE} carries the thread patch already")
    for anchor in (INCLUDE_ANCHOR, DECODE_ANCHOR):
        if text.count(anchor) != 1:
            raise ValueError(f"{SOURCE} does not match the thread patch (anchor {anchor.strip()[:40]!r})")
    path.write_text(text.replace(INCLUDE_ANCHOR, INCLUDED, 1).replace(DECODE_ANCHOR, DECODE, 1), encoding="utf-8")


def write_marker(bin_dir: Path) -> None:
    """Record in ``bin_dir`` that its ``llama-server`` carries the patch: :data:`PATCH_ID` and the binary's sha256."""
    (Path(bin_dir) / MARKER).write_text(f"{PATCH_ID} {sha256_file(Path(bin_dir) / 'llama-server')}\n", encoding="ascii")


def patched(binary: Path) -> bool:
    """Whether the ``llama-server`` at ``binary`` was built with this patch: its folder's :data:`MARKER`
    names :data:`PATCH_ID` and this very file (sha256, ≈ 20 ms), so a binary rebuilt without the patch
    next to an old marker is never sent the signal (its default action would kill it)."""
    try:
        recorded = (Path(binary).parent / MARKER).read_text(encoding="ascii").split()
        return len(recorded) == 2 and recorded[0] == PATCH_ID and recorded[1] == sha256_file(Path(binary))
    except OSError:
        return False
