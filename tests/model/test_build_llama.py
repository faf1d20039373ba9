"""The llama.cpp build's binaries: where ``llama-server`` and ``llama-quantize`` are found, a cache is
complete only with both, and the real ``llama-quantize`` (when built here) quantises the packaged GGUF."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from model import build_llama, llama_patch
from model.prepare import packaged_gguf


def _fake(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_quantize_is_found_beside_the_server_native_first(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMPFIRE_LLAMA_CACHE", str(tmp_path))
    monkeypatch.delenv(build_llama.SERVER_ENV, raising=False)
    assert build_llama.quantize_binary() is None and build_llama.server_binary() is None
    portable = _fake(build_llama.install_dir("portable") / "bin" / "llama-quantize")
    assert build_llama.quantize_binary() == portable
    native = _fake(build_llama.install_dir("native") / "bin" / "llama-quantize")
    assert build_llama.quantize_binary() == native
    explicit = _fake(tmp_path / "elsewhere" / "llama-server")
    monkeypatch.setenv(build_llama.SERVER_ENV, str(explicit))
    assert build_llama.quantize_binary() is None and build_llama.server_binary() == explicit  # none beside it
    beside = _fake(tmp_path / "elsewhere" / "llama-quantize")
    assert build_llama.quantize_binary() == beside


def test_a_cache_without_llama_quantize_is_built_again(tmp_path, monkeypatch, capsys):
    """A cache from before llama-quantize was a target is not "cached": the build runs (here it fails on a
    wrong sdist, after saying it builds, which proves it tried)."""
    monkeypatch.setenv("CAMPFIRE_LLAMA_CACHE", str(tmp_path))
    server = _fake(build_llama.install_dir("portable") / "bin" / "llama-server")
    wrong = tmp_path / "llama_cpp_python-0.0.0.tar.gz"
    wrong.write_bytes(b"not the pinned file")
    assert build_llama.main(["--portable", "--sdist", str(wrong)]) == 0
    out = capsys.readouterr().out
    assert "building llama.cpp's server once (portable)" in out and "not built" in out
    _fake(server.parent / "llama-quantize")
    llama_patch.write_marker(server.parent)
    assert build_llama.main(["--portable", "--sdist", str(wrong)]) == 0
    assert capsys.readouterr().out.strip() == f"llama-server: cached at {server}"
    assert build_llama.TARGETS == ("llama-server", "llama-quantize")


def test_the_variant_is_portable_unless_asked(monkeypatch):
    """``--native`` / ``--portable`` pick it; without either, ``CAMPFIRE_LLAMA_VARIANT`` (the Makefile's),
    else portable (what an image must be: it runs on other machines)."""
    monkeypatch.delenv("CAMPFIRE_LLAMA_VARIANT", raising=False)
    assert build_llama.variant_of([]) == "portable"
    assert build_llama.variant_of(["--native"]) == "native"
    monkeypatch.setenv("CAMPFIRE_LLAMA_VARIANT", "native")
    assert build_llama.variant_of([]) == "native" and build_llama.variant_of(["--portable"]) == "portable"
    monkeypatch.setenv("CAMPFIRE_LLAMA_VARIANT", "fast")
    with pytest.raises(SystemExit):
        build_llama.variant_of([])


def test_the_built_llama_quantize_requantises_the_packaged_gguf(tmp_path):
    """Issue 12's use: a GGUF to the base model's Q4_1 (here the packaged Q4_1 to Q8_0 and back: seconds)."""
    binary = build_llama.quantize_binary()
    if binary is None:
        pytest.skip("llama-quantize is not built here (python -m model.build_llama)")
    q8 = tmp_path / "q8_0.gguf"
    done = subprocess.run([str(binary), "--allow-requantize", str(packaged_gguf()), str(q8), "Q8_0", "1"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert q8.stat().st_size > packaged_gguf().stat().st_size  # 8 bits a weight instead of ≈ 5
    assert q8.read_bytes()[:4] == b"GGUF"


def test_a_native_build_is_kept_per_cpu(tmp_path, monkeypatch):
    """A native binary may hold instructions another CPU lacks (AVX-512, AMX): its folder names this CPU,
    and one built on another CPU (a shared or copied cache) is never picked, also without the pin file."""
    monkeypatch.setenv("CAMPFIRE_LLAMA_CACHE", str(tmp_path))
    monkeypatch.delenv(build_llama.SERVER_ENV, raising=False)
    tag = build_llama.cpu_tag()
    assert len(tag) == 10 and build_llama.install_dir("native").name.endswith(f"-native-{tag}")
    foreign = _fake(tmp_path / "llama.cpp-9.9.9-native-0000000000" / "bin" / "llama-server")
    portable = _fake(tmp_path / "llama.cpp-0.0.1-portable" / "bin" / "llama-server")

    def no_pin():
        raise build_llama.BuildError("no pin")

    monkeypatch.setattr(build_llama, "pinned", no_pin)
    assert build_llama.server_binary() == portable != foreign
    ours = _fake(tmp_path / f"llama.cpp-0.0.1-native-{tag}" / "bin" / "llama-server")
    assert build_llama.server_binary() == ours


def test_the_smoke_test_runs_the_kernels_not_just_version(tmp_path):
    """What a native build with llama.cpp's AMX kernels did here: ``--version`` exits 0, the first decode
    dies with SIGILL. The build's smoke test generates, so it refuses such a binary in one line."""
    dies = tmp_path / "llama-server"
    dies.write_text('#!/bin/sh\n[ "$1" = --version ] && exit 0\nkill -ILL $$\n')
    dies.chmod(0o755)
    assert subprocess.run([str(dies), "--version"], check=False).returncode == 0
    with pytest.raises(build_llama.BuildError, match=r"does not run on this CPU \(exit -4\); try --portable"):
        build_llama.smoke(dies)
    real = build_llama.server_binary()
    if real is None:
        pytest.skip("llama-server is not built here")
    assert build_llama.smoke(real) == "smoke test passed (the packaged model wrote 4 tokens on 2 threads, then on 1)"


STOCK_SERVER = """import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"tokens_predicted": 4}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[sys.argv.index("--port") + 1])), H).serve_forever()
"""


def test_the_smoke_test_refuses_a_server_without_the_thread_patch(tmp_path):
    """A llama-server built without Campfire's patch keeps SIGUSR1's default action: the engine's first
    thread change would kill it mid-answer. The smoke test sends one and says so."""
    stock = tmp_path / "llama-server"
    stock.write_text(f"#!{sys.executable}\n{STOCK_SERVER}")
    stock.chmod(0o755)
    with pytest.raises(build_llama.BuildError, match=r"died when told its threads \(exit -10\)"):
        build_llama.smoke(stock)
    stock.write_text(f"#!{sys.executable}\nimport signal\nsignal.signal(signal.SIGUSR1, signal.SIG_IGN)\n{STOCK_SERVER}")
    with pytest.raises(build_llama.BuildError, match=r"ignored its thread signal"):
        build_llama.smoke(stock)  # survives the signal, but never says it changed threads


def test_a_failed_native_build_falls_back_to_the_portable_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAMPFIRE_LLAMA_CACHE", str(tmp_path))
    wrong = tmp_path / "llama_cpp_python-0.0.0.tar.gz"
    wrong.write_bytes(b"not the pinned file")
    assert build_llama.main(["--native", "--sdist", str(wrong)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[1].startswith("llama-server: the native build failed (") and out[1].endswith("; building the portable one")
    assert out[-1].startswith("llama-server: not built (") and "transformers engine" in out[-1]


def test_a_cached_build_without_the_thread_patch_is_built_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAMPFIRE_LLAMA_CACHE", str(tmp_path))
    bin_dir = build_llama.install_dir("portable") / "bin"
    bin_dir.mkdir(parents=True)
    for name in build_llama.TARGETS:
        (bin_dir / name).write_text("#!/bin/sh\n")
    wrong = tmp_path / "llama_cpp_python-0.0.0.tar.gz"
    wrong.write_bytes(b"not the pinned file")
    assert build_llama.main(["--portable", "--sdist", str(wrong)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "llama-server: the cached build predates Campfire's thread patch; building it again"
    assert out[-1].startswith("llama-server: not built (") and "does not match the sha256" in out[-1]
