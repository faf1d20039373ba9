"""The llama.cpp engine's own pieces: engine choice, thread and slot sizing, the pinned build and its
one-line fallback, llama-server's errors in OpenAI's words, and a dead llama-server child noticed
through ``/health`` (the API both engines share: tests/model/test_engines.py)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from campfire.cmd_model import port_problem
from model import build_llama, llama_patch
from model.engine import (
    generator_batch_threads,
    generator_threads,
    gguf_of,
    llama_server_command,
    resolve_engine,
)
from model.llama_server import Tally, child_env, context_error, send_once_more, upstream_body
from model.penalty_check import Penalties
from model.prepare import ModelNotFound, packaged_gguf


def test_threads_follow_the_setting_then_the_environment_then_the_free_cores(make_settings, monkeypatch):
    assert generator_threads(make_settings(generator={"threads": 3}).generator) == 3
    monkeypatch.setenv("CAMPFIRE_GENERATOR_THREADS", "5")
    assert generator_threads(make_settings().generator) == 5
    monkeypatch.delenv("CAMPFIRE_GENERATOR_THREADS")
    cores = len(os.sched_getaffinity(0))
    auto = generator_threads(make_settings().generator)
    assert 1 <= auto <= max(1, cores - 1)  # one core left for the bot (on this 2-core machine: 1 thread)


def test_batched_steps_take_the_core_left_for_the_bot_unless_threads_are_set(make_settings, monkeypatch):
    cores = len(os.sched_getaffinity(0))
    auto = make_settings().generator
    assert generator_batch_threads(auto) == min(cores, generator_threads(auto) + 1)  # 2 on this 2-core machine
    cmd = llama_server_command(Path("/bin/llama-server"), Path("/m.gguf"), 4321, auto, "smollm")
    args = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    assert args["--threads"] == str(generator_threads(auto)) and args["--threads-batch"] == str(generator_batch_threads(auto))
    assert generator_batch_threads(make_settings(generator={"threads": 3}).generator) == 3  # an admin's choice holds
    monkeypatch.setenv("CAMPFIRE_GENERATOR_THREADS", "1")
    assert generator_batch_threads(make_settings().generator) == 1


def test_slots_and_context_come_from_concurrency_and_the_window(make_settings):
    gen = make_settings(generator={"max_concurrency": 4, "context_tokens": 1024, "threads": 1}).generator
    cmd = llama_server_command(Path("/bin/llama-server"), Path("/m.gguf"), 4321, gen, "smollm")
    args = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    assert args["--parallel"] == "4" and args["--ctx-size"] == "4096"  # each slot: the whole 1024-token window
    assert args["--threads"] == "1" and args["--threads-batch"] == "1" and args["--port"] == "4321" and args["--alias"] == "smollm"
    assert "--metrics" in cmd and args["--host"] == "127.0.0.1"


def test_the_gguf_is_the_one_the_folder_was_prepared_from(prepared_model, tmp_path):
    assert gguf_of(prepared_model) == packaged_gguf()
    assert gguf_of(packaged_gguf()) == packaged_gguf()  # a .gguf file serves as it is
    assert gguf_of(tmp_path) is None  # e.g. a fine-tuned folder: transformers only


def test_engine_choice(make_settings, prepared_model, monkeypatch, tmp_path):
    gen = make_settings(generator={"device": "cpu"}).generator
    assert resolve_engine(gen, prepared_model, "transformers")[0] == "transformers"
    cuda = make_settings(generator={"device": "cuda"}).generator
    assert resolve_engine(cuda, prepared_model)[0] == "transformers"
    monkeypatch.setenv(build_llama.SERVER_ENV, str(tmp_path / "missing-llama-server"))
    engine, reason = resolve_engine(gen, prepared_model)  # auto without a binary: transformers, saying why
    assert engine == "transformers" and "not built" in reason
    with pytest.raises(RuntimeError, match="llama.cpp engine cannot run"):
        resolve_engine(gen, prepared_model, "llama.cpp")
    broken = tmp_path / "llama-server"
    broken.write_text("#!/bin/sh\nexit 132\n")  # what a binary built for another CPU does: it cannot start
    broken.chmod(0o755)
    monkeypatch.setenv(build_llama.SERVER_ENV, str(broken))
    engine, reason = resolve_engine(gen, prepared_model)
    assert engine == "transformers" and "does not run on this machine" in reason


def test_the_sdist_is_pinned_with_its_hash():
    version, digest = build_llama.pinned()
    assert version.count(".") == 2 and len(digest) == 64
    assert build_llama.install_dir("portable", version).name == f"llama.cpp-{version}-portable"


def test_a_failed_build_is_one_line_and_not_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAMPFIRE_LLAMA_CACHE", str(tmp_path / "cache"))
    wrong = tmp_path / "llama_cpp_python-0.0.0.tar.gz"
    wrong.write_bytes(b"not the pinned file")
    assert build_llama.main(["--sdist", str(wrong)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("llama-server: not built (") and "transformers engine" in out[-1]
    assert "sha256" in out[-1]
    assert build_llama.main(["--sdist", str(wrong), "--strict"]) == 1


def test_llama_server_errors_and_fields_in_campfire_terms():
    payload = json.dumps({"error": {"code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": 2300,
                                    "n_ctx": 2048, "message": "request (2300 tokens) exceeds the available context size"}})
    mapped = context_error(400, payload.encode(), 2048)
    assert mapped["detail"] == "This model's maximum context length is 2048 tokens; the prompt has 2300."
    assert context_error(400, b'{"error": {"type": "invalid_request_error"}}', 2048) is None
    body = upstream_body({"stream": True, "messages": []}, Penalties(frequency=0.5, repetition=1.2), 2048)
    assert body["repeat_penalty"] == 1.2 and body["frequency_penalty"] == 0.5 and body["repeat_last_n"] == 2048
    assert body["stream_options"] == {"include_usage": True} and "repetition_penalty" not in body
    assert "repeat_last_n" not in upstream_body({"messages": []}, Penalties(), 2048)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("engine_generator", ["llama.cpp"], indirect=True)
async def test_a_dead_llama_server_child_is_restarted_through_health(engine_generator, caplog):
    """The front answers /health 503 once its llama-server is gone (it keeps running itself); the
    supervisor then restarts the front, which starts a new llama-server."""
    server = engine_generator.server
    front, restarts = server.pid, server.restarts
    (child,) = _children(front)
    environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
    if llama_patch.patched(build_llama.server_binary()):  # its threads follow the free cores, told by the front
        assert any(v.startswith(b"CAMPFIRE_THREADS_FILE=") for v in environ)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(engine_generator.url.removesuffix("/v1") + "/metrics")).text
        threads = float(re.search(r"^campfire_server_decode_threads (\S+)$", metrics, re.MULTILINE)[1])
        assert 1 <= threads <= len(os.sched_getaffinity(0))
    else:  # a fixed count: its threads sleep at barriers
        assert b"OMP_WAIT_POLICY=passive" in environ or os.environ.get("OMP_WAIT_POLICY")
    with caplog.at_level("WARNING", logger="model.supervisor"):
        os.kill(child, signal.SIGKILL)
        await asyncio.sleep(0.3)
        # until it is restarted, a member's request gets a clear 503, not a 500; the supervisor's lock
        # holds its 2-s watchdog back meanwhile (else it may be stopping the front as the request goes out)
        async with server._lock:
            if server.pid == front:
                async with httpx.AsyncClient() as http:
                    answer = await http.post(engine_generator.url + "/chat/completions",
                                             json={"messages": [{"role": "user", "content": "Hi"}]})
                assert answer.status_code == 503 and "llama-server" in answer.json()["detail"]
        await server.check()  # restarts it — unless the watchdog got there first
    assert server.restarts == restarts + 1 and server.pid != front
    assert any("/health 503" in r.getMessage() for r in caplog.records)  # noticed through /health, not an exit
    assert len(_children(server.pid)) == 1
    reply = "".join([d async for d in engine_generator.client.stream_chat([{"role": "user", "content": "Hi"}], max_tokens=4)])
    assert reply.strip()


def _serve(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPFIRE_")} | {"HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "campfire.cli", "serve", "--data-dir", str(tmp_path / "data"), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_serve_refuses_a_busy_port_in_one_line_before_looking_at_the_model(tmp_path):
    """The port is checked first: here the model is not even prepared, and the answer is about the port."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        done = _serve(tmp_path, "--port", str(port), "--engine", "llama.cpp")
    assert done.returncode == 2
    assert done.stdout.strip() == (f"campfire serve: port {port} on 127.0.0.1 is already in use (another `campfire serve`?): "
                                   "stop it or pass --port N (0 = any free port)")
    assert "Traceback" not in done.stderr and "engine" not in done.stderr
    assert port_problem("127.0.0.1", port) is None  # free again once released (SO_REUSEADDR, as uvicorn binds)
    assert "cannot listen on" in port_problem("192.0.2.1", port)  # TEST-NET-1: not an address of this machine


@pytest.mark.parametrize("engine", ["llama.cpp", "auto"])
def test_an_unprepared_model_is_one_line_saying_what_to_run(tmp_path, engine, make_settings):
    done = _serve(tmp_path, "--port", "0", "--engine", engine)
    folder = tmp_path / "data" / "models" / "smollm2-135m-instruct"
    assert done.returncode == 2
    assert done.stdout.strip() == f"campfire serve: no prepared model at {folder}: run `campfire model prepare` first"
    assert "GGUF" not in done.stderr and "Traceback" not in done.stderr  # no engine fallback talk before it
    with pytest.raises(ModelNotFound, match="campfire model prepare"):
        resolve_engine(make_settings(generator={"device": "cpu"}).generator, folder, engine)


def test_the_relay_counts_deltas_and_usage_from_bytes_split_anywhere():
    """llama-server's stream as it comes, cut at every byte: the same counts as whole events, with no JSON parsing."""
    from model.server_metrics import ServerMetrics

    events = [{"choices": [{"delta": {"role": "assistant", "content": None}}]},
              {"choices": [{"delta": {"content": "Hel"}}]}, {"choices": [{"delta": {"content": ""}}]},
              {"choices": [{"delta": {"reasoning_content": "hm"}}]},
              {"choices": [{"delta": {"content": '"content":"quoted'}}]},
              {"choices": [{"delta": {}, "finish_reason": "length"}], "usage": {"completion_tokens": 7, "prompt_tokens": 30}}]
    compact = {"separators": (",", ":")}  # llama-server's; every other event with json's default spaces
    stream = b"".join(b"data: " + json.dumps(e, **(compact if i % 2 else {})).encode() + b"\n\n"
                      for i, e in enumerate(events)) + b"data: [DONE]\n\n"
    for step in (1, 7, len(stream)):
        metrics = ServerMetrics()
        tally = Tally(metrics, "chat")
        for i in range(0, len(stream), step):
            tally.feed(stream[i:i + step])
        assert (tally.deltas, tally.usage_tokens) == (2, 7) and tally.first is not None
        tally.done(200)
        text = metrics.render().decode()
        assert 'campfire_server_requests_total{endpoint="chat",status="200"} 1.0' in text
        assert "campfire_server_completion_tokens_total 7.0" in text and "campfire_server_requests_in_progress 0.0" in text


def test_llama_server_threads_sleep_at_barriers_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert child_env()["OMP_WAIT_POLICY"] == "passive"
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")  # an admin's choice holds
    assert child_env()["OMP_WAIT_POLICY"] == "active" and child_env()["PATH"] == os.environ["PATH"]


async def _closes_each_connections_second_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A server that answers a connection's first request (keep-alive) and closes it on the second
    without an answer — what llama-server's HTTP library does to a pooled connection now and then."""
    for n in (1, 2):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            break
        await reader.readexactly(int(re.search(rb"(?i)content-length: (\d+)", head)[1]))
        if n == 2:
            break
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{"ok":1}')
        await writer.drain()
    writer.close()


async def test_a_request_on_a_connection_llama_server_just_closed_is_sent_once_more():
    server = await asyncio.start_server(_closes_each_connections_second_request, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(3):
                answer = await send_once_more(http, http.build_request("POST", url, json={"stream": True}))
                assert answer.status_code == 200 and await answer.aread() == b'{"ok":1}'
                await answer.aclose()
        async with httpx.AsyncClient() as http:  # without it, the member's second request failed
            await (await http.send(http.build_request("POST", url, json={}))).aclose()
            with pytest.raises(httpx.RemoteProtocolError):
                await http.send(http.build_request("POST", url, json={}))
    finally:
        server.close()
        await server.wait_closed()
