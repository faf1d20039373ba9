"""``campfire model prepare`` / ``pull`` (``finetune`` and ``perplexity``: :mod:`campfire.cmd_finetune`) and ``campfire serve``."""

from __future__ import annotations

import argparse
import errno
import time

from campfire.config import Settings


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """Flags of ``campfire model`` and ``campfire serve`` (called by :func:`campfire.cli.build_parser`)."""
    if command == "model":
        parser.add_argument("action", choices=["prepare", "pull", "finetune", "perplexity"],
                            help="prepare: convert the packaged GGUF into a transformers folder; pull REPO: download a "
                                 "GGUF or transformers model from the Hugging Face Hub and prepare it; finetune: LoRA on "
                                 "rated stories into data/models/NAME; perplexity: score a model on stories")
        parser.add_argument("repo", nargs="?", default=None, help="pull: Hub repository id, e.g. Qwen/Qwen2.5-0.5B-Instruct-GGUF")
        pull = parser.add_argument_group("pull (campfire model pull REPO)")
        pull.add_argument("--file", default=None, help="the .gguf file of REPO (default: its only one, or Q4_K_M)")
        pull.add_argument("--revision", default="main", help="branch, tag or commit (default main)")
        pull.add_argument("--name", default=None, help="folder name under data/models (default: from the file or repo)")
        parser.add_argument("--force", action="store_true", help="convert again even if the folder exists")
        parser.add_argument("--gguf", default=None, help="GGUF file to convert (default: the packaged SmolLM2-135M-Instruct)")
        parser.add_argument("--no-smoke", action="store_true", help="skip the short test generation")
        from campfire.cmd_finetune import add_arguments as add_finetune_arguments

        add_finetune_arguments(parser)
    elif command == "serve":
        parser.add_argument("--host", default=None, help="bind address (default generator.host, 127.0.0.1)")
        parser.add_argument("--port", type=int, default=None, help="port (default generator.port, 8000; 0 = any free port)")
        parser.add_argument("--model", default=None, help="model folder, or a name under data/models (default generator.model_path)")
        parser.add_argument("--engine", choices=["auto", "transformers", "llama.cpp"], default=None,
                            help="auto (default generator.engine): transformers with continuous batching on CUDA, "
                                 "llama.cpp's llama-server on the model's GGUF on a CPU when built (make install)")


def model(args: argparse.Namespace, settings: Settings) -> int:
    """``campfire model finetune`` / ``perplexity``: see :mod:`campfire.cmd_finetune`.
    ``campfire model prepare``: convert the packaged GGUF into the transformers folder
    ``settings.generator_model_path`` (``model.prepare.prepare_model``), name the embedder, and run a
    short test generation unless ``--no-smoke``. Prints the seconds each step took; returns 0.
    Raises what ``prepare_model`` raises (``model.prepare.ModelNotFound`` for a missing GGUF)."""
    if args.action in ("finetune", "perplexity"):
        from campfire import cmd_finetune

        return getattr(cmd_finetune, args.action)(args, settings)
    if args.action == "pull":
        return pull(args, settings)
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


def pull(args: argparse.Namespace, settings: Settings) -> int:
    """``campfire model pull REPO [--file F] [--revision R] [--name N] [--force] [--no-smoke]``: download
    and prepare a model into ``data/models/<name>`` (:func:`model.pull.pull_model`; ``HF_ENDPOINT`` /
    ``HF_TOKEN`` honoured), then print how to serve it. Returns 0, or 2 with one line on a failure."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    from model.prepare import smoke_generate
    from model.pull import PullError, pull_model

    if not args.repo:
        print("campfire model pull: name a repository, e.g. `campfire model pull Qwen/Qwen2.5-0.5B-Instruct-GGUF`")
        return 2
    t0 = time.perf_counter()
    try:
        pulled = pull_model(args.repo, settings.models_dir, filename=args.file, revision=args.revision,
                            name=args.name, force=args.force)
    except OfflineModeIsEnabled:
        print("campfire model pull: HF_HUB_OFFLINE is set; unset it to download")
        return 2
    except (PullError, HfHubHTTPError, OSError) as err:
        print(f"campfire model pull: {str(err).splitlines()[0]}")
        return 2
    weights = ", ".join(f"{p} {h[:12]}…" for p, h in pulled.sha256.items() if p.endswith((".gguf", ".safetensors")))
    print(f"downloaded {pulled.bytes / 1e6:.1f} MB now; checked sha256: {weights}")
    languages = ", ".join(pulled.languages) or "unknown (set generator.languages)"
    print(f"generator ready: {pulled.folder} ({pulled.name}; languages: {languages}) ({time.perf_counter() - t0:.1f} s)")
    print(f'use it: [generator] model_path = "{pulled.folder}" in config.toml (or CAMPFIRE_GENERATOR__MODEL_PATH), '
          f"or `campfire serve --model {pulled.folder.name}`")
    if not args.no_smoke:
        t0 = time.perf_counter()
        reply = smoke_generate(pulled.folder)
        print(f"test reply ({time.perf_counter() - t0:.1f} s): {reply}")
    return 0


def port_problem(host: str, port: int) -> str | None:
    """Why ``campfire serve`` could not listen on ``host``:``port`` (TCP), in one line, or None when it can:
    checked by binding as uvicorn does (``SO_REUSEADDR``: connections still closing from an earlier run
    do not count) and closing at once — before the model loads (seconds), not after."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        return f"cannot listen on {host}: {err.strerror} (--host takes an address of this machine, e.g. 127.0.0.1)"
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
            probe.listen(1)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use (another `campfire serve`?): stop it or pass --port N (0 = any free port)"
            return f"cannot listen on {host}:{port}: {err.strerror}"
    return None


def serve(args: argparse.Namespace, settings: Settings) -> int:
    """``campfire serve [--host H] [--port P] [--model PATH|NAME] [--engine auto|transformers|llama.cpp]``: the
    OpenAI-compatible generator server in the foreground (``model.server.run_server``) on ``--model`` (a
    folder, or a name under ``data/models`` such as a ``campfire model finetune`` output) instead of
    ``generator.model_path``, on ``--engine`` instead of ``generator.engine`` (:mod:`model.engine`);
    returns its exit code."""
    from model.server import run_server  # written with the generator issue

    host = args.host or settings.generator.host
    port = settings.generator.port if args.port is None else args.port
    problem = port_problem(host, port) if port else None
    if problem:
        print(f"campfire serve: {problem}")
        return 2
    if getattr(args, "model", None):
        from campfire.cmd_finetune import model_folder

        folder = str(model_folder(settings, args.model))
        settings = settings.model_copy(update={"generator": settings.generator.model_copy(update={"model_path": folder})})
    if getattr(args, "engine", None):
        settings = settings.model_copy(update={"generator": settings.generator.model_copy(update={"engine": args.engine})})
    return run_server(settings, host=args.host, port=args.port)
