"""Wiring: the services both front ends (Discord bot, console) run on, with their lifetimes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from campfire.config import Secrets, Settings, secrets_from_env

if TYPE_CHECKING:
    from model.client import GeneratorClient
    from model.tokens import TokenCounter
    from recsys.service import Recommender
    from recsys.store import Store


@dataclass
class Services:
    """Everything a front end needs; built by :func:`open_services` or by tests directly."""

    settings: Settings
    store: Store
    recommender: Recommender
    generator: GeneratorClient | None
    counter: TokenCounter


@asynccontextmanager
async def open_services(
    settings: Settings, secrets: Secrets | None = None, *, generator: bool = True
) -> AsyncIterator[Services]:
    """Open the store, load the embedder and indexes, and (unless ``generator=False``) connect to
    the generator — starting the embedded server when ``generator.url`` is empty. Everything is
    closed in reverse order on exit."""
    from model.generator import open_generator
    from model.tokens import TokenCounter
    from recsys.embed import load_embedder
    from recsys.service import Recommender
    from recsys.store import Store

    secrets = secrets or secrets_from_env()
    async with AsyncExitStack() as stack:
        store = await Store.open(settings.db_path)
        stack.push_async_callback(store.close)
        embedder = await load_embedder(settings.recsys)
        recommender = Recommender(store, embedder, settings)
        await recommender.start()
        stack.push_async_callback(recommender.aclose)
        client = await stack.enter_async_context(open_generator(settings, secrets)) if generator else None
        counter = TokenCounter(settings.generator.tokenizer_path or settings.generator_model_path)
        yield Services(settings=settings, store=store, recommender=recommender, generator=client, counter=counter)
