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


# ---- issue 13, item 13: secrets, the file named, "did you mean" -------------------------------------
SECRET = "MTIzNDU2Nzg5.SECRET-do-not-echo.xyz"


@pytest.mark.parametrize(
    ("toml", "variable"),
    [
        (f'discord_token = "{SECRET}"\n', "DISCORD_TOKEN"),
        (f'[discord]\ntoken = "{SECRET}"\n', "DISCORD_TOKEN"),
        (f'[generator]\napi_key = "{SECRET}"\n', "CAMPFIRE_GENERATOR_API_KEY"),
        (f'[chat]\nadmin_password = "{SECRET}"\n', "DISCORD_TOKEN"),
        (f'[recsys]\nhf_secret = "{SECRET}"\n', "CAMPFIRE_GENERATOR_API_KEY"),
    ],
)
def test_secret_in_file_is_refused_without_its_value(tmp_path, toml, variable):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    msg = str(err.value)
    assert SECRET not in msg and "SECRET" not in msg and "MTIz" not in msg
    assert variable in msg and str(cfg) in msg and "\n" not in msg
    assert "CAMPFIRE_DISCORD_TOKEN" not in msg  # a variable Campfire ignores must not be suggested
    # no chained pydantic error (its text holds input_value) travels with the exception
    chained = [err.value.__cause__, err.value.__context__]
    assert all(c is None or SECRET not in str(c) for c in chained)


def test_the_variables_named_are_the_ones_read(tmp_path):
    from campfire.config import DISCORD_TOKEN_ENV, GENERATOR_API_KEY_ENVS

    s = secrets_from_env({DISCORD_TOKEN_ENV: "t", GENERATOR_API_KEY_ENVS[0]: "k"})
    assert (s.discord_token, s.generator_api_key) == ("t", "k")
    assert secrets_from_env({GENERATOR_API_KEY_ENVS[1]: "o"}).generator_api_key == "o"


def test_secret_like_env_variable_is_refused_without_its_value(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMPFIRE_GENERATOR__API_KEY", SECRET)
    with pytest.raises(ConfigError) as err:
        load_settings()
    msg = str(err.value)
    assert SECRET not in msg and "CAMPFIRE_GENERATOR_API_KEY" in msg


def test_secret_like_known_key_never_shows_its_value(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[chat]\nhistory_token_budget = "{SECRET}"\n')
    with pytest.raises(ConfigError, match="chat.history_token_budget") as err:
        load_settings(cfg)
    assert SECRET not in str(err.value)


def test_cli_secret_is_not_echoed_anywhere(tmp_path, capsys, caplog):
    from campfire.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'discord_token = "{SECRET}"\n[generator]\napi_key = "{SECRET}"\n')
    assert main(["digest", "--dry-run", "--config", str(cfg), "--data-dir", str(tmp_path / "d")]) == 2
    out = capsys.readouterr()
    assert SECRET not in out.err + out.out and SECRET not in caplog.text
    assert out.err.startswith("campfire: ") and "DISCORD_TOKEN" in out.err and str(cfg) in out.err


def test_error_names_the_config_file_or_the_variable(tmp_path, monkeypatch):
    for k in [k for k in __import__("os").environ if k.startswith("CAMPFIRE_")]:
        monkeypatch.delenv(k)
    cfg = tmp_path / "my-campfire.toml"
    cfg.write_text('[recsys]\nmmr_lambda = 3\n')
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert str(cfg) in str(err.value)
    cfg.write_text("")
    monkeypatch.setenv("CAMPFIRE_RECSYS__MMR_LAMBDA", "3")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert "from CAMPFIRE_RECSYS__MMR_LAMBDA" in str(err.value) and str(cfg) not in str(err.value)


@pytest.mark.parametrize(
    ("toml", "suggestion"),
    [
        ('[chat]\npersonna = "x"\n', "did you mean chat.persona?"),
        ('[generator]\nmax_concurency = 2\n', "did you mean generator.max_concurrency?"),
        ('[generater]\nurl = "x"\n', "did you mean generator?"),
        ('datadir = "x"\n', "did you mean data_dir?"),
        ('[ops]\nmetric_port = 9\n', "did you mean ops.metrics_port?"),
    ],
)
def test_misspelled_key_gets_did_you_mean(tmp_path, toml, suggestion):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert suggestion in str(err.value) and str(cfg) in str(err.value)


def test_ops_defaults_off_on_loopback():
    s = Settings()
    assert s.ops.metrics_port == 0 and s.ops.metrics_host == "127.0.0.1"
