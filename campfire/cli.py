"""The ``campfire`` command line. Each subcommand takes ``--config`` and ``--data-dir``.

Handlers live beside the code they drive and are imported lazily, so ``campfire --help`` is instant.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from campfire.config import ConfigError, Settings, load_settings

# subcommand -> (module:function, one-line help). The function takes (args, settings) and returns an exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "console": ("campfire.cmd_console:main", "talk to Campfire in the terminal: chat, /story, /recommend, /digest (no Discord needed)"),
    "bot": ("bot.app:cli", "run the Discord bot (DISCORD_TOKEN from the environment)"),
    "serve": ("campfire.cmd_model:serve", "run the OpenAI-compatible generator server on the prepared model"),
    "import": ("campfire.cmd_recsys:import_exports", "import DiscordChatExporter JSON exports (files or folders)"),
    "import-items": ("campfire.cmd_recsys:import_items", "import a JSON-lines content catalogue (id, title, text, url, tags, rating)"),
    "digest": ("campfire.cmd_recsys:digest", "compute (and record) today's personalised picks"),
    "eval": ("campfire.cmd_recsys:evaluate", "offline evaluation: Recall@K, NDCG@K, MRR, coverage vs baselines"),
    "model": ("campfire.cmd_model:model", "manage models: `campfire model prepare` | `pull REPO` | `finetune` | `perplexity`"),
    "story": ("campfire.cmd_story:main", "write one story on THEME through /story's pipeline and print it (nothing is saved)"),
}

#: Commands that read or write under ``data_dir``: checked once, before the handler runs.
DATA_DIR_COMMANDS = frozenset({"console", "bot", "import", "import-items", "digest", "model"})
#: Commands whose output is for a member or a log file: Hugging Face progress bars always off.
NO_PROGRESS_BAR_COMMANDS = frozenset({"console", "bot"})
#: Third-party loggers kept at WARNING (httpx logs every request at INFO) unless log_level is DEBUG.
NOISY_LOGGERS = ("httpx", "httpcore", "urllib3", "huggingface_hub", "sentence_transformers", "transformers", "faiss", "filelock")


def version() -> str:
    """Campfire's installed version (package metadata), or ``"unknown"`` when run from a bare checkout."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version("campfire")
    except PackageNotFoundError:
        return "unknown"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="path to config.toml (default: ./config.toml when present)")
    p.add_argument("--data-dir", default=None, help="where Campfire keeps its database, indexes and models (default ./data, env CAMPFIRE_DATA_DIR)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only; no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The ``campfire`` parser: one subcommand per :data:`COMMANDS` entry, each with ``--config``,
    ``--data-dir``, ``-v`` and the flags its handler module declares (``add_arguments``)."""
    parser = argparse.ArgumentParser(prog="campfire", description="Campfire: an AI companion for Discord communities.")
    parser.add_argument("--version", action="version", version=f"campfire {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (target, help_text) in COMMANDS.items():
        # "resolve": a handler module may declare its own --quiet (same dest) over the common one
        p = sub.add_parser(name, help=help_text, description=help_text, conflict_handler="resolve")
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


def configure_logging(level: str | int, *, quiet: bool = False, progress_bars: bool = True) -> None:
    """Log to stderr at ``level`` (``--quiet``: WARNING at least). Third-party loggers
    (:data:`NOISY_LOGGERS`; httpx logs every request at INFO) stay at WARNING unless ``level`` is
    DEBUG. ``progress_bars=False`` turns off Hugging Face's (transformers' "Loading weights", hub
    downloads) in this process and in children such as the embedded generator."""
    root_level = logging.getLevelName(level) if isinstance(level, str) else level
    if quiet:
        root_level = max(root_level, logging.WARNING)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(root_level)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if root_level <= logging.DEBUG else max(logging.WARNING, root_level))
    if not progress_bars:
        disable_progress_bars()


def disable_progress_bars() -> None:
    """Hugging Face progress bars off: through the environment for modules not imported yet (and
    child processes), through their switches for those already imported (without importing them)."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is not None:
        hub.disable_progress_bars()
    tf_logging = sys.modules.get("transformers.utils.logging")
    if tf_logging is not None:
        tf_logging.disable_progress_bar()


class DataDirError(ConfigError):
    """The data dir cannot be created or written; ``str()`` is one line."""


def check_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` when missing and check that a file can be written in it; raise
    :class:`DataDirError` (one line naming the folder and how to choose another) otherwise."""
    hint = "choose a writable folder with --data-dir, CAMPFIRE_DATA_DIR or data_dir in config.toml"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataDirError(f"data dir {data_dir} is not a folder — {hint}") from None
    except OSError as err:
        raise DataDirError(f"cannot create data dir {data_dir}: {err.strerror or err} — {hint}") from None
    try:
        with tempfile.TemporaryFile(dir=data_dir, prefix=".campfire-write-check-"):
            pass
    except OSError as err:
        raise DataDirError(f"cannot write in data dir {data_dir}: {err.strerror or err} — {hint}") from None


def _under(path: str | bytes | None, folder: Path) -> bool:
    if not path or isinstance(path, bytes):
        return False
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(folder))
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Run ``campfire`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code: the
    handler's; 2 for a configuration error or an unusable data dir (one line on stderr, no
    traceback); 130 after Ctrl-C. No command prints the help and returns 0; ``--version`` prints
    the version."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    quiet = bool(getattr(args, "quiet", False))
    progress_bars = not quiet and args.command not in NO_PROGRESS_BAR_COMMANDS
    configure_logging(logging.DEBUG if args.verbose else logging.INFO, quiet=quiet, progress_bars=progress_bars)
    try:
        settings = load_settings(args.config, data_dir=args.data_dir)
    except ConfigError as err:
        print(f"campfire: {err}", file=sys.stderr)
        return 2
    if not args.verbose:
        configure_logging(settings.log_level, quiet=quiet, progress_bars=progress_bars)
    try:
        if args.command in DATA_DIR_COMMANDS:
            check_data_dir(settings.data_dir)
        handler = _resolve(COMMANDS[args.command][0])
        result = handler(args, settings)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
    except KeyboardInterrupt:
        return 130
    except ConfigError as err:
        print(f"campfire: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # the data dir went away or became read-only while running: one line, not a traceback
        if not (_under(err.filename, settings.data_dir) or _under(getattr(err, "filename2", None), settings.data_dir)):
            raise
        print(f"campfire: {err.strerror or err}: {err.filename} (data dir {settings.data_dir})", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
