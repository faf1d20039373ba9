"""The ``campfire`` command line. Each subcommand takes ``--config`` and ``--data-dir``.

Handlers live beside the code they drive and are imported lazily, so ``campfire --help`` is instant.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

from campfire.config import ConfigError, Settings, load_settings

# subcommand -> (module:function, one-line help). The function takes (args, settings) and returns an exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "console": ("campfire.console:main", "talk to Campfire in the terminal: chat, /story, /recommend, /digest (no Discord needed)"),
    "bot": ("bot.app:cli", "run the Discord bot (DISCORD_TOKEN from the environment)"),
    "serve": ("campfire.cmd_model:serve", "run the OpenAI-compatible generator server on the prepared model"),
    "import": ("campfire.cmd_recsys:import_exports", "import DiscordChatExporter JSON exports (files or folders)"),
    "import-items": ("campfire.cmd_recsys:import_items", "import a JSON-lines content catalogue (id, title, text, url, tags, rating)"),
    "digest": ("campfire.cmd_recsys:digest", "compute (and record) today's personalised picks"),
    "eval": ("campfire.cmd_recsys:evaluate", "offline evaluation: Recall@K, NDCG@K, MRR, coverage vs baselines"),
    "model": ("campfire.cmd_model:model", "manage models: `campfire model prepare`"),
}


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="path to config.toml (default: ./config.toml when present)")
    p.add_argument("--data-dir", default=None, help="where Campfire keeps its database, indexes and models (default ./data, env CAMPFIRE_DATA_DIR)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")


def build_parser() -> argparse.ArgumentParser:
    """The ``campfire`` parser: one subcommand per :data:`COMMANDS` entry, each with ``--config``,
    ``--data-dir``, ``-v`` and the flags its handler module declares (``add_arguments``)."""
    parser = argparse.ArgumentParser(prog="campfire", description="Campfire: an AI companion for Discord communities.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (target, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_common(p)
        module_name = target.split(":")[0]
        # each handler module may declare its own arguments: add_arguments(name, parser)
        adder = _lazy_arguments(module_name)
        if adder is not None:
            adder(name, p)
    return parser


def _lazy_arguments(module_name: str) -> Callable[[str, argparse.ArgumentParser], None] | None:
    """A handler module declares its flags with ``add_arguments(command, parser)``; its top-level
    imports must stay light (torch, faiss, discord load inside the handler)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:  # a broken optional part must not break `campfire --help`
        logging.getLogger(__name__).debug("cannot import %s: %s", module_name, err)
        return None
    return getattr(module, "add_arguments", None)


def _resolve(target: str) -> Callable[[argparse.Namespace, Settings], Any]:
    module_name, func = target.split(":")
    return getattr(importlib.import_module(module_name), func)


def main(argv: list[str] | None = None) -> int:
    """Run ``campfire`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code: the
    handler's, 2 for a configuration error (one line on stderr), 130 after Ctrl-C. No command
    prints the help and returns 0."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = load_settings(args.config, data_dir=args.data_dir)
    except ConfigError as err:
        print(f"campfire: {err}", file=sys.stderr)
        return 2
    if not args.verbose:
        logging.getLogger().setLevel(settings.log_level)
    for noisy in ("httpx", "httpcore", "urllib3", "sentence_transformers", "transformers", "faiss"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    handler = _resolve(COMMANDS[args.command][0])
    try:
        result = handler(args, settings)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
    except KeyboardInterrupt:
        return 130
    except ConfigError as err:
        print(f"campfire: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
