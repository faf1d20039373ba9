"""Generator throughput and latency under concurrency, measured side by side in one run.

    python -m bench.generator --url URL [--anchor-url URL] [--json]
        [--concurrency 1,4,8,16] [--rounds 1] [--chat-tokens 64] [--story-tokens 256] [--model NAME]

For each workload (``chat``: a one-line question, up to ``--chat-tokens``; ``story``: Campfire's
story prompt, up to ``--story-tokens``) and each concurrency C, C members stream at once, each
``--rounds`` requests back to back, through :class:`model.client.GeneratorClient` (its own limit
raised out of the way). Reported per level: TTFT p50/p95 (seconds, request sent → first text
delta) and aggregate decode tokens/s (completion tokens of all requests ÷ wall time of the level,
tokens as counted by the server's ``usage``), and each one's ratio to C = 1.

``--anchor-url`` runs the same load against another OpenAI-compatible server (llama.cpp's, vLLM)
and prints Campfire ÷ anchor for aggregate tokens/s and TTFT p50. Targets: aggregate at 8 ≥ 5× one
stream; TTFT p50 at 8 ≤ 1 s on this CPU. The CPU is shared: read the ratios, not the absolutes.

``--json`` prints one JSON object: ``{"model": ..., "results": {"chat": {"1": {"ttft_p50_s", "ttft_p95_s",
"aggregate_tok_s", ...}, ...}, "story": {...}}, "anchor": {...} | null}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

from campfire.config import GeneratorSettings
from model.client import GeneratorClient
from model.prompts import build_story_messages

CHAT_PROMPTS = [
    "What is a good board game for four friends?",
    "How do I keep a campfire going in the rain?",
    "Recommend a sci-fi book for a long train ride.",
    "What should I cook for a picnic?",
]
STORY_THEMES = ["a chance meeting on a rainy day", "the last lighthouse keeper", "a map that redraws itself", "a cat who runs a bakery"]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _messages(workload: str, i: int) -> list[dict]:
    if workload == "chat":
        return [{"role": "system", "content": "You are Campfire, a friendly, concise assistant for this Discord community."},
                {"role": "user", "content": CHAT_PROMPTS[i % len(CHAT_PROMPTS)]}]
    return build_story_messages(STORY_THEMES[i % len(STORY_THEMES)], length="short", language="en")


async def run_level(client: GeneratorClient, workload: str, concurrency: int, rounds: int, max_tokens: int) -> dict:
    ttfts: list[float] = []
    tokens = 0

    async def member(m: int) -> None:
        nonlocal tokens
        for r in range(rounds):
            usage: dict = {}
            async for _ in client.stream_chat(_messages(workload, m * rounds + r), max_tokens=max_tokens,
                                              temperature=0.8, top_p=0.95, usage=usage, user=f"bench{m}"):
                pass
            if usage.get("ttft_s") is not None:
                ttfts.append(usage["ttft_s"])
            tokens += int(usage.get("completion_tokens") or 0)

    t0 = time.perf_counter()
    await asyncio.gather(*(member(m) for m in range(concurrency)))
    wall = time.perf_counter() - t0
    return {
        "ttft_p50_s": round(statistics.median(ttfts), 3) if ttfts else None,
        "ttft_p95_s": round(_percentile(ttfts, 0.95), 3) if ttfts else None,
        "aggregate_tok_s": round(tokens / wall, 2),
        "requests": concurrency * rounds,
        "completion_tokens": tokens,
        "wall_s": round(wall, 2),
    }


async def run_server(url: str, model: str, levels: list[int], rounds: int, chat_tokens: int, story_tokens: int,
                     log=print) -> tuple[str, dict]:
    settings = GeneratorSettings(max_concurrency=256, request_timeout_s=900, connect_retries=1)
    client = GeneratorClient(url, api_key=None, model=model, settings=settings)
    try:
        model = await client.resolve_model()
        # one warm-up request (first-request costs are not what we measure)
        async for _ in client.stream_chat(_messages("chat", 0), max_tokens=4):
            pass
        results: dict[str, dict[str, dict]] = {}
        for workload, max_tokens in (("chat", chat_tokens), ("story", story_tokens)):
            results[workload] = {}
            for c in levels:
                level = await run_level(client, workload, c, rounds, max_tokens)
                base = results[workload].get(str(levels[0]), level)
                level["aggregate_ratio_vs_1"] = round(level["aggregate_tok_s"] / base["aggregate_tok_s"], 2) if base["aggregate_tok_s"] else None
                level["ttft_p50_ratio_vs_1"] = (
                    round(level["ttft_p50_s"] / base["ttft_p50_s"], 2) if base.get("ttft_p50_s") and level["ttft_p50_s"] else None
                )
                results[workload][str(c)] = level
                log(f"  {url} {workload:5s} C={c:<3d} TTFT p50 {level['ttft_p50_s']} s  p95 {level['ttft_p95_s']} s  "
                    f"aggregate {level['aggregate_tok_s']} tok/s (×{level['aggregate_ratio_vs_1']} vs C=1)")
        return model, results
    finally:
        await client.aclose()


def _table(results: dict, title: str) -> str:
    lines = [title, f"{'workload':8s} {'C':>3s} {'TTFT p50 s':>11s} {'p95 s':>7s} {'tok/s':>8s} {'×C=1 tok/s':>11s} {'×C=1 TTFT':>10s}"]
    for workload, levels in results.items():
        for c, r in levels.items():
            lines.append(f"{workload:8s} {c:>3s} {r['ttft_p50_s']!s:>11s} {r['ttft_p95_s']!s:>7s} {r['aggregate_tok_s']:>8.1f} "
                         f"{r['aggregate_ratio_vs_1']!s:>11s} {r['ttft_p50_ratio_vs_1']!s:>10s}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict:
    levels = [int(x) for x in args.concurrency.split(",")]
    log = (lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json else print
    model, results = await run_server(args.url, args.model, levels, args.rounds, args.chat_tokens, args.story_tokens, log)
    anchor = None
    if args.anchor_url:
        anchor_model, anchor_results = await run_server(args.anchor_url, args.anchor_model, levels, args.rounds,
                                                        args.chat_tokens, args.story_tokens, log)
        ratios = {
            w: {c: {
                "aggregate_tok_s_ratio": round(results[w][c]["aggregate_tok_s"] / r["aggregate_tok_s"], 2) if r["aggregate_tok_s"] else None,
                "ttft_p50_ratio": round(results[w][c]["ttft_p50_s"] / r["ttft_p50_s"], 2) if r.get("ttft_p50_s") else None,
            } for c, r in levels_.items()}
            for w, levels_ in anchor_results.items()
        }
        anchor = {"url": args.anchor_url, "model": anchor_model, "results": anchor_results, "campfire_over_anchor": ratios}
    return {"model": model, "url": args.url, "rounds": args.rounds, "results": results, "anchor": anchor}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.generator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="OpenAI-compatible base URL (…/v1) of the server under test")
    parser.add_argument("--anchor-url", default=None, help="another OpenAI-compatible server to compare with")
    parser.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    parser.add_argument("--concurrency", default="1,4,8,16", help="comma-separated concurrency levels (first = baseline)")
    parser.add_argument("--rounds", type=int, default=1, help="requests per member per level")
    parser.add_argument("--chat-tokens", type=int, default=64, help="max_tokens of chat-length requests")
    parser.add_argument("--story-tokens", type=int, default=256, help="max_tokens of story-length requests")
    parser.add_argument("--model", default="", help="model name (default: the server's first)")
    parser.add_argument("--anchor-model", default="", help="anchor's model name (default: its first)")
    args = parser.parse_args(argv)
    report = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(report))
    else:
        print(_table(report["results"], f"\nCampfire generator at {args.url} ({report['model']})"))
        if report["anchor"]:
            print(_table(report["anchor"]["results"], f"\nAnchor at {args.anchor_url} ({report['anchor']['model']})"))
            for w, levels in report["anchor"]["campfire_over_anchor"].items():
                for c, r in levels.items():
                    print(f"campfire ÷ anchor  {w:5s} C={c:<3s} tok/s ×{r['aggregate_tok_s_ratio']}  TTFT p50 ×{r['ttft_p50_ratio']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
