"""``campfire eval`` never drops interactions rows silently (issue 11): bad rows are counted, named
in one line on stderr, and reported in ``--json`` as ``skipped_rows``. Items are real Beer Stack
Exchange questions (tests/fixtures/se_beer_excerpt, CC BY-SA 3.0)."""

from __future__ import annotations

import json
from pathlib import Path

from recsys.eval import evaluate
from recsys.eval_data import load_dataset

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "se_beer_excerpt"


def _files(tmp_path: Path) -> tuple[Path, Path]:
    items = tmp_path / "items.jsonl"
    rows = [json.loads(line) for line in (FIXTURE / "items.jsonl").read_text().splitlines() if line.strip()][:12]
    items.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ids = [str(r["question_id"]) for r in rows]
    lines = ["user_id,question_id,kind,timestamp"]
    for u in range(4):  # four users, each asking one question and answering three others
        lines.append(f"u{u},{ids[u]},ask,2015-01-0{u + 1}T00:00:00")
        lines += [f"u{u},{ids[4 + (u + k) % 8]},answer,2015-01-0{u + 1}T0{k + 1}:00:00" for k in range(3)]
    good = len(lines) - 1
    lines[3:3] = ["u9,999999,answer,2015-01-01T00:00:00",  # line 4: an item not in the items file
                  "u9,1,answer",  # a row with a field missing
                  f"u9,{ids[0]},shrug,2015-01-01T00:00:00",  # an unknown kind
                  f"u9,{ids[0]},answer,yesterday"]  # an unreadable time
    inter = tmp_path / "interactions.csv"
    inter.write_text("\n".join(lines) + "\n")
    return inter, items, good


def test_bad_rows_are_counted_and_named(tmp_path, capsys):
    inter, items, good = _files(tmp_path)
    ds = load_dataset(inter, items)
    assert (ds.skipped_rows, len(ds.users)) == (4, good)
    assert ds.first_skipped.startswith("line 4 (question_id '999999' is not in the items file")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"interactions.csv: 4 of {good + 4} rows could not be used and were left out (the first: "
                   f"{ds.first_skipped}); the rest is evaluated."]
    load_dataset(inter, items, warn=False)
    assert capsys.readouterr().err == ""


def test_eval_json_reports_skipped_rows(tmp_path, embedder, capsys):
    inter, items, _ = _files(tmp_path)
    result = evaluate(inter, items, k=5, embedder=embedder)
    assert result["skipped_rows"] == 4 and json.loads(json.dumps(result))["skipped_rows"] == 4
    assert "4 of" in capsys.readouterr().err
