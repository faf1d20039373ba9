"""The application: the engines every front end runs on, opened and closed together.

``open_app(settings)`` is the one thing a front end (the Discord bot, the console, the CLI's
commands) is handed. It holds the engines — the SQLite store, the recommender facade (embedder and
FAISS indexes), the generator client and the token counter — and nothing Discord- or
terminal-specific. The use cases live in :mod:`campfire.features` as plain functions taking the
:class:`App` first (``await stories.tell(app, request, ...)``); front ends adapt their inputs to
those calls and render the results.

Shape follows vLLM's OpenAI entrypoint (the engine is built once and handed to thin routes) and
discord.py's ``examples/advanced_startup.py`` (the bot receives its typed dependencies in its
constructor).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from campfire.config import Secrets, Settings, secrets_from_env

if TYPE_CHECKING:
    from model.client import GeneratorClient
    from model.tokens import TokenCounter
    from recsys.service import Recommender
    from recsys.store import Store


@dataclass
class App:
    """Everything a front end needs; built by :func:`open_app` or, in tests, directly.

    ``generator`` is None when the app was opened with ``generator=False`` (import, digest, eval).
    ``timings`` holds the seconds each part took to get ready in :func:`open_app`: ``store``,
    ``embedder``, ``indexes``, ``tokenizer``, ``generator`` (for the embedded server: starting the
    child process and loading the model).
    """

    settings: Settings
    store: Store
    recommender: Recommender
    generator: GeneratorClient | None
    counter: TokenCounter
    timings: dict[str, float] = field(default_factory=dict)


@asynccontextmanager
async def open_app(settings: Settings, secrets: Secrets | None = None, *, generator: bool = True) -> AsyncIterator[App]:
    """Open the store, load the embedder and indexes, and (unless ``generator=False``) connect to
    the generator — starting the embedded server when ``generator.url`` is empty, concurrently with
    the rest. Everything is closed in reverse order on exit.

    Raises what the parts raise: :class:`model.errors.GeneratorUnavailable` when the embedded
    server cannot start, :class:`recsys.embed.EmbedderNotFound` for a missing embedder folder."""
    from model.generator import open_generator
    from model.tokens import TokenCounter
    from recsys.embed import load_embedder
    from recsys.service import Recommender
    from recsys.store import Store

    secrets = secrets or secrets_from_env()
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    async with AsyncExitStack() as stack:
        # The generator (for the embedded server: a child process loading the model) gets ready
        # while this process loads the embedder and indexes.
        async def start_generator() -> GeneratorClient:
            t0 = time.perf_counter()
            client = await stack.enter_async_context(open_generator(settings, secrets))
            timings["generator"] = time.perf_counter() - t0
            return client

        gen_task = asyncio.create_task(start_generator(), name="campfire-open-generator") if generator else None
        try:
            store = await Store.open(settings.db_path)
            stack.push_async_callback(store.close)
            lap("store")
            embedder = await load_embedder(settings.recsys)
            lap("embedder")
            recommender = Recommender(store, embedder, settings)
            await recommender.start()
            stack.push_async_callback(recommender.aclose)
            lap("indexes")
            # loading a tokenizer reads files and builds tables: off the event loop
            counter = await asyncio.to_thread(TokenCounter, settings.generator.tokenizer_path or settings.generator_model_path)
            lap("tokenizer")
        except BaseException:
            if gen_task is not None:  # let it finish entering, so the stack stops what it started
                await asyncio.gather(gen_task, return_exceptions=True)
            raise
        client = await gen_task if gen_task is not None else None
        # what start-up loaded (the embedder, libraries, indexes) lives as long as the app: moved out of
        # the collector's sight, so a full collection — triggered on whichever thread allocates, the
        # event loop's included — walks only what requests create (gc.freeze, Python ≥ 3.7)
        gc.collect()
        gc.freeze()
        yield App(settings=settings, store=store, recommender=recommender, generator=client, counter=counter, timings=timings)
