"""The generator server's Prometheus ``/metrics`` (model/server_metrics.py), fetched over loopback.

The observing middleware is mounted on the loopback OpenAI stand-in (the same FastAPI middleware and
route :func:`model.server.build_app` adds to transformers' app), so its numbers are checked against
known streams in a fraction of a second; ``test_server.py`` fetches it from the real server."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from campfire.config import GeneratorSettings
from campfire.testing.openai_fake import FakeOpenAI
from model.client import GeneratorClient
from model.server_metrics import add_metrics


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_count_requests_ttft_tokens_and_queue_depth():
    depth = {"n": 3}
    with FakeOpenAI(extend=lambda app: add_metrics(app, queue_depth=lambda: depth["n"])) as fake:
        fake.reply, fake.chunk_chars, fake.token_delay_s = "abcdefghij" * 4, 4, 0.01  # 10 content deltas
        client = GeneratorClient(fake.url, api_key=None, model="fake-model", settings=GeneratorSettings())

        async def one() -> list[str]:
            return [d async for d in client.stream_chat([{"role": "user", "content": "hi"}], max_tokens=16)]

        replies = await asyncio.gather(one(), one())
        await client.aclose()
        assert all("".join(r) == fake.reply for r in replies)
        async with httpx.AsyncClient() as http:
            r = await http.get(fake.root + "/metrics")
            fake.status = 503
            await http.post(fake.url + "/chat/completions", json={"model": "m", "messages": [], "stream": True})
            after = samples((await http.get(fake.root + "/metrics")).text)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = samples(r.text)
    assert m[("campfire_server_requests_total", (("endpoint", "chat"), ("status", "200")))] == 2
    assert m[("campfire_server_completion_tokens_total", ())] == 20  # no usage chunk: the deltas are counted
    assert m[("campfire_server_ttft_seconds_count", ())] == 2
    assert m[("campfire_server_tokens_per_second_count", ())] == 2
    assert m[("campfire_server_tokens_per_second_sum", ())] > 0
    assert m[("campfire_server_queue_depth", ())] == 3
    assert m[("campfire_server_requests_in_progress", ())] == 0
    assert after[("campfire_server_requests_total", (("endpoint", "chat"), ("status", "503")))] == 1
    assert after[("campfire_server_ttft_seconds_count", ())] == 2  # an error answer has no first token


async def test_metrics_leave_the_stream_unchanged_and_other_paths_alone():
    with FakeOpenAI(extend=add_metrics) as fake:
        async with httpx.AsyncClient() as http:
            body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
            async with http.stream("POST", fake.url + "/chat/completions", json=body) as response:
                text = "".join([line async for line in response.aiter_lines()])
            assert text.endswith("data: [DONE]")
            assert (await http.get(fake.url + "/models")).status_code == 200
            m = samples((await http.get(fake.root + "/metrics")).text)
    assert sum(v for (name, _), v in m.items() if name == "campfire_server_requests_total") == 1
