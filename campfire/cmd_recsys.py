"""``campfire import``, ``import-items``, ``digest`` and ``eval``.

These commands open the application without its generator (``open_app(settings, generator=False)``). Heavy imports (torch,
faiss, sentence-transformers) happen inside the handlers, so ``campfire --help`` stays instant.
Human output goes to stdout as rich tables; ``--json`` prints machine-readable JSON instead;
progress bars and errors go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from campfire.config import Settings

if TYPE_CHECKING:
    from campfire.app import App
    from campfire.features.types import DigestRun


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """Flags of ``campfire import``, ``import-items``, ``digest`` and ``eval`` (called by
    :func:`campfire.cli.build_parser`)."""
    if command == "import":
        parser.add_argument("paths", nargs="+", metavar="PATH", help="DiscordChatExporter JSON files or folders")
        parser.add_argument("--quiet", action="store_true", help="no progress bars")
        parser.add_argument("--replace-channel", action="store_true",
                            help="each export is its channel's whole truth for its date range: messages of that "
                                 "channel held for that range and missing from the export are removed (deleted "
                                 "on Discord); one export per channel")
    elif command == "import-items":
        parser.add_argument("file", metavar="FILE.jsonl", help="JSON lines: id, title, text, url, tags, rating")
        parser.add_argument("--guild", type=int, default=None, help="guild id (default: the only guild in the store)")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
    elif command == "digest":
        parser.add_argument("--guild", type=int, default=None, help="guild id (default: every guild)")
        parser.add_argument("--date", default=None, help="guild-local date YYYY-MM-DD (default: today there)")
        parser.add_argument("--dry-run", action="store_true", help="compute picks without recording them")
        parser.add_argument("--all-members", action="store_true",
                            help="with --dry-run: every member with ≥ 3 interactions, not only subscribers")
        parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
        parser.add_argument("-k", type=int, default=None, help="picks per member (default recsys.picks_per_member)")
    elif command == "eval":
        parser.add_argument("--interactions", required=True, metavar="CSV",
                            help="user_id, question_id (item id), kind, timestamp")
        parser.add_argument("--items", required=True, metavar="JSONL", help="question_id, title, tags, body_text, created")
        parser.add_argument("--k", type=int, default=10, help="cut-off K of Recall@K and NDCG@K (default 10)")
        parser.add_argument("--protocol", choices=["others", "time", "static"], default="others",
                            help="others: hold out each user's last interaction with an item someone else "
                                 "authored, history = everything before it, never their own items (default); "
                                 "time: their last interaction of any kind; static: leave-last-out without time")
        parser.add_argument("--json", action="store_true", help="print one JSON object")


def _err(msg: str) -> None:
    print(f"campfire: {msg}", file=sys.stderr)


# ---- import ---------------------------------------------------------------------------------------
def _print_report(report: Any, what: str) -> None:
    print(f"{what}: {report.summary()}")
    for line in report.skipped:
        print(f"skipped {line}", file=sys.stderr)
    for line in report.errors:
        _err(line)
    for line in getattr(report, "notes", ()):
        _err(f"note: {line}")


async def import_exports(args: argparse.Namespace, settings: Settings) -> int:
    """``campfire import PATH... [--replace-channel]``: exit 0, or 1 when some file, message or field
    could not be imported (the rest was; one line each on stderr)."""
    from recsys.ingest import export_files, import_exports as run

    try:
        export_files(args.paths)
    except FileNotFoundError as err:
        _err(str(err))
        return 2
    from campfire.app import open_app

    async with open_app(settings, generator=False) as app:
        report = await run(app.recommender, args.paths, progress=not args.quiet, replace_channel=args.replace_channel)
    _print_report(report, "imported")
    return 1 if report.errors else 0


async def _default_guild(app: App) -> int | None:
    from campfire.features import digest

    guilds = await digest.guilds(app)
    if len(guilds) == 1:
        return guilds[0].id
    if not guilds:
        _err("the store has no guild yet: import an export first (`campfire import PATH`) or pass --guild ID")
    else:
        names = ", ".join(f"{g.id} ({g.name or 'unnamed'})" for g in guilds)
        _err(f"the store has several guilds; choose one with --guild ID: {names}")
    return None


async def import_items(args: argparse.Namespace, settings: Settings) -> int:
    """``campfire import-items FILE.jsonl [--guild ID]``: exit 0, 1 when some lines were bad, 2 on usage errors."""
    from pathlib import Path

    from campfire.app import open_app
    from campfire.features import digest
    from recsys.ingest import import_items as run

    if not Path(args.file).is_file():
        _err(f"no such file: {args.file}")
        return 2
    async with open_app(settings, generator=False) as app:
        guild_id = args.guild if args.guild is not None else await _default_guild(app)
        if guild_id is None:
            return 2
        if args.guild is not None and guild_id not in {g.id for g in await digest.guilds(app)}:
            _err(f"unknown guild {guild_id}: import its export first, or pass the id of a guild in the store")
            return 2
        report = await run(app.recommender, args.file, guild_id, progress=not args.quiet)
    _print_report(report, f"imported into guild {guild_id}")
    return 1 if report.errors else 0


# ---- digest ----------------------------------------------------------------------------------------
async def digest(args: argparse.Namespace, settings: Settings) -> int:
    """``campfire digest``: today's (or ``--date``'s) picks per member, per guild
    (:func:`campfire.features.digest.run`, the bot's daily post without sending)."""
    from campfire.app import open_app
    from campfire.features import digest as feature

    if args.all_members and not args.dry_run:
        _err("--all-members needs --dry-run: picks are only ever recorded for subscribed members")
        return 2
    if args.k is not None and not 1 <= args.k <= 25:
        _err("-k must be between 1 and 25")
        return 2
    runs: list[DigestRun] = []
    async with open_app(settings, generator=False) as app:
        rec = app.recommender
        if rec.pending():  # e.g. after a model change: rank on complete indexes, not half-embedded ones
            print(f"embedding {rec.pending()} stored texts first…", file=sys.stderr)
            await rec.flush()
        guilds = await feature.guilds(app)
        if args.guild is not None:
            guilds = [g for g in guilds if g.id == args.guild]
            if not guilds:
                _err(f"unknown guild {args.guild}")
                return 2
        for guild in guilds:
            try:
                runs.append(await feature.run(app, guild, args.date, dry_run=args.dry_run,
                                              all_members=args.all_members, k=args.k))
            except ValueError as err:
                _err(str(err))
                return 2
    if args.json:
        print(json.dumps([mp.to_json() for run in runs for mp in run.picks], ensure_ascii=False, indent=2))
        return 0
    _print_digest(runs, dry_run=args.dry_run)
    return 0


def _print_digest(runs: list[DigestRun], *, dry_run: bool) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from campfire.features.text import clip

    console = Console(soft_wrap=False)
    if not runs:
        console.print("no guilds in the store: import an export first (`campfire import PATH`)")
    for run in runs:
        mode = "dry run, nothing recorded" if dry_run else "recorded"
        console.print(f"[bold]{escape(str(run.guild.name or run.guild.id))}[/bold] — {run.date} — "
                      f"{len(run.picks)} member(s), {run.pick_count} pick(s) ({mode})", soft_wrap=True)
        table = Table(show_lines=False)
        for col, kw in (("member", {}), ("#", {"justify": "right"}), ("pick", {"overflow": "fold"}),
                        ("why", {"overflow": "fold"}), ("score", {"justify": "right"})):
            table.add_column(col, **kw)
        for mp in run.picks:
            for i, p in enumerate(mp.picks, 1):
                # member text is data, never rich markup
                people = getattr(p, "participants", 0)
                title = clip(p.title, 60, one_line=True) + (f" ({people} participants)" if people >= 2 else "")
                table.add_row(Text(mp.member if i == 1 else ""), str(i), Text(title), Text(p.reason), f"{p.score:.3f}")
        if run.picks:
            console.print(table)
        else:
            console.print("no member to pick for (nobody subscribed; try --dry-run --all-members)", soft_wrap=True)


# ---- eval ------------------------------------------------------------------------------------------
def evaluate(args: argparse.Namespace, settings: Settings) -> int:
    """``campfire eval``: Campfire and five baselines side by side (Recall@K, NDCG@K, MRR, coverage).
    Exit 2 on unreadable input or a bad option."""
    from pathlib import Path

    for p in (args.interactions, args.items):
        if not Path(p).is_file():
            _err(f"no such file: {p}")
            return 2
    if args.k < 1:
        _err("--k must be at least 1")
        return 2
    from recsys import eval as receval
    from recsys.embed import Embedder

    embedder = Embedder(settings.recsys.embedder or None, settings.recsys.embed_batch_size)
    try:
        result = receval.evaluate(
            args.interactions, args.items, k=args.k, protocol=args.protocol, embedder=embedder,
            half_life_days=settings.recsys.half_life_days, mmr_lambda=settings.recsys.mmr_lambda,
        )
    except ValueError as err:  # EvalInputError included: one line naming the file and line
        _err(str(err))
        return 2
    print(json.dumps(result, indent=2) if args.json else receval.format_table(result))
    return 0
