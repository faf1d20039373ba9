"""Training data for ``campfire model finetune``: rated stories → chat-template examples, the held-out
split and batches.

An example is exactly what ``/story`` asks and what it should get back: the messages of
:func:`model.prompts.build_story_messages` (theme = the story's theme, or its title) rendered with the
model's chat template and a generation prompt, then the answer ``"<title>\\n\\n<story><|im_end|>"`` (the
format the story system prompt asks for). Only the answer's tokens carry a loss (labels ``-100`` on the
prompt), so the model learns to answer the task as it is asked, not to predict the prompt.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.prompts import (
    LENGTH_WORDS,
    build_story_messages,
    detect_language,
    strip_controls,
)

IGNORE_INDEX = -100  # label of a token without a loss (torch's cross_entropy default ignore_index)
_WORD = re.compile(r"\S+")
_LINE_SPACE = re.compile(r"[ \t]*\n[ \t]*")
_BLANKS = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class Story:
    """One rated story to train on. ``id``: stable within its source (the held-out split hashes it);
    ``theme``: what it was asked for (empty = its title); ``genre``/``length``/``language`` as ``/story``
    takes them (``length``/``language`` empty = chosen from the text); ``credit``: author and page of a
    text under an attribution licence (kept for the model card's credits)."""

    id: str
    title: str
    text: str
    rating: float = 0.0
    theme: str = ""
    genre: str = "any"
    length: str = ""
    language: str = ""
    credit: str = ""


@dataclass(frozen=True)
class Example:
    """One tokenised example: ``input_ids`` and ``labels`` (same length, ``-100`` where no loss);
    ``tokens``: tokens with a loss; ``truncated``: the answer was cut at ``max_length``."""

    story_id: str
    input_ids: list[int]
    labels: list[int]
    tokens: int
    truncated: bool


class BadStoriesFile(ValueError):
    """A stories file that cannot be read; ``str()`` names the file and line."""


def read_stories(path: str | Path, *, min_rating: float | None = None) -> list[Story]:
    """Stories of a JSON-lines file: ``title`` and ``text`` (required), ``rating`` (number, default 0),
    ``item_id`` or ``id`` (default: the title), optional ``theme``/``genre``/``length``/``language``
    and ``creator``/``url`` (kept as the story's ``credit``).
    Keeps those rated above ``min_rating`` (all when None) and not marked ``"nsfw": true`` (the tuned
    model answers in every channel). Blank lines are skipped.
    Raises FileNotFoundError, :class:`BadStoriesFile` (a line that is not JSON or lacks title/text)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    stories: list[Story] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
                story = story_from_json(obj)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise BadStoriesFile(f"{path}:{lineno}: not valid JSON ({getattr(err, 'msg', err)})") from None
            except (ValueError, TypeError) as err:
                raise BadStoriesFile(f"{path}:{lineno}: {err}") from None
            if obj.get("nsfw") is not True and (min_rating is None or story.rating > min_rating):
                stories.append(story)
    return stories


def story_from_json(obj: Any) -> Story:
    """A :class:`Story` from one decoded JSON line (see :func:`read_stories`); raises TypeError (not an
    object) or ValueError (a missing or wrong field)."""
    if not isinstance(obj, dict):
        raise TypeError("a line must be a JSON object")
    title, text = obj.get("title"), obj.get("text")
    if not isinstance(title, str) or not title.strip():
        raise ValueError("missing or empty 'title'")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("missing or empty 'text'")
    try:
        rating = float(obj.get("rating") or 0)
    except (TypeError, ValueError):
        raise ValueError(f"'rating' must be a number, got {obj.get('rating')!r}") from None
    ident = obj.get("item_id", obj.get("id")) or title
    credit = ", ".join(str(obj[k]) for k in ("creator", "url") if obj.get(k))
    return Story(id=str(ident), title=title.strip(), text=text.strip(), rating=rating,
                 theme=str(obj.get("theme") or ""), genre=str(obj.get("genre") or "any"),
                 length=str(obj.get("length") or ""), language=str(obj.get("language") or ""), credit=credit)


def length_for(text: str) -> str:
    """The ``/story`` length closest to ``text``'s word count (150 / 400 / 800 words: ``LENGTH_WORDS``),
    so a long tale is asked for as ``long``."""
    words = len(_WORD.findall(text))
    return min(LENGTH_WORDS, key=lambda k: abs(LENGTH_WORDS[k] - words))


def story_messages(story: Story) -> list[dict]:
    """The ``/story`` request for ``story`` (``build_story_messages``): its theme (or title), genre,
    length (from the text when not given) and language (detected when not given)."""
    language = story.language if story.language in ("en", "zh") else detect_language(story.text)
    length = story.length if story.length in LENGTH_WORDS else length_for(story.text)
    theme = strip_controls(story.theme or story.title).strip()[:300]
    return build_story_messages(theme, genre=story.genre or "any", length=length, language=language)  # type: ignore[arg-type]


def answer_text(story: Story) -> str:
    """What ``/story`` should answer: the title alone on the first line, a blank line, the story — with
    spaces around line breaks dropped and blank lines collapsed to one (web exports such as the SCP
    wiki's write ``" \\n\\n "`` between paragraphs; the model should not learn to)."""
    text = _BLANKS.sub("\n\n", _LINE_SPACE.sub("\n", strip_controls(story.text))).strip()
    return f"{strip_controls(story.title).strip()}\n\n{text}"


def encode(tokenizer: Any, story: Story, max_length: int) -> Example:
    """Tokenise ``story`` as a chat example of at most ``max_length`` tokens: the prompt (chat template
    with generation prompt; never cut) then the answer and the template's end-of-turn, cut to fit.
    Raises ValueError when the prompt alone leaves fewer than 8 answer tokens."""
    prompt = tokenizer.apply_chat_template(story_messages(story), add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    end = tokenizer.eos_token or ""
    answer_ids = tokenizer(answer_text(story) + end + "\n", add_special_tokens=False)["input_ids"]
    room = max_length - len(prompt_ids)
    if room < 8:
        raise ValueError(f"max_length {max_length} leaves no room for the story after a {len(prompt_ids)}-token prompt")
    truncated = len(answer_ids) > room
    answer_ids = answer_ids[:room]
    return Example(story_id=story.id, input_ids=prompt_ids + answer_ids,
                   labels=[IGNORE_INDEX] * len(prompt_ids) + answer_ids, tokens=len(answer_ids), truncated=truncated)


def id_fraction(story_id: str) -> float:
    """A stable number in [0, 1) for ``story_id`` (SHA-256 of its UTF-8 bytes, first 8 bytes), the same
    on every machine and Python run (unlike ``hash()``)."""
    digest = hashlib.sha256(story_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split(stories: Iterable[Story], share: float) -> tuple[list[Story], list[Story]]:
    """``(train, held_out)``: a story is held out when :func:`id_fraction` of its id is below ``share``;
    with ``share`` > 0 at least one story (the lowest fraction) is held out. Order kept."""
    stories = list(stories)
    held = [s for s in stories if id_fraction(s.id) < share]
    if share > 0 and not held and len(stories) > 1:
        held = [min(stories, key=lambda s: id_fraction(s.id))]
    held_ids = {s.id for s in held}
    return [s for s in stories if s.id not in held_ids], held


def fingerprint(examples: Iterable[Example]) -> str:
    """SHA-256 (hex, 16 chars) of the examples' ids and token ids: whether a checkpoint was trained on
    this very data."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(ex.story_id.encode())
        h.update(json.dumps(ex.input_ids).encode())
    return h.hexdigest()[:16]


def collate(examples: list[Example], pad_id: int) -> dict[str, Any]:
    """A right-padded batch: ``input_ids``, ``attention_mask``, ``labels`` (``(B, T)`` int64 tensors)."""
    import torch

    width = max(len(ex.input_ids) for ex in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ex in enumerate(examples):
        n = len(ex.input_ids)
        ids[row, :n] = torch.tensor(ex.input_ids)
        labels[row, :n] = torch.tensor(ex.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batches(examples: list[Example], batch_size: int, *, seed: int, epoch: int) -> Iterator[list[Example]]:
    """The examples of one epoch in a shuffled order fixed by ``(seed, epoch)`` (so a resumed run sees the
    same order), ``batch_size`` at a time (the last batch may be smaller)."""
    import random

    order = list(range(len(examples)))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    for start in range(0, len(order), batch_size):
        yield [examples[i] for i in order[start:start + batch_size]]
