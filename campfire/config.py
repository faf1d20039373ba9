"""Typed settings, read from ``config.toml`` and overridden by ``CAMPFIRE_…`` environment variables.

Precedence (highest first): keyword overrides (the CLI's ``--data-dir``), environment variables
(``CAMPFIRE_DATA_DIR``, ``CAMPFIRE_GENERATOR__URL``, … nested keys joined by ``__``), the TOML
file, the defaults below. Secrets are never read from the file: see :func:`secrets_from_env`.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_CONFIG = Path("config.toml")


class ConfigError(Exception):
    """A setting is missing or invalid; ``str()`` is one line naming the key and where it came from
    (the config file or the environment variable). It never contains the value of a secret-like key."""


#: The environment variables :func:`secrets_from_env` reads — the only place secrets come from.
DISCORD_TOKEN_ENV = "DISCORD_TOKEN"
GENERATOR_API_KEY_ENVS = ("CAMPFIRE_GENERATOR_API_KEY", "OPENAI_API_KEY")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GeneratorSettings(_Section):
    url: str = ""  # OpenAI-compatible base URL ending in /v1; empty = run the embedded server
    model: str = ""  # model name sent to the server; empty = the served folder's name
    model_path: str = ""  # local transformers folder to serve; empty = <data_dir>/models/smollm2-135m-instruct
    tokenizer_path: str = ""  # tokenizer for prompt budgets; empty = model_path
    device: Literal["auto", "cpu", "cuda"] = "auto"
    engine: Literal["auto", "transformers", "llama.cpp"] = "auto"  # model.engine: auto = transformers on CUDA, llama.cpp on CPU
    threads: int = Field(0, ge=0, le=1024)  # 0 = follow the free cores (llama.cpp: model.threads_follow), else cores − 1 (≤ 4), − 2
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)  # campfire serve; 0 = a free port
    request_timeout_s: float = Field(120.0, gt=0)
    connect_retries: int = Field(3, ge=0, le=10)
    max_concurrency: int = Field(8, ge=1, le=256)
    breaker_failures: int = Field(3, ge=1)
    breaker_reset_s: float = Field(15.0, gt=0)
    startup_timeout_s: float = Field(180.0, gt=0)
    cb_memory_percent: float = Field(0.05, gt=0, le=0.9)  # paged KV cache share of RAM/VRAM
    context_tokens: int = Field(2048, ge=256)
    languages: list[Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]] = []  # ISO 639-1 codes; [] = detect (model.languages)


class ChatSettings(_Section):
    persona: str = (
        "You are Campfire, a friendly, concise assistant for this Discord community. "
        "Answer helpfully and briefly."
    )
    history_messages: int = Field(20, ge=1, le=200)
    history_token_budget: int = Field(1024, ge=64)
    max_reply_tokens: int = Field(256, ge=8, le=4096)
    temperature: float = Field(0.7, ge=0, le=2)
    frequency_penalty: float = Field(0.3, ge=-2, le=2)  # bench/penalty_sweep.py: 0 loops, most complete endings
    edit_interval_s: float = Field(1.0, ge=0.2)


class StorySettings(_Section):
    max_theme_chars: int = Field(300, ge=10, le=2000)
    cooldown_s: float = Field(30.0, ge=0)
    temperature: float = Field(0.8, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    frequency_penalty: float = Field(0.6, ge=-2, le=2)  # bench/penalty_sweep.py: 0/12 loops, best endings


class RecsysSettings(_Section):
    embedder: str = ""  # local sentence-transformers folder; empty = packaged all-MiniLM-L6-v2
    embed_batch_size: int = Field(64, ge=1, le=4096)
    # Vectors per guild index above which HNSW replaces exact search. 20k: a digest's batched search of
    # 10k queries (k=50, 2 cores) took 3.6 s exact vs 1.3 s HNSW at 20k vectors (9.8 vs 1.5 s at 50k),
    # recall@50 1.000 on clustered 384-d vectors; one query 1.9 vs 0.3 ms. Measured with faiss 1.15.
    hnsw_threshold: int = Field(20_000, ge=1)
    half_life_days: float = Field(14.0, gt=0)
    mmr_lambda: float = Field(0.7, ge=0, le=1)
    picks_per_member: int = Field(3, ge=1, le=25)
    repeat_window_days: int = Field(30, ge=0)
    min_message_chars: int = Field(40, ge=0)


_HHMM = re.compile(r"^\s*(\d{1,2})[:h.](\d{2})\s*$")


def parse_hhmm(text: str) -> str:
    """A time of day on a 24-hour clock → ``"HH:MM"`` (``"7:05"``, ``"23h59"``, ``"9.30"`` accepted).
    Raises ValueError with a sentence an admin can read. The one HH:MM parser (settings, ``/campfire
    settings``, the console; re-exported by :mod:`campfire.features.guilds`)."""
    m = _HHMM.match(text)
    if not m or not (0 <= int(m[1]) < 24 and 0 <= int(m[2]) < 60):
        raise ValueError(f"“{text}” is not a time of day: use HH:MM on a 24-hour clock, e.g. 18:00.")
    return f"{int(m[1]):02d}:{int(m[2]):02d}"


def parse_timezone(name: str) -> str:
    """An IANA timezone name (``Europe/Paris``), stripped, checked with :mod:`zoneinfo`. Raises
    ValueError with a sentence an admin can read. The one timezone check."""
    name = name.strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"“{name}” is not an IANA timezone: use a name such as Europe/Paris, Asia/Shanghai or UTC.") from None
    return name


def zone(name: str | None, default: str = "UTC") -> ZoneInfo:
    """The :class:`ZoneInfo` for ``name`` (empty/None: ``default``). A stored name that is no longer
    valid falls back to ``default`` with a warning, so one bad row cannot stop a daily post;
    ``default`` itself must be valid (ValueError otherwise)."""
    try:
        return ZoneInfo(parse_timezone(name or default))
    except ValueError:
        logging.getLogger(__name__).warning("unknown timezone %r; using %s", name, default)
        return ZoneInfo(parse_timezone(default))


class DigestSettings(_Section):
    default_time: str = "18:00"  # guild local time HH:MM when none is set
    default_timezone: str = "UTC"  # IANA name when none is set

    @field_validator("default_time")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        return parse_hhmm(v)

    @field_validator("default_timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return parse_timezone(v)


class DiscordSettings(_Section):
    test_guild_id: int = 0  # sync app commands to this guild at start (instant); 0 = global sync
    cooldown_message_s: float = Field(2.0, ge=0)


class OpsSettings(_Section):
    metrics_port: int = Field(0, ge=0, le=65535)  # the bot's /health and /metrics; 0 = off
    metrics_host: str = "127.0.0.1"  # bind address; loopback unless a scraper elsewhere needs it


class Settings(BaseSettings):
    """All of Campfire's settings. Every key is documented in ``config.toml``."""

    model_config = SettingsConfigDict(
        env_prefix="CAMPFIRE_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    data_dir: Path = Path("data")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    generator: GeneratorSettings = GeneratorSettings()
    chat: ChatSettings = ChatSettings()
    story: StorySettings = StorySettings()
    recsys: RecsysSettings = RecsysSettings()
    digest: DigestSettings = DigestSettings()
    discord: DiscordSettings = DiscordSettings()
    ops: OpsSettings = OpsSettings()

    _toml_path: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_path))
        return tuple(sources)

    # Derived paths: everything Campfire writes lives under data_dir.
    @property
    def db_path(self) -> Path:
        return self.data_dir / "campfire.db"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "indexes"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def generator_model_path(self) -> Path:
        """The transformers folder the embedded server loads (made by ``campfire model prepare``)."""
        if self.generator.model_path:
            return Path(self.generator.model_path)
        return self.models_dir / "smollm2-135m-instruct"


@dataclass(frozen=True)
class Secrets:
    """Secrets come from the environment only, never from ``config.toml`` or logs."""

    discord_token: str | None
    generator_api_key: str | None

    def __repr__(self) -> str:  # never print a secret
        return f"Secrets(discord_token={'set' if self.discord_token else 'unset'}, generator_api_key={'set' if self.generator_api_key else 'unset'})"


def secrets_from_env(env: dict[str, str] | None = None) -> Secrets:
    """Read ``DISCORD_TOKEN`` and ``CAMPFIRE_GENERATOR_API_KEY`` (or ``OPENAI_API_KEY``)."""
    env = os.environ if env is None else env
    return Secrets(
        discord_token=(env.get(DISCORD_TOKEN_ENV) or "").strip() or None,
        generator_api_key=next((v.strip() for v in (env.get(k) for k in GENERATOR_API_KEY_ENVS) if v and v.strip()), None),
    )


# ---- errors an admin can act on ------------------------------------------------------------------
# A key whose name says it holds a secret. Matched on whole words of the key (``history_token_budget``
# matches, ``context_tokens`` does not); its value is never shown, whatever the error.
_SECRET_WORDS = re.compile(
    r"(?:^|[_\-.])(?:token|secret|secrets|password|passwd|pwd|api_?key|apikey|access_?key|private_?key|"
    r"credentials?|auth|bearer|webhook)(?:$|[_\-.])",
    re.IGNORECASE,
)
_MAX_SHOWN = 80  # characters of a rejected (non-secret) value shown in an error


def is_secret_key(key: str) -> bool:
    """Whether a setting's name looks like it holds a secret (token, secret, password, api_key, …)."""
    return bool(_SECRET_WORDS.search(key))


def _secret_hint(section: str | None, key: str) -> str:
    """The environment variable(s) Campfire actually reads for the secret ``[section] key``."""
    k = key.lower()
    generator = " or ".join(GENERATOR_API_KEY_ENVS)
    if section == "generator" or any(w in k for w in ("api_key", "apikey", "openai", "generator")):
        return f"set {generator} in the environment"
    if section in (None, "discord") and "token" in k:
        return f"set {DISCORD_TOKEN_ENV} in the environment"
    return f"Campfire reads only {DISCORD_TOKEN_ENV} (the bot token) and {generator} (the generator key) from the environment"


def _known_keys(loc: tuple[str, ...]) -> list[str]:
    """The keys valid at ``loc``'s level: top-level keys, or those of its section."""
    if len(loc) == 1:
        return list(Settings.model_fields)
    field = Settings.model_fields.get(loc[0]) if len(loc) == 2 else None
    kind = field.annotation if field is not None else None
    return list(kind.model_fields) if isinstance(kind, type) and issubclass(kind, BaseModel) else []


def _did_you_mean(loc: tuple[str, ...]) -> str:
    guess = difflib.get_close_matches(loc[-1].lower(), _known_keys(loc), n=1, cutoff=0.6)
    return f" — did you mean {'.'.join((*loc[:-1], guess[0]))}?" if guess else ""


def _key_name(loc: tuple[str, ...]) -> str:
    return f"[{loc[0]}] {'.'.join(loc[1:])}" if len(loc) > 1 else loc[0]


def _has_path(data: Any, loc: tuple[str, ...]) -> bool:
    for part in loc:
        if not isinstance(data, dict):
            return False
        match = next((k for k in data if str(k).lower() == part.lower()), None)
        if match is None:
            return False
        data = data[match]
    return True


def _env_set(name: str) -> bool:
    return any(k.upper() == name for k in os.environ)


def _refuse_secrets(data: dict[str, Any], path: Path) -> None:
    """Raise :class:`ConfigError` for the first secret-like key in the file that is not a setting,
    naming the key, the file and the variable to use instead — never the value."""

    def walk(table: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in table.items():
            loc = (*prefix, str(key))
            if isinstance(value, dict) and len(loc) == 1 and not is_secret_key(str(key)):
                walk(value, loc)
            elif is_secret_key(str(key)) and not _is_field(loc):
                section = loc[0] if len(loc) > 1 else None
                raise ConfigError(
                    f"{_key_name(loc)} in {path} looks like a secret: Campfire never reads secrets from its config file "
                    f"(the value was not used) — remove it from {path} and {_secret_hint(section, loc[-1])}"
                )

    walk(data, ())


def _is_field(loc: tuple[str, ...]) -> bool:
    if len(loc) == 1:
        return loc[0].lower() in Settings.model_fields
    return len(loc) == 2 and loc[1].lower() in _known_keys((loc[0].lower(), loc[1]))


def _describe(err: ValidationError, *, path: Path | None, data: dict[str, Any]) -> str:
    """One line for the first problem of ``err``: the key, where its value came from (environment
    variable or config file), what is wrong, a "did you mean" for a misspelled key. A rejected
    value is shown only when it is short and its key is not secret-like."""
    errors = err.errors(include_input=True, include_url=False)
    first = errors[0]
    loc = tuple(str(p) for p in first["loc"]) or ("(root)",)
    key = ".".join(loc)
    env_name = "CAMPFIRE_" + "__".join(loc).upper()
    if _env_set(env_name):
        origin = f"from {env_name}"
    elif path is not None and _has_path(data, loc):
        origin = f"in {path}"
    else:
        origin = ""
    extra = f"; {len(errors) - 1} more problem(s)" if len(errors) > 1 else ""
    secret = any(is_secret_key(part) for part in loc)
    where = f" {origin}" if origin else ""
    if first["type"] == "extra_forbidden":
        if secret:
            section = loc[0] if len(loc) > 1 else None
            return (f"{_key_name(loc)}{where} looks like a secret: it is not a setting and its value was not used — "
                    f"{'unset' if origin.startswith('from ') else 'remove'} it and {_secret_hint(section, loc[-1])}{extra}")
        return f"unknown setting {key}{where}{_did_you_mean(loc)}{extra}"
    value = first.get("input")
    shown = ""
    if not secret and not isinstance(value, (dict, list)):
        text = repr(value)
        shown = f" (got {text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + '…'})"
    fix = f"fix it in {path} or set {env_name}" if path is not None else f"fix it in config.toml or set {env_name}"
    if origin.startswith("from "):
        fix = f"fix or unset {env_name}"
    return f"invalid setting {key}{where}: {first['msg']}{shown} — {fix}{extra}"


def load_settings(config_path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from ``config_path`` (default ``./config.toml`` when it exists), env and overrides.

    ``overrides`` are top-level keys (``data_dir=...``); ``None`` values are ignored.
    Raises :class:`ConfigError` with one line naming the bad key and the file (or environment
    variable) it came from. A secret-like key in the file (``discord_token``, ``[discord] token``,
    ``[generator] api_key``, …) is refused without its value, naming the variable to use instead;
    a misspelled key gets a "did you mean".
    """
    path = Path(config_path) if config_path is not None else DEFAULT_CONFIG
    if config_path is not None and not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    toml_path = path if path.is_file() else None
    data: dict[str, Any] = {}
    message: str | None = None
    if toml_path is not None:
        try:
            data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:  # its text is a position, never the line's content
            message = f"cannot read {path}: {err}"
        except UnicodeDecodeError:
            message = f"cannot read {path}: not UTF-8 text"
        except OSError as err:
            message = f"cannot read {path}: {err.strerror or err}"
        if message is None:
            _refuse_secrets(data, path)
    if message is None:
        cls = type("LoadedSettings", (Settings,), {"_toml_path": toml_path})
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as err:
            message = _describe(err, path=toml_path, data=data)
        except ValueError as err:  # TOML syntax errors
            message = f"cannot read {path}: {err}"
    # raised outside the except blocks: no chained ValidationError (whose text holds the raw input)
    raise ConfigError(message)
