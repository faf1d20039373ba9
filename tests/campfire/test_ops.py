"""The bot's /health and Prometheus /metrics, over real HTTP on loopback (issue 13, item 16)."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from campfire import ops
from campfire.config import ConfigError, Settings


class FakeGenerator:
    queue_depth = 3
    in_flight = 2
    breaker_open = False


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_and_health_over_http():
    ready = {"now": False}
    server = ops.OpsServer("127.0.0.1", 0, generator=FakeGenerator(), ready=lambda: ready["now"], lag_interval_s=0.02)
    port = await server.start()
    try:
        assert port > 0 and server.url == f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
            before = (await http.get("/metrics")).text
            r = await http.get("/health")
            assert r.status_code == 503 and r.json()["status"] == "starting"
            ready["now"] = True

            ops.count_interaction("story")
            ops.count_interaction("story")
            ops.count_interaction("recommend")
            ops.observe_generation("story", ttft_s=0.4, total_s=2.4, completion_tokens=100)
            ops.observe_generation("chat", outcome="timeout")
            ops.observe_digest(seconds=1.5, members=4, picks=12)
            ops.count_import(kind="exports", items=10, interactions=25, errors=1)
            time.sleep(0.3)  # block the loop: the lag monitor must see it
            await asyncio.sleep(0.1)

            r = await http.get("/metrics")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            after = r.text
            health = (await http.get("/health")).json()

        def delta(name, **labels):
            return value(after, name, **labels) - value(before, name, **labels)

        assert delta("campfire_interactions_total", command="story") == 2
        assert delta("campfire_interactions_total", command="recommend") == 1
        assert delta("campfire_generations_total", kind="story", outcome="ok") == 1
        assert delta("campfire_generations_total", kind="chat", outcome="timeout") == 1
        assert delta("campfire_generation_ttft_seconds_count", kind="story") == 1
        assert delta("campfire_generation_ttft_seconds_sum", kind="story") == pytest.approx(0.4)
        assert delta("campfire_generation_tokens_per_second_sum", kind="story") == pytest.approx(50.0)
        assert delta("campfire_generation_completion_tokens_total", kind="story") == 100
        assert delta("campfire_digest_runs_total", outcome="ok") == 1
        assert delta("campfire_digest_picks_total") == 12 and delta("campfire_digest_members_total") == 4
        assert delta("campfire_imported_total", kind="exports", what="items") == 10
        assert delta("campfire_imported_total", kind="exports", what="interactions") == 25
        assert delta("campfire_import_runs_total", kind="exports") == 1
        assert value(after, "campfire_generator_queue_depth") == 3
        assert value(after, "campfire_generator_in_flight") == 2
        assert value(after, "campfire_generator_breaker_open") == 0
        assert delta("campfire_event_loop_lag_seconds_count") >= 1
        lag_sum = delta("campfire_event_loop_lag_seconds_sum")
        assert lag_sum >= 0.2, lag_sum
        assert any(k[0] == "campfire_build_info" for k in samples(after))
        assert health["status"] == "ok" and health["generator"] == {"queue_depth": 3, "in_flight": 2, "breaker_open": False}
        assert health["uptime_s"] > 0
    finally:
        await server.stop()
    with pytest.raises(httpx.ConnectError):  # stopped means closed
        async with httpx.AsyncClient(timeout=2) as http:
            await http.get(f"http://127.0.0.1:{port}/health")


async def test_breaker_open_is_degraded_but_alive():
    gen = FakeGenerator()
    gen.breaker_open = True
    async with ops.OpsServer(generator=gen) as server:
        async with httpx.AsyncClient(timeout=5) as http:
            r = await http.get(f"{server.url}/health")
    assert r.status_code == 200 and r.json()["status"] == "degraded"


async def test_serve_ops_is_off_by_default_and_one_line_when_the_port_is_taken():
    async with ops.serve_ops(Settings()) as server:
        assert server is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(ops={"metrics_port": port})
        with pytest.raises(ConfigError) as err:  # campfire.cli prints it as one line, exit 2
            async with ops.serve_ops(settings):
                pass
    assert isinstance(err.value, ops.OpsServerError)
    assert str(port) in str(err.value) and "metrics_port" in str(err.value) and "\n" not in str(err.value)


async def test_serve_ops_on_a_configured_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with ops.serve_ops(Settings(ops={"metrics_port": port}), generator=FakeGenerator()) as server:
        assert server is not None and server.port == port
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200
            assert "campfire_generator_queue_depth 3.0" in (await http.get(f"http://127.0.0.1:{port}/metrics")).text


def test_reporting_never_raises():
    ops.count_interaction("")
    ops.observe_generation("chat", ttft_s=-1, total_s=None, completion_tokens=5)
    ops.observe_digest(seconds=-1)
    ops.count_import(kind="x" * 500)
