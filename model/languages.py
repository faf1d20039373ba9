"""Which languages the generator writes well: ``languages_of(settings) -> list[str]`` (ISO 639-1).

Features ask this before serving a request in a language (a Chinese story on the English-only
SmolLM2 is declined politely instead of posting gibberish). The answer, first that applies:

1. ``generator.languages`` when set (config.toml / ``CAMPFIRE_GENERATOR__LANGUAGES='["en","zh"]'``);
   with ``generator.url`` set (a remote server) and no ``generator.model_path``, the family of
   ``generator.model`` (step 3's table) and then step 4;
2. what ``campfire model prepare`` / ``campfire model pull`` recorded in the prepared folder's
   ``campfire-prepared.json`` (from the GGUF's ``general.languages``, the model card and the family);
3. the prepared folder's model card (``README.md`` front matter ``language:``) joined with its
   family's languages (:data:`FAMILIES`, from names: the folder, ``generator.model``, the config);
4. ``["en"]`` (the packaged SmolLM2-135M-Instruct is English-only: its card lists ``en``).

Model cards understate (Qwen2.5's card lists only ``en``; its README says 29+ languages, Chinese
among them), hence the family table. The table's sources are the families' model cards.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from pathlib import Path
from typing import Any

from campfire.config import Settings

log = logging.getLogger(__name__)

DEFAULT_LANGUAGES = ("en",)
MARKER = "campfire-prepared.json"  # model.prepare.PREPARED_MARKER (not imported: prepare loads torch)

#: (pattern on a lower-cased model name, languages the family's model card claims). First match wins.
FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"smollm", ("en",)),  # HuggingFaceTB/SmolLM2-*: "language: en"
    (r"tinyllama", ("en",)),
    (r"qwen", ("en", "zh", "fr", "es", "pt", "de", "it", "ru", "ja", "ko", "vi", "th", "ar")),  # Qwen2.5 card
    (r"(chat)?glm", ("zh", "en")),  # THUDM GLM-4 / ChatGLM
    (r"(^|[^a-z])yi([^a-z]|$)", ("en", "zh")),  # 01-ai Yi
    (r"deepseek", ("en", "zh")),
    (r"internlm", ("en", "zh")),
    (r"baichuan", ("zh", "en")),
    (r"minicpm", ("en", "zh")),
    (r"llama[-_ ]?3", ("en", "de", "fr", "it", "pt", "hi", "es", "th")),  # Meta Llama 3.1/3.2 cards
    (r"mistral|mixtral", ("en", "fr", "de", "es", "it")),
    (r"phi[-_ ]?[234]", ("en",)),
)

_NAMES = {"english": "en", "chinese": "zh", "mandarin": "zh", "french": "fr", "german": "de", "spanish": "es",
          "japanese": "ja", "korean": "ko", "russian": "ru", "portuguese": "pt", "italian": "it"}


def normalise(codes: Any) -> list[str]:
    """ISO 639-1/-3 codes from a card's or file's language list (``"zh-CN"`` → ``zh``, ``"English"``
    → ``en``; anything else dropped), ``en`` first, without repeats."""
    if isinstance(codes, str):
        codes = [codes]
    out: list[str] = []
    for code in codes or []:
        c = str(code).strip().lower().replace("_", "-").split("-")[0]
        c = _NAMES.get(c, c)
        if re.fullmatch(r"[a-z]{2,3}", c) and c not in out:
            out.append(c)
    return sorted(out, key=lambda c: c != "en")


def family_languages(*names: str) -> list[str]:
    """Languages of the first :data:`FAMILIES` entry matching any of ``names`` (model ids, file or
    folder names); [] when none matches."""
    for pattern, languages in FAMILIES:
        if any(name and re.search(pattern, name.lower()) for name in names):
            return list(languages)
    return []


def card_languages(folder: Path) -> list[str]:
    """The ``language:`` list of ``folder/README.md``'s YAML front matter (a Hugging Face model card); []."""
    card = Path(folder) / "README.md"
    try:
        text = card.read_text(encoding="utf-8", errors="replace")[:20000]
    except OSError:
        return []
    match = re.match(r"---\s*\n(.*?)\n---", text, re.DOTALL)
    if not match:
        return []
    block = re.search(r"^language:[ \t]*(.*?)(?=^[^\s-]|\Z)", match.group(1) + "\n", re.DOTALL | re.MULTILINE)
    if not block:
        return []
    return normalise(re.findall(r"[A-Za-z][A-Za-z_-]*", block.group(1)))


def gguf_facts(path: Path, *names: str) -> dict[str, Any]:
    """``{"name", "languages"}`` of a GGUF file: its ``general.name`` (else the file name) and
    ``general.languages`` joined with the family's (:func:`family_languages` of its name, basename,
    file name and ``names``, e.g. the repo id). Reads the header only (memory-mapped). Raises
    ``OSError`` / ``ValueError`` for an unreadable file."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    name = field("general.name") or Path(path).stem
    stated = normalise(field("general.languages") or [])
    family = family_languages(str(name), field("general.basename") or "", Path(path).name, *names)
    return {"name": str(name), "languages": normalise(stated + family)}


def detect_languages(folder: Path, *names: str) -> list[str]:
    """Languages of a prepared model folder (steps 2–3 of the module docstring); [] when unknown."""
    folder = Path(folder)
    try:
        recorded = json.loads((folder / MARKER).read_text()).get("languages")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded:
        return normalise(recorded)
    config_names: list[str] = []
    try:
        config = json.loads((folder / "config.json").read_text())
        config_names = [str(config.get("_name_or_path") or ""), str(config.get("model_type") or "")]
    except (OSError, ValueError, AttributeError):
        pass
    found = card_languages(folder) + family_languages(folder.name, *names, *config_names)
    return normalise(found)


@functools.lru_cache(maxsize=16)
def _detected(folder: str, model: str, stamp: float) -> tuple[str, ...]:
    return tuple(detect_languages(Path(folder), model))


def languages_of(settings: Settings) -> list[str]:
    """The languages the configured generator writes well (module docstring), ``en`` first, e.g.
    ``["en"]`` for the packaged SmolLM2, ``["en", "zh", …]`` for Qwen2.5. Never raises; reads two
    small files at most, cached until the prepared folder's marker changes."""
    configured = normalise(settings.generator.languages)
    if configured:
        return configured
    if settings.generator.url and not settings.generator.model_path:  # a remote server: only its model's name
        return normalise(family_languages(settings.generator.model)) or list(DEFAULT_LANGUAGES)
    folder = settings.generator_model_path
    try:
        stamp = (folder / MARKER).stat().st_mtime
    except OSError:
        stamp = 0.0
    detected = list(_detected(str(folder), settings.generator.model, stamp))
    return detected or list(DEFAULT_LANGUAGES)
