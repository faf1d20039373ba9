"""Generation quality on held-out inputs: Campfire's pipelines side by side with the previous story
pipeline and a bare ``generate``, on the same model, in one run.

    python -m bench.story_quality [--url URL] [--model-path DIR] [--max-tokens 160] [--concurrency 8]
        [--themes 30] [--skip-bare] [--skip-chat] [--languages en,zh] [--json]

Inputs (written for this benchmark; none is used by the demo or the tests): story themes (40
English — the first 15 here, all 40 in :mod:`bench.story_ab` —, 15 Chinese) and 20 chat questions
(10 #ubuntu-style help questions, 5 casual, 5 Chinese).

Systems, each with the same token cap (``--max-tokens``, default 160: a 2-core CPU):
- **campfire**: stories through ``campfire.features.stories.plan`` + ``compose`` (the language check
  — a language the model does not write is declined, ``generator.languages`` —, the loop guard, the
  quality gate and its one retry with stronger penalties); chat through ``campfire.features.chat.reply``.
- **previous**: the story pipeline of commit 9a73748 as it behaved: the same prompts and sentence
  trim, temperature/top_p from the settings, no effective repetition penalty (that server dropped
  it), no loop guard, no gate, nothing declined (``model.story.write_story(..., guard=False)``).
- **bare**: transformers ``generate`` (greedy, the model's generation config) on "Write a story
  about: <theme>" / the question alone, through the chat template.

Metrics over a system's outputs — **loops**: outputs with a unit 8-gram (words; CJK characters one
by one) seen ≥ 3 times (counted independently of ``model.loops``); **fffd**: outputs containing
U+FFFD; **complete**: % of answered outputs ending on a sentence-final mark; **lang_match**: % of
answered outputs in the input's language (script-based); **declined**: requests answered with the
"this model cannot write <language>" sentence; **rejected**: stories shown with the gate's notice
(not saved); **retried**: stories written a second time after failing the gate; **loop_cut**:
generations the loop guard closed early (stories; chat's own ``finish_reason`` "loop"); **on_theme**: mean cosine of input and output with the packaged all-MiniLM-L6-v2
(English-trained: Chinese numbers are weak evidence). Also seconds per system and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent

EN_THEMES = [
    "the night the town's clocks all stopped", "a retired astronaut opens a bakery",
    "a lost dog finds its way home across the city", "two rival chess players snowed in at a station",
    "a librarian who can hear books whisper", "the last tree on a space station", "a kite that never comes down",
    "an old fisherman and a talking seagull", "a robot learning to paint sunsets",
    "a letter found inside a second-hand coat", "the first day at a school for dragons",
    "a violinist who plays for an empty hall", "a storm that brings a stranger to a farm",
    "a map that leads to the neighbour's garden", "a grandmother's recipe that changes the weather",
    # 25 more (bench.story_ab uses all 40; this file's --themes the first 15): everyday, fantasy, sci-fi
    "a bus driver's last shift before retirement", "twins who swap places on their wedding day",
    "a power cut during a family dinner", "a teenager's first job at a busy pizza shop",
    "a neighbour who leaves a mysterious package on the doorstep", "a marathon runner who gets lost in the fog",
    "a girl who teaches her grandfather to use a phone", "a football match played in the pouring rain",
    "a wizard who has forgotten every spell", "a knight afraid of horses", "a mermaid who wants to climb a mountain",
    "a village where it snows only on Tuesdays", "a thief who steals a dragon's egg", "a witch's cat running for mayor",
    "a door in the forest that opens once a year", "a colony ship that wakes its crew too early",
    "an android applying for its first job", "a message from the stars decoded by a schoolboy",
    "a city on Mars running out of water", "a time traveller stuck in a Tuesday afternoon",
    "the last human pilot in a world of self-flying planes", "a robot dog looking for its owner",
    "a submarine crew that hears singing from the deep", "a gardener growing plants on the Moon",
    "two pen pals, one on Earth and one on a space station",
]
ZH_THEMES = [
    "深夜便利店里的最后一位客人", "会写诗的机器人", "外婆的老收音机", "山村里的第一台电视", "一只想去看海的蜗牛",
    "被遗忘在车站的行李箱", "春节回家的火车上", "住在图书馆里的猫", "一个不会下雨的城市", "小镇上最后一家照相馆",
    "能听懂鸟语的小女孩", "月光下的竹林", "爷爷修了一辈子的钟", "第一次去北京的少年", "雪地里的红围巾",
]
QUESTIONS = [
    "How do I check which version of Ubuntu I am running?", "My wifi stopped working after an update, what should I check first?",
    "How can I see how much disk space is left?", "What is the difference between apt and apt-get?",
    "How do I make a program start automatically when I log in?", "How do I find out which process is using port 8080?",
    "Is it safe to remove old kernels, and how?", "How do I change the default text editor for sudoedit?",
    "Why does sudo ask for my password, and which password is it?", "How do I mount a USB drive from the terminal?",
    "What's a good name for a pet turtle?", "Can you recommend a short book for a rainy weekend?",
    "What should I cook tonight with rice, eggs and spinach?", "Any tips for staying focused while studying?",
    "Tell me a fun fact about octopuses.",
    "怎么查看 Ubuntu 的版本号？", "如何在终端里查看剩余的磁盘空间？", "周末有什么适合在家做的事情？",
    "你能推荐一本适合初学者的编程书吗？", "怎么让程序开机自动启动？",
]
_UNIT = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]|[A-Za-z0-9']+")
_END = re.compile(r"[.!?…。！？][\"'”’»)）」』】]*\s*$")


def has_loop(text: str, n: int = 8, times: int = 3) -> bool:
    """An n-gram of units (lower-cased words; CJK characters one by one) seen ≥ ``times`` times."""
    units = [u.lower() for u in _UNIT.findall(text)]
    grams = Counter(tuple(units[i : i + n]) for i in range(len(units) - n + 1))
    return any(c >= times for c in grams.values())


# ---- the systems ---------------------------------------------------------------------------------
async def run_campfire(app: Any, themes: list[str], questions: list[str], max_tokens: int) -> dict[str, list[dict]]:
    """Stories through plan + compose, chat through features.chat.reply (all concurrently, per kind)."""
    from campfire.features import chat, stories
    from model.prompts import Turn

    async def story(theme: str) -> dict:
        try:
            plan = stories.plan(app, theme)
        except stories.StoryDeclined as err:
            return {"text": "", "declined": str(err)}
        composed = await stories.compose(app, plan, max_tokens=max_tokens)
        return {"text": composed.result.text, "title": composed.result.title, "rejected": list(composed.rejected),
                "finish": composed.result.finish_reason, "attempts": composed.attempts}

    async def answer(question: str) -> dict:
        stats: dict[str, Any] = {}
        parts = [d async for d in chat.reply(app, app.settings.chat.persona, [Turn("user", question)], stats=stats)]
        declined = stats.get("finish_reason") == "declined"
        return {"text": "" if declined else "".join(parts), "declined": "".join(parts) if declined else None,
                "finish": stats.get("finish_reason")}

    out: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    out["stories"] = list(await asyncio.gather(*(story(t) for t in themes)))
    out["stories_s"] = time.perf_counter() - t0  # type: ignore[assignment]
    if questions:
        t0 = time.perf_counter()
        out["chat"] = list(await asyncio.gather(*(answer(q) for q in questions)))
        out["chat_s"] = time.perf_counter() - t0  # type: ignore[assignment]
    return out


async def run_previous(app: Any, themes: list[str], max_tokens: int) -> tuple[list[dict], float]:
    """9a73748's story pipeline as it behaved (see the module docstring)."""
    from model.story import Sampling, StoryRequest, write_story

    sampling = Sampling(temperature=app.settings.story.temperature, top_p=app.settings.story.top_p)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(
        write_story(app.generator, StoryRequest(theme), story=app.settings.story, max_tokens=max_tokens,
                    sampling=sampling, guard=False)
        for theme in themes
    ))
    return [{"text": r.text, "title": r.title} for r in results], time.perf_counter() - t0


def run_bare(model_path: Path, prompts: list[str], max_new_tokens: int, batch: int = 8) -> tuple[list[dict], float]:
    """transformers generate, greedy, batched ``batch`` at a time; the decoded new tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tok = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    texts: list[dict] = []
    t0 = time.perf_counter()
    for start in range(0, len(prompts), batch):
        chunk = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
                 for p in prompts[start : start + batch]]
        inputs = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
        for row in out:
            texts.append({"text": tok.decode(row[inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()})
    return texts, time.perf_counter() - t0


# ---- scoring -------------------------------------------------------------------------------------
def score(inputs: list[str], outputs: list[dict], cosines: list[float]) -> dict[str, Any]:
    """The table's row for one system on one input set (see the module docstring)."""
    from model.prompts import detect_language

    answered = [(i, o) for i, o in zip(inputs, outputs) if not o.get("declined")]
    texts = [o["text"] for _, o in answered]

    def pct(flags: list[bool]) -> float:
        return round(100 * sum(flags) / len(flags), 1) if flags else float("nan")

    return {
        "n": len(inputs), "answered": len(answered), "declined": len(inputs) - len(answered),
        "rejected": sum(bool(o.get("rejected")) for o in outputs),
        "retried": sum(o.get("attempts") == 2 for o in outputs), "loop_cut": sum(o.get("finish") == "loop" for o in outputs),
        "loops": sum(has_loop(t) for t in texts), "fffd": sum("\ufffd" in t for t in texts),
        "complete_pct": pct([bool(_END.search(t)) for t in texts]),
        "lang_match_pct": pct([bool(t.strip()) and detect_language(t) == detect_language(i) for i, t in
                               ((i, o["text"]) for i, o in answered)]),
        "on_theme": round(statistics.fmean(c for c, o in zip(cosines, outputs) if not o.get("declined")), 3)
        if answered else float("nan"),
    }


def cosines(embedder: Any, inputs: list[str], outputs: list[dict]) -> list[float]:
    texts = [o["text"] or " " for o in outputs]
    vec = embedder.encode(inputs + texts, normalize_embeddings=True, batch_size=32)
    n = len(inputs)
    return [float(vec[i] @ vec[n + i]) for i in range(n)]


def table(report: dict) -> str:
    cols = ["n", "answered", "declined", "rejected", "retried", "loop_cut", "loops", "fffd", "complete_pct", "lang_match_pct", "on_theme"]
    lines = [f"{'set':10s} {'system':9s} " + " ".join(f"{c:>14s}" for c in cols)]
    for name, systems in report["rows"].items():
        for system, row in systems.items():
            lines.append(f"{name:10s} {system:9s} " + " ".join(f"{row[c]!s:>14s}" for c in cols))
    return "\n".join(lines)


# ---- main ----------------------------------------------------------------------------------------
async def served(args: argparse.Namespace, model_path: Path, themes: list[str], questions: list[str]) -> dict:
    """Run campfire and previous against the generator (embedded unless ``--url``)."""
    from campfire.app import App
    from campfire.config import Secrets, Settings
    from model.generator import open_generator
    from model.tokens import TokenCounter

    generator: dict[str, Any] = {"url": args.url or "", "model_path": str(model_path), "max_concurrency": args.concurrency,
                                 "request_timeout_s": 3600}
    data_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "campfire-bench"
    served_settings = Settings(data_dir=data_dir, generator=generator)
    # languages only for the features (the server needs none of it)
    settings = Settings(data_dir=data_dir, generator=generator | ({"languages": args.languages.split(",")} if args.languages else {}))
    async with open_generator(served_settings, Secrets(None, None)) as client:
        app = App(settings=settings, store=None, recommender=None, generator=client,  # type: ignore[arg-type]
                  counter=TokenCounter(str(model_path)))
        camp = await run_campfire(app, themes, questions, args.max_tokens)
        previous, previous_s = await run_previous(app, themes, args.max_tokens)
    return {"campfire": camp, "previous": previous, "previous_s": previous_s}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.story_quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="OpenAI-compatible base URL (…/v1); default: start the embedded server")
    parser.add_argument("--model-path", default=None, help="prepared model folder (default: .cache/models/smollm2-135m-instruct)")
    parser.add_argument("--themes", type=int, default=30, help="themes, half English and half Chinese (at most 30)")
    parser.add_argument("--max-tokens", type=int, default=160, help="every system's token cap")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--languages", default=None, help="generator.languages for campfire (default: the settings')")
    parser.add_argument("--skip-bare", action="store_true")
    parser.add_argument("--skip-chat", action="store_true")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    model_path = Path(args.model_path or ROOT / ".cache" / "models" / "smollm2-135m-instruct")
    half = min(15, args.themes // 2)
    themes = EN_THEMES[:half] + ZH_THEMES[:half]
    questions = [] if args.skip_chat else QUESTIONS
    load = {"start": os.getloadavg()}
    log(f"{len(themes)} themes, {len(questions)} questions, max {args.max_tokens} tokens, load {load['start']}")
    res = asyncio.run(served(args, model_path, themes, questions))
    camp = res["campfire"]
    seconds = {"campfire_stories": camp["stories_s"], "previous_stories": res["previous_s"], "campfire_chat": camp.get("chat_s")}
    outputs = {"stories": {"campfire": camp["stories"], "previous": res["previous"]}, "chat": {"campfire": camp.get("chat", [])}}
    if not args.skip_bare:
        bare, seconds["bare_stories"] = run_bare(model_path, [f"Write a story about: {t}" for t in themes], args.max_tokens)
        outputs["stories"]["bare"] = bare
        if questions:
            outputs["chat"]["bare"], seconds["bare_chat"] = run_bare(model_path, questions, args.max_tokens)
    load["end"] = os.getloadavg()

    from sentence_transformers import SentenceTransformer

    from model.prepare import packaged_embedder

    embedder = SentenceTransformer(str(packaged_embedder()), device="cpu")
    rows: dict[str, dict[str, Any]] = {}
    for set_name, inputs in (("stories", themes), ("chat", questions)):
        for system, outs in outputs[set_name].items():
            if not outs:
                continue
            cos = cosines(embedder, inputs, outs)
            for lang, keep in (("all", None), ("en", False), ("zh", True)):
                idx = [i for i, x in enumerate(inputs) if keep is None or bool(re.search(r"[\u4e00-\u9fff]", x)) == keep]
                rows.setdefault(f"{set_name}/{lang}", {})[system] = score(
                    [inputs[i] for i in idx], [outs[i] for i in idx], [cos[i] for i in idx])
    def example(set_name: str, i: int) -> dict[str, str]:
        return {k: (v[i]["text"] or v[i].get("declined") or "")[:400] for k, v in outputs[set_name].items()}

    report = {"max_tokens": args.max_tokens, "seconds": {k: round(v, 1) for k, v in seconds.items() if v is not None},
              "load_average": load, "rows": rows,
              "examples": {"en_story": example("stories", 0), "zh_story": example("stories", len(themes) - 1)}}
    if questions:
        report["examples"] |= {"en_chat": example("chat", 0), "zh_chat": example("chat", len(questions) - 1)}
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
    else:
        print(table(report))
        print(json.dumps({k: report[k] for k in ("seconds", "load_average", "examples")}, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
