"""``campfire model finetune`` and ``campfire model perplexity``: the command-line glue between a
community's stories (a guild in ``campfire.db`` through :mod:`recsys.rated_stories`, or a JSON-lines
file) and the training in :mod:`model.finetune` / scoring in :mod:`model.perplexity`.

Both are registered as actions of ``campfire model`` (:mod:`campfire.cmd_model`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

from campfire.config import Settings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Training stories must match their theme (cosine of theme and opening, all-MiniLM-L6-v2) at least this
#: much: stories that ignore their theme teach the model to ignore it. On the SCP tales (median title–
#: opening cosine 0.22) bench.story_quality's on-theme cosine (English, mean of its two pipelines) was
#: 0.54 for the base model, 0.38 tuned on all tales, 0.48 on those ≥ 0.25, 0.54 on those ≥ 0.35.
THEME_MATCH = 0.35
OPENING_CHARS = 2000  # the part of a story compared with its theme


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``campfire model finetune`` and ``campfire model perplexity``."""
    g = parser.add_argument_group("finetune (campfire model finetune)")
    g.add_argument("--guild", type=int, default=None, help="train on this guild's stories and catalogue items rated up")
    g.add_argument("--items", default=None, help="train on a JSON-lines file of stories (title, text, rating)")
    g.add_argument("--min-rating", type=float, default=0.0, help="keep stories rated above this (default 0)")
    g.add_argument("--base", default=None, help="model folder or name under data/models to tune (default: the prepared model)")
    g.add_argument("--out", default=None, help="name of the new folder under data/models (default: tuned-<source>)")
    g.add_argument("--epochs", type=float, default=1.0, help="passes over the training stories (default 1)")
    g.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    g.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default 16)")
    g.add_argument("--lora-layers", type=int, default=None, help="adapt only the top N layers (default: all)")
    g.add_argument("--learning-rate", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    g.add_argument("--batch-size", type=int, default=4, help="stories per optimizer step (default 4)")
    g.add_argument("--min-stories", type=int, default=None, help="refuse with fewer stories than this (default 20)")
    g.add_argument("--threads", type=int, default=None, help="torch threads on the CPU (default: the free cores)")
    g.add_argument("--restart", action="store_true", help="discard a checkpoint of an earlier run and start over")
    g.add_argument("--licence", default=None, help="licence of the training texts, for the model card")
    g.add_argument("--gguf", choices=["q8_0", "q4_1", "none"], default="q8_0",
                   help="also export the merged model as a GGUF for the llama.cpp engine (default q8_0: as fast as the "
                        "base Q4_1 or faster; q4_1: the base's own types, needs llama-quantize; none: bf16 folder only)")
    g.add_argument("--theme-match", type=float, default=THEME_MATCH,
                   help=f"train only on stories whose opening matches their theme: cosine ≥ this with the embedder "
                        f"(default {THEME_MATCH}; 0 = keep all)")
    p = parser.add_argument_group("perplexity (campfire model perplexity)")
    p.add_argument("--model", default=None, help="model folder or name under data/models (default: the served model)")
    p.add_argument("--texts", default=None, help="JSON-lines stories to score (title, text)")
    p.add_argument("--split", choices=["all", "held-out", "train"], default="all",
                   help="score only the stories a finetune with --held-out-share holds out (or trains on)")
    p.add_argument("--limit", type=int, default=None, help="score at most this many stories")
    p.add_argument("--json", action="store_true", help="print {model, texts, tokens, loss, perplexity} as JSON")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per story, prompt included (default 512)")
    parser.add_argument("--held-out-share", type=float, default=0.1, help="share of stories held out by id hash (default 0.1)")


def model_folder(settings: Settings, value: str | None) -> Path:
    """``value`` as a model folder: an existing path, else a name under ``data/models``; None = the model
    ``generator.model_path`` selects (the prepared one by default)."""
    if not value:
        return settings.generator_model_path
    path = Path(value).expanduser()
    return path if path.exists() or path.is_absolute() or len(path.parts) > 1 else settings.models_dir / value


def prepared_folder(settings: Settings) -> Path:
    """The prepared (untuned) model's folder, whatever ``generator.model_path`` serves now."""
    return settings.model_copy(update={"generator": settings.generator.model_copy(update={"model_path": ""})}).generator_model_path


async def guild_stories(settings: Settings, guild_id: int, min_rating: float) -> list[Any]:
    """The guild's stories rated above ``min_rating`` (:func:`recsys.rated_stories.rated_stories`) as
    :class:`model.finetune_data.Story` objects."""
    from model.finetune_data import Story
    from recsys.rated_stories import rated_stories
    from recsys.store import Store

    if not settings.db_path.is_file():
        return []
    async with Store.connect(settings.db_path) as store:
        rows = await rated_stories(store, guild_id, min_rating=min_rating)
    return [Story(id=r.id, title=r.title, text=r.text, rating=r.score, theme=r.theme, genre=r.genre,
                  length=r.length, language=r.language, credit=r.credit) for r in rows]


def on_theme(settings: Settings, stories: list[Any], threshold: float) -> set[str]:
    """Ids of ``stories`` whose opening (:data:`OPENING_CHARS` characters) has a cosine ≥ ``threshold``
    with their theme (or title), both embedded by the recommender's embedder (``recsys.embedder``, by
    default the packaged all-MiniLM-L6-v2)."""
    from recsys.embed import Embedder

    embedder = Embedder(settings.recsys.embedder or None)
    themes = embedder.encode([s.theme or s.title for s in stories])
    openings = embedder.encode([s.text[:OPENING_CHARS] for s in stories])
    cosines = (themes * openings).sum(axis=1)
    return {s.id for s, c in zip(stories, cosines, strict=True) if c >= threshold}


def _stories(args: argparse.Namespace, settings: Settings) -> tuple[list[Any], str]:
    from model.finetune_data import read_stories

    if (args.guild is None) == (args.items is None):
        raise _Usage("choose the stories: --guild ID or --items FILE.jsonl (one of them)")
    if args.items:
        return read_stories(args.items, min_rating=args.min_rating), f"file {Path(args.items).name}"
    return asyncio.run(guild_stories(settings, args.guild, args.min_rating)), f"guild {args.guild}"


class _Usage(ValueError):
    """A command-line mistake: one line on stderr, exit code 2."""


def _config(args: argparse.Namespace, settings: Settings) -> Any:
    from model.finetune import FinetuneConfig
    from model.finetune_guard import MIN_STORIES

    name = args.out or ("tuned-" + (f"guild-{args.guild}" if args.guild is not None else Path(args.items).stem))
    name = name.replace("_", "-")
    if not _NAME.match(name):
        raise _Usage(f"--out must be a folder name (letters, digits, . _ -): {args.out!r}")
    base = model_folder(settings, args.base) if args.base else prepared_folder(settings)
    out = settings.models_dir / name
    if out.resolve() == base.resolve():
        raise _Usage(f"--out {name} is the base model's folder; choose another name")
    for flag, value in (("--max-steps", args.max_steps), ("--lora-r", args.lora_r), ("--batch-size", args.batch_size),
                        ("--epochs", args.epochs), ("--max-length", args.max_length)):
        if value is not None and value <= 0:
            raise _Usage(f"{flag} must be positive")
    if not 0 < args.held_out_share <= 0.5:
        raise _Usage("--held-out-share must be above 0 and at most 0.5")
    return FinetuneConfig(
        base=base, out=out, epochs=args.epochs, max_steps=args.max_steps, lora_r=args.lora_r, lora_layers=args.lora_layers,
        learning_rate=args.learning_rate, batch_size=args.batch_size, max_length=args.max_length,
        held_out_share=args.held_out_share, min_stories=args.min_stories or MIN_STORIES, threads=args.threads,
        restart=args.restart,
    )


def finetune(args: argparse.Namespace, settings: Settings) -> int:
    """``campfire model finetune``: select the stories, check, train, merge and write
    ``data/models/NAME`` and its GGUF (``--gguf``, :mod:`model.export_gguf`; a failed export is one line
    and exit 0: the bf16 folder serves on transformers); prints the figures and how to serve it. Exit codes: 0 done; 2 a refusal or
    usage error (one line on stderr); 130 cancelled with Ctrl-C (the checkpoint kept: the same command
    resumes)."""
    from model.finetune import FinetuneCancelled, describe, prepare
    from model.finetune import finetune as run
    from model.finetune_ckpt import CheckpointMismatch
    from model.finetune_data import BadStoriesFile
    from model.finetune_guard import FinetuneRefused
    from model.prepare import is_prepared

    try:
        stories, source = _stories(args, settings)
        config = _config(args, settings)
        if not is_prepared(config.base):
            raise _Usage(f"no model at {config.base}: run `campfire model prepare` first (or pass --base)")
        trainable = None
        if args.theme_match > 0 and len(stories) >= config.min_stories:
            trainable = on_theme(settings, stories, args.theme_match)
        prepared = prepare(stories, config, source=source, trainable=trainable)
    except (_Usage, FinetuneRefused, BadStoriesFile, FileNotFoundError) as err:
        print(f"campfire model finetune: {err}", file=sys.stderr)
        return 2
    print(describe(prepared), flush=True)
    card_data = {"source": source, "min_rating": args.min_rating, "licence": args.licence, "theme_match": args.theme_match,
                 "selected": len(stories)}
    trained = {ex.story_id for ex in prepared.train}
    credits = [{"id": s.id, "title": s.title, "credit": s.credit} for s in stories if s.credit and s.id in trained]
    try:
        result = run(prepared, config, card_data=card_data, progress=not args.quiet, credits=credits or None)
    except FinetuneCancelled as err:
        print(f"campfire model finetune: {err} — run the same command again to resume", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("campfire model finetune: cancelled before training started; nothing was saved", file=sys.stderr)
        return 130
    except CheckpointMismatch as err:
        print(f"campfire model finetune: {err}", file=sys.stderr)
        return 2
    _export(config.out, args.gguf, prepared.threads)
    _print_done(result.card, config.out)
    return 0


def _export(out: Path, quant: str, threads: int) -> None:
    """Export ``out`` as a GGUF (:func:`model.export_gguf.export_gguf`) unless ``quant`` is ``none``; one
    line either way (a failed export leaves the bf16 folder, served by the transformers engine)."""
    from model.export_gguf import ExportUnavailable, export_gguf

    if quant == "none":
        return
    print("exporting a GGUF for the llama.cpp engine…", flush=True)
    try:
        path = export_gguf(out, quant, threads=threads)
    except ExportUnavailable as err:
        print(f"no GGUF: {err}; the folder serves on the transformers engine")
        return
    print(f"GGUF: {path.name} ({path.stat().st_size / 2**20:.0f} MiB; campfire serve runs it on llama.cpp)")


def _print_done(card: dict[str, Any], out: Path) -> None:
    ev = card["held_out"]
    print(f"held-out loss {ev['loss_before']:.3f} → {ev['loss_after']:.3f} "
          f"(perplexity {ev['perplexity_before']:.2f} → {ev['perplexity_after']:.2f}, "
          f"× {ev['perplexity_after'] / ev['perplexity_before']:.2f})")
    print(f"{card['steps']} steps, {card['seconds_per_step']} s per step")
    print(f"written: {out}")
    print(f"serve it: campfire serve --model {out.name}   (or generator.model_path = \"{out}\" in config.toml)")


def perplexity(args: argparse.Namespace, settings: Settings) -> int:
    """``campfire model perplexity --texts FILE.jsonl [--model PATH] [--split held-out] [--json]``: mean
    per-token loss and perplexity of the model on the stories' answers (:func:`model.perplexity.perplexity`).
    Exit codes: 0; 2 for a missing file/model or no stories."""
    from model.finetune_data import BadStoriesFile, read_stories, split
    from model.perplexity import perplexity as score
    from model.prepare import is_prepared

    folder = model_folder(settings, args.model)
    try:
        if not args.texts:
            raise _Usage("--texts FILE.jsonl is required")
        if not is_prepared(folder):
            raise _Usage(f"no model at {folder}")
        stories = read_stories(args.texts)
        if args.split != "all":
            train, held = split(stories, args.held_out_share)
            stories = held if args.split == "held-out" else train
        stories = stories[: args.limit] if args.limit else stories
        result = score(folder, stories, max_length=args.max_length, progress=not (args.quiet or args.json))
    except (_Usage, BadStoriesFile, FileNotFoundError, ValueError) as err:
        print(f"campfire model perplexity: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.as_json()))
    else:
        print(f"{result.model}: {result.texts} texts, {result.tokens} tokens, loss {result.loss:.4f}, "
              f"perplexity {result.perplexity:.2f} ({result.seconds:.0f} s)")
    return 0
