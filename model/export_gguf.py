"""Export a merged model folder (a ``campfire model finetune`` output: bf16 safetensors) as a quantised
GGUF file, so ``campfire serve``'s llama.cpp engine (:mod:`model.engine`) serves the tuned model at (at
least) the base model's speed instead of falling back to the transformers engine (≈ 5–8 tokens/s one
stream on a 2-core CPU).

Tools: llama.cpp's own, from the pinned llama-cpp-python sdist (``requirements/llama-server.txt``,
the source :mod:`model.build_llama` compiles): ``convert_hf_to_gguf.py`` with its ``conversion``
package and vendored ``gguf-py`` (extracted once into ``<cache>/llama.cpp-<version>-convert``; pure
Python on the project's torch/transformers/numpy). ``q8_0`` (the default, :data:`DEFAULT_QUANT`): the
converter alone. ``q4_1`` (the packaged base's own types: 2-D weights Q4_1, the tied token embedding
Q8_0, norms F32): the converter writes a bf16 GGUF — lossless for the bf16 folder — and
``llama-quantize`` (built with ``llama-server``, :func:`model.build_llama.quantize_binary`) quantises it.

The file lands in the folder as ``NAME.Q8_0.gguf`` (or ``.Q4_1``) and the folder's
``campfire-prepared.json`` names it (``"gguf"``, relative to the folder), which is how
:func:`model.engine.gguf_of` finds it. Written through temporary files and renamed: an interrupted
export leaves no half file. When a tool is missing, :class:`ExportUnavailable` says so in one line and
the folder still serves on transformers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

QUANTS = ("q4_1", "q8_0")
# q8_0 by measurement (bench/generator.py through campfire serve, tuned vs the packaged base Q4_1, alternated
# in one run, 2 runs): one stream the same as Q4_1 and the base; 8 streams 16–18 ms of CPU per token
# against 21–25 ms (Q4_1 and the base alike), 1.2–1.35× the base's tokens/s; no llama-quantize needed
# and closer to the bf16 weights. Q4_1 (the base's own types): 44 MiB smaller, ≈ 45 MB less RSS.
DEFAULT_QUANT = "q8_0"
CONVERTER = "convert_hf_to_gguf.py"
# convert_hf_to_gguf.py imports sentencepiece before it checks that a tokenizer.model exists; SmolLM2 and
# other BPE models have only tokenizer.json, so a missing sentencepiece must read as "no tokenizer.model"
# (the converter then falls back to the BPE vocabulary, as it does when the package is installed).
_BOOT = """
import runpy, sys
from pathlib import Path
src = Path(sys.argv[1]); sys.argv = [str(src / "convert_hf_to_gguf.py"), *sys.argv[2:]]
sys.path[:0] = [str(src / "gguf-py"), str(src)]
import conversion.base as base
_spm = base.TextModel._create_vocab_sentencepiece
def _create_vocab_sentencepiece(self):
    if not (self.dir_model / "tokenizer.model").is_file():
        raise FileNotFoundError("no tokenizer.model")
    return _spm(self)
base.TextModel._create_vocab_sentencepiece = _create_vocab_sentencepiece
runpy.run_path(sys.argv[0], run_name="__main__")
"""


class ExportUnavailable(RuntimeError):
    """The GGUF could not be written (a tool missing, a step failed); the message is one line."""


def converter_dir(sdist: Path | None = None) -> Path:
    """The folder holding llama.cpp's ``convert_hf_to_gguf.py``, ``conversion/`` and ``gguf-py/`` of the
    pinned version, extracted from the sdist (``sdist``, else :func:`model.build_llama.fetch_sdist`: pip's
    cache or a download with the pinned sha256) on first use. Raises :class:`ExportUnavailable`."""
    from model.build_llama import BuildError, cache_root, fetch_sdist, pinned

    try:
        target = cache_root() / f"llama.cpp-{pinned()[0]}-convert"
        if (target / CONVERTER).is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="campfire-convert-", dir=target.parent) as tmp:
            archive = fetch_sdist(Path(tmp), sdist)
            wanted = ("/vendor/llama.cpp/" + CONVERTER, "/vendor/llama.cpp/conversion/", "/vendor/llama.cpp/gguf-py/")
            with tarfile.open(archive, "r:gz") as tar:
                members = [m for m in tar.getmembers() if any(w in m.name for w in wanted)]
                tar.extractall(tmp, members=members, filter="data")
            found = next(Path(tmp).glob(f"*/vendor/llama.cpp/{CONVERTER}"), None)
            if found is None:
                raise ExportUnavailable(f"{archive.name} has no vendor/llama.cpp/{CONVERTER}")
            shutil.rmtree(target, ignore_errors=True)
            found.parent.rename(target)
        return target
    except (BuildError, OSError, tarfile.TarError) as err:
        raise ExportUnavailable(f"llama.cpp's converter is not available ({err})") from None


def _run(cmd: list[str], what: str, timeout_s: float) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False,
                              env={**os.environ, "TQDM_DISABLE": "1"})
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ExportUnavailable(f"{what} failed ({err})") from None
    if done.returncode != 0:
        last = ((done.stderr or done.stdout).strip().splitlines() or ["no output"])[-1]
        raise ExportUnavailable(f"{what} failed (exit {done.returncode}: {last[:200]})")


def convert(folder: Path, outfile: Path, outtype: str, *, name: str | None = None, timeout_s: float = 900) -> Path:
    """Run llama.cpp's converter on the transformers ``folder`` → ``outfile`` (``outtype``: ``bf16``,
    ``f16``, ``q8_0``, …; ``name``: the GGUF's ``general.name``). ≈ 15 s for SmolLM2-135M on one core.
    Raises :class:`ExportUnavailable`."""
    cmd = [sys.executable, "-c", _BOOT, str(converter_dir()), str(folder), "--outtype", outtype, "--outfile", str(outfile)]
    _run(cmd + (["--model-name", name] if name else []), "convert_hf_to_gguf", timeout_s)
    return outfile


def quantize(src: Path, dst: Path, qtype: str, *, threads: int = 1, timeout_s: float = 900) -> Path:
    """``llama-quantize src dst QTYPE threads`` (e.g. ``Q4_1``). Raises :class:`ExportUnavailable` when
    the binary is not built (``python -m model.build_llama --force`` builds it) or the step fails."""
    from model.build_llama import quantize_binary

    binary = quantize_binary()
    if binary is None:
        raise ExportUnavailable("llama-quantize is not built (run `python -m model.build_llama --force`)")
    _run([str(binary), str(src), str(dst), qtype.upper(), str(max(1, threads))], "llama-quantize", timeout_s)
    return dst


def _base_facts(folder: Path) -> dict[str, Any]:
    """Languages and base of a fine-tuned folder: its card's ``base`` and that folder's languages
    (:func:`model.languages.detect_languages`: its marker, else its model card and family)."""
    from model.finetune_merge import read_card
    from model.languages import detect_languages

    card = read_card(folder) or {}
    languages = detect_languages(Path(card["base"])) if card.get("base") else []
    return {k: v for k, v in (("languages", languages), ("base", card.get("base"))) if v}


def export_gguf(folder: str | Path, quant: str = DEFAULT_QUANT, *, threads: int = 1, fallback: bool = True,
                say=print) -> Path:
    """Write ``folder/<name>.<QUANT>.gguf`` from the bf16 safetensors of ``folder`` and record it in
    ``folder/campfire-prepared.json`` (``gguf``, ``quantisation``, ``languages`` of the base). ``quant``:
    ``q4_1`` (bf16 GGUF → ``llama-quantize``; with ``fallback`` and no ``llama-quantize``, ``q8_0`` with
    one line through ``say``) or ``q8_0`` (converter only). Returns the file. Raises
    :class:`ExportUnavailable` (one line) and ValueError for an unknown ``quant``."""
    from model.prepare import read_marker, write_marker

    quant = quant.lower()
    if quant not in QUANTS:
        raise ValueError(f"unknown quantisation {quant!r}: choose one of {', '.join(QUANTS)}")
    folder = Path(folder)
    if quant == "q4_1" and fallback:
        from model.build_llama import quantize_binary

        if quantize_binary() is None:
            say("llama-quantize is not built (`python -m model.build_llama --force` builds it): exporting Q8_0 instead")
            quant = "q8_0"
    t0 = time.perf_counter()
    final = folder / f"{folder.name}.{quant.upper()}.gguf"
    with tempfile.TemporaryDirectory(prefix=".export-", dir=folder) as tmp:
        part = Path(tmp) / final.name
        if quant == "q8_0":
            convert(folder, part, "q8_0", name=folder.name)
        else:
            quantize(convert(folder, Path(tmp) / "bf16.gguf", "bf16", name=folder.name), part, quant, threads=threads)
        for old in folder.glob("*.gguf"):
            old.unlink()
        os.replace(part, final)
    marker = {**read_marker(folder), **_base_facts(folder), "gguf": final.name, "quantisation": quant.upper(),
              "exported_from": "bf16 safetensors", "export_seconds": round(time.perf_counter() - t0, 1)}
    write_marker(folder, **marker)
    return final


def main(argv: list[str] | None = None) -> int:
    """``python -m model.export_gguf FOLDER [--quant q4_1|q8_0]``: export an already merged folder (e.g.
    one fine-tuned before the export existed). Exit 0 done, 1 not possible (one line), 2 bad folder."""
    parser = argparse.ArgumentParser(prog="python -m model.export_gguf", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--quant", choices=QUANTS, default=DEFAULT_QUANT)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not (args.folder / "config.json").is_file():
        print(f"export_gguf: no model folder at {args.folder}")
        return 2
    try:
        path = export_gguf(args.folder, args.quant, threads=args.threads)
    except ExportUnavailable as err:
        print(f"export_gguf: {err}; {args.folder} still serves on the transformers engine")
        return 1
    print(f"export_gguf: wrote {path} ({path.stat().st_size / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
