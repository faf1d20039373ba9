"""Typed settings, read from ``config.toml`` and overridden by ``CAMPFIRE_…`` environment variables.

Precedence (highest first): keyword overrides (the CLI's ``--data-dir``), environment variables
(``CAMPFIRE_DATA_DIR``, ``CAMPFIRE_GENERATOR__URL``, … nested keys joined by ``__``), the TOML
file, the defaults below. Secrets are never read from the file: see :func:`secrets_from_env`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_CONFIG = Path("config.toml")


class ConfigError(Exception):
    """A setting is missing or invalid; ``str()`` is one line naming the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GeneratorSettings(_Section):
    url: str = ""  # OpenAI-compatible base URL ending in /v1; empty = run the embedded server
    model: str = ""  # model name sent to the server; empty = the served folder's name
    model_path: str = ""  # local transformers folder to serve; empty = <data_dir>/models/smollm2-135m-instruct
    tokenizer_path: str = ""  # tokenizer for prompt budgets; empty = model_path
    device: Literal["auto", "cpu", "cuda"] = "auto"
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


class ChatSettings(_Section):
    persona: str = (
        "You are Campfire, a friendly, concise assistant for this Discord community. "
        "Answer helpfully and briefly."
    )
    history_messages: int = Field(20, ge=1, le=200)
    history_token_budget: int = Field(1024, ge=64)
    max_reply_tokens: int = Field(256, ge=8, le=4096)
    temperature: float = Field(0.7, ge=0, le=2)
    edit_interval_s: float = Field(1.0, ge=0.2)


class StorySettings(_Section):
    max_theme_chars: int = Field(300, ge=10, le=2000)
    cooldown_s: float = Field(30.0, ge=0)
    temperature: float = Field(0.8, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    frequency_penalty: float = Field(0.3, ge=-2, le=2)


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


class DigestSettings(_Section):
    default_time: str = "18:00"  # guild local time HH:MM when none is set
    default_timezone: str = "UTC"  # IANA name when none is set

    @field_validator("default_time")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        hh, _, mm = v.partition(":")
        if not (hh.isdigit() and mm.isdigit() and 0 <= int(hh) < 24 and 0 <= int(mm) < 60):
            raise ValueError("must be HH:MM, e.g. 18:00")
        return f"{int(hh):02d}:{int(mm):02d}"

    @field_validator("default_timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(v)
        except Exception:
            raise ValueError(f"unknown IANA timezone {v!r}") from None
        return v


class DiscordSettings(_Section):
    test_guild_id: int = 0  # sync app commands to this guild at start (instant); 0 = global sync
    cooldown_message_s: float = Field(2.0, ge=0)


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
        discord_token=(env.get("DISCORD_TOKEN") or "").strip() or None,
        generator_api_key=(env.get("CAMPFIRE_GENERATOR_API_KEY") or env.get("OPENAI_API_KEY") or "").strip()
        or None,
    )


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(root)"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    extra = f"; {len(err.errors()) - 1} more problem(s)" if len(err.errors()) > 1 else ""
    env_name = "CAMPFIRE_" + key.upper().replace(".", "__")
    return f"invalid setting {key}: {first['msg']}{shown} — fix it in config.toml or {env_name}{extra}"


def load_settings(config_path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from ``config_path`` (default ``./config.toml`` when it exists), env and overrides.

    ``overrides`` are top-level keys (``data_dir=...``); ``None`` values are ignored.
    Raises :class:`ConfigError` with one line naming the bad key.
    """
    path = Path(config_path) if config_path is not None else DEFAULT_CONFIG
    if config_path is not None and not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    toml_path = path if path.is_file() else None
    cls = type("LoadedSettings", (Settings,), {"_toml_path": toml_path})
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None
    except ValueError as err:  # TOML syntax errors
        raise ConfigError(f"cannot read {path}: {err}") from None
