"""One API suite, run against each engine of ``campfire serve`` (fixture ``engine_generator``: transformers
with continuous batching, and llama.cpp's llama-server behind Campfire's front) on the real SmolLM2, over
loopback HTTP through the supervisor and the client: the bot's code path must not see which engine runs."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal

import httpx
import pytest

from model.errors import ContextTooLong

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the supervisor lives in the session loop


async def _raw_stream(gen, body: dict) -> tuple[int, list[str]]:
    events: list[str] = []
    async with httpx.AsyncClient(timeout=120) as http, http.stream("POST", gen.url + "/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(line[len("data: "):])
        return response.status_code, events


async def test_health_models_and_a_raw_streamed_completion(engine_generator):
    gen = engine_generator
    async with httpx.AsyncClient(timeout=120) as http:
        assert (await http.get(gen.url.removesuffix("/v1") + "/health")).status_code == 200
        models = (await http.get(gen.url + "/models")).json()
    assert models["data"][0]["id"] == gen.server.model_name
    status, events = await _raw_stream(gen, {"model": gen.server.model_name, "max_tokens": 16, "stream": True,
                                             "messages": [{"role": "user", "content": "Say hello to the campfire."}]})
    assert status == 200
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    texts = [c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")]
    assert sum(1 for t in texts if t) >= 3  # several content chunks, not one blob
    assert "".join(texts).strip()
    assert 0 < chunks[-1]["usage"]["completion_tokens"] <= 16


async def test_a_non_streamed_completion_has_text_and_usage(engine_generator):
    body = {"model": engine_generator.server.model_name, "max_tokens": 12,
            "messages": [{"role": "user", "content": "Name a colour."}]}
    async with httpx.AsyncClient(timeout=120) as http:
        r = await http.post(engine_generator.url + "/chat/completions", json=body)
    assert r.status_code == 200
    answer = r.json()
    assert answer["choices"][0]["message"]["content"].strip()
    assert 0 < answer["usage"]["completion_tokens"] <= 12 and answer["usage"]["prompt_tokens"] > 5


async def test_metrics_endpoint(engine_generator):
    """Campfire's Prometheus /metrics on either engine: requests, TTFT, tokens/s, queue depth."""
    deltas = [d async for d in engine_generator.client.stream_chat([{"role": "user", "content": "Say hi."}], max_tokens=8)]
    assert deltas
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.get(engine_generator.url.removesuffix("/v1") + "/metrics")
    assert r.status_code == 200
    assert 'campfire_server_requests_total{endpoint="chat",status="200"}' in r.text
    for name in ("campfire_server_ttft_seconds_count", "campfire_server_tokens_per_second_count",
                 "campfire_server_queue_depth", "campfire_server_requests_in_progress"):
        assert name in r.text
    ttft = [line for line in r.text.splitlines() if line.startswith("campfire_server_ttft_seconds_count")]
    assert float(ttft[0].split()[-1]) >= 1


async def test_four_concurrent_streams_all_complete(engine_generator):
    client = engine_generator.client

    async def one(i: int) -> tuple[int, str]:
        deltas = [d async for d in client.stream_chat(
            [{"role": "user", "content": f"Name a colour. ({i})"}], max_tokens=12, user=f"member{i}")]
        return len(deltas), "".join(deltas)

    results = await asyncio.gather(*(one(i) for i in range(4)))
    assert all(n >= 2 and text.strip() for n, text in results)
    assert client.in_flight == 0


async def test_sampling_is_per_request(engine_generator):
    """transformers serve reused the first request's temperature for every later one; neither engine may."""
    client = engine_generator.client
    messages = [{"role": "user", "content": "Write one sentence about a lighthouse."}]

    async def run(temperature: float) -> str:
        return "".join([d async for d in client.stream_chat(messages, max_tokens=16, temperature=temperature)])

    hot = await run(2.0)  # a first, very hot request must not fix the temperature for the next ones
    cold = [await run(0.0), await run(0.0)]
    assert cold[0] == cold[1]  # greedy: identical
    assert hot != cold[0]


def distinct_2(text: str) -> float:
    """Distinct word bigrams / all word bigrams (1.0 = no bigram repeated)."""
    pairs = list(itertools.pairwise(text.split()))
    return len(set(pairs)) / max(1, len(pairs))


async def test_repetition_control_is_honoured_per_request(engine_generator):
    """Issue 14: the same prompt at temperature 0 (greedy), in one batch: without a penalty the model
    loops; with one it says something else, with fewer repeated bigrams; and the unpenalised request
    next to them is the same as when it runs alone."""
    client = engine_generator.client
    messages = [{"role": "user", "content": "Write a short poem about the sea."}]

    async def run(**penalty: float) -> str:
        return "".join([d async for d in client.stream_chat(messages, max_tokens=40, temperature=0.0, **penalty)])

    plain, repetition, frequency = await asyncio.gather(run(), run(repetition_penalty=1.3), run(frequency_penalty=1.0))
    alone = await run()
    if engine_generator.settings.generator.engine == "transformers":
        # one logits processor serves the whole batch there: no penalty may leak into a neighbour — a
        # leaked penalty changes the reply at the first repeated word. (Neither engine's batched kernels
        # are bit-identical across batch sizes: past a near-tie a greedy reply in a batch of 3 may go
        # another way than alone — seen once here after 102 identical characters, both looping.)
        assert len(os.path.commonprefix([plain, alone])) >= min(len(plain), len(alone)) // 3
    assert distinct_2(plain) <= distinct_2(alone) + 0.25  # in the batch it loops as it does alone
    for penalised in (repetition, frequency):
        assert penalised != plain
        assert distinct_2(penalised) > distinct_2(plain)


async def test_any_openai_client_gets_stop_strings_and_clear_refusals(engine_generator):
    """Raw HTTP, as another OpenAI client sends it: ``stop`` cuts the reply before the stop string with
    finish_reason "stop", streamed and not; bad fields are HTTP 400 with a reason, alike on both engines."""
    url = engine_generator.url + "/chat/completions"
    body = {"messages": [{"role": "user", "content": "Count from 1 to 10 separated by commas."}], "max_tokens": 40,
            "temperature": 0}
    async with httpx.AsyncClient(timeout=120) as http:
        full = (await http.post(url, json=body)).json()["choices"][0]["message"]["content"]
        words = full.split()
        assert len(words) >= 4, full
        stop = words[len(words) // 2]
        cut = (await http.post(url, json={**body, "stop": [stop]})).json()["choices"][0]
        assert cut["finish_reason"] == "stop" and cut["message"]["content"] == full[: full.index(stop)]
        streamed, finish = "", None
        async with http.stream("POST", url, json={**body, "stop": stop, "stream": True}) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    for choice in json.loads(line[6:]).get("choices") or []:
                        streamed += (choice.get("delta") or {}).get("content") or ""
                        finish = choice.get("finish_reason") or finish
        assert streamed == full[: full.index(stop)] and finish == "stop"
        for bad in ({"messages": []}, {"temperature": "hot"}, {"temperature": -1}, {"top_p": 2}, {"max_tokens": -5},
                    {"max_tokens": 0}, {"n": 3}, {"stream": "yes"}, {"stop": [""]}, {"stop": list("abcde")}):
            r = await http.post(url, json={**body, **bad})
            assert r.status_code == 400, (bad, r.status_code, r.text)
            assert next(iter(bad)) in r.json()["detail"], (bad, r.text)


async def test_stop_strings_end_the_reply_before_them(engine_generator):
    """A greedy reply, then the same request with a word from its middle as a stop string: the reply is
    the first one cut before that word (the stop string itself never shown)."""
    client = engine_generator.client
    messages = [{"role": "user", "content": "Describe a campfire at night in two sentences."}]
    full = "".join([d async for d in client.stream_chat(messages, max_tokens=32, temperature=0.0)])
    words = full.split()
    assert len(words) >= 8
    stop = words[len(words) // 2]
    cut = "".join([d async for d in client.stream_chat(messages, max_tokens=32, temperature=0.0, stop=[stop])])
    assert stop not in cut
    assert cut == full[: full.index(stop)]


async def test_a_bad_penalty_is_a_400_with_the_reason(engine_generator):
    body = {"model": engine_generator.server.model_name, "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4, "repetition_penalty": -1}
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.post(engine_generator.url + "/chat/completions", json=body)
    assert r.status_code == 400
    assert "repetition_penalty" in r.json()["detail"]


async def test_a_prompt_over_the_context_window_is_a_400_in_openai_words(engine_generator):
    window = engine_generator.settings.generator.context_tokens
    words = "campfire " * (window + 100)
    body = {"model": engine_generator.server.model_name, "messages": [{"role": "user", "content": words}],
            "max_tokens": 8, "stream": True}
    async with httpx.AsyncClient(timeout=120) as http:
        r = await http.post(engine_generator.url + "/chat/completions", json=body)
    assert r.status_code == 400
    assert f"maximum context length is {window} tokens" in r.text
    with pytest.raises(ContextTooLong):
        [d async for d in engine_generator.client.stream_chat([{"role": "user", "content": words}], max_tokens=8)]


async def test_a_killed_server_is_restarted_by_the_supervisor(engine_generator):
    server = engine_generator.server
    old_pid, restarts = server.pid, server.restarts
    os.kill(old_pid, signal.SIGKILL)
    await asyncio.sleep(0.5)
    # the check restarts it — unless the 2-s watchdog got there first; either way exactly one restart
    await server.check()
    assert server.restarts == restarts + 1
    assert server.pid != old_pid
    assert await engine_generator.client.health()  # same URL as before
    reply = "".join([d async for d in engine_generator.client.stream_chat(
        [{"role": "user", "content": "Are you back?"}], max_tokens=8)])
    assert reply.strip()
    assert await server.check() is False  # healthy: left alone
