"""The continuous-batching pieces :mod:`model.server` puts into transformers' serving app: per-request
sampling and repetition control, the context-length check, and a stream that never emits U+FFFD.

Imports transformers' serving modules: call :func:`chat_handler_class` / :func:`generation_state`
from ``model.server.build_app`` only (not at import time of anything the bot loads).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
from typing import Any

from model.penalties import Penalties

# Base sampling of the shared CB config: values must differ from None/1.0 so transformers builds the
# temperature and top-p processors, which then read each request's own value.
BASE_TEMPERATURE = 0.7
BASE_TOP_P = 0.95
# Temperature 0 is served greedy (model.penalties: every logit but the best → −inf); the temperature
# processor still needs a positive divisor.
MIN_TEMPERATURE = 0.05

_request_sampling: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("campfire_sampling", default=None)
_request_penalties: contextvars.ContextVar[Penalties | None] = contextvars.ContextVar("campfire_penalties", default=None)


def chat_handler_class():
    """transformers' ``ChatCompletionHandler`` that takes ``frequency_penalty``, ``presence_penalty`` and
    the extra field ``repetition_penalty`` out of the body (HTTP 400 for a bad value) and hands them to
    the CB manager of this request (:func:`generation_state`)."""
    from fastapi import HTTPException
    from starlette.responses import JSONResponse, StreamingResponse
    from transformers.cli.serving.chat_completion import ChatCompletionHandler

    from model.penalties import pop_penalties
    from model.penalty_check import check_request
    from model.server_stops import cut_reply, filter_stream, pop_stops

    class _ChatHandler(ChatCompletionHandler):
        async def handle_request(self, body: dict, request_id: str):
            body = dict(body)
            try:
                check_request(body)
                penalties = pop_penalties(body)
            except ValueError as err:
                raise HTTPException(status_code=400, detail=str(err)) from None
            _request_penalties.set(penalties)
            stops = pop_stops(body)
            response = await super().handle_request(body, request_id)
            if not stops:
                return response
            if isinstance(response, StreamingResponse):
                response.body_iterator = filter_stream(response.body_iterator, stops)
                return response
            payload = cut_reply(json.loads(response.body), stops)
            return JSONResponse(payload, status_code=response.status_code)

    return _ChatHandler


def _streamer_class():
    """transformers' ``CBStreamer`` decoding with :class:`model.detok.SafeDecodeStream` (no U+FFFD; the
    bytes held back at the end are flushed when complete)."""
    from transformers.cli.serving.utils import CBStreamer, response_events_to_chunks

    from model.detok import SafeDecodeStream

    class _CleanStreamer(CBStreamer):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._decode_stream = SafeDecodeStream(skip_special_tokens=self._parser is None)

        def end(self) -> None:
            tail = self._decode_stream.flush(self._tokenizer)
            if tail and self._parser is None:
                self._queue.put_nowait(tail)
            elif tail:
                for item in response_events_to_chunks(self._parser.feed(tail)):
                    self._queue.put_nowait(item)
            super().end()

    return _CleanStreamer


def _cb_manager_class(context_tokens: int):
    """transformers' CB manager with per-request sampling and penalties (:mod:`model.penalties`), a
    context-length check (HTTP 400 in OpenAI's wording, ``max_tokens`` clamped to the window) and the
    clean streamer."""
    from fastapi import HTTPException
    from transformers.cli.serving.utils import CBGenerateManager

    from model.detok import clean_text
    from model.penalties import install

    streamer_class = _streamer_class()

    class _PerRequestCBManager(CBGenerateManager):
        def init_cb(self, model, gen_config) -> None:
            if self._cb is not None:
                return
            base = gen_config.__class__.from_dict(gen_config.to_dict())
            base.do_sample = True
            base.temperature = BASE_TEMPERATURE
            base.top_p = BASE_TOP_P
            base.repetition_penalty = None  # CB drops it; model.penalties does it per request
            self._cb = model.init_continuous_batching(generation_config=base, continuous_batching_config=self._cb_config)
            install(self._cb.logit_processor)  # before start(): the worker sizes its tensors from it
            self._cb.start()
            original = self._cb.add_request

            def add_request(*args, **kwargs):
                return original(*args, **{**(_request_sampling.get() or {}), **kwargs})

            self._cb.add_request = add_request

        def _prepare(self, inputs: dict, gen_config) -> None:
            prompt = len(inputs["input_ids"])
            if prompt >= context_tokens:
                raise HTTPException(
                    status_code=400,
                    detail=f"This model's maximum context length is {context_tokens} tokens; the prompt has {prompt}.",
                )
            wanted = gen_config.max_new_tokens or context_tokens
            gen_config.max_new_tokens = min(wanted, context_tokens - prompt)
            temperature = gen_config.temperature if gen_config.temperature is not None else BASE_TEMPERATURE
            sampling: dict[str, Any] = {
                "temperature": float(max(temperature, MIN_TEMPERATURE)),
                "top_p": float(gen_config.top_p if gen_config.top_p is not None else 1.0),
                **(_request_penalties.get() or Penalties()).kwargs(),
            }
            if temperature <= 0:
                sampling["greedy"] = True
            _request_sampling.set(sampling)

        def generate_streaming(self, model, processor, inputs, gen_config, request_id, response_parser=None):
            """Upstream's ``CBGenerateManager.generate_streaming`` (transformers 5.24) with our streamer."""
            self._prepare(inputs, gen_config)
            if self._cb is None:
                raise RuntimeError("CB manager not initialized. Call `init_cb()` first.")
            self._check_alive(request_id)
            return _start_stream(self._cb, streamer_class, processor, inputs, gen_config, request_id, response_parser)

        async def generate_non_streaming(self, model, processor, inputs, gen_config, request_id):
            self._prepare(inputs, gen_config)
            text, prompt_len, ids = await super().generate_non_streaming(model, processor, inputs, gen_config, request_id)
            return clean_text(text), prompt_len, ids

    return _PerRequestCBManager


def _start_stream(cb, streamer_class, processor, inputs, gen_config, request_id, response_parser):
    """Add a streaming request to the CB manager ``cb``; returns ``(text queue, streamer)`` as upstream."""
    from transformers.cli.serving.utils import _StreamError

    loop = asyncio.get_running_loop()
    text_queue: asyncio.Queue = asyncio.Queue()
    request_id = cb.add_request(inputs["input_ids"], request_id=request_id, streaming=True,
                                max_new_tokens=gen_config.max_new_tokens, eos_token_id=gen_config.eos_token_id)
    rust_tokenizer = getattr(processor, "tokenizer", processor)._tokenizer
    streamer = streamer_class(cb, request_id, rust_tokenizer, loop, text_queue, response_parser=response_parser)

    def _on_output(output):
        try:
            streamer.put(output)
            if output.error is not None:
                text_queue.put_nowait(_StreamError(output.error))
                streamer.end()
            elif output.is_finished():
                streamer.end()
        except Exception as e:  # noqa: BLE001 — upstream's contract: any failure ends the stream as an SSE error
            text_queue.put_nowait(_StreamError(str(e)))

    cb.register_result_handler(request_id, _on_output)
    return text_queue, streamer


def generation_state(cb_config, context_tokens: int):
    """transformers' ``GenerationState`` creating our CB manager (:func:`_cb_manager_class`)."""
    from transformers.cli.serving.utils import GenerationState

    manager_class = _cb_manager_class(context_tokens)

    class _State(GenerationState):
        def get_manager(self, model_id: str, use_cb: bool = False):
            if use_cb and self._cb_manager is None:
                self._cb_manager = manager_class(cb_config=self._cb_config)
                self._cb_model_id = model_id
            return super().get_manager(model_id, use_cb)

    return _State(continuous_batching=True, cb_config=cb_config)


def scheduler_queue_depth(state: Any) -> int:
    """Requests accepted by the CB worker but not yet running (its input queue + scheduler's waiting
    list); 0 before the worker exists. Reads another thread's state: approximate, never raises."""
    cb = getattr(getattr(state, "_cb_manager", None), "_cb", None)
    if cb is None:
        return 0
    depth = 0
    with contextlib.suppress(Exception):
        depth += cb.input_queue.qsize()
    with contextlib.suppress(Exception):
        depth += len(cb.batch_processor.scheduler.waiting_requests)
    return depth
