"""Generator throughput and latency under concurrency, measured side by side in one run.

    python -m bench.generator --url URL [--pid PID] [--anchor-url URL [--anchor-pid PID]]
        [--also-url URL [--also-pid PID]]... [--json]
        [--concurrency 1,4,8,16] [--rounds 1] [--settle S] [--chat-tokens 64] [--story-tokens 256] [--model NAME]

For each workload (``chat``: a one-line question, up to ``--chat-tokens``; ``story``: Campfire's
story prompt, up to ``--story-tokens``) and each concurrency C, C members stream at once, each
``--rounds`` requests back to back, through :class:`model.client.GeneratorClient` (its own limit
raised out of the way). Reported per level: TTFT p50/p95 (seconds, request sent → first text
delta) and aggregate decode tokens/s (completion tokens of all requests ÷ wall time of the level,
tokens as counted by the server's ``usage``), and each one's ratio to C = 1.

``--anchor-url`` runs the same load against another OpenAI-compatible server (llama.cpp's, vLLM)
and prints Campfire ÷ anchor for aggregate tokens/s and TTFT p50; ``--also-url`` (repeatable) adds
more servers (e.g. the other engine of ``campfire serve``), compared with the anchor too. Servers are
alternated at each workload and level (A/B in one run). ``--pid`` / ``--anchor-pid`` / ``--also-pid``:
the peak RSS of that server's process tree (``/proc``, sampled every 0.1 s) per level, and the CPU
seconds the tree used (``cpu_s``) and its root process alone (``cpu_front_s``: for ``campfire serve``'s
llama.cpp engine, the Python front without llama-server). Targets: aggregate at 8 ≥ 5× one
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
from pathlib import Path
from typing import Self

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


class Rss:
    """Peak resident memory (bytes) of a process and all its descendants (e.g. ``campfire serve``'s front
    and its llama-server child), sampled every ``period_s`` from ``/proc`` while running; and the CPU
    seconds they used meanwhile (``cpu_s``: the tree; ``cpu_root_s``: the process itself, e.g. the front
    without its llama-server), from ``/proc/PID/stat`` utime + stime at enter and exit."""

    def __init__(self, pid: int | None, period_s: float = 0.1) -> None:
        self.pid, self.period_s, self.peak = pid, period_s, 0
        self.cpu_s: float | None = None
        self.cpu_root_s: float | None = None
        self._task: asyncio.Task | None = None
        self._cpu0: dict[int, float] = {}

    @staticmethod
    def tree(pid: int) -> list[int]:
        """``pid`` and its descendants (those still alive)."""
        found, todo = [], [pid]
        while todo:
            p = todo.pop()
            try:
                for task in Path(f"/proc/{p}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            found.append(p)
        return found

    @staticmethod
    def tree_rss(pid: int) -> int:
        """Sum of ``VmRSS`` over ``pid`` and its descendants (bytes; 0 when gone)."""
        total = 0
        for p in Rss.tree(pid):
            try:
                status = Path(f"/proc/{p}/status").read_text()
                total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024
            except (OSError, StopIteration, ValueError):
                continue
        return total

    @staticmethod
    def cpu_seconds(pid: int) -> dict[int, float]:
        """``{pid: user + system CPU seconds}`` over ``pid``'s tree."""
        import os

        tick = os.sysconf("SC_CLK_TCK")
        seconds = {}
        for p in Rss.tree(pid):
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                seconds[p] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14, 15)
            except (OSError, IndexError, ValueError):
                continue
        return seconds

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.tree_rss(self.pid))
            await asyncio.sleep(self.period_s)

    def __enter__(self) -> Self:
        if self.pid:
            self._cpu0 = self.cpu_seconds(self.pid)
            self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    def __exit__(self, *exc) -> None:
        if self._task is not None:
            self._task.cancel()
            cpu1 = self.cpu_seconds(self.pid)
            self.cpu_s = round(sum(t - self._cpu0.get(p, 0.0) for p, t in cpu1.items()), 2)
            self.cpu_root_s = round(cpu1.get(self.pid, 0.0) - self._cpu0.get(self.pid, 0.0), 2)


async def run_servers(servers: list[dict], levels: list[int], rounds: int, chat_tokens: int, story_tokens: int,
                      log=print, settle_s: float = 0.0) -> None:
    """Measure every server in ``servers`` (dicts with ``url``, ``model``, ``pid``; each gets ``model`` and
    ``results`` filled in), alternating servers at each workload and level (A/B in one run, so the
    machine's load is shared alike), ``settle_s`` seconds of quiet before each turn (the previous
    server's load is gone, as between two members' requests). ``peak_rss_mb``: the server's process
    tree during that level."""
    settings = GeneratorSettings(max_concurrency=256, request_timeout_s=900, connect_retries=1)
    for server in servers:
        server["client"] = GeneratorClient(server["url"], api_key=None, model=server["model"], settings=settings)
        server["model"] = await server["client"].resolve_model()
        async for _ in server["client"].stream_chat(_messages("chat", 0), max_tokens=4):  # warm-up
            pass
        server["results"] = {}
    try:
        for workload, max_tokens in (("chat", chat_tokens), ("story", story_tokens)):
            for c in levels:
                for server in servers:
                    await asyncio.sleep(settle_s)
                    with Rss(server.get("pid")) as rss:
                        level = await run_level(server["client"], workload, c, rounds, max_tokens)
                    level["peak_rss_mb"] = round(rss.peak / 2**20) if rss.peak else None
                    level["cpu_s"], level["cpu_front_s"] = rss.cpu_s, rss.cpu_root_s
                    results = server["results"].setdefault(workload, {})
                    base = results.get(str(levels[0]), level)
                    level["aggregate_ratio_vs_1"] = round(level["aggregate_tok_s"] / base["aggregate_tok_s"], 2) if base["aggregate_tok_s"] else None
                    level["ttft_p50_ratio_vs_1"] = (
                        round(level["ttft_p50_s"] / base["ttft_p50_s"], 2) if base.get("ttft_p50_s") and level["ttft_p50_s"] else None
                    )
                    results[str(c)] = level
                    log(f"  {server['url']} {workload:5s} C={c:<3d} TTFT p50 {level['ttft_p50_s']} s  p95 {level['ttft_p95_s']} s  "
                        f"aggregate {level['aggregate_tok_s']} tok/s (×{level['aggregate_ratio_vs_1']} vs C=1)  "
                        f"peak RSS {level['peak_rss_mb']} MB  CPU {level['cpu_s']} s (root {level['cpu_front_s']} s)")
    finally:
        for server in servers:
            await server.pop("client").aclose()


def _over(results: dict, anchor: dict) -> dict:
    """``results`` ÷ ``anchor`` per workload and level: aggregate tok/s and TTFT p50."""
    return {
        w: {c: {
            "aggregate_tok_s_ratio": round(results[w][c]["aggregate_tok_s"] / r["aggregate_tok_s"], 2) if r["aggregate_tok_s"] else None,
            "ttft_p50_ratio": round(results[w][c]["ttft_p50_s"] / r["ttft_p50_s"], 2) if r.get("ttft_p50_s") and results[w][c]["ttft_p50_s"] else None,
        } for c, r in levels_.items()}
        for w, levels_ in anchor.items()
    }


def _table(results: dict, title: str) -> str:
    lines = [title, f"{'workload':8s} {'C':>3s} {'TTFT p50 s':>11s} {'p95 s':>7s} {'tok/s':>8s} {'×C=1 tok/s':>11s} {'×C=1 TTFT':>10s} {'RSS MB':>7s} {'CPU s':>6s}"]
    for workload, levels in results.items():
        for c, r in levels.items():
            lines.append(f"{workload:8s} {c:>3s} {r['ttft_p50_s']!s:>11s} {r['ttft_p95_s']!s:>7s} {r['aggregate_tok_s']:>8.1f} "
                         f"{r['aggregate_ratio_vs_1']!s:>11s} {r['ttft_p50_ratio_vs_1']!s:>10s} {r.get('peak_rss_mb')!s:>7s} {r.get('cpu_s')!s:>6s}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict:
    levels = [int(x) for x in args.concurrency.split(",")]
    log = (lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json else print
    servers = [{"url": args.url, "model": args.model, "pid": args.pid}]
    if args.anchor_url:
        servers.append({"url": args.anchor_url, "model": args.anchor_model, "pid": args.anchor_pid})
    for i, url in enumerate(args.also_url or []):
        pids = args.also_pid or []
        servers.append({"url": url, "model": "", "pid": pids[i] if i < len(pids) else None})
    await run_servers(servers, levels, args.rounds, args.chat_tokens, args.story_tokens, log, args.settle)
    main = servers[0]
    others = servers[2:] if args.anchor_url else servers[1:]
    anchor = None
    if args.anchor_url:
        a = servers[1]
        anchor = {"url": a["url"], "model": a["model"], "results": a["results"],
                  "campfire_over_anchor": _over(main["results"], a["results"]),
                  "also_over_anchor": {o["url"]: _over(o["results"], a["results"]) for o in others}}
    return {"model": main["model"], "url": main["url"], "rounds": args.rounds, "results": main["results"], "anchor": anchor,
            "also": [{"url": o["url"], "model": o["model"], "results": o["results"]} for o in others]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.generator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="OpenAI-compatible base URL (…/v1) of the server under test")
    parser.add_argument("--pid", type=int, default=None, help="its process id: peak RSS of its process tree per level")
    parser.add_argument("--anchor-url", default=None, help="another OpenAI-compatible server to compare with")
    parser.add_argument("--anchor-pid", type=int, default=None, help="the anchor's process id (peak RSS)")
    parser.add_argument("--also-url", action="append", help="more servers measured in the same run and compared with the anchor")
    parser.add_argument("--also-pid", type=int, action="append", help="their process ids, in the same order")
    parser.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    parser.add_argument("--concurrency", default="1,4,8,16", help="comma-separated concurrency levels (first = baseline)")
    parser.add_argument("--rounds", type=int, default=1, help="requests per member per level")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds of quiet before each server's turn (campfire serve's llama.cpp engine adds threads after 1 s of calm)")
    parser.add_argument("--chat-tokens", type=int, default=64, help="max_tokens of chat-length requests")
    parser.add_argument("--story-tokens", type=int, default=256, help="max_tokens of story-length requests")
    parser.add_argument("--model", default="", help="model name (default: the server's first)")
    parser.add_argument("--anchor-model", default="", help="anchor's model name (default: its first)")
    args = parser.parse_args(argv)
    report = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(report))
        return 0
    print(_table(report["results"], f"\nCampfire generator at {args.url} ({report['model']})"))
    for also in report["also"]:
        print(_table(also["results"], f"\nAlso at {also['url']} ({also['model']})"))
    if report["anchor"]:
        print(_table(report["anchor"]["results"], f"\nAnchor at {args.anchor_url} ({report['anchor']['model']})"))
        compared = {args.url: report["anchor"]["campfire_over_anchor"], **report["anchor"]["also_over_anchor"]}
        for url, ratios in compared.items():
            for w, levels in ratios.items():
                for c, r in levels.items():
                    print(f"{url} ÷ anchor  {w:5s} C={c:<3s} tok/s ×{r['aggregate_tok_s_ratio']}  TTFT p50 ×{r['ttft_p50_ratio']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
