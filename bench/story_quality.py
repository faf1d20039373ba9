"""Story quality: Campfire's ``/story`` pipeline vs a bare ``generate`` with a plain prompt, side by side.

    python -m bench.story_quality [--url URL] [--model-path DIR] [--themes 30] [--length short]
        [--max-tokens N] [--concurrency 8] [--json]

Themes: English ones are titles of the SCP Foundation tales in ``../shared/data/stories/scp_tales.jsonl``
(CC BY-SA 3.0, see that folder's README), Chinese ones are written here; 2/3 English, 1/3 Chinese.

For each theme both systems write a story of the requested length with the same token budget:
- **campfire**: :func:`model.story.write_story` against the generator at ``--url`` (default: the embedded
  server, started and stopped here) — language-aware prompt, title line, sampling settings, sentence trim;
- **bare**: transformers ``generate`` on the same model with ``"Write a story about: <theme>"`` through the
  chat template and the model's default generation config (greedy), batched 8 at a time.

Metrics (mean over themes, and per language): **on_theme** — cosine of the theme and the story with the
packaged all-MiniLM-L6-v2 (English-trained: its Chinese numbers are weak evidence); **length_ratio** —
words (English) or Chinese characters ÷ the requested length (150/400/800 words; 250/650/1300 characters);
**language_match** — share of stories written in the theme's language (script-based detection);
**distinct_2** — unique ÷ total word (English) or character (Chinese) bigrams, higher = less repetition;
**full_sentence_end** — share ending on sentence-final punctuation.
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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
TALES = ROOT.parent / "shared" / "data" / "stories" / "scp_tales.jsonl"

ZH_THEMES = [
    "雨天的一次偶遇", "最后一个灯塔看守人", "会自己改变的地图", "开面包店的猫", "月亮上的邮局",
    "祖母的旧钥匙", "迷路的机器人", "夏夜的萤火虫", "山顶上的图书馆", "一封迟到十年的信",
    "会说话的雨伞", "地铁末班车上的陌生人",
]
_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’»)）」』]*\s*$")


def english_themes(n: int) -> list[str]:
    themes: list[str] = []
    with open(TALES, encoding="utf-8") as f:
        for line in f:
            title = json.loads(line).get("title", "").strip()
            if title and len(title) <= 80 and not title.lower().startswith("scp-") and title not in themes:
                themes.append(title)
            if len(themes) >= n:
                break
    return themes


def _units(text: str, language: str) -> list[str]:
    if language == "zh":
        return [ch for ch in text if "\u4e00" <= ch <= "\u9fff"]
    return re.findall(r"[A-Za-z']+", text.lower())


def metrics(theme: str, text: str, language: str, requested: int, cosine: float) -> dict:
    from model.prompts import detect_language

    units = _units(text, language)
    bigrams = list(zip(units, units[1:]))
    return {
        "on_theme": cosine,
        "length_ratio": len(units) / requested,
        "language_match": float(bool(text.strip()) and detect_language(text) == language),
        "distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else 0.0,
        "full_sentence_end": float(bool(_SENTENCE_END.search(text))),
    }


async def campfire_stories(url: str | None, model_path: Path, themes: list[str], length: str, max_tokens: int | None,
                           concurrency: int) -> tuple[list[tuple[str, str]], float]:
    from campfire.config import Secrets, Settings
    from model.generator import open_generator
    from model.story import StoryRequest, write_story

    settings = Settings(data_dir=Path(os.environ.get("TMPDIR", "/tmp")) / "campfire-bench",
                        generator={"url": url or "", "model_path": str(model_path), "max_concurrency": concurrency,
                                   "request_timeout_s": 1800})
    async with open_generator(settings, Secrets(None, None)) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(
            write_story(client, StoryRequest(theme, length=length), story=settings.story, max_tokens=max_tokens)
            for theme in themes
        ))
        elapsed = time.perf_counter() - t0
    return [(r.title, r.text) for r in results], elapsed


def bare_stories(model_path: Path, themes: list[str], max_new_tokens: list[int], batch: int = 8) -> tuple[list[str], float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    tok = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16).eval()
    texts: list[str] = []
    t0 = time.perf_counter()
    for start in range(0, len(themes), batch):
        chunk = themes[start : start + batch]
        prompts = [tok.apply_chat_template([{"role": "user", "content": f"Write a story about: {t}"}],
                                           add_generation_prompt=True, tokenize=False) for t in chunk]
        inputs = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max(max_new_tokens[start : start + batch]), pad_token_id=tok.pad_token_id)
        for row, budget in zip(out, max_new_tokens[start : start + batch]):
            new = row[inputs["input_ids"].shape[1] :][:budget]
            texts.append(tok.decode(new, skip_special_tokens=True).strip())
    return texts, time.perf_counter() - t0


def summarise(rows: list[dict]) -> dict:
    keys = ["on_theme", "length_ratio", "language_match", "distinct_2", "full_sentence_end"]
    return {k: round(statistics.fmean(r[k] for r in rows), 3) for k in keys} | {"n": len(rows)}


def main(argv: list[str] | None = None) -> int:
    from model.prompts import LENGTH_WORDS, LENGTH_ZH_CHARS, detect_language, story_max_tokens

    parser = argparse.ArgumentParser(prog="python -m bench.story_quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="OpenAI-compatible base URL (…/v1); default: start the embedded server")
    parser.add_argument("--model-path", default=None, help="prepared model folder (default: .cache/models/smollm2-135m-instruct)")
    parser.add_argument("--themes", type=int, default=30, help="number of themes (≥ 30 for the report)")
    parser.add_argument("--length", choices=["short", "medium", "long"], default="short")
    parser.add_argument("--max-tokens", type=int, default=None, help="cap both systems' budget (faster, shorter stories)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    model_path = Path(args.model_path or ROOT / ".cache" / "models" / "smollm2-135m-instruct")
    n_zh = args.themes // 3
    themes = english_themes(args.themes - n_zh) + (ZH_THEMES * 3)[:n_zh]
    langs = [detect_language(t) for t in themes]
    requested = [LENGTH_ZH_CHARS[args.length] if lang == "zh" else LENGTH_WORDS[args.length] for lang in langs]
    budgets = [args.max_tokens or story_max_tokens(args.length, lang) for lang in langs]

    log(f"{len(themes)} themes ({len(themes) - n_zh} en, {n_zh} zh), length {args.length}, budget {sorted(set(budgets))} tokens")
    stories, camp_s = asyncio.run(campfire_stories(args.url, model_path, themes, args.length, args.max_tokens, args.concurrency))
    log(f"campfire pipeline: {camp_s:.1f} s")
    bare, bare_s = bare_stories(model_path, themes, budgets)
    log(f"bare generate: {bare_s:.1f} s")

    from sentence_transformers import SentenceTransformer

    from model.prepare import packaged_embedder

    embedder = SentenceTransformer(str(packaged_embedder()), device="cpu")
    camp_texts = [text for _title, text in stories]  # body only: a fallback title repeats the theme
    vec = embedder.encode(themes + camp_texts + bare, normalize_embeddings=True, batch_size=32)
    n = len(themes)
    rows: dict[str, list[dict]] = {"campfire": [], "bare": []}
    for i, theme in enumerate(themes):
        rows["campfire"].append(metrics(theme, stories[i][1], langs[i], requested[i], float(vec[i] @ vec[n + i])) | {"lang": langs[i]})
        rows["bare"].append(metrics(theme, bare[i], langs[i], requested[i], float(vec[i] @ vec[2 * n + i])) | {"lang": langs[i]})

    report = {
        "themes": len(themes), "length": args.length, "max_tokens": args.max_tokens,
        "seconds": {"campfire": round(camp_s, 1), "bare": round(bare_s, 1)},
        "all": {k: summarise(v) for k, v in rows.items()},
        "en": {k: summarise([r for r in v if r["lang"] == "en"]) for k, v in rows.items()},
        "zh": {k: summarise([r for r in v if r["lang"] == "zh"]) for k, v in rows.items()},
        "examples": {"theme": themes[0], "campfire": camp_texts[0][:300], "bare": bare[0][:300]},
    }
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    print(f"\n{'subset':6s} {'metric':18s} {'campfire':>9s} {'bare':>9s} {'ratio':>7s}")
    for subset in ("all", "en", "zh"):
        for metric in ("on_theme", "length_ratio", "language_match", "distinct_2", "full_sentence_end"):
            c, b = report[subset]["campfire"][metric], report[subset]["bare"][metric]
            print(f"{subset:6s} {metric:18s} {c:9.3f} {b:9.3f} {c / b if b else float('nan'):7.2f}")
    print(f"\nexample theme: {themes[0]!r}\n  campfire: {camp_texts[0][:200]!r}\n  bare:     {bare[0][:200]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
