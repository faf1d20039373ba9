"""``campfire serve``: transformers' own OpenAI-compatible server (``transformers serve
--continuous-batching``) on the prepared model, plus the few things Campfire needs that it lacks.

This is the ``transformers`` engine; :func:`run_server` picks the engine (:mod:`model.engine`: on a CPU,
llama.cpp's ``llama-server`` behind :mod:`model.llama_server`, which gives the same API).

We do not write an inference server: the app is transformers' (``transformers.cli.serving``:
``ModelManager``, ``GenerationState``, the chat-completion handler, ``build_server`` — the same pieces
``transformers serve`` assembles), pinned to the prepared folder (``force_model``), on ``cuda`` with
bf16 when a GPU is present, else the CPU, with the paged KV cache sized by
``generator.cb_memory_percent`` (``--cb-max-memory-percent``).

What transformers 5.24's ``serve`` lacks, and what this module adds (nothing else):

1. **Per-request sampling and repetition control under continuous batching.** Its CB manager is
   created by the *first* request with that request's generation config; later requests only pass
   ``max_new_tokens`` and ``eos_token_id``, so every reply would sample at the first request's
   temperature. CB does support per-request ``temperature``/``top_p`` (``per_request_processors`` +
   ``add_request(**logit_processor_kwargs)``); the serve layer never passes them. And CB drops
   ``RepetitionPenaltyLogitsProcessor`` and has no frequency/presence penalty. We forward each
   request's temperature and top-p, and add :class:`model.penalties.PenaltyProcessor`:
   ``frequency_penalty``, ``presence_penalty`` and the extra body field ``repetition_penalty`` (as vLLM
   and llama.cpp accept it) per request, and true greedy decoding at temperature 0
   (:mod:`model.server_cb`, :mod:`model.penalties`). CB then runs without async batching and CUDA
   graphs (the processor reads each request's tokens between batches).
2. **No context-length check**: an over-long prompt reaches the model. We answer HTTP 400
   "maximum context length is N tokens" (OpenAI's wording, which clients map to a context error) and
   clamp ``max_tokens`` to what is left of the window (``generator.context_tokens``).
3. **No ``data: [DONE]``** at the end of a stream (OpenAI, vLLM and llama.cpp send it; some clients
   wait for it). A small middleware appends it.
4. **Readiness**: the model loads at start but the CB worker and its cache only on the first request
   (seconds); we warm up before the port opens, so ``/health`` = 200 means a request will be served
   at once. (``/health`` itself exists and answers 503 ``cb_worker_dead`` when the worker has died; the
   supervisor restarts the process then — transformers does not recover on its own.)

5. **CPU sizing**: its default ``max_batch_tokens`` (8192) reserves ≈ 1.6 GB of float32 logits before
   any KV cache, and torch uses every core. We use 512 tokens per step, at most
   ``2 × max_concurrency`` requests per step, and half the cores (:func:`cpu_threads`). Measured here
   (bf16, ``cb_memory_percent`` 0.05): RSS ≈ 1.41 GB after warm-up (1.65 GB in float32).

6. **Metrics**: ``GET /metrics`` (Prometheus: requests, TTFT, tokens/s, queue depth, in progress;
   :mod:`model.server_metrics`).

7. **No U+FFFD in the stream**: upstream's detokeniser emits an invalid byte sequence (a model that
   starts a multi-byte character and does not finish it) as "\ufffd"; ours drops it
   (:mod:`model.detok`).

8. **``stop`` strings**: CB ignores them; the front applies them to what it sends
   (:mod:`model.server_stops`), and checks the request's fields as the llama.cpp engine's front does
   (:func:`model.penalty_check.check_request`: HTTP 400 with one line). ``user`` is accepted and ignored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

from campfire.config import Settings

log = logging.getLogger(__name__)

# Tokens per forward pass (prompt chunks + one per decoding request). transformers' default, 8192, reserves
# 8192 × vocab (49,152) float32 logits ≈ 1.6 GB before any KV cache: far over our memory target on a CPU.
MAX_BATCH_TOKENS = 512

def resolve_device(device: str) -> tuple[str, str]:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; always bf16 (the prepared folder's dtype).

    On this CPU bf16 decoded as fast as float32 with one thread (≈ 4 tok/s each, measured side by
    side under heavy sharing) and halves the weights and the paged cache (RSS ≈ 1.65 GB → see note).
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device, "bfloat16"


def cpu_threads(settings: Settings | None = None) -> int:
    """Torch threads on the CPU: :func:`model.engine.generator_threads` (``generator.threads``, else
    ``CAMPFIRE_GENERATOR_THREADS``, else the free cores less one for the bot on ≤ 4 cores, less two above).

    Not every core, because the bot (embedding, FAISS) shares the machine in the embedded mode, and
    torch's OpenMP threads busy-wait: oversubscribed, decoding here went from ≈ 0.3 s to ≈ 3–5 s per token.
    """
    from model.engine import generator_threads

    return generator_threads((settings or Settings()).generator)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _add_done_marker(app: Any) -> None:
    """Append ``data: [DONE]`` to every streamed chat completion (point 3 of the module docstring)."""
    from fastapi import Request

    @app.middleware("http")
    async def _done_marker(request: Request, call_next):
        response = await call_next(request)
        if request.url.path.endswith("/chat/completions") and response.headers.get("content-type", "").startswith(
            "text/event-stream"
        ):
            body = response.body_iterator

            async def with_done():
                async for chunk in body:
                    yield chunk
                yield b"data: [DONE]\n\n"

            response.body_iterator = with_done()
        return response


def _add_warmup(app: Any, chat: Any, folder: Path, device: str, dtype: str) -> None:
    """Warm the CB worker up in the app's lifespan, before the port opens (point 4)."""
    original_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app_):
        warm = {"model": str(folder), "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "stream": False}
        await chat.handle_request(warm, "campfire-warmup")
        log.info("generator ready: %s on %s (%s)", folder, device, dtype)
        async with original_lifespan(app_):
            yield

    app.router.lifespan_context = lifespan


def build_app(settings: Settings):
    """Assemble transformers' serving app on ``settings.generator_model_path`` (loads the model: seconds).

    Returns the FastAPI app, with ``GET /metrics`` (:mod:`model.server_metrics`); its lifespan warms the
    continuous-batching worker up before serving. Raises :class:`model.prepare.ModelNotFound` when the
    folder is not prepared.
    """
    from model.prepare import ModelNotFound, is_prepared

    gen = settings.generator
    folder = settings.generator_model_path
    if not is_prepared(folder):
        raise ModelNotFound(f"no prepared model at {folder}: run `campfire model prepare` first")

    from transformers import ContinuousBatchingConfig
    from transformers.cli.serving.completion import CompletionHandler
    from transformers.cli.serving.model_manager import ModelManager
    from transformers.cli.serving.response import ResponseHandler
    from transformers.cli.serving.server import build_server
    from transformers.cli.serving.systemone import SystemOneHandler
    from transformers.cli.serving.transcription import TranscriptionHandler

    from model.server_cb import (
        chat_handler_class,
        generation_state,
        scheduler_queue_depth,
    )
    from model.server_metrics import add_metrics

    device, dtype = resolve_device(gen.device)
    if device == "cpu":
        import torch

        torch.set_num_threads(cpu_threads(settings))
    manager = ModelManager(device=device, dtype=dtype, continuous_batching=True, force_model=str(folder))
    cb_config = ContinuousBatchingConfig(
        max_memory_percent=gen.cb_memory_percent,
        max_batch_tokens=MAX_BATCH_TOKENS,
        max_requests_per_batch=max(16, 2 * gen.max_concurrency),
        per_request_processors=True,
        use_async_batching=False,  # model.penalties reads each request's tokens between batches
        use_cuda_graph=False,
    )
    state = generation_state(cb_config, gen.context_tokens)
    chat = chat_handler_class()(model_manager=manager, generation_state=state)
    app = build_server(
        manager,
        chat,
        completion_handler=CompletionHandler(model_manager=manager, generation_state=state),
        response_handler=ResponseHandler(model_manager=manager, generation_state=state),
        transcription_handler=TranscriptionHandler(manager, state),
        systemone_handler=SystemOneHandler(model_manager=manager, generation_state=state),
        generation_state=state,
    )
    _add_done_marker(app)
    add_metrics(app, queue_depth=lambda: scheduler_queue_depth(state))
    _add_warmup(app, chat, folder, device, dtype)
    return app


def build_engine_app(settings: Settings):
    """The app of the engine :func:`model.engine.resolve_engine` picks for ``settings``: ``(app, engine)``.
    ``llama.cpp``: :func:`model.llama_server.build_llama_app` on the folder's GGUF (``/v1/models`` lists
    the folder path, as transformers does); ``transformers``: :func:`build_app`. Logs the choice in one
    line. Raises RuntimeError (an explicit ``llama.cpp`` that cannot run) or ``ModelNotFound``."""
    from model.engine import gguf_of, resolve_engine

    folder = Path(settings.generator_model_path)
    engine, reason = resolve_engine(settings.generator, folder)
    log.info("generator engine: %s (%s)", engine, reason)
    if engine == "llama.cpp":
        from model.build_llama import server_binary
        from model.llama_server import build_llama_app

        return build_llama_app(settings, server_binary(), gguf_of(folder), str(folder)), engine
    return build_app(settings), engine


def run_server(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    """Serve the prepared model until interrupted (``campfire serve``) on the engine ``generator.engine``
    selects (:mod:`model.engine`). Returns an exit code.

    ``host``/``port`` default to ``generator.host``/``generator.port``; port 0 picks a free port, which
    is printed. Exit code 2 with one line when the model folder is missing or the engine cannot run.
    """
    import uvicorn

    from model.prepare import ModelNotFound

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    host = host or settings.generator.host
    port = settings.generator.port if port is None else port
    if port == 0:
        port = free_port(host)
    try:
        app, engine = build_engine_app(settings)
    except (ModelNotFound, RuntimeError) as err:
        print(f"campfire serve: {err}")
        return 2
    print(f"campfire serve: OpenAI-compatible API at http://{host}:{port}/v1 "
          f"(model {settings.generator_model_path}, engine {engine})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m model.server [--host H] [--port P] [--config PATH] [--data-dir DIR] [--engine E]`` — what the
    embedded supervisor runs (the same as ``campfire serve``, without importing the CLI). Settings
    come from ``--config``/``./config.toml``, ``CAMPFIRE_*`` environment variables and ``--data-dir``.
    Returns the exit code: 2 with one line on stderr for a configuration error or a missing model."""
    import argparse
    import sys

    from campfire.config import ConfigError, load_settings
    from model.supervisor import exit_with_parent

    exit_with_parent()
    parser = argparse.ArgumentParser(prog="python -m model.server", description="Campfire's generator server")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--config")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--engine", choices=["auto", "transformers", "llama.cpp"])
    args, _ = parser.parse_known_args(argv)
    try:
        settings = load_settings(args.config, data_dir=args.data_dir)
    except ConfigError as err:
        print(f"campfire serve: {err}", file=sys.stderr)
        return 2
    if args.engine:
        settings = settings.model_copy(update={"generator": settings.generator.model_copy(update={"engine": args.engine})})
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "httpcore", "urllib3", "transformers"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        return run_server(settings, host=args.host, port=args.port)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
