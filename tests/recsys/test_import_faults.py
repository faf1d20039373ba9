"""Bad input to ``campfire import`` costs only itself (issue 13, items 10–12): every field of real
exports corrupted in turn — null, the wrong scalar type (a string for a number, a boolean for a
string), the wrong shape (a list for an object, an object for a list), missing — must cost that
field or that message and one line naming file, message id and field, printed once; the import
finishes and the files after it are imported.

Data: the thread file of ../shared/data/chat/dce_example_guild (GPL-3.0, slatinsky/
DiscordChatExporter-frontend; 5 real messages) and tests/fixtures/dce_reactions.json (hand-written
in DCE's format: reactions with their users, roles, a reply with a mention, a bot).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from recsys.ingest import ExportFormatError, import_exports, read_export
from recsys.service import Recommender
from recsys.store import Store
from tests.conftest import shared_data

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "dce_reactions.json"
THREAD_ID = 1060927310439657577
KINDS = ("null", "scalar", "shape", "missing")

# What the importer reads, by path inside a message ("*": any list index); see recsys/dce_fields.py
REQUIRED = {("id",), ("timestamp",), ("author",), ("author", "id")}
USER_ENTRIES = {("mentions", "*"), ("reactions", "*", "users", "*")}
USERS = {("author",), *USER_ENTRIES}
USER_FIELDS = {"name", "nickname", "globalName", "isBot", "roles"}
ENTRIES = {("embeds", "*"), ("reactions", "*")}
OPTIONAL = {("type",), ("content",), ("embeds",), ("embeds", "*", "title"), ("embeds", "*", "description"),
            ("reference",), ("reference", "messageId"), ("mentions",), ("reactions",), ("reactions", "*", "count"),
            ("reactions", "*", "users")}


def _thread_file() -> Path:
    return next(shared_data("chat", "dce_example_guild", "example_guild", "_threads").glob("*.json"))


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        out += _paths(v, (*prefix, k))
    return out


def _corrupt(value: Any, kind: str) -> Any:
    if kind == "null":
        return None
    if kind == "scalar":  # a string where a number (or boolean) belongs, a boolean where a string does
        if isinstance(value, (list, dict)):
            return "x"
        return True if isinstance(value, str) else "many" if not isinstance(value, bool) else "yes"
    return {"x": 1} if isinstance(value, list) else [1]  # shape: an object for a list, a list for the rest


def _apply(doc: dict, path: tuple, kind: str) -> dict:
    doc = copy.deepcopy(doc)
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if kind == "missing":
        del parent[path[-1]]
    else:
        parent[path[-1]] = _corrupt(parent[path[-1]], kind)
    return doc


def _generic(path: tuple) -> tuple:
    return tuple("*" if isinstance(k, int) else k for k in path)


def _expected(path: tuple, kind: str) -> tuple[int, bool]:
    """(problem lines, message still imported) for corrupting ``path`` (inside a message) by ``kind``."""
    g = _generic(path)
    if g in REQUIRED:
        return 1, False
    if g in USER_ENTRIES or g in ENTRIES:
        return (0 if kind == "missing" else 1), True
    for user in USERS:
        rest = g[len(user):]
        if g[: len(user)] != user or not rest:
            continue
        if rest == ("id",) or rest == ("roles", "*", "id"):
            return 1, True
        if rest == ("roles", "*"):
            return (0 if kind == "missing" else 1), True
        if len(rest) == 1 and rest[0] in USER_FIELDS:
            return (0 if kind in ("null", "missing") else 1), True
        return 0, True
    if g in OPTIONAL:
        return (0 if kind in ("null", "missing") else 1), True
    return 0, True


def _field_name(path: tuple) -> str:
    name = ""
    for k in path:
        name += f"[{k}]" if isinstance(k, int) else (f".{k}" if name else k)
    return name


def _cases(source: Path) -> list[tuple[int, tuple, str]]:
    doc = json.loads(source.read_text())
    return [(i, p, kind) for i, m in enumerate(doc["messages"]) for p in _paths(m) for kind in KINDS]


@pytest.mark.parametrize("source", [FIXTURE, None], ids=["dce_reactions", "example_thread"])
def test_every_field_of_every_message_costs_only_itself(source, tmp_path):
    source = source or _thread_file()
    doc = json.loads(source.read_text())
    cases = _cases(source)
    assert len(cases) > 300
    for n, (i, path, kind) in enumerate(cases):
        bad = tmp_path / f"case{n}.json"
        bad.write_text(json.dumps(_apply(doc, ("messages", i, *path), kind)))
        lines, kept = _expected(path, kind)
        exp = read_export(bad)  # never raises for a bad message field
        where = f"{kind} {_field_name(path)} of message {i}"
        assert len(exp.problems) == lines, (where, exp.problems)
        assert len(exp.messages) == len(doc["messages"]) - (not kept), where
        mid = "#" + str(i + 1) if path == ("id",) else doc["messages"][i]["id"]
        for line in exp.problems:
            assert line.startswith(f"{bad}: message {mid}") and f"field '{_field_name(path)}" in line, (where, line)
            assert "\n" not in line and " — " in line


HEADER_FATAL = {("guild",), ("guild", "id"), ("channel",), ("channel", "id")}
HEADER_READ = {("guild", "name"), ("channel", "name"), ("channel", "type"), ("dateRange",), ("dateRange", "after"),
               ("dateRange", "before"), ("exportedAt",)}
THREAD_HEADER_READ = {("channel", "categoryId"), ("channel", "category")}


@pytest.mark.parametrize("source", [FIXTURE, None], ids=["dce_reactions", "example_thread"])
def test_every_header_field(source, tmp_path):
    source = source or _thread_file()
    doc = json.loads(source.read_text())
    is_thread = doc["channel"]["type"] == "GuildPublicThread"
    read = HEADER_READ | (THREAD_HEADER_READ if is_thread else set())
    header = [p for p in _paths({k: v for k, v in doc.items() if k != "messages"})] + [("messages",)]
    for n, (path, kind) in enumerate((p, k) for p in header for k in KINDS):
        bad = tmp_path / f"header{n}.json"
        bad.write_text(json.dumps(_apply(doc, path, kind)))
        if path in HEADER_FATAL:  # nothing of the file can be placed: one line for the file
            with pytest.raises(ExportFormatError, match=f"{bad}: bad guild/channel header: field '{_field_name(path)}'"):
                read_export(bad)
            continue
        exp = read_export(bad)
        lines = 0 if kind == "missing" else 1 if path == ("messages",) else (
            int(kind not in ("null", "missing")) if path in read else 0)
        assert len(exp.problems) == lines, (kind, path, exp.problems)
        assert all(line.startswith(f"{bad}: header: field '{_field_name(path)}'") for line in exp.problems)
        assert len(exp.messages) == (0 if path == ("messages",) else len(doc["messages"]))


@pytest_asyncio.fixture(loop_scope="function")
async def recommender(store: Store, settings, embedder):
    rec = Recommender(store, embedder, settings)
    await rec.start()
    try:
        yield rec
    finally:
        await rec.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_import_finishes_and_imports_the_rest(kind, recommender: Recommender, store: Store, tmp_path):
    """One run over every corruption of the fixture's first message (one file each), a file whose
    guild id is gone, and a good file sorted after all of them."""
    doc = json.loads(FIXTURE.read_text())
    folder = tmp_path / "exports"
    folder.mkdir()
    expected_lines, readable = 0, 0
    for n, path in enumerate(_paths(doc["messages"][0])):
        (folder / f"a{n:03}.json").write_text(json.dumps(_apply(doc, ("messages", 0, *path), kind)))
        lines, kept = _expected(path, kind)
        expected_lines += lines
        readable += len(doc["messages"]) - (not kept)
    (folder / "b-no-guild-id.json").write_text(json.dumps(_apply(doc, ("guild", "id"), kind)))
    (folder / "c-thread.json").write_bytes(_thread_file().read_bytes())
    report = await import_exports(recommender, [folder], progress=False)
    n_files = len(list(folder.glob("a*.json")))
    assert report.files == n_files + 1  # every corrupted copy, and the good file after them
    assert report.messages == readable + 5
    assert len(report.errors) == expected_lines + 1 and len(set(report.errors)) == len(report.errors)
    assert sum("b-no-guild-id.json" in e for e in report.errors) == 1
    assert report.notes == []  # a message that could not be read is not a missing (deleted) one
    assert any(it.id == THREAD_ID for it in await store.items(748545324524575035))  # the good file
    assert {it.id for it in await store.items(900000000000000001)} == {900000000000000100}


def _message(mid: str, **fields: Any) -> dict:
    author = {"id": "900000000000001001", "name": "ana", "nickname": "Ana", "isBot": False}
    return {"id": mid, "type": "Default", "timestamp": "2024-03-01T09:00:00+00:00",
            "content": "A message long enough to become an item of its own, about books.", "author": author,
            "embeds": [], "reactions": [], "mentions": [], **fields}


def _export(messages: list[dict], channel: str = "900000000000000020") -> dict:
    return {"guild": {"id": "900000000000000001", "name": "g"}, "channel": {"id": channel, "type": "GuildTextChat",
            "name": "books"}, "dateRange": {"after": None, "before": None}, "messages": messages}


async def test_issue_cases_cost_one_line_each(recommender: Recommender, store: Store, tmp_path):
    """Item 10 (a mention without id, a reaction counted "many": a traceback ended the run) and
    item 11 (one null timestamp rejected its whole file: 0 of 3 imported)."""
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "1-mention.json").write_text(json.dumps(_export([_message(
        "900000000000000201", mentions=[{"name": "ghost"}])])))
    (folder / "2-reaction.json").write_text(json.dumps(_export([_message(
        "900000000000000202", reactions=[{"emoji": {"name": "👍"}, "count": "many", "users": []}])])))
    (folder / "3-timestamp.json").write_text(json.dumps(_export(
        [_message("900000000000000203"), _message("900000000000000204", timestamp=None), _message("900000000000000205")],
        channel="900000000000000011")))
    (folder / "4-good.json").write_text(FIXTURE.read_text())
    report = await import_exports(recommender, [folder], progress=False)
    assert report.errors == [
        f"{folder / '1-mention.json'}: message 900000000000000201: field 'mentions[0].id' is missing — that mention skipped",
        (f"{folder / '2-reaction.json'}: message 900000000000000202: field 'reactions[0].count' is the text 'many' — "
         "counted as the reactors listed (at least 1)"),
        f"{folder / '3-timestamp.json'}: message 900000000000000204: field 'timestamp' is null — message skipped",
    ]
    assert report.files == 4 and report.messages == 1 + 1 + 2 + 3
    items = {it.id: it for it in await store.items(900000000000000001)}
    assert {900000000000000201, 900000000000000202, 900000000000000203, 900000000000000205} <= set(items)
    assert 900000000000000204 not in items
    assert items[900000000000000202].rating == 1.0  # the reaction still counts, as one
    assert 900000000000000100 in items  # the good file after them


async def test_member_without_a_name_gets_the_next_one(recommender: Recommender, store: Store, tmp_path):
    """Item 12: nickname → global name → name → ``user <id>``, never an empty display name."""
    users = [
        {"id": "900000000000001011", "name": "plain", "nickname": None},
        {"id": "900000000000001012", "name": None, "nickname": None, "globalName": "Global Gal"},
        {"id": "900000000000001013", "name": None, "nickname": None},
        {"id": "900000000000001014", "name": "  ", "nickname": ""},
    ]
    msgs = [_message(f"90000000000000030{i}", author=u) for i, u in enumerate(users)]
    path = tmp_path / "names.json"
    path.write_text(json.dumps(_export(msgs)))
    report = await import_exports(recommender, [path], progress=False)
    assert report.errors == []
    names = {m["user_id"]: m["display_name"] for m in await store.members(900000000000000001)}
    assert names == {900000000000001011: "plain", 900000000000001012: "Global Gal",
                     900000000000001013: "user 900000000000001013", 900000000000001014: "user 900000000000001014"}
    # a later export that does name the member replaces the placeholder
    path.write_text(json.dumps(_export([_message("900000000000000310", author={"id": "900000000000001013",
                                                                              "name": "found"})])))
    await import_exports(recommender, [path], progress=False)
    assert (await store.get_member(900000000000000001, 900000000000001013))["display_name"] == "found"


def test_cli_prints_each_line_once_and_no_traceback(tmp_path, capsys, monkeypatch):
    """``campfire import`` end to end: exit 1 (some input could not be used), the rest imported,
    each problem on stderr exactly once, no traceback."""
    from campfire.cli import main

    for key in [k for k in os.environ if k.startswith("CAMPFIRE_")]:
        monkeypatch.delenv(key)
    bad = tmp_path / "a-bad.json"
    bad.write_text(json.dumps(_export([_message("900000000000000401", mentions=[{"name": "ghost"}]),
                                       _message("900000000000000402", timestamp=None)])))
    code = main(["import", "--quiet", "--data-dir", str(tmp_path / "data"), str(bad), str(FIXTURE)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "2 file(s), 4 message(s) read" in out and "2 error(s)" in out
    assert "Traceback" not in err
    for field in ("mentions[0].id", "timestamp"):
        assert err.count(f"field '{field}'") == 1, err
    assert err.count(str(bad)) == 2


async def test_direct_messages_are_skipped_and_a_byte_order_mark_is_read(recommender: Recommender, store: Store, tmp_path):
    """DCE writes guild id "0" for a DM export: skipped (one line), not an error; a UTF-8 BOM that
    a Windows tool put in front of an export is not a malformed file."""
    dm = _export([_message("900000000000000501")])
    dm["guild"], dm["channel"]["type"] = {"id": "0", "name": "Direct Messages"}, "DirectTextChat"
    (tmp_path / "dm.json").write_text(json.dumps(dm))
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + FIXTURE.read_bytes())
    report = await import_exports(recommender, [tmp_path / "dm.json", tmp_path / "bom.json"], progress=False)
    assert report.errors == [] and report.files == 1
    assert report.skipped == [f"{tmp_path / 'dm.json'}: direct messages are not imported"]
    assert [it.id for it in await store.items(900000000000000001)] == [900000000000000100]
