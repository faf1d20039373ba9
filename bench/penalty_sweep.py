"""Repetition penalties on the real model: which values keep stories and chat replies out of loops
without wrecking them. Sets the story and chat defaults (issue 14).

    python -m bench.penalty_sweep [--url URL] [--model-path DIR] [--story-tokens 200] [--chat-tokens 160]
        [--samples 1] [--configs base,f0.3,f0.6,f1.0,r1.1,r1.2,r1.3] [--json]

Without ``--url`` it starts ``campfire serve`` on the prepared SmolLM2 (``--model-path``, default
``.cache/models/smollm2-135m-instruct``) — the server under test must honour the penalties
(``campfire serve`` since issue 14, vLLM, llama.cpp).

Inputs (written for this sweep, used nowhere else): 6 story themes (3 English, 3 Chinese) through
Campfire's story prompt (``model.prompts.build_story_messages``), 6 chat questions (3 help, 2 casual,
1 Chinese) through its chat system prompt; sampled as in production (story temperature 0.8 / top-p
0.95, chat 0.7), the raw model output (no loop guard, no gate, no trimming).

Configurations: ``base`` (no penalty), ``fX`` (``frequency_penalty`` X), ``pX`` (``presence_penalty``
X), ``rX`` (``repetition_penalty`` X). Metrics per configuration and task — **loops**: outputs with a
unit 8-gram seen ≥ 3 times (units: words; CJK characters one by one); **distinct-2**: distinct unit
bigrams / all bigrams (mean over outputs); **units**: mean length; **ends**: % ending on a
sentence-final mark; **zh_share**: for the Chinese inputs, the mean share of CJK characters among
letters (a penalty that pushes a Chinese story into English or symbols shows here).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

STORY_THEMES = [
    ("en", "the last ferry of the season"), ("en", "a robot that learns to bake bread"),
    ("en", "two rivals stuck in a lift"),
    ("zh", "老街上的修表匠"), ("zh", "一只想去看海的蜗牛"), ("zh", "停电的那个晚上"),
]
CHAT_QUESTIONS = [
    "How do I see which process is listening on port 8080 on Ubuntu?",
    "My apt update says a repository has no Release file. What should I check?",
    "What is the difference between a snap and a deb package?",
    "Any tips for staying focused when studying at night?",
    "Recommend a cosy board game for three people.",
    "怎么在 Ubuntu 上查看磁盘还剩多少空间？",
]
DEFAULT_CONFIGS = "base,f0.3,f0.6,f1.0,r1.1,r1.2,r1.3"
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
ENDS = re.compile(r"[.!?…。！？][\"'”’»)）」』】]*\s*$")


def units(text: str) -> list[str]:
    """Words (case-folded, punctuation dropped) and CJK characters one by one, in order."""
    return [u.lower() for u in re.findall(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W\u3400-\u9fff\uf900-\ufaff]+", text)]


def has_loop(text: str, n: int = 8, repeats: int = 3) -> bool:
    u = units(text)
    grams = Counter(tuple(u[i:i + n]) for i in range(len(u) - n + 1))
    return any(c >= repeats for c in grams.values())


def distinct_2(text: str) -> float:
    pairs = list(itertools.pairwise(units(text)))
    return len(set(pairs)) / len(pairs) if pairs else 1.0


def zh_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(1 for c in letters if CJK.match(c)) / len(letters) if letters else 0.0


def parse_config(name: str) -> dict[str, float]:
    """``base`` → {}; ``f0.6`` → frequency_penalty 0.6; ``p…`` presence; ``r…`` repetition."""
    if name == "base":
        return {}
    field = {"f": "frequency_penalty", "p": "presence_penalty", "r": "repetition_penalty"}[name[0]]
    return {field: float(name[1:])}


def jobs(samples: int, story_tokens: int, chat_tokens: int) -> list[dict]:
    from model.prompts import build_story_messages, system_prompt

    out = []
    for language, theme in STORY_THEMES:
        out += [{"task": "story", "lang": language, "input": theme, "max_tokens": story_tokens, "temperature": 0.8,
                 "top_p": 0.95, "messages": build_story_messages(theme, length="short", language=language)}] * samples
    system = system_prompt("You are Campfire, a friendly, concise assistant for this Discord community. "
                           "Answer helpfully and briefly.")
    for q in CHAT_QUESTIONS:
        lang = "zh" if CJK.search(q) else "en"
        out += [{"task": "chat", "lang": lang, "input": q, "max_tokens": chat_tokens, "temperature": 0.7, "top_p": 1.0,
                 "messages": [{"role": "system", "content": system}, {"role": "user", "content": q}]}] * samples
    return out


async def run_all(client, configs: list[str], work: list[dict], concurrency: int) -> list[dict]:
    gate = asyncio.Semaphore(concurrency)

    async def one(config: str, job: dict) -> dict:
        async with gate:
            t0 = time.perf_counter()
            usage: dict = {}
            text = "".join([d async for d in client.stream_chat(
                job["messages"], max_tokens=job["max_tokens"], temperature=job["temperature"], top_p=job["top_p"],
                usage=usage, **parse_config(config))])
            return {"config": config, "task": job["task"], "lang": job["lang"], "input": job["input"], "text": text,
                    "tokens": usage.get("completion_tokens"), "seconds": round(time.perf_counter() - t0, 1)}

    return await asyncio.gather(*(one(c, j) for c in configs for j in work))


def summarise(results: list[dict]) -> dict:
    table: dict = {}
    for (config, task), group in itertools.groupby(sorted(results, key=lambda r: (r["config"], r["task"])),
                                                   key=lambda r: (r["config"], r["task"])):
        rows = list(group)
        zh = [zh_share(r["text"]) for r in rows if r["lang"] == "zh"]
        table.setdefault(config, {})[task] = {
            "n": len(rows),
            "loops": sum(has_loop(r["text"]) for r in rows),
            "distinct_2": round(statistics.mean(distinct_2(r["text"]) for r in rows), 3),
            "units": round(statistics.mean(len(units(r["text"])) for r in rows), 1),
            "ends": round(100 * sum(bool(ENDS.search(r["text"])) for r in rows) / len(rows)),
            "zh_share": round(statistics.mean(zh), 2) if zh else None,
        }
    return table


async def main_async(args: argparse.Namespace) -> dict:
    from campfire.config import Settings
    from model.client import GeneratorClient

    configs = args.configs.split(",")
    work = jobs(args.samples, args.story_tokens, args.chat_tokens)
    settings = Settings(data_dir=Path(args.data_dir), generator={
        "model_path": args.model_path, "device": "cpu", "max_concurrency": args.concurrency, "request_timeout_s": 1800})
    server = None
    if args.url:
        url, model = args.url, args.model
    else:
        from model.supervisor import EmbeddedServer

        server = EmbeddedServer(settings)
        await server.start()
        url, model = server.url, server.model_name
    client = GeneratorClient(url, api_key=None, model=model, settings=settings.generator)
    t0 = time.perf_counter()
    try:
        results = await run_all(client, configs, work, args.concurrency)
    finally:
        await client.aclose()
        if server is not None:
            await server.stop()
    return {"url": url, "model": model, "seconds": round(time.perf_counter() - t0), "table": summarise(results),
            "outputs": results}


def print_table(report: dict) -> None:
    print(f"model {report['model']} — {report['seconds']} s")
    print(f"{'config':8s} {'task':5s} {'n':>3s} {'loops':>5s} {'dist-2':>7s} {'units':>6s} {'ends%':>6s} {'zh':>5s}")
    for config, tasks in report["table"].items():
        for task, r in tasks.items():
            print(f"{config:8s} {task:5s} {r['n']:>3d} {r['loops']:>5d} {r['distinct_2']:>7.3f} {r['units']:>6.1f} "
                  f"{r['ends']:>6d} {r['zh_share'] if r['zh_share'] is not None else '-':>5}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.penalty_sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="", help="OpenAI-compatible base URL (…/v1); default: start campfire serve")
    parser.add_argument("--model", default="", help="model name on --url (default: the server's first)")
    parser.add_argument("--model-path", default=".cache/models/smollm2-135m-instruct", help="prepared folder to serve")
    parser.add_argument("--data-dir", default="/tmp/campfire-penalty-sweep", help="data dir of the started server")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma-separated (default {DEFAULT_CONFIGS})")
    parser.add_argument("--samples", type=int, default=1, help="samples per input and configuration")
    parser.add_argument("--story-tokens", type=int, default=200)
    parser.add_argument("--chat-tokens", type=int, default=160)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", default="", help="also write the full report (outputs included) to this file")
    args = parser.parse_args(argv)
    report = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1))
    print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
