"""``campfire console`` driven from a pipe: real store, real FAISS, real embedder, the real
SmolLM2 generator (the session's ``real_generator``), on the bundled #ubuntu export.

The console reads a piped stdin line by line (``io.StringIO`` stands in for the pipe: the same
``readline`` path as ``campfire console < file``) and writes plain text.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import signal
from pathlib import Path

import pytest

from campfire.config import Settings
from campfire.cmd_console import main, run_console
from campfire.console import CONSOLE_USER_ID, PlainOutput
from campfire.app import App

ROOT = Path(__file__).resolve().parents[2]
EXPORT = ROOT / "examples" / "ubuntu_irc" / "2005-06-27_12.json"
GUILD = 100000000000000001  # the export's guild id
MEMBER, MEMBER_ID = "eager_vole779", 185777829986187664  # the export's most active member
OTHER = "olive_oriole289"
# the app fixture (module scope) and its recommender's embedding task live in the session's loop
session_loop = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def app(real_generator, embedder, tmp_path_factory):
    """The app on a fresh data dir holding the bundled export, with the session's real generator."""
    from recsys.ingest import import_exports
    from recsys.service import Recommender
    from recsys.store import Store

    data_dir = tmp_path_factory.mktemp("console")
    with pytest.MonkeyPatch.context() as mp:  # ignore the developer's CAMPFIRE_ environment
        for key in [k for k in os.environ if k.startswith("CAMPFIRE_")]:
            mp.delenv(key)
        settings = Settings(data_dir=data_dir, chat={"max_reply_tokens": 24}, story={"cooldown_s": 0})
    store = await Store.open(settings.db_path)
    recommender = Recommender(store, embedder, settings)
    await recommender.start()
    report = await import_exports(recommender, [EXPORT], progress=False)
    assert report.members > 50 and not report.errors
    await recommender.flush()
    try:
        yield App(settings=settings, store=store, recommender=recommender,
                       generator=real_generator.client, counter=real_generator.counter)
    finally:
        await recommender.aclose()
        await store.close()


async def console(app: App, lines: str, **options) -> tuple[int, str]:
    """Pipe ``lines`` into a console session; returns (exit code, everything it printed)."""
    buf = io.StringIO()
    code = await run_console(app, out=PlainOutput(buf), stdin=io.StringIO(lines), **options)
    return code, buf.getvalue()


def errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("! ")]


@session_loop
@pytest.mark.slow
async def test_chat_turn_and_story_on_the_real_model(app: App):
    code, out = await console(
        app,
        f"/as {MEMBER}\n"
        "Hello! Which command lists the files in a folder?\n"
        "/story a lighthouse keeper's cat --length short --genre mystery\n"
        "/rate up\n"
        "/rate down\n"  # replaces the 👍 (as the bot's buttons do)
        "/rate down\n"  # the same rating again changes nothing
        "/quit\n"
        "this line comes after /quit and is never read\n",
        max_story_tokens=64,  # below ~32 tokens the quality gate rejects many stories as too short
    )
    assert code == 0, out
    assert errors(out) == []
    assert "campfire> Hello! Which command lists the files in a folder?" in out
    assert "never read" not in out
    # every generation reports TTFT and tokens/s, and the session ends with a summary
    chat_stats = re.search(r"\[chat: TTFT (\d+\.\d+) s · (\d+\.\d) tokens/s · (\d+) tokens", out)
    story_stats = re.search(r"\[story: TTFT (\d+\.\d+) s · (\d+\.\d) tokens/s · (\d+) tokens", out)
    assert chat_stats and story_stats, out
    assert 0 < int(chat_stats.group(3)) <= 24 + 2  # max_reply_tokens (token counts may differ by a couple)
    assert 0 < int(story_stats.group(3)) <= 64
    assert "2 generations: mean TTFT" in out
    # the reply text streamed between the command and its stats line
    reply = out.split("campfire> Hello! Which command lists the files in a folder?\n", 1)[1].split("[chat:", 1)[0]
    assert reply.strip()

    # saved by campfire.features.stories (what a save stores: tests/features/test_stories.py) in the
    # imported guild, for the member acted as; /rate replaced the 👍 by the 👎
    saved = re.search(r"saved story #(\d+)", out)
    assert saved, out
    item = await app.store.get_item(int(saved.group(1)))
    assert item is not None and item.guild_id == GUILD and item.author_id == MEMBER_ID
    assert item.meta["theme"] == "a lighthouse keeper's cat" and item.meta["genre"] == "mystery"
    rows = [i.kind for i in await app.store.interactions(GUILD, MEMBER_ID) if i.item_id == item.id]
    assert sorted(rows) == ["rated_down", "requested"] and item.rating == -1.0
    assert out.count("rated down:") == 2 and "rated up:" in out


@session_loop
@pytest.mark.slow
async def test_chat_remembers_the_session(app: App):
    from campfire.console import ConsoleSession

    session = ConsoleSession(app, PlainOutput(io.StringIO()))
    await session.choose_guild(None)
    assert session.guild_id == GUILD  # the imported guild, not the console's own
    await session.handle("My name is Ada and I use Ubuntu 5.04.")
    await session.handle("What is my name?")
    assert [t.role for t in session.turns] == ["user", "assistant", "user", "assistant"]
    assert session.turns[0].content == "My name is Ada and I use Ubuntu 5.04."
    assert all(t.content.strip() for t in session.turns)
    assert len(session.generations) == 2 and session.failures == 0
    # a chat turn stores nothing: the console user has no member row until it tells a story
    assert await app.store.get_member(GUILD, CONSOLE_USER_ID) is None


@session_loop
async def test_as_and_recommend_on_the_bundled_export(app: App):
    code, out = await console(app, f"/as {MEMBER}\n/recommend\n/recommend {OTHER}\n/as {MEMBER_ID}\n/as nobody_here\n")
    assert code == 0, out
    assert f"you are now {MEMBER} ({MEMBER_ID})" in out
    assert out.count(f"you are now {MEMBER}") == 2  # by display name and by id
    tables = re.findall(r"picks for (\S+) \(\d+ ms\)\n  #  score.*\n((?:  \d+ .*\n)+)", out)
    assert [name for name, _ in tables] == [MEMBER, OTHER], out
    k = app.settings.recsys.picks_per_member
    for _, rows in tables:
        assert len(rows.splitlines()) == k
    # an unknown member: one line, with members to try
    assert errors(out) == [errors(out)[0]] and "no member 'nobody_here'" in errors(out)[0] and "Try one of:" in errors(out)[0]
    # /recommend is a preview: nothing recorded
    assert await app.store.count("recommendations_sent") == 0


@session_loop
async def test_digest_is_a_dry_run(app: App):
    store = app.store
    before = await store.count("recommendations_sent")
    code, out = await console(app, "/digest\n")
    assert code == 0 and errors(out) == []
    if not await store.subscribed_members(GUILD):
        assert "no picks — no subscribed member" in out
    await store.set_subscribed(GUILD, MEMBER_ID, True)
    try:
        code, out = await console(app, "/digest\n/digest --all\n")
    finally:
        await store.set_subscribed(GUILD, MEMBER_ID, False)
    assert code == 0 and errors(out) == [], out
    heads = re.findall(r"digest \d{4}-\d\d-\d\d \(dry run, nothing sent\): (\d+) members, (\d+) picks", out)
    assert len(heads) == 2, out
    (subscribed, _), (active, picks) = heads
    assert subscribed == "1"  # only the subscriber
    assert int(active) >= 20 and int(picks) >= int(active)  # everyone with ≥ 3 interactions
    assert f"  {MEMBER} " in out
    assert await store.count("recommendations_sent") == before  # dry run: nothing recorded


@session_loop
async def test_bad_commands_get_a_usage_hint_and_the_session_goes_on(app: App):
    bad = [
        "/frobnicate",
        "/story",
        "/story a tale --length enormous",
        "/story " + "x" * 400,
        "/rate sideways",
        "/rate up",  # no story yet
        "/as",
        "/digest --everyone",
    ]
    code, out = await console(app, "\n".join(bad) + "\n/help\n")
    assert code == 0
    errs = errors(out)
    assert len(errs) == len(bad), out
    assert "unknown command /frobnicate" in errs[0] and "/help" in errs[0]
    assert errs[1].startswith("! usage: /story THEME")
    assert "usage: /story" in errs[2] and "enormous" in errs[2]
    assert "300" in errs[3]  # validate_theme names the limit
    assert errs[4] == "! usage: /rate up|down"
    assert "no story to rate yet" in errs[5]
    assert errs[6].startswith("! usage: /as MEMBER")
    assert errs[7] == "! usage: /digest [--all]"
    assert all("\n" not in e for e in errs)
    assert "Type a message to chat, or a command:" in out  # /help ran after all of them


@session_loop
async def test_missing_script_is_one_line_and_exit_2(tmp_path: Path, capsys):
    args = argparse.Namespace(script=str(tmp_path / "nope.txt"), max_reply_tokens=None, plain=True, guild=None,
                              as_member=None, max_story_tokens=None, digest_all_members=False)
    assert await main(args, Settings(data_dir=tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read script" in err


@session_loop
async def test_unknown_guild_is_refused(app: App):
    buf = io.StringIO()
    code = await run_console(app, out=PlainOutput(buf), stdin=io.StringIO("/help\n"), guild_id=424242)
    assert code == 2
    assert errors(buf.getvalue()) == [f"! unknown guild 424242 (guilds in the store: {GUILD})"]
    assert await app.store.get_guild(424242) is None  # nothing created


def test_terminal_output_uses_rich_tables_and_streams():
    """On a terminal the same calls render with rich: streamed text, a table, dimmed stats."""
    from rich.console import Console

    from campfire.console import RichOutput

    out = RichOutput()
    buf = io.StringIO()
    out.console = Console(file=buf, width=100, force_terminal=True, color_system=None, highlight=False)
    out.delta("Once upon ")
    out.delta("a [time]")  # brackets are text, not rich markup
    out.end_stream()
    out.table("picks for ada", ["#", "item"], [["1", "SCP Foundation: The Movie"], ["2", "Kill [682]"]])
    out.stats("chat: TTFT 0.10 s")
    out.error("usage: /rate up|down")
    text = buf.getvalue()
    assert "Once upon a [time]\n" in text
    assert "picks for ada" in text and "┃ #" in text and "Kill [682]" in text
    assert "chat: TTFT 0.10 s" in text and "usage: /rate up|down" in text


# ---- Ctrl-C (issue 13, item 15): a real SIGINT while the fake generator streams slowly ----------
@pytest.fixture
async def fake_app(make_settings, embedder, fake_openai):
    """An app on a fresh data dir whose generator is the loopback fake (no model to load)."""
    from model.client import GeneratorClient
    from model.tokens import TokenCounter
    from recsys.service import Recommender
    from recsys.store import Store

    settings = make_settings(story={"cooldown_s": 0}, generator={"url": fake_openai.url})
    client = GeneratorClient(fake_openai.url, api_key=None, model=fake_openai.model, settings=settings.generator)
    store = await Store.open(settings.db_path)
    recommender = Recommender(store, embedder, settings)
    await recommender.start()
    try:
        yield App(settings=settings, store=store, recommender=recommender, generator=client, counter=TokenCounter(None))
    finally:
        await recommender.aclose()
        await store.close()
        await client.aclose()


class _CtrlC(PlainOutput):
    """Plain output that presses Ctrl-C — a real SIGINT to this process — once the story has
    streamed ``after`` characters, and again ``again_s`` seconds after it was stopped."""

    def __init__(self, after: int, again_s: float | None = None):
        super().__init__(io.StringIO())
        self.after, self.again_s, self.streamed, self.sent = after, again_s, 0, 0

    def delta(self, text: str) -> None:
        super().delta(text)
        self.streamed += len(text)
        if self.streamed >= self.after and not self.sent:
            self.sent += 1
            os.kill(os.getpid(), signal.SIGINT)

    def info(self, text: str) -> None:
        super().info(text)
        if text.startswith("⏹ stopped") and self.again_s is not None:  # Ctrl-C at the prompt
            self.sent += 1
            asyncio.get_running_loop().call_later(self.again_s, os.kill, os.getpid(), signal.SIGINT)


async def _run_with_sigint_guard(app: App, out: PlainOutput, stdin) -> tuple[int, list[int]]:
    """``run_console`` with a fallback SIGINT handler installed, so that a SIGINT the console does
    not take is recorded (and the test fails) instead of interrupting pytest."""
    stray: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda *_: stray.append(1))
    try:
        code = await asyncio.wait_for(run_console(app, out=out, stdin=stdin), 60)
    finally:
        signal.signal(signal.SIGINT, previous)
    return code, stray


STORY = "The Keeper's Cat\n\n" + "The cat watched the lamp turn over the dark sea. " * 40


async def test_ctrl_c_stops_the_story_and_the_session_goes_on(fake_app: App, fake_openai):
    fake_openai.reply, fake_openai.chunk_chars, fake_openai.token_delay_s = STORY, 8, 0.02  # ≈ 5 s in all
    out = _CtrlC(after=60)
    code, stray = await _run_with_sigint_guard(fake_app, out, io.StringIO("/story a lighthouse keeper's cat\n/help\n"))
    text = out.stream.getvalue()
    assert stray == [] and out.sent == 1
    assert code == 0, text  # the session went on and ended at the end of input
    shown = text.split("campfire> /story a lighthouse keeper's cat\n", 1)[1].split("⏹ stopped", 1)[0]
    assert "The cat watched" in shown and len(shown) < len(STORY) / 2  # what was written, cut short
    assert "⏹ stopped: nothing of it was saved" in text and "saved story" not in text
    assert "campfire> /help" in text and "Type a message to chat" in text  # the next command ran
    assert await fake_app.store.count("items") == 0 and await fake_app.store.count("interactions") == 0


async def test_second_ctrl_c_quits(fake_app: App, fake_openai):
    fake_openai.reply, fake_openai.chunk_chars, fake_openai.token_delay_s = STORY, 8, 0.02
    read, write = os.pipe()  # a terminal-like stdin: the session waits for a line that never comes
    os.write(write, b"/story a lighthouse keeper's cat\n")
    stdin = os.fdopen(read, "r")
    out = _CtrlC(after=60, again_s=0.3)
    try:
        code, stray = await _run_with_sigint_guard(fake_app, out, stdin)
    finally:
        os.close(write)  # the reader thread sees end of input and ends
    assert stray == [] and out.sent == 2
    assert code == 130, out.stream.getvalue()
    assert await fake_app.store.count("items") == 0
