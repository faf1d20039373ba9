"""``campfire import`` / ``import-items`` / ``digest`` end to end through ``campfire.cli.main`` (``eval``: tests/recsys/test_eval.py)
on a temporary data dir (real SQLite, FAISS, embedder).

Data: ../shared/data/chat/ubuntu_irc (CC BY 4.0, Kummerfeld et al. 2019), ../shared/data/stories/scp_tales.jsonl
(CC BY-SA 3.0, SCP Wiki), ../shared/data/recsys/se_beer (CC BY-SA 3.0, beer.stackexchange.com).
"""

from __future__ import annotations

import json
import os

import pytest

from campfire.cli import main
from tests.conftest import shared_data


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("CAMPFIRE_"):
            monkeypatch.delenv(key)


def test_import_then_digest_prints_reasoned_picks(data_dir, tmp_path, capsys):
    irc = shared_data("chat", "ubuntu_irc", "2016-12-19_20.json")
    raw = json.loads(irc.read_text())
    message_ids = {int(m["id"]) for m in raw["messages"]}
    dd = ["--data-dir", str(data_dir)]

    assert main(["import", str(irc), "--quiet", *dd]) == 0
    out = capsys.readouterr().out
    assert "1181 message(s) read" in out and "new item(s)" in out

    tales = tmp_path / "tales.jsonl"
    tales.write_text("\n".join(shared_data("stories", "scp_tales.jsonl").read_text().splitlines()[:10]) + "\n")
    assert main(["import-items", str(tales), "--quiet", *dd]) == 0  # the only guild is the default
    assert "10 new item(s)" in capsys.readouterr().out

    assert main(["digest", "--dry-run", "--all-members", "--json", *dd]) == 0
    picks = json.loads(capsys.readouterr().out)
    assert len(picks) >= 20
    for mp in picks:
        assert mp["guild_id"] == int(raw["guild"]["id"]) and mp["member"]
        assert 1 <= len(mp["picks"]) <= 3
        for p in mp["picks"]:
            assert set(p) == {"item_id", "title", "reason", "score", "kind", "participants", "message_ids"}
            assert p["reason"] and p["title"] and p["kind"] in ("conversation", "thread", "message", "story", "catalogue")
    ids = {p["item_id"] for mp in picks for p in mp["picks"]}
    assert ids & message_ids  # imported messages keep their Discord message id

    # the table form, and nothing was recorded by the dry runs
    assert main(["digest", "--dry-run", "--all-members", "-k", "2", *dd]) == 0
    table = capsys.readouterr().out
    assert "dry run, nothing recorded" in table and picks[0]["member"] in table

    # not a dry run: nobody is subscribed, so nothing is picked or recorded
    assert main(["digest", *dd]) == 0
    assert "nobody subscribed" in capsys.readouterr().out


def test_usage_errors_are_one_clear_line(data_dir, tmp_path, capsys):
    dd = ["--data-dir", str(data_dir)]
    assert main(["import", str(tmp_path / "missing.json"), *dd]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    cat = tmp_path / "c.jsonl"
    cat.write_text('{"id": 1, "text": "hello"}\n')
    assert main(["import-items", str(cat), *dd]) == 2
    assert "no guild yet" in capsys.readouterr().err
    assert main(["digest", "--all-members", *dd]) == 2
    assert "--all-members needs --dry-run" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"guild": {"id": "5", "name": "g"}, "channel": {"id": "6", "name": "c"}, "messages": [')
    assert main(["import", str(bad), "--quiet", *dd]) == 1
    err = capsys.readouterr().err
    assert "bad.json: malformed JSON at byte" in err and "truncated" in err
