"""``campfire model prepare`` and ``campfire serve``."""

from __future__ import annotations

import argparse
import time

from campfire.config import Settings


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """Flags of ``campfire model`` and ``campfire serve`` (called by :func:`campfire.cli.build_parser`)."""
    if command == "model":
        parser.add_argument("action", choices=["prepare"], help="prepare: convert the packaged GGUF into a transformers folder")
        parser.add_argument("--force", action="store_true", help="convert again even if the folder exists")
        parser.add_argument("--gguf", default=None, help="GGUF file to convert (default: the packaged SmolLM2-135M-Instruct)")
        parser.add_argument("--no-smoke", action="store_true", help="skip the short test generation")
    elif command == "serve":
        parser.add_argument("--host", default=None, help="bind address (default generator.host, 127.0.0.1)")
        parser.add_argument("--port", type=int, default=None, help="port (default generator.port, 8000; 0 = any free port)")


def model(args: argparse.Namespace, settings: Settings) -> int:
    """``campfire model prepare``: convert the packaged GGUF into the transformers folder
    ``settings.generator_model_path`` (``model.prepare.prepare_model``), name the embedder, and run a
    short test generation unless ``--no-smoke``. Prints the seconds each step took; returns 0.
    Raises what ``prepare_model`` raises (``model.prepare.ModelNotFound`` for a missing GGUF)."""
    from model.prepare import packaged_embedder, prepare_model, smoke_generate

    target = settings.generator_model_path
    t0 = time.perf_counter()
    prepare_model(target, args.gguf, force=args.force)
    print(f"generator ready: {target} ({time.perf_counter() - t0:.1f} s)")
    embedder = settings.recsys.embedder or str(packaged_embedder())
    print(f"embedder ready: {embedder}")
    if not args.no_smoke:
        t0 = time.perf_counter()
        reply = smoke_generate(target)
        print(f"test reply ({time.perf_counter() - t0:.1f} s): {reply}")
    return 0


def serve(args: argparse.Namespace, settings: Settings) -> int:
    """``campfire serve [--host H] [--port P]``: the OpenAI-compatible generator server in the
    foreground (``model.server.run_server``); returns its exit code."""
    from model.server import run_server  # written with the generator issue

    return run_server(settings, host=args.host, port=args.port)
