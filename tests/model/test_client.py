"""GeneratorClient policy on the loopback fake (errors, timing, queueing need controlled output)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from contextlib import aclosing

import pytest

from campfire.config import GeneratorSettings
from model.client import GeneratorClient
from model.errors import (
    ContextTooLong,
    GeneratorError,
    GeneratorProtocolError,
    GeneratorTimeout,
    GeneratorUnavailable,
    StreamInterrupted,
)

MESSAGES = [{"role": "user", "content": "hello"}]


def make_client(url: str, **overrides) -> GeneratorClient:
    settings = GeneratorSettings(**{"connect_retries": 2, "breaker_failures": 3, "breaker_reset_s": 30.0, **overrides})
    return GeneratorClient(url, api_key=None, model="fake-model", settings=settings)


async def collect(client: GeneratorClient, **kwargs) -> list[str]:
    kwargs.setdefault("max_tokens", 32)
    return [d async for d in client.stream_chat(MESSAGES, **kwargs)]


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there any more


async def test_streams_deltas_and_sends_request_fields(fake_openai):
    fake_openai.reply = "Hello @everyone " + "x" * 5000
    client = make_client(fake_openai.url)
    usage: dict = {}
    deltas = await collect(client, user="guild1:member2", temperature=0.3, top_p=0.9, max_tokens=77, usage=usage)
    await client.aclose()
    assert len(deltas) > 100  # many chunks, not one blob
    assert "".join(deltas) == fake_openai.reply  # 5,016 characters intact, @everyone untouched (the bot sanitises)
    body = fake_openai.requests[-1]
    assert body["user"] == "guild1:member2"
    assert body["stream"] is True and body["max_tokens"] == 77
    assert body["temperature"] == 0.3 and body["top_p"] == 0.9
    assert body["messages"] == MESSAGES
    assert usage["completion_tokens"] == len(deltas) and usage["ttft_s"] >= 0


async def test_resolve_model_picks_first_served_model(fake_openai):
    client = GeneratorClient(fake_openai.url, api_key="secret-key", model="", settings=GeneratorSettings())
    assert await client.resolve_model() == "fake-model"
    await collect(client)
    assert fake_openai.requests[-1]["model"] == "fake-model"
    assert fake_openai.headers[-1]["authorization"] == "Bearer secret-key"
    assert await client.health() is True
    await client.aclose()


async def test_retries_connection_failures_before_first_token(fake_openai):
    fake_openai.status = 503
    fake_openai.fail_times = 2
    client = make_client(fake_openai.url, connect_retries=2)
    assert "".join(await collect(client)) == fake_openai.reply
    assert fake_openai.requests_started == 3  # two 503s, then success
    await client.aclose()


async def test_never_retries_after_text_was_streamed(fake_openai):
    fake_openai.drop_after = 3
    client = make_client(fake_openai.url, connect_retries=3)
    got: list[str] = []
    with pytest.raises(GeneratorUnavailable):
        async for delta in client.stream_chat(MESSAGES, max_tokens=32):
            got.append(delta)
    assert "".join(got) == fake_openai.reply[: 3 * fake_openai.chunk_chars]
    assert fake_openai.requests_started == 1
    await client.aclose()


async def test_breaker_fails_fast_against_a_closed_port():
    client = make_client(closed_port_url(), connect_retries=0, breaker_failures=2, breaker_reset_s=30.0)
    for _ in range(2):
        with pytest.raises(GeneratorUnavailable):
            await collect(client)
    assert client.breaker_open
    t0 = time.perf_counter()
    with pytest.raises(GeneratorUnavailable) as err:
        await collect(client)
    assert time.perf_counter() - t0 < 0.05  # no connection attempted
    assert 25 < err.value.retry_after_s <= 30
    await client.aclose()


async def test_breaker_lets_a_probe_through_after_reset(fake_openai):
    fake_openai.status = 500
    client = make_client(fake_openai.url, connect_retries=0, breaker_failures=1, breaker_reset_s=0.2)
    with pytest.raises(GeneratorUnavailable):
        await collect(client)
    with pytest.raises(GeneratorUnavailable):
        await collect(client)  # open: refused without a request
    assert fake_openai.requests_started == 1
    fake_openai.status = None
    await asyncio.sleep(0.25)
    assert "".join(await collect(client)) == fake_openai.reply  # the probe succeeds and closes the breaker
    assert not client.breaker_open
    await client.aclose()


async def test_timeout_raises_generator_timeout(fake_openai):
    fake_openai.hang = True
    client = make_client(fake_openai.url)
    t0 = time.perf_counter()
    with pytest.raises(GeneratorTimeout):
        await collect(client, timeout_s=0.5)
    assert time.perf_counter() - t0 < 3
    assert client.in_flight == 0
    await client.aclose()


async def test_context_length_error_is_typed(fake_openai):
    fake_openai.status = 400
    fake_openai.error_message = "This model's maximum context length is 2048 tokens; the prompt has 3000."
    client = make_client(fake_openai.url)
    with pytest.raises(ContextTooLong):
        await collect(client)
    fake_openai.error_message = "bad request"
    with pytest.raises(GeneratorError) as err:
        await collect(client)
    assert not isinstance(err.value, (ContextTooLong, GeneratorUnavailable))
    assert not client.breaker_open  # a refused request is not an outage
    await client.aclose()


async def test_queue_positions_are_reported(fake_openai):
    fake_openai.token_delay_s = 0.02
    client = make_client(fake_openai.url, max_concurrency=1)
    positions: dict[int, list[int]] = {1: [], 2: []}

    async def run(i: int) -> str:
        async def on_queued(pos: int) -> None:
            positions[i].append(pos)

        return "".join([d async for d in client.stream_chat(MESSAGES, max_tokens=8, on_queued=on_queued)])

    first = asyncio.create_task(run(0))
    await asyncio.sleep(0.05)
    assert client.in_flight == 1
    second, third = asyncio.create_task(run(1)), asyncio.create_task(run(2))
    await asyncio.sleep(0.05)
    assert client.queue_depth == 2
    results = await asyncio.gather(first, second, third)
    assert all(r == fake_openai.reply for r in results)
    assert positions[1] == [1]
    assert positions[2] == [2, 1]  # moved up when the first finished
    assert client.queue_depth == 0 and client.in_flight == 0
    await client.aclose()


async def test_cancelling_the_caller_closes_the_stream(fake_openai):
    fake_openai.token_delay_s = 0.05
    fake_openai.reply = "y" * 4000
    client = make_client(fake_openai.url, max_concurrency=1)
    got: list[str] = []

    async def consume() -> None:
        async for delta in client.stream_chat(MESSAGES, max_tokens=1000):
            got.append(delta)

    task = asyncio.create_task(consume())
    while len(got) < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.in_flight == 0
    # the slot is free: the next request runs at once
    fake_openai.reply, fake_openai.token_delay_s = "ok", 0.0
    assert "".join(await asyncio.wait_for(collect(client), 2)) == "ok"
    await client.aclose()


async def test_stop_strings_are_enforced_by_the_client(fake_openai):
    fake_openai.reply = "First line.\nUser: injected turn"
    fake_openai.chunk_chars = 3
    client = make_client(fake_openai.url)
    async with aclosing(client.stream_chat(MESSAGES, max_tokens=32, stop=["\nUser:"])) as stream:
        text = "".join([d async for d in stream])
    assert text == "First line."
    await client.aclose()


async def test_a_refused_probe_closes_the_breaker(fake_openai):
    """A 4xx answer proves the server is up: the half-open breaker must not stay stuck."""
    fake_openai.status = 500
    client = make_client(fake_openai.url, connect_retries=0, breaker_failures=1, breaker_reset_s=0.1)
    with pytest.raises(GeneratorUnavailable):
        await collect(client)
    await asyncio.sleep(0.15)
    fake_openai.status = 422
    with pytest.raises(GeneratorError):
        await collect(client)  # the probe: refused, but answered
    fake_openai.status = None
    assert "".join(await collect(client)) == fake_openai.reply
    await client.aclose()


# --- issue 13 items 6–8: unreadable, truncated and recovering generators ------------------------------


async def test_a_stream_ending_without_finish_reason_or_done_is_interrupted(fake_openai):
    """A proxy closing cleanly after the generator died: the cut text must not pass as a finished reply."""
    fake_openai.end_after, fake_openai.finish_reason, fake_openai.send_done = 3, None, False
    client = make_client(fake_openai.url, connect_retries=0, breaker_failures=1)
    got: list[str] = []
    with pytest.raises(StreamInterrupted) as err:
        async for delta in client.stream_chat(MESSAGES, max_tokens=32):
            got.append(delta)
    assert isinstance(err.value, GeneratorUnavailable)  # the same error a cut connection raises
    assert "".join(got) == fake_openai.reply[: 3 * fake_openai.chunk_chars]
    assert client.breaker_open  # the breaker was told
    await client.aclose()


async def test_a_cut_connection_raises_stream_interrupted(fake_openai):
    fake_openai.drop_after = 2
    client = make_client(fake_openai.url, connect_retries=0)
    with pytest.raises(StreamInterrupted):
        await collect(client)
    await client.aclose()


@pytest.mark.parametrize("finish_reason,send_done", [("stop", False), (None, True), ("length", True)])
async def test_either_finish_reason_or_done_completes_a_stream(fake_openai, finish_reason, send_done):
    fake_openai.finish_reason, fake_openai.send_done = finish_reason, send_done
    client = make_client(fake_openai.url)
    assert "".join(await collect(client)) == fake_openai.reply
    await client.aclose()


@pytest.mark.parametrize("inject", ['{"choices": [{"index": 0, "delta": {"content": "x"}', "{'single': 'quotes'}", "[1, 2]"])
async def test_malformed_sse_json_is_a_generator_error(fake_openai, inject):
    fake_openai.inject_after, fake_openai.inject = 2, inject
    client = make_client(fake_openai.url, connect_retries=0, breaker_failures=1)
    with pytest.raises(GeneratorProtocolError) as err:
        await collect(client)
    assert isinstance(err.value, GeneratorUnavailable) and not isinstance(err.value, ValueError)
    assert "Expecting" not in str(err.value) and "line 1" not in str(err.value)  # no parser text for members
    assert client.breaker_open
    await client.aclose()


async def test_an_sse_error_event_is_a_generator_error_before_and_after_text(fake_openai):
    fake_openai.inject = json.dumps({"error": {"message": "CUDA out of memory", "type": "server_error"}})
    for after in (0, 2):  # before the first text delta, then mid-reply
        client = make_client(fake_openai.url, connect_retries=0, breaker_failures=1)
        fake_openai.inject_after = after
        with pytest.raises(GeneratorProtocolError) as err:
            await collect(client)
        assert "CUDA" not in str(err.value) and "CUDA" in err.value.detail
        assert client.breaker_open  # the breaker was told
        await client.aclose()


async def test_an_sse_error_event_about_the_context_is_context_too_long(fake_openai):
    fake_openai.inject_after = 0
    fake_openai.inject = json.dumps({"error": {"message": "This model's maximum context length is 2048 tokens", "code": 400}})
    client = make_client(fake_openai.url, connect_retries=0, breaker_failures=1)
    with pytest.raises(ContextTooLong):
        await collect(client)
    assert not client.breaker_open
    await client.aclose()


async def test_first_request_after_recovery_goes_through(fake_openai):
    """Half-open by health probe: a generator that is back is used at once, not after breaker_reset_s."""
    fake_openai.status, fake_openai.health_status = 503, 503
    client = make_client(fake_openai.url, connect_retries=0, breaker_failures=1, breaker_reset_s=30.0)
    with pytest.raises(GeneratorUnavailable):
        await collect(client)
    assert client.breaker_open
    await asyncio.sleep(1.05)
    with pytest.raises(GeneratorUnavailable):
        await collect(client)  # still down: /health says so, no chat request sent
    assert fake_openai.requests_started == 1 and fake_openai.health_checks == 1
    with pytest.raises(GeneratorUnavailable):
        await collect(client)  # within the probe interval: refused without asking again
    assert fake_openai.health_checks == 1
    fake_openai.status, fake_openai.health_status = None, 200  # the generator is back
    await asyncio.sleep(1.05)
    assert "".join(await collect(client)) == fake_openai.reply  # long before the 30 s reset
    assert not client.breaker_open
    await client.aclose()


async def test_a_healthy_probe_that_fails_reopens_the_breaker(fake_openai):
    fake_openai.status = 500  # /health says 200, but chat requests fail
    client = make_client(fake_openai.url, connect_retries=0, breaker_failures=1, breaker_reset_s=30.0)
    with pytest.raises(GeneratorUnavailable):
        await collect(client)
    await asyncio.sleep(1.05)
    with pytest.raises(GeneratorUnavailable):
        await collect(client)  # the probe went through and failed
    assert fake_openai.requests_started == 2
    with pytest.raises(GeneratorUnavailable):
        await collect(client)  # open again: refused without a request
    assert fake_openai.requests_started == 2 and client.breaker_open
    await client.aclose()
