"""The end of ``campfire model finetune``: the LoRA adapter merged into the base weights and written as a
new model folder (``data/models/NAME``) that ``campfire serve`` loads like the prepared one, with a
model card (``README.md`` for people, ``campfire-finetune.json`` for programs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

CARD_JSON = "campfire-finetune.json"
CARD_README = "README.md"
CREDITS = "CREDITS.jsonl"


def write_merged(peft_model: Any, tokenizer: Any, out: Path, card: dict[str, Any],
                 credits: list[dict[str, str]] | None = None) -> Path:
    """Merge ``peft_model``'s adapter into its base (``merge_and_unload``), cast to bfloat16 (the prepared
    folder's dtype) and write weights (safetensors), generation config, tokenizer and chat template, the
    card and, when given, ``credits`` (one JSON line per training story from an attributed source) to
    ``out``. Written into a temporary sibling then renamed: an interrupted write leaves no half folder;
    an existing ``out`` is replaced. Returns ``out``."""
    import torch

    merged = peft_model.merge_and_unload()
    merged = merged.to(torch.bfloat16)
    merged.config.use_cache = True  # turned off for training; generation needs its KV cache
    tmp = out.with_name(f".{out.name}.writing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / CARD_JSON).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp / CARD_README).write_text(card_markdown(card), encoding="utf-8")
    if credits:
        with (tmp / CREDITS).open("w", encoding="utf-8") as f:
            for row in credits:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def card_markdown(card: dict[str, Any]) -> str:
    """The human model card: what was tuned on what, the hyper-parameters, held-out loss and perplexity
    before and after, the loss curve, date and licence note."""
    data, hp, ev = card.get("data", {}), card.get("hyperparameters", {}), card.get("held_out", {})
    lines = [
        f"# {card.get('name', 'fine-tuned model')}",
        "",
        (f"LoRA fine-tune of `{card.get('base')}` with `campfire model finetune`, merged into the weights "
         f"(bfloat16), on {card.get('date')}."),
        "",
        "## Data",
        f"- source: {data.get('source')}",
        (f"- stories: {data.get('train')} for training, {data.get('held_out')} held out "
         f"(SHA-256 of the id < {data.get('held_out_share')}); {data.get('train_tokens')} answer tokens"),
        f"- selection: rated above {data.get('min_rating')}" + (
            f"; trained only on those whose opening matches their theme (cosine ≥ {data['theme_match']})"
            if data.get("theme_match") else ""),
        "- format: the `/story` prompt (theme = the title) through the chat template; loss on the answer only",
    ]
    if data.get("licence"):
        lines.append(f"- licence of the training texts: {data['licence']} (authors and pages: `{CREDITS}`)")
    lines += ["", "## Hyper-parameters", *[f"- {k}: {_fmt(v)}" for k, v in hp.items()], "",
              "## Held-out loss (nats per answer token)",
              f"- before: {_fmt(ev.get('loss_before'))} (perplexity {_fmt(ev.get('perplexity_before'))})",
              f"- after: {_fmt(ev.get('loss_after'))} (perplexity {_fmt(ev.get('perplexity_after'))})",
              f"- texts: {ev.get('texts')}, tokens: {ev.get('tokens')}", "",
              "## Training",
              (f"- steps: {card.get('steps')}, {_fmt(card.get('seconds_per_step'))} s per step, "
               f"{_fmt(card.get('train_seconds'))} s in all on {card.get('device')} ({card.get('threads')} threads)"),
              "- loss curve (step: mean training loss since the previous point): "
              + ", ".join(f"{int(s)}: {loss:.3f}" for s, loss in card.get("loss_curve", [])), ""]
    return "\n".join(lines)


def read_card(folder: str | Path) -> dict[str, Any] | None:
    """The card of a fine-tuned folder (``campfire-finetune.json``), or None for another folder."""
    path = Path(folder) / CARD_JSON
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
