"""On-theme and loops of two (or more) models side by side, alternated in one run, with their spread.

    python -m bench.story_ab --model BASE_FOLDER --model TUNED_FOLDER [--engine auto] [--rounds 3]
        [--themes 40] [--max-tokens 160] [--concurrency 8] [--json]

Why: one run of 15 themes moved the on-theme cosine by ± 0.05 between runs, as large as the effect
being measured. Here each model is served by its own embedded ``campfire serve`` (the engine
``generator.engine`` picks: llama.cpp when the folder has a GGUF; ``--engine`` per model overrides),
all started at once, and each round writes every English theme (:data:`bench.story_quality.EN_THEMES`,
40 written for the benchmarks, unlike any training tale) with each model through both story pipelines
of :mod:`bench.story_quality` — **campfire** (Campfire's ``/story``: loop guard, quality gate and its
retry) and **plain** (no guard, no gate) — the model order alternating from round to round. Sampling
is random per request, so rounds are independent samples.

Reported per model and pipeline: **on_theme** — mean over themes of the theme's mean cosine (theme vs
story, all-MiniLM-L6-v2) across rounds, ± its standard error over themes; the per-round means (their
spread is the run-to-run noise); **diff** — the paired per-theme difference with the first model,
mean ± standard error (themes are shared, so this is the sharper test); **loops** — stories with an
8-gram seen 3 times, per round; ``retried`` / ``rejected`` / ``loop_cut`` counts (campfire only);
seconds and load averages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.story_quality import EN_THEMES, cosines, has_loop, run_campfire, run_previous

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def mean_se(values: list[float]) -> tuple[float, float]:
    """``(mean, standard error of the mean)``; SE = sample standard deviation / √n (nan for n < 2)."""
    if len(values) < 2:
        return (values[0] if values else float("nan")), float("nan")
    return statistics.fmean(values), statistics.stdev(values) / len(values) ** 0.5


async def _rounds(args: argparse.Namespace, themes: list[str]) -> tuple[dict, dict]:
    """``(outputs, seconds)``: outputs[model][pipeline][round] = list of {text, ...} per theme."""
    from contextlib import AsyncExitStack

    from campfire.app import App
    from campfire.config import Secrets, Settings
    from model.generator import open_generator
    from model.tokens import TokenCounter

    engines = (args.engine or ["auto"]) * len(args.model) if len(args.engine or []) <= 1 else args.engine
    outputs: dict[str, dict[str, list]] = {m: {"campfire": [], "plain": []} for m in args.model}
    seconds: dict[str, float] = {m: 0.0 for m in args.model}
    data_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "campfire-bench"
    async with AsyncExitStack() as stack:
        apps = {}
        for model, engine in zip(args.model, engines, strict=True):
            gen = {"model_path": model, "max_concurrency": args.concurrency, "request_timeout_s": 3600, "engine": engine}
            settings = Settings(data_dir=data_dir, generator=gen)
            client = await stack.enter_async_context(open_generator(settings, Secrets(None, None)))
            apps[model] = App(settings=settings, store=None, recommender=None, generator=client,  # type: ignore[arg-type]
                              counter=TokenCounter(model))
        for r in range(args.rounds):
            order = args.model if r % 2 == 0 else list(reversed(args.model))
            for model in order:
                t0 = time.perf_counter()
                camp = await run_campfire(apps[model], themes, [], args.max_tokens)
                plain, _ = await run_previous(apps[model], themes, args.max_tokens)
                seconds[model] += time.perf_counter() - t0
                outputs[model]["campfire"].append(camp["stories"])
                outputs[model]["plain"].append(plain)
                print(f"round {r + 1}/{args.rounds} {Path(model).name}: {time.perf_counter() - t0:.0f} s, "
                      f"load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    return outputs, seconds


def summarise(themes: list[str], outputs: dict, embedder: Any) -> dict[str, Any]:
    """The report's rows (see the module docstring); the first model is the reference of ``diff``."""
    per_theme: dict[tuple[str, str], list[float]] = {}
    rows: dict[str, dict[str, Any]] = {}
    for model, pipelines in outputs.items():
        for pipeline, rounds in pipelines.items():
            cos = [cosines(embedder, themes, outs) for outs in rounds]
            theme_means = [statistics.fmean(c[i] for c in cos) for i in range(len(themes))]
            per_theme[(model, pipeline)] = theme_means
            m, se = mean_se(theme_means)
            flat = [o for outs in rounds for o in outs]
            rows.setdefault(pipeline, {})[model] = {
                "on_theme": round(m, 4), "se": round(se, 4),
                "per_round": [round(statistics.fmean(c), 4) for c in cos],
                "loops": [sum(has_loop(o["text"]) for o in outs) for outs in rounds],
                "retried": sum(o.get("attempts") == 2 for o in flat), "rejected": sum(bool(o.get("rejected")) for o in flat),
                "loop_cut": sum(o.get("finish") == "loop" for o in flat), "stories": len(flat),
            }
    reference = next(iter(outputs))
    for pipeline, models in rows.items():
        for model, row in models.items():
            if model != reference:
                d = [a - b for a, b in zip(per_theme[(model, pipeline)], per_theme[(reference, pipeline)], strict=True)]
                m, se = mean_se(d)
                row["diff"] = {"mean": round(m, 4), "se": round(se, 4)}
    return rows


def table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [(f"{'pipeline':9s} {'model':28s} {'on_theme ± se':>16s} {'per round':>24s} {'diff ± se':>17s} "
              f"{'loops/round':>12s} {'retried':>8s} {'rejected':>8s} {'loop_cut':>8s}")]
    for pipeline, models in rows.items():
        for model, r in models.items():
            diff = f"{r['diff']['mean']:+.3f} ± {r['diff']['se']:.3f}" if "diff" in r else "(reference)"
            lines.append(f"{pipeline:9s} {Path(model).name[:28]:28s} {r['on_theme']:>9.3f} ± {r['se']:.3f} "
                         f"{' '.join(f'{x:.3f}' for x in r['per_round']):>24s} {diff:>17s} "
                         f"{','.join(map(str, r['loops'])):>12s} {r['retried']:>8d} {r['rejected']:>8d} {r['loop_cut']:>8d}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.story_ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="a model folder (repeat; the first is the reference)")
    parser.add_argument("--engine", action="append", default=None, help="generator.engine: one for all, or one per --model")
    parser.add_argument("--rounds", type=int, default=3, help="samples of every theme per model")
    parser.add_argument("--themes", type=int, default=len(EN_THEMES), help=f"English themes (at most {len(EN_THEMES)})")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.engine and len(args.engine) not in (1, len(args.model)):
        parser.error("give one --engine for all models or one per --model")
    if args.rounds < 1 or args.themes < 2:
        parser.error("--rounds must be ≥ 1 and --themes ≥ 2")
    themes = EN_THEMES[: args.themes]
    load = {"start": os.getloadavg()}
    print(f"{len(args.model)} models × {len(themes)} themes × {args.rounds} rounds × 2 pipelines, "
          f"max {args.max_tokens} tokens, load {load['start']}", file=sys.stderr, flush=True)
    outputs, seconds = asyncio.run(_rounds(args, themes))
    load["end"] = os.getloadavg()
    from sentence_transformers import SentenceTransformer

    from model.prepare import packaged_embedder

    rows = summarise(themes, outputs, SentenceTransformer(str(packaged_embedder()), device="cpu"))
    example = {Path(m).name: outputs[m]["campfire"][0][0]["text"][:400] for m in args.model}
    report = {"themes": len(themes), "rounds": args.rounds, "max_tokens": args.max_tokens, "rows": rows,
              "seconds": {Path(m).name: round(s, 1) for m, s in seconds.items()}, "load_average": load,
              "example": {"theme": themes[0], **example}}
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
    else:
        print(table(rows))
        print(json.dumps({k: report[k] for k in ("seconds", "load_average", "example")}, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
