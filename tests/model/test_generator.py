"""``open_generator``: the embedded server's whole life (real model), and the remote-URL mode."""

from __future__ import annotations

import psutil

from campfire.config import Secrets
from model.generator import open_generator


def server_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True)
            if p.is_running() and "model.server" in " ".join(p.cmdline())]


async def test_embedded_mode_starts_and_stops_its_own_server(make_settings, prepared_model):
    settings = make_settings(generator={"url": "", "model_path": str(prepared_model), "device": "cpu"})
    before = {p.pid for p in server_children()}
    async with open_generator(settings, Secrets(discord_token=None, generator_api_key=None)) as client:
        started = [p for p in server_children() if p.pid not in before]
        assert len(started) == 1
        assert client.base_url.startswith("http://127.0.0.1:") and client.base_url.endswith("/v1")
        assert await client.health()
        reply = "".join([d async for d in client.stream_chat([{"role": "user", "content": "Hello!"}], max_tokens=8)])
        assert reply.strip()
    assert not started[0].is_running() or started[0].status() == psutil.STATUS_ZOMBIE
    assert (settings.data_dir / "logs" / "generator.log").is_file()


async def test_remote_mode_uses_the_url_key_and_model(make_settings, fake_openai):
    settings = make_settings(generator={"url": fake_openai.url, "model": "served-elsewhere"})
    before = {p.pid for p in server_children()}
    async with open_generator(settings, Secrets(discord_token=None, generator_api_key="k-123")) as client:
        assert {p.pid for p in server_children()} == before  # no embedded server in remote mode
        text = "".join([d async for d in client.stream_chat([{"role": "user", "content": "hi"}], max_tokens=8)])
    assert text == fake_openai.reply
    assert fake_openai.requests[-1]["model"] == "served-elsewhere"
    assert fake_openai.headers[-1]["authorization"] == "Bearer k-123"


async def test_supervisor_restarts_a_server_whose_batching_worker_died(make_settings, fake_openai, monkeypatch):
    """transformers serve answers /health 503 (cb_worker_dead) forever once its CB worker dies: restart it.
    The fake plays the dead server's /health; a `sleep` process plays the child being replaced."""
    import asyncio
    import sys

    from model.supervisor import EmbeddedServer

    server = EmbeddedServer(make_settings())
    server.port = fake_openai.port
    spawned: list[asyncio.subprocess.Process] = []

    async def spawn() -> None:  # stands in for starting `python -m model.server` (tested on the real model above)
        server._proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
        spawned.append(server._proc)
        fake_openai.health_status = 200

    monkeypatch.setattr(server, "_spawn", spawn)
    await spawn()
    assert await server.check() is False  # healthy: left alone
    fake_openai.health_status = 503
    assert await server.check() is True
    assert spawned[0].returncode is not None  # the dead server's process was stopped
    assert len(spawned) == 2 and spawned[1].returncode is None and server.restarts == 1
    await server.stop()
    assert spawned[1].returncode is not None


async def test_supervisor_leaves_a_passing_503_alone_and_says_what_a_lasting_one_said(make_settings, fake_openai,
                                                                                      monkeypatch, caplog):
    """A restart costs every reply in flight: a 503 gone within CONFIRM_S does not restart the generator;
    one still there does, and the log says what /health answered."""
    import asyncio
    import sys

    from model import supervisor
    from model.supervisor import EmbeddedServer

    server = EmbeddedServer(make_settings())
    server.port = fake_openai.port
    server._proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
    spawned: list[int] = []

    async def spawn() -> None:  # stands in for starting `python -m model.server` (tested on the real model)
        spawned.append(1)
        fake_openai.health_status = 200

    monkeypatch.setattr(server, "_spawn", spawn)
    fake_openai.health_status = 503
    asyncio.get_running_loop().call_later(supervisor.CONFIRM_S / 2, setattr, fake_openai, "health_status", 200)
    checks = fake_openai.health_checks
    assert await server.check() is False
    assert fake_openai.health_checks == checks + 2 and not spawned and server.restarts == 0
    fake_openai.health_status = 503
    with caplog.at_level("WARNING", logger="model.supervisor"):
        assert await server.check() is True
    assert spawned == [1] and server.restarts == 1
    assert any("/health 503: " in r.getMessage() for r in caplog.records)
    await server.stop()


def test_campfire_serve_without_a_prepared_model_says_what_to_run(tmp_path, capsys, monkeypatch):
    from campfire.cli import main

    import os

    for key in [k for k in os.environ if k.startswith("CAMPFIRE_")]:
        monkeypatch.delenv(key)
    assert main(["serve", "--data-dir", str(tmp_path), "--port", "0"]) == 2
    out = capsys.readouterr().out
    assert "campfire model prepare" in out and str(tmp_path) in out



async def test_start_failure_names_the_exit_code_and_the_log_tail(make_settings, tmp_path):
    """A child that cannot load its model exits at once: ``start`` raises ``GeneratorUnavailable``
    naming the exit code and quoting the last lines of the log — read from its end only, so a log
    grown over many runs (2 MB here) stays cheap to quote."""
    import pytest

    from model.errors import GeneratorUnavailable
    from model.supervisor import EmbeddedServer

    settings = make_settings(generator={"url": "", "model_path": str(tmp_path / "no-such-model"), "device": "cpu"})
    server = EmbeddedServer(settings)
    server.log_path.parent.mkdir(parents=True, exist_ok=True)
    server.log_path.write_bytes(b"an earlier run\n" * 140_000)
    try:
        with pytest.raises(GeneratorUnavailable) as caught:
            await server.start()
    finally:
        await server.stop()
    message = str(caught.value)
    assert "exited at start (code " in message and "code 0)" not in message
    quoted = message.split("): ", 1)[1].split(" | ")
    assert len(quoted) == 5 and quoted[-1] != "an earlier run"  # the child's own last line

    server.log_path.write_bytes(b"x" * 3_000_000 + b"\n" + b"\n".join(b"line %d" % n for n in range(10)) + b"\n")
    assert server._tail() == " | ".join(f"line {n}" for n in range(5, 10))
