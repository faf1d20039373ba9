"""A fine-tuned folder exported as a GGUF (:mod:`model.export_gguf`) with llama.cpp's own converter and
``llama-quantize``, then served by ``campfire serve`` on the llama.cpp engine over real HTTP; without
``llama-quantize`` the export says so in one line and falls back to Q8_0 (or, asked for Q4_1 only,
writes nothing and the folder keeps serving on transformers).

The tuned folder: a real finetune of a few steps on four real SCP tales (examples/, CC BY-SA 3.0).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest

from model.build_llama import quantize_binary, server_binary
from model.engine import gguf_of, resolve_engine
from model.export_gguf import ExportUnavailable, export_gguf
from model.finetune import FinetuneConfig, finetune, prepare
from model.finetune_data import read_stories
from model.prepare import packaged_gguf, read_marker
from tests.model.serving import campfire_serve

ROOT = Path(__file__).resolve().parents[2]
NAME = "tuned-gguf"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tuned(prepared_model: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "data" / "models" / NAME
    config = FinetuneConfig(base=prepared_model, out=out, max_length=160, batch_size=1, lora_layers=2, learning_rate=3e-3,
                            warmup_steps=0, held_out_share=0.25, min_stories=3, threads=1, max_steps=2, eval_limit=1)
    stories = read_stories(ROOT / "examples" / "scp_tales.jsonl")[:4]
    finetune(prepare(stories, config), config, card_data={"source": "test"}, progress=False, on_message=lambda _: None)
    return out


def tensor_types(path: Path) -> Counter:
    from gguf import GGUFReader

    return Counter(t.tensor_type.name for t in GGUFReader(str(path)).tensors)


def test_without_llama_quantize_the_export_says_so_and_falls_back_to_q8_0(tuned, make_settings, monkeypatch):
    monkeypatch.setenv("CAMPFIRE_LLAMA_SERVER", str(tuned / "no-such-dir" / "llama-server"))  # no binaries at all
    assert quantize_binary() is None
    with pytest.raises(ExportUnavailable, match="llama-quantize is not built"):
        export_gguf(tuned, "q4_1", fallback=False)
    assert gguf_of(tuned) is None and not list(tuned.glob("*.gguf"))  # nothing half-written
    engine, reason = resolve_engine(make_settings().generator, tuned)
    assert engine == "transformers" and "llama-server is not built" in reason  # the bf16 folder still serves
    said: list[str] = []
    path = export_gguf(tuned, "q4_1", say=said.append)
    assert len(said) == 1 and "exporting Q8_0 instead" in said[0]
    assert path == tuned / f"{NAME}.Q8_0.gguf" and gguf_of(tuned) == path
    assert set(tensor_types(path)) == {"Q8_0", "F32"}


def test_the_q4_1_export_is_quantised_like_the_base_and_served_by_llama_cpp(tuned):
    if server_binary() is None or quantize_binary() is None:
        pytest.skip("llama-server / llama-quantize not built (python -m model.build_llama --force)")
    path = export_gguf(tuned, "q4_1")
    assert path.name == f"{NAME}.Q4_1.gguf" and not list(tuned.glob("*.Q8_0.gguf"))  # the earlier export replaced
    assert tensor_types(path) == tensor_types(packaged_gguf())  # Q4_1 weights, Q8_0 tied embedding, F32 norms
    marker = read_marker(tuned)
    assert marker["gguf"] == path.name and marker["quantisation"] == "Q4_1" and marker["languages"] == ["en"]

    with campfire_serve(tuned.parent.parent, NAME, timeout_s=120) as served:
        assert Path(served["model"]).resolve() == tuned.resolve()  # /campfire status names this folder
        body = {"model": served["model"], "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
        reply = httpx.post(served["url"] + "/v1/chat/completions", json=body, timeout=60).json()
        assert reply["choices"][0]["message"]["content"].strip()
    assert "engine llama.cpp" in served["output"]  # not the transformers fallback
