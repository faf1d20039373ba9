from pathlib import Path

import pytest

from campfire.config import ConfigError, Settings, load_settings, secrets_from_env

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_match_documented_config(monkeypatch):
    for k in [k for k in __import__("os").environ if k.startswith("CAMPFIRE_")]:
        monkeypatch.delenv(k)
    documented = load_settings(ROOT / "config.toml")
    assert documented.model_dump() == Settings().model_dump()
    assert documented.generator.url == ""
    assert documented.chat.edit_interval_s == 1.0
    assert documented.recsys.half_life_days == 14.0


def test_env_overrides_file(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[generator]\nmax_concurrency = 4\nurl = "http://a/v1"\n')
    monkeypatch.setenv("CAMPFIRE_GENERATOR__MAX_CONCURRENCY", "12")
    monkeypatch.setenv("CAMPFIRE_DATA_DIR", str(tmp_path / "d"))
    s = load_settings(cfg)
    assert s.generator.max_concurrency == 12
    assert s.generator.url == "http://a/v1"
    assert s.data_dir == tmp_path / "d"
    assert s.db_path == tmp_path / "d" / "campfire.db"
    # explicit override (the CLI's --data-dir) beats the environment
    assert load_settings(cfg, data_dir=tmp_path / "x").data_dir == tmp_path / "x"


def test_bad_value_names_the_key(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[generator]\nmax_concurrency = "lots"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    msg = str(err.value)
    assert "generator.max_concurrency" in msg and "\n" not in msg
    assert "CAMPFIRE_GENERATOR__MAX_CONCURRENCY" in msg


def test_unknown_key_and_bad_timezone_and_missing_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[chat]\nbogus = 1\n')
    with pytest.raises(ConfigError, match="chat.bogus"):
        load_settings(cfg)
    cfg.write_text('[digest]\ndefault_timezone = "Mars/Olympus"\n')
    with pytest.raises(ConfigError, match="digest.default_timezone"):
        load_settings(cfg)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_secrets_only_from_env(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('discord_token = "abc"\n')
    with pytest.raises(ConfigError):  # a token in the file is rejected, not silently used
        load_settings(cfg)
    s = secrets_from_env({"DISCORD_TOKEN": " s3cr3t-value ", "CAMPFIRE_GENERATOR_API_KEY": "k"})
    assert s.discord_token == "s3cr3t-value" and s.generator_api_key == "k"
    assert "s3cr3t" not in repr(s) and "set" in repr(s)


def test_cli_bad_config_is_one_line(tmp_path, capsys):
    from campfire.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text('[recsys]\nmmr_lambda = 3\n')
    assert main(["model", "prepare", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("campfire: invalid setting recsys.mmr_lambda") and "\n" not in err


def test_help_lists_subcommands(capsys):
    from campfire.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("console", "bot", "serve", "import", "import-items", "digest", "eval", "model"):
        assert cmd in out
