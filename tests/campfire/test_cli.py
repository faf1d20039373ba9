"""``campfire`` itself: --version, the data-dir check every data command shares, quiet logging
(issue 13, items 14 and 17)."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from campfire import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch):
    for key in [k for k in os.environ if k.startswith("CAMPFIRE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "")  # recorded, so teardown removes what main() sets
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", *cli.NOISY_LOGGERS)}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    root.setLevel(levels[""])


def test_version_from_package_metadata(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"campfire {importlib.metadata.version('campfire')}"


# ---- item 14: an unusable data dir is one line and exit 2, for every command that opens it -------------
@pytest.mark.parametrize(
    "argv",
    [["digest", "--dry-run"], ["import", "nothing.json"], ["import-items", "nothing.jsonl"]],
)
def test_unusable_data_dir_is_one_line_exit_2(argv, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ./config.toml
    monkeypatch.setenv("CAMPFIRE_DATA_DIR", "/proc/nope")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("campfire: ") and "\n" not in err and "/proc/nope" in err
    assert "Traceback" not in err and "--data-dir" in err


def test_data_dir_that_is_a_file_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    assert cli.main(["digest", "--dry-run", "--data-dir", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a folder" in err and "\n" not in err


def test_every_data_command_is_checked_and_a_missing_dir_is_created(monkeypatch, tmp_path):
    assert cli.DATA_DIR_COMMANDS == {"console", "bot", "import", "import-items", "digest", "model"}
    seen = []
    monkeypatch.setattr(cli, "_resolve", lambda target: lambda args, settings: seen.append(settings.data_dir) or 0)
    monkeypatch.chdir(tmp_path)
    new = tmp_path / "new" / "data"
    assert cli.main(["digest", "--data-dir", str(new)]) == 0
    assert new.is_dir() and seen == [new] and not list(new.iterdir())  # the write check leaves nothing


def test_data_dir_error_while_running_is_one_line(monkeypatch, capsys, tmp_path):
    def handler(args, settings):
        raise PermissionError(13, "Permission denied", str(settings.data_dir / "campfire.db"))

    monkeypatch.setattr(cli, "_resolve", lambda target: handler)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["digest", "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert "Permission denied" in err and "campfire.db" in err and "\n" not in err


def test_digest_on_proc_in_a_real_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPFIRE_")}
    env["CAMPFIRE_DATA_DIR"] = "/proc/nope"
    run = subprocess.run([sys.executable, "-m", "campfire.cli", "digest", "--dry-run"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


# ---- item 17: what the console prints -----------------------------------------------------------------
def _probe(monkeypatch, tmp_path, argv):
    seen = {}

    def handler(args, settings):
        import transformers.utils.logging as tf_logging
        from huggingface_hub.utils import are_progress_bars_disabled

        seen["httpx"] = logging.getLogger("httpx").getEffectiveLevel()
        seen["root"] = logging.getLogger().getEffectiveLevel()
        seen["bars"] = tf_logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
        seen["env"] = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
        return 0

    monkeypatch.setattr(cli, "_resolve", lambda target: handler)
    monkeypatch.chdir(tmp_path)
    assert cli.main([*argv, "--data-dir", str(tmp_path / "d")]) == 0
    return seen


def test_quiet_console_has_no_request_logs_nor_progress_bars(monkeypatch, tmp_path):
    import transformers.utils.logging as tf_logging

    try:
        seen = _probe(monkeypatch, tmp_path, ["console", "--quiet"])
    finally:
        tf_logging.enable_progress_bar()
    assert seen["httpx"] >= logging.WARNING and seen["root"] >= logging.WARNING
    assert seen["bars"] is False and seen["env"] == "1"  # the embedded generator inherits it


def test_import_keeps_its_progress_bars_and_httpx_is_quiet_at_info(monkeypatch, tmp_path):
    seen = _probe(monkeypatch, tmp_path, ["import", "x.json"])
    assert seen["httpx"] == logging.WARNING and seen["root"] == logging.INFO and seen["env"] is None


def test_httpx_follows_debug(monkeypatch, tmp_path):
    assert _probe(monkeypatch, tmp_path, ["digest", "-v"])["httpx"] == logging.DEBUG
    cfg = tmp_path / "c.toml"
    cfg.write_text('log_level = "DEBUG"\n')
    assert _probe(monkeypatch, tmp_path, ["digest", "--config", str(cfg)])["httpx"] == logging.DEBUG


def test_import_declares_its_own_quiet_too():
    args = cli.build_parser().parse_args(["import", "a.json", "--quiet"])
    assert args.quiet is True
    args = cli.build_parser().parse_args(["console", "-q"])
    assert args.quiet is True


PROBE = """
import asyncio, sys
from campfire import cli

def handler(args, settings):
    from recsys.embed import load_embedder
    asyncio.run(load_embedder(settings.recsys))  # transformers' "Loading weights" bar, unless quiet
    print("loaded", file=sys.stderr)
    return 0

cli._resolve = lambda target: handler
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize(("argv", "bar"), [(["import", "x.json"], True), (["console", "-q"], False)])
def test_weights_progress_bar_only_where_wanted(tmp_path, argv, bar):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPFIRE_") and k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    env["HF_HUB_OFFLINE"] = "1"
    run = subprocess.run([sys.executable, "-c", PROBE, *argv, "--data-dir", str(tmp_path / "d")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "loaded" in run.stderr
    assert ("Loading weights" in run.stderr) is bar
