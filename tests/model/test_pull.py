"""``campfire model pull`` (model/pull.py) against a loopback HTTP server standing in for the Hugging
Face Hub (``HF_ENDPOINT``), with the three calls huggingface_hub makes: the tree listing, ``HEAD`` and
``GET`` (``Range``) on ``/resolve/``. Preparation runs on a tiny llama-architecture GGUF written here
with the ``gguf`` package (byte-level BPE vocabulary, ChatML template, random weights)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import numpy as np
import pytest

from campfire.config import Settings
from model.languages import detect_languages, languages_of
from model.prepare import is_prepared, read_marker
from model.pull import PullError, choose, list_files, pull_model

COMMIT = "c" * 40


def write_tiny_gguf(path: Path, *, name: str, languages: list[str] | None = None, d: int = 32) -> Path:
    """A 2-layer llama GGUF transformers can load: 256 byte tokens, a few merges, ChatML specials."""
    import gguf
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    spell = bytes_to_unicode()
    merges = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n", "a n"]
    tokens = [spell[b] for b in range(256)] + [m.replace(" ", "") for m in merges]
    tokens += ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    if languages:
        w.add_languages(languages)
    w.add_context_length(256), w.add_embedding_length(d), w.add_block_count(2), w.add_feed_forward_length(2 * d)
    w.add_head_count(4), w.add_head_count_kv(4), w.add_rope_dimension_count(d // 4)
    w.add_layer_norm_rms_eps(1e-5), w.add_rope_freq_base(10000.0), w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2"), w.add_tokenizer_pre("llama-bpe"), w.add_token_list(tokens)
    w.add_token_types([1] * (len(tokens) - 3) + [3, 3, 3]), w.add_token_merges(merges)
    w.add_bos_token_id(len(tokens) - 2), w.add_eos_token_id(len(tokens) - 1)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    rng = np.random.default_rng(0)

    def t(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    w.add_tensor("token_embd.weight", t(len(tokens), d))
    for i in range(2):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(d, np.float32))
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{i}.{part}.weight", t(d, d))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(d, np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", t(2 * d, d))
        w.add_tensor(f"blk.{i}.ffn_up.weight", t(2 * d, d))
        w.add_tensor(f"blk.{i}.ffn_down.weight", t(d, 2 * d))
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    w.add_tensor("output.weight", t(len(tokens), d))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return path


class FakeHub:
    """Serves ``repos`` ({"owner/name": {path: bytes}}) like the Hub; records requests. Files over 1 kB
    are LFS (sha256 oid), smaller ones plain git blobs. ``corrupt`` paths are served with a flipped byte."""

    def __init__(self, repos: dict[str, dict[str, bytes]]) -> None:
        self.repos = repos
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        self.corrupt: set[str] = set()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                hub.handle(self, head=False)

            def do_HEAD(self) -> None:
                hub.handle(self, head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def entry(path: str, data: bytes) -> dict:
        blob = hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()
        item = {"type": "file", "path": path, "size": len(data), "oid": blob}
        if len(data) > 1024:
            item["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return item

    def handle(self, h: BaseHTTPRequestHandler, *, head: bool) -> None:
        path = h.path.split("?")[0]
        self.requests.append(("HEAD" if head else "GET", path, h.headers.get("Range")))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path):
            files = self.repos.get(m.group(1))
            if files is None:
                return self.send(h, 404, b"{}", {"X-Error-Code": "RepoNotFound"})
            body = json.dumps([self.entry(p, d) for p, d in files.items()]).encode()
            return self.send(h, 200, body, {"Content-Type": "application/json"})
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        data = m and self.repos.get(m.group(1), {}).get(m.group(3))
        if data is None:
            return self.send(h, 404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
        item = self.entry(m.group(3), data)
        etag = item["lfs"]["oid"] if "lfs" in item else item["oid"]
        if m.group(3) in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        start = int(rng.group(1)) if (rng := re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "")) else 0
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self.send(h, 206 if start else 200, data[start:], headers, head=head)

    @staticmethod
    def send(h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict, *, head: bool = False) -> None:
        h.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            h.send_header(k, v)
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", name="Qwen2.5 Tiny Instruct")
    return path.read_bytes()


@pytest.fixture
def hub(tiny_gguf: bytes, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)  # the suite runs with HF_HUB_OFFLINE=1
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    repos = {
        "campfire-test/Tiny-GGUF": {"README.md": b"# tiny\n", "tiny-q4_k_m.gguf": tiny_gguf,
                                    "tiny-q8_0.gguf": tiny_gguf[:2000]},
        "campfire-test/Plain": {"README.md": b"---\nlicense: mit\n---\n"},
    }
    with FakeHub(repos) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


def test_choose_prefers_a_named_file_then_a_folder_then_q4_k_m():
    from model.pull import RemoteFile

    def f(path: str) -> RemoteFile:
        return RemoteFile(path, 1, None, "0")

    ggufs = [f("m-q8_0.gguf"), f("m-q4_k_m.gguf"), f("m-f16-00001-of-00002.gguf")]
    assert choose(ggufs, None) == ("gguf", [ggufs[1]])
    assert choose(ggufs, "m-q8_0.gguf") == ("gguf", [ggufs[0]])
    folder = [f("config.json"), f("model.safetensors"), f("tokenizer_config.json"), f("pytorch_model.bin"), f("onnx/m.onnx")]
    kind, chosen = choose(folder, None)
    assert kind == "transformers" and [c.path for c in chosen] == ["config.json", "model.safetensors", "tokenizer_config.json"]
    with pytest.raises(PullError, match="choose one with --file"):
        choose([f("a-q2_k.gguf"), f("a-q3_k.gguf")], None)
    with pytest.raises(PullError, match="no file 'x.gguf'"):
        choose(ggufs, "x.gguf")


def test_pull_downloads_checks_and_prepares_a_gguf(hub: FakeHub, tiny_gguf: bytes, tmp_path: Path):
    pulled = pull_model("campfire-test/Tiny-GGUF", tmp_path / "models")
    assert pulled.kind == "gguf" and pulled.folder == tmp_path / "models" / "tiny-q4_k_m"
    assert is_prepared(pulled.folder)
    assert pulled.sha256 == {"tiny-q4_k_m.gguf": hashlib.sha256(tiny_gguf).hexdigest()}
    assert pulled.bytes == len(tiny_gguf)
    marker = read_marker(pulled.folder)
    assert marker["sha256"] == pulled.sha256 and marker["repo"] == "campfire-test/Tiny-GGUF"
    assert pulled.name == "Qwen2.5 Tiny Instruct" and pulled.languages[:2] == ["en", "zh"]  # Qwen family
    assert [r[:2] for r in hub.requests] == [
        ("GET", "/api/models/campfire-test/Tiny-GGUF/tree/main"),
        ("HEAD", "/campfire-test/Tiny-GGUF/resolve/main/tiny-q4_k_m.gguf"),
        ("GET", "/campfire-test/Tiny-GGUF/resolve/main/tiny-q4_k_m.gguf"),
    ]
    # the prepared folder is what the server and languages_of read
    settings = Settings(data_dir=tmp_path, generator={"model_path": str(pulled.folder)})
    assert languages_of(settings)[:2] == ["en", "zh"]
    from model.prepare import smoke_generate

    assert isinstance(smoke_generate(pulled.folder, max_new_tokens=3), str)
    # a second pull finds the intact file: no download
    hub.requests.clear()
    again = pull_model("campfire-test/Tiny-GGUF", tmp_path / "models")
    assert again.bytes == 0 and [r[0] for r in hub.requests] == ["GET"]  # the listing only


def test_an_interrupted_download_resumes_where_it_stopped(hub: FakeHub, tiny_gguf: bytes, tmp_path: Path):
    source = tmp_path / "models" / "downloads" / "campfire-test__Tiny-GGUF"
    source.mkdir(parents=True)
    half = len(tiny_gguf) // 2
    part = source / f"tiny-q4_k_m.gguf.{hashlib.sha256(tiny_gguf).hexdigest()[:12]}.part"
    part.write_bytes(tiny_gguf[:half])
    pulled = pull_model("campfire-test/Tiny-GGUF", tmp_path / "models", name="tiny")
    assert pulled.bytes == len(tiny_gguf) - half
    assert ("GET", "/campfire-test/Tiny-GGUF/resolve/main/tiny-q4_k_m.gguf", f"bytes={half}-") in hub.requests
    assert (source / "tiny-q4_k_m.gguf").read_bytes() == tiny_gguf and not part.exists()


def test_a_corrupt_download_is_refused_and_deleted(hub: FakeHub, tmp_path: Path):
    hub.corrupt.add("tiny-q8_0.gguf")
    with pytest.raises(PullError, match="checksum mismatch"):
        pull_model("campfire-test/Tiny-GGUF", tmp_path / "models", filename="tiny-q8_0.gguf")
    assert not list((tmp_path / "models" / "downloads").rglob("tiny-q8_0.gguf*"))
    assert not (tmp_path / "models" / "tiny-q8_0").exists()


def test_unknown_repo_and_unservable_repo_are_one_line_errors(hub: FakeHub, tmp_path: Path):
    with pytest.raises(PullError, match="no model repository 'campfire-test/Nope'"):
        pull_model("campfire-test/Nope", tmp_path)
    with pytest.raises(PullError, match="neither a single-file GGUF nor config.json"):
        pull_model("campfire-test/Plain", tmp_path)
    with pytest.raises(PullError, match="not a repository id"):
        pull_model("../etc", tmp_path)
    assert [f.path for f in list_files("campfire-test/Plain", endpoint=hub.url)] == ["README.md"]


def test_languages_from_card_config_and_setting(tmp_path: Path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlicense: apache-2.0\nlanguage:\n- zh\n- English\n---\n# M\n")
    assert detect_languages(folder) == ["en", "zh"]
    settings = Settings(data_dir=tmp_path, generator={"model_path": str(folder)})
    assert languages_of(settings) == ["en", "zh"]
    unknown = Settings(data_dir=tmp_path, generator={"model_path": str(tmp_path / "absent")})
    assert languages_of(unknown) == ["en"]  # nothing known: English only
    smollm = Settings(data_dir=tmp_path)  # the packaged default folder name
    assert languages_of(smollm) == ["en"]
    forced = Settings(data_dir=tmp_path, generator={"model_path": str(folder), "languages": ["ja"]})
    assert languages_of(forced) == ["ja"]
    remote = Settings(data_dir=tmp_path, generator={"url": "http://gpu:8000/v1", "model": "Qwen/Qwen2.5-7B-Instruct"})
    assert languages_of(remote)[:2] == ["en", "zh"]


def test_campfire_model_pull_command(hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture):
    from campfire.cli import main

    data = tmp_path / "data"
    assert main(["model", "pull", "campfire-test/Tiny-GGUF", "--data-dir", str(data), "--no-smoke"]) == 0
    out = capsys.readouterr().out
    assert "checked sha256: tiny-q4_k_m.gguf" in out
    assert f"generator ready: {data / 'models' / 'tiny-q4_k_m'} (Qwen2.5 Tiny Instruct; languages: en, zh" in out
    assert "campfire serve --model tiny-q4_k_m" in out
    assert main(["model", "pull", "campfire-test/Nope", "--data-dir", str(data), "--no-smoke"]) == 2
    assert capsys.readouterr().out.strip().splitlines() == [
        f"campfire model pull: no model repository 'campfire-test/Nope' on {hub.url} (or it is private: set HF_TOKEN)"]
