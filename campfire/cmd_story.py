"""``campfire story THEME``: one story from the command line, through the same pipeline as ``/story``
(:func:`campfire.features.stories.plan` → :func:`campfire.features.stories.compose`: the language
check, the loop guard, the quality gate and its one retry with stronger penalties).

Nothing is saved: this command is for trying a model, a theme or a setting (and for scripts, with
``--json``), so it opens only the generator — the embedded server unless ``generator.url`` is set —
and never the community's database. A story told in ``campfire console`` or on Discord is the one
that is saved and recommended. Top-level imports stay light (``campfire --help`` reads the flags).

Exit codes: 0 a story that passed the gate; 3 declined (the model does not write the language) or
rejected by the gate twice (the text is still printed, with the notice); 2 a bad theme or option;
1 the generator failed (not prepared, not reachable, an error while writing).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from campfire.config import Settings

if TYPE_CHECKING:
    from model.client import GeneratorClient

HELP_EPILOG = ("Nothing is saved: the story is printed, not stored or recommended (use `campfire console` "
               "or /story on Discord for that). Exit codes: 0 told, 3 declined or rejected by the quality "
               "gate, 2 bad input, 1 generator failure.")


def add_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """Flags of ``campfire story`` (called by :func:`campfire.cli.build_parser`)."""
    parser.epilog = HELP_EPILOG
    parser.add_argument("theme", nargs="+", help="what the story is about (up to story.max_theme_chars characters)")
    parser.add_argument("--genre", default="any",
                        help="any, fantasy, sci-fi, mystery, horror, romance, adventure, comedy or fairy tale")
    parser.add_argument("--length", choices=("short", "medium", "long"), default="short",
                        help="short ≈ 150 words / 250 字, medium ≈ 400, long ≈ 800")
    parser.add_argument("--lang", choices=("auto", "en", "zh"), default="auto", help="the story's language (auto: the theme's)")
    parser.add_argument("--max-tokens", type=int, default=None, metavar="N",
                        help="cap the story at N tokens (default: the --length budget)")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object: {"title", "text", "language", "finish_reason", "tokens", '
                             '"ttft_s", "tokens_per_s", "declined"}')


@dataclass
class _Teller:
    """The part of an App that writing a story needs (``stories.Storyteller``)."""

    settings: Settings
    generator: GeneratorClient | None


def declined_json(language: str, sentence: str) -> dict[str, Any]:
    """The ``--json`` object of a request the model cannot serve: no text, ``declined`` the sentence."""
    return {"title": "", "text": "", "language": language, "finish_reason": None, "tokens": 0, "ttft_s": None,
            "tokens_per_s": None, "declined": sentence}


def story_json(composed: Any) -> dict[str, Any]:
    """The ``--json`` object of a written story (``ComposedStory``); ``declined`` is the gate's notice
    when it was rejected, else None. Seconds and tokens/s rounded to 3 decimals."""
    r = composed.result
    return {"title": r.title, "text": r.text, "language": r.language, "finish_reason": r.finish_reason,
            "tokens": r.completion_tokens, "ttft_s": round(r.ttft_s, 3), "tokens_per_s": round(r.tokens_per_s, 3),
            "declined": composed.notice}


def _emit(obj: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, ensure_ascii=False))
        return
    if obj["text"]:
        print(f"{obj['title']}\n\n{obj['text']}")
    if obj["declined"]:
        print(obj["declined"], file=sys.stderr)
    if obj["tokens"]:
        print(f"[{obj['language']} · {obj['tokens']} tokens · TTFT {obj['ttft_s']:.2f} s · "
              f"{obj['tokens_per_s']:.1f} tokens/s · finish {obj['finish_reason']}]", file=sys.stderr)


async def main(args: argparse.Namespace, settings: Settings) -> int:
    """``campfire story``: plan, open the generator, compose, print (see the module docstring for exit codes)."""
    from campfire.config import secrets_from_env
    from campfire.features import stories
    from model.errors import GeneratorError
    from model.generator import open_generator
    from model.prepare import ModelNotFound

    teller = _Teller(settings, None)
    try:
        plan = stories.plan(teller, " ".join(args.theme), genre=args.genre, length=args.length, language=args.lang)
    except stories.StoryDeclined as err:
        _emit(declined_json(err.language, str(err)), args.json)
        return 3
    except ValueError as err:
        print(f"campfire story: {err}", file=sys.stderr)
        return 2
    if args.max_tokens is not None and not 1 <= args.max_tokens <= 8192:
        print("campfire story: --max-tokens must be between 1 and 8192", file=sys.stderr)
        return 2
    try:
        async with open_generator(settings, secrets_from_env()) as client:
            teller.generator = client
            composed = await stories.compose(teller, plan, max_tokens=args.max_tokens)
    except (FileNotFoundError, ModelNotFound) as err:
        print(f"campfire story: {err} (run `campfire model prepare` first)", file=sys.stderr)
        return 1
    except GeneratorError as err:
        print(f"campfire story: the generator failed: {err}", file=sys.stderr)
        return 1
    _emit(story_json(composed), args.json)
    return 3 if composed.rejected else 0
