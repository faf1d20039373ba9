"""``campfire story THEME``: one story through /story's pipeline (language check, loop guard, quality
gate), printed — as JSON for scripts — and never saved. Controlled outputs come from the fake
generator over loopback HTTP; one run goes through the real model."""

from __future__ import annotations

import json
import os

import pytest

from campfire import cli

KEYS = {"title", "text", "language", "finish_reason", "tokens", "ttft_s", "tokens_per_s", "declined"}
STORY = (
    "The Lantern Keeper\n"
    "Rain fell on the old harbour town while Mei lit the last lantern on the pier. "
    "A stranger with a broken umbrella asked her the way to the lighthouse. "
    "They walked together, sharing the lantern's small circle of light. "
    "At the top of the stairs he turned, smiled, and was gone."
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for key in [k for k in os.environ if k.startswith("CAMPFIRE_")]:
        monkeypatch.delenv(key)


def run(tmp_path, url: str, *args: str) -> int:
    config = tmp_path / "config.toml"
    config.write_text(f'[generator]\nurl = "{url}"\nrequest_timeout_s = 300\n', encoding="utf-8")
    return cli.main(["story", "--config", str(config), "--data-dir", str(tmp_path / "data"), "-q", *args])


def one_json(out: str) -> dict:
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out  # exactly one object on stdout
    obj = json.loads(lines[0])
    assert set(obj) == KEYS
    return obj


def test_json_prints_one_story_and_saves_nothing(tmp_path, fake_openai, capsys):
    fake_openai.reply = STORY
    assert run(tmp_path, fake_openai.url, "a", "chance", "meeting", "--genre", "mystery", "--json") == 0
    obj = one_json(capsys.readouterr().out)
    assert obj["title"] == "The Lantern Keeper" and obj["text"].startswith("Rain fell") and obj["text"].endswith("gone.")
    assert obj["language"] == "en" and obj["finish_reason"] == "stop" and obj["declined"] is None
    assert obj["tokens"] > 0 and obj["ttft_s"] >= 0 and obj["tokens_per_s"] >= 0
    sent = fake_openai.requests[0]
    assert "mystery story" in sent["messages"][-1]["content"] and "a chance meeting" in sent["messages"][-1]["content"]
    assert not (tmp_path / "data" / "campfire.db").exists()  # nothing saved: no database opened


def test_a_story_the_gate_rejects_twice_is_printed_with_the_notice(tmp_path, fake_openai, capsys):
    fake_openai.reply = "The Lantern Keeper\nRain fell on the pier. " + "Likes: 1\n" * 40
    assert run(tmp_path, fake_openai.url, "a lighthouse", "--json") == 3
    obj = one_json(capsys.readouterr().out)
    assert obj["declined"].startswith("⚠️ This story did not come out well") and obj["finish_reason"] == "loop"
    assert obj["text"] == "Rain fell on the pier." and len(fake_openai.requests) == 2


def test_chinese_on_an_english_only_model_is_declined_without_generating(tmp_path, fake_openai, capsys):
    assert run(tmp_path, fake_openai.url, "雨天的一次偶遇", "--json") == 3
    obj = one_json(capsys.readouterr().out)
    assert obj["language"] == "zh" and "写不好中文" in obj["declined"] and obj["text"] == "" and obj["tokens"] == 0
    assert fake_openai.requests_started == 0


def test_plain_output_and_bad_input(tmp_path, fake_openai, capsys):
    fake_openai.reply = STORY
    assert run(tmp_path, fake_openai.url, "a lighthouse", "--length", "short") == 0
    out, err = capsys.readouterr()
    assert out.startswith("The Lantern Keeper\n\nRain fell") and "tokens/s" in err
    assert run(tmp_path, fake_openai.url, "a lighthouse", "--genre", "opera") == 2
    assert "Unknown genre" in capsys.readouterr().err
    assert fake_openai.requests_started == 1


def test_help_says_nothing_is_saved(capsys):
    with pytest.raises(SystemExit):
        cli.main(["story", "--help"])
    assert "Nothing is saved" in capsys.readouterr().out


@pytest.mark.slow
def test_a_story_on_the_real_model(tmp_path, real_generator, capsys):
    code = run(tmp_path, real_generator.url, "a lighthouse keeper finds a message in a bottle", "--max-tokens", "96",
               "--json")
    obj = one_json(capsys.readouterr().out)
    assert obj["language"] == "en" and obj["tokens"] > 0 and obj["ttft_s"] > 0 and obj["tokens_per_s"] > 0
    assert obj["text"].strip() and "\ufffd" not in obj["text"]
    assert (code, obj["declined"] is None) in ((0, True), (3, False))  # told, or shown with the gate's notice
