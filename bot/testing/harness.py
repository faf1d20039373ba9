"""A real Campfire bot on dpytest, plus real interactions: the machinery behind ``tests/bot/conftest.py``'s
fixtures, also used by ``bench/bot.py`` (start one with :func:`start_bot`). It lives in ``bot/testing``
(not under ``tests/``) so that benchmarks can use it without importing tests; it needs the ``test``
extra (dpytest, pytest).

What is real: the bot class and every cog, the SQLite store (temp dir), the ``Recommender`` with the
real all-MiniLM-L6-v2 embedder and FAISS indexes, the ``GeneratorClient`` talking HTTP on loopback
to either the controllable fake (``fake_openai``) or the real SmolLM2 server (``real_generator``),
and :class:`discord.Interaction` objects dispatched through ``bot.tree`` and the view store. What is
faked: Discord's HTTP API only — dpytest answers the REST calls of messages, and
:class:`InteractionRecorder` answers the interaction/webhook calls (``AsyncWebhookAdapter.request``),
recording what was sent.

:class:`BotHarness` (what the ``bot`` fixture gives): ``h.bot`` (the started ``SingleShardCampfireBot``),
``h.app`` (the :class:`~campfire.app.App`; ``h.services`` is the same object, its old name),
``h.store``, ``h.recommender``, ``h.fake`` (the ``FakeOpenAI`` or None),
``h.guild``, ``h.channels`` (two text channels), ``h.members`` (three members; ``h.member`` is the
first), ``h.sent`` (:class:`SentLog`: every message send/edit the bot made through dpytest, with
payloads incl. ``allowed_mentions``), ``h.interactions`` (:class:`InteractionRecorder`), and helpers:

- ``await h.post(content, channel=None, member=None, reply_to=None)`` → the member's
  ``discord.Message`` after every listener ran (chat replies included). ``reply_to`` makes a real
  reply (``message_reference`` + ``referenced_message``); ``channel`` may be a DM (``await
  h.dm(member)``) or a thread (``h.make_thread(...)``).
- ``h.make_bot_member(name)`` → a guild member whose user is a bot.
- ``await h.edit(message, content)``, ``await h.delete(message)``, ``await h.react(member, message,
  emoji, add=True)``, ``await h.set_permissions(channel, role_or_member, view_channel=False)`` →
  the gateway events Discord would send (dpytest 0.7's own helpers for reactions and overwrites
  do not match discord.py 2.7's payloads).
- ``await h.invoke("story", theme="...", member=None, channel=None, locale="en-US")`` → an
  :class:`Invocation` once the command (and any task it started) finished; subcommands as
  ``h.invoke("recommend subscribe")``. Options are typed from the command's own parameters.
- ``await h.click(custom_id, message)`` → an :class:`Invocation` for a button press on a message
  dict from ``h.interactions.messages`` (or an ``Invocation.message``).
- ``await h.flush()`` → recorder batches written and embedded (``Events.flush``).

:class:`Invocation`: ``.interaction`` (the ``discord.Interaction``), ``.responses`` (its HTTP calls,
each a :class:`Sent`: ``kind`` in callback / followup / edit_original / get_original /
delete_original / edit_message / delete_message, ``payload`` dict, ``files`` [(name, bytes)],
``at`` perf_counter seconds), ``.defer_s`` (seconds from arrival to the first callback; None if
never acknowledged), ``.callback_type`` (4 message, 5 deferred, 6 deferred update, 7 update, 9
modal), ``.ephemeral``, ``.messages`` (the final state of every message it produced, dicts),
``.message`` (the last one), ``.text`` (content + embed titles/descriptions of all, joined).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import discord
import discord.ext.test as dpytest
import pytest
from discord.ext.test import backend as dpy_backend
from discord.ext.test import factories as dpy_facts

from bot.app import SingleShardCampfireBot
from campfire.app import App
from bot.testing.discord_http import (
    ATTACHMENT_SIZE_LIMIT,
    Invocation,
    InteractionRecorder,
    SentLog,
    snowflake,
)

if TYPE_CHECKING:
    from recsys import store as recsys_store


# ---- the harness ------------------------------------------------------------------------------


class BotHarness:
    """A started bot on dpytest with helpers (see the module docstring)."""

    def __init__(self, bot: SingleShardCampfireBot, app: App, fake: Any, monkeypatch: pytest.MonkeyPatch):
        cfg = dpytest.get_config()
        self.bot = bot
        self.app = app
        self.services = app  # the old name, kept for suites that still use it
        self.store: recsys_store.Store = app.store
        self.recommender = app.recommender
        self.settings = app.settings
        self.fake = fake
        self.guild: discord.Guild = cfg.guilds[0]
        self.channels: list[discord.TextChannel] = list(cfg.channels)
        self.members: list[discord.Member] = list(cfg.members)
        self.member = self.members[0]
        self._messages = dpy_backend._cur_config.messages  # type: ignore[union-attr]
        self.sent = SentLog(bot.http, bot._connection, self._messages)
        self.interactions = InteractionRecorder(bot, monkeypatch)

    @property
    def state(self) -> Any:
        return self.bot._connection

    # messages
    async def post(self, content: str, *, channel: Any = None, member: Any = None, reply_to: discord.Message | None = None,
                   resolved: bool = True, wait: bool = True) -> discord.Message:
        """A member's message (optionally a reply), dispatched like the gateway would; returns after
        every listener finished (``wait=False``: at once, listeners still running)."""
        channel = channel or self.channels[0]
        member = member or self.member
        guild = getattr(channel, "guild", None)
        data = dpy_facts.make_message_dict(
            channel, member, content=content,
            mentions=dpy_backend.find_user_mentions(content, guild) if guild else [],
            mention_roles=dpy_backend.find_role_mentions(content, guild) if guild else [],
            mention_channels=dpy_backend.find_channel_mentions(content, guild) if guild else [],
            **({"guild_id": guild.id} if guild else {}),
        )
        if reply_to is not None:
            data["type"] = 19
            data["message_reference"] = {"message_id": reply_to.id, "channel_id": reply_to.channel.id,
                                         **({"guild_id": guild.id} if guild else {})}
            if resolved:
                data["referenced_message"] = self._message_dict(reply_to)
        self._messages.setdefault(channel.id, []).append(data)
        self.state.parse_message_create(data)
        if wait:
            await dpytest.run_all_events()
        return self.state._get_message(data["id"])

    def _message_dict(self, message: discord.Message, **changes: Any) -> dict[str, Any]:
        data = dpy_facts.dict_from_message(message)
        data["type"] = message.type.value  # dpytest leaves the enum here
        data["channel_id"] = message.channel.id
        data["timestamp"] = message.created_at.isoformat()
        if message.reference is not None and message.reference.message_id is not None:
            data["message_reference"] = {"message_id": str(message.reference.message_id),
                                         "channel_id": str(message.reference.channel_id)}
        data.update(changes)
        return data

    async def edit(self, message: discord.Message, content: str) -> None:
        """A member edits ``message`` (gateway MESSAGE_UPDATE with the full message)."""
        data = self._message_dict(message, content=content, edited_timestamp=discord.utils.utcnow().isoformat())
        if message.guild is not None:
            data["guild_id"] = message.guild.id
        self.state.parse_message_update(data)
        await dpytest.run_all_events()

    async def delete(self, message: discord.Message) -> None:
        """``message`` is deleted (gateway MESSAGE_DELETE)."""
        dpy_backend.delete_message(message)
        await dpytest.run_all_events()

    async def react(self, member: discord.Member, message: discord.Message, emoji: str, *, add: bool = True) -> None:
        """``member`` adds (or removes) a reaction (gateway MESSAGE_REACTION_ADD/REMOVE; dpytest 0.7's
        own helper predates the payload's ``type`` field)."""
        data: dict[str, Any] = {"user_id": str(member.id), "channel_id": str(message.channel.id),
                                "message_id": str(message.id), "emoji": {"id": None, "name": emoji},
                                "burst": False, "type": 0}
        if message.guild is not None:
            data["guild_id"] = str(message.guild.id)
        if add:
            if message.guild is not None:
                data["member"] = self._member_payload(member, message.channel)
            data["message_author_id"] = str(message.author.id)
            self.state.parse_message_reaction_add(data)
        else:
            self.state.parse_message_reaction_remove(data)
        await dpytest.run_all_events()

    async def set_permissions(self, channel: discord.abc.GuildChannel, target: discord.Role | discord.Member,
                              **perms: bool | None) -> None:
        """Set ``target``'s permission overwrite on ``channel`` (gateway CHANNEL_UPDATE with integer
        overwrite types, as Discord sends them; dpytest's helper sends the old string types)."""
        overwrites = dict(channel.overwrites)
        current = overwrites.get(target, discord.PermissionOverwrite())
        current.update(**perms)
        overwrites[target] = current
        data = dpy_facts.dict_from_channel(channel)
        data["permission_overwrites"] = [
            {"id": str(t.id), "type": 0 if isinstance(t, discord.Role) else 1,
             "allow": str(o.pair()[0].value), "deny": str(o.pair()[1].value)}
            for t, o in overwrites.items()
        ]
        self.state.parse_channel_update(data)
        await dpytest.run_all_events()

    async def dm(self, member: Any = None) -> discord.DMChannel:
        return await (member or self.member).create_dm()

    def make_bot_member(self, name: str = "OtherBot") -> discord.Member:
        data = dpy_facts.make_user_dict(name, 42, None, bot=True)
        user = self.state.store_user(data)
        return dpy_backend.make_member(user, self.guild)

    def make_thread(self, parent: discord.TextChannel, name: str = "thread", owner: Any = None) -> discord.Thread:
        """A public thread in ``parent`` owned by ``owner`` (default: the bot)."""
        owner_id = (owner or self.bot.user).id
        data = {"id": str(snowflake()), "guild_id": str(self.guild.id), "parent_id": str(parent.id),
                "owner_id": str(owner_id), "name": name, "type": 11, "message_count": 0, "member_count": 1,
                "rate_limit_per_user": 0, "flags": 0,
                "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "locked": False,
                                    "archive_timestamp": discord.utils.utcnow().isoformat()}}
        thread = discord.Thread(guild=self.guild, state=self.state, data=data)  # type: ignore[arg-type]
        self.guild._add_thread(thread)
        return thread

    async def flush(self) -> None:
        """Let pending events run, write the recorder's queued batches and wait for embedding."""
        await dpytest.run_all_events()
        events = self.bot.get_cog("Events")
        if events is not None:
            await events.flush()  # type: ignore[attr-defined]
        else:
            await self.recommender.flush()

    # interactions
    def _member_payload(self, member: discord.Member, channel: Any) -> dict[str, Any]:
        return {
            "user": dpy_facts.dict_from_user(member._user),
            "roles": [str(r.id) for r in member.roles if r.id != member.guild.id],
            "joined_at": (member.joined_at or discord.utils.utcnow()).isoformat(),
            "deaf": False, "mute": False, "flags": 0, "nick": member.nick,
            "permissions": str(channel.permissions_for(member).value),
        }

    def _base_payload(self, itype: int, data: dict[str, Any], member: Any, channel: Any, locale: str) -> dict[str, Any]:
        iid = snowflake()
        app_id = self.bot.application_id or self.bot.user.id  # type: ignore[union-attr]
        payload: dict[str, Any] = {
            "id": str(iid), "application_id": str(app_id), "type": itype, "data": data,
            "token": f"token-{iid}", "version": 1, "locale": locale,
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT, "entitlements": [], "authorizing_integration_owners": {},
            "channel_id": str(channel.id),
        }
        if isinstance(channel, discord.DMChannel):
            payload["user"] = dpy_facts.dict_from_user(getattr(member, "_user", member))
            payload["channel"] = {"id": str(channel.id), "type": 1}
            payload["context"] = 1
        else:
            payload["guild_id"] = str(channel.guild.id)
            payload["guild_locale"] = "en-US"
            payload["member"] = self._member_payload(member, channel)
            payload["channel"] = {"id": str(channel.id), "type": 0, "guild_id": str(channel.guild.id),
                                  "name": getattr(channel, "name", ""), "position": 0, "permission_overwrites": [],
                                  "nsfw": False}
            me = channel.guild.me
            payload["app_permissions"] = str(channel.permissions_for(me).value) if me else "0"
            payload["context"] = 0
        return payload

    def _options(self, name: str, values: dict[str, Any], channel: Any) -> dict[str, Any]:
        parts = name.split()
        command: Any = self.bot.tree.get_command(parts[0])
        if command is None and getattr(channel, "guild", None):
            command = self.bot.tree.get_command(parts[0], guild=channel.guild)
        if command is None:
            raise LookupError(f"no app command named /{parts[0]} (loaded extensions: {sorted(self.bot.extensions)})")
        data: dict[str, Any] = {"id": str(snowflake()), "name": parts[0], "type": 1}
        holder = data
        for sub in parts[1:]:
            command = command.get_command(sub)
            if command is None:
                raise LookupError(f"no subcommand {sub!r} in /{name}")
            child: dict[str, Any] = {"name": sub, "type": 2 if isinstance(command, discord.app_commands.Group) else 1}
            holder.setdefault("options", []).append(child)
            holder = child
        options = []
        resolved: dict[str, dict[str, Any]] = {}
        params = {p.name: p for p in command.parameters}
        for key, value in values.items():
            param = params.get(key)
            if param is None:
                raise LookupError(f"/{name} has no option {key!r} (it has {sorted(params)})")
            otype = param.type
            if isinstance(value, discord.app_commands.Choice):
                value = value.value
            if otype in (discord.AppCommandOptionType.user, discord.AppCommandOptionType.mentionable) and isinstance(value, discord.abc.User):
                resolved.setdefault("users", {})[str(value.id)] = dpy_facts.dict_from_user(getattr(value, "_user", value))
                if isinstance(value, discord.Member):
                    m = self._member_payload(value, channel)
                    m.pop("user")
                    resolved.setdefault("members", {})[str(value.id)] = m
                value = str(value.id)
            elif otype is discord.AppCommandOptionType.channel and hasattr(value, "id"):
                resolved.setdefault("channels", {})[str(value.id)] = {
                    "id": str(value.id), "type": value.type.value, "name": getattr(value, "name", ""),
                    "permissions": "0", **({"parent_id": str(value.parent_id)} if getattr(value, "parent_id", None) else {})}
                value = str(value.id)
            elif otype is discord.AppCommandOptionType.role and hasattr(value, "id"):
                resolved.setdefault("roles", {})[str(value.id)] = {
                    "id": str(value.id), "name": value.name, "color": 0, "hoist": False, "position": value.position,
                    "permissions": str(value.permissions.value), "managed": False, "mentionable": False}
                value = str(value.id)
            options.append({"name": key, "type": int(otype.value), "value": value})
        if options:
            holder["options"] = options
        if resolved:
            data["resolved"] = resolved
        return data

    async def invoke(self, name: str, *, member: Any = None, channel: Any = None, locale: str = "en-US",
                     wait: bool = True, timeout_s: float = 60.0, **options: Any) -> Invocation:
        """Dispatch ``/name`` (``"group sub"`` for subcommands) with ``options`` as a real
        interaction; with ``wait`` return once the command and the tasks it started are done."""
        channel = channel or self.channels[0]
        member = member or self.member
        data = self._options(name, options, channel)
        payload = self._base_payload(2, data, member, channel, locale)
        return await self._dispatch(payload, wait=wait, timeout_s=timeout_s)

    async def click(self, custom_id: str, message: dict[str, Any], *, member: Any = None, channel: Any = None,
                    wait: bool = True, timeout_s: float = 60.0) -> Invocation:
        """Press the button ``custom_id`` on ``message`` (a message dict the bot produced)."""
        channel = channel or self.bot.get_channel(int(message["channel_id"])) or self.channels[0]
        member = member or self.member
        msg = {k: v for k, v in message.items() if not k.startswith("_")}
        payload = self._base_payload(3, {"custom_id": custom_id, "component_type": 2}, member, channel, "en-US")
        payload["message"] = msg
        return await self._dispatch(payload, wait=wait, timeout_s=timeout_s)

    async def _dispatch(self, payload: dict[str, Any], *, wait: bool, timeout_s: float) -> Invocation:
        before = set(asyncio.all_tasks())
        arrived = time.perf_counter()
        # What ConnectionState.parse_interaction_create does, keeping hold of the Interaction object.
        interaction: discord.Interaction = discord.Interaction(data=payload, state=self.state)
        self.interactions.by_token[interaction.token] = interaction
        if payload["type"] == 2:
            self.bot.tree._from_interaction(interaction)
        elif payload["type"] == 3:
            self.state._view_store.dispatch_view(payload["data"]["component_type"], payload["data"]["custom_id"], interaction)
        self.state.dispatch("interaction", interaction)
        started = [t for t in asyncio.all_tasks() if t not in before]  # no await since: all are this dispatch's
        invocation = Invocation(interaction, arrived, self.interactions, started)
        if wait:
            await self.settle(before, timeout_s)
        return invocation

    async def settle(self, before: set[asyncio.Task[Any]] | None = None, timeout_s: float = 60.0) -> None:
        """Wait until every task started since ``before`` is done (the command and its follow-ups)."""
        before = before if before is not None else set(asyncio.all_tasks())
        current = asyncio.current_task()
        deadline = time.monotonic() + timeout_s
        while True:
            pending = [t for t in asyncio.all_tasks() if t not in before and t is not current and not t.done()]
            if not pending:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                names = sorted(t.get_name() for t in pending)
                raise TimeoutError(f"tasks still running after {timeout_s} s: {names}")
            await asyncio.wait(pending, timeout=left)



def merge_settings(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge_settings(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


async def start_bot(settings: Any, store: recsys_store.Store, embedder: Any, generator: Any, counter: Any, extensions: tuple[str, ...],
                    fake: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[BotHarness]:
    """Start a bot on dpytest with these engines; an async generator yielding one
    :class:`BotHarness` and cleaning up after it (extensions unloaded, recommender closed; the
    caller closes ``store`` and ``generator``). ``monkeypatch`` may be a plain ``pytest.MonkeyPatch()``
    (call ``undo()`` afterwards) outside pytest."""
    from recsys.service import Recommender

    recommender = Recommender(store, embedder, settings)
    await recommender.start()
    app = App(settings=settings, store=store, recommender=recommender, generator=generator, counter=counter)
    bot = SingleShardCampfireBot(app, extensions=extensions, sync_commands=False)
    await bot._async_setup_hook()
    real_state = bot._connection
    dpytest.configure(bot, guilds=1, text_channels=2, voice_channels=0, members=3)
    # dpytest replaced the connection state: carry over what the constructor and the tree set on it
    state = bot._connection
    state._command_tree = bot.tree
    state.allowed_mentions = real_state.allowed_mentions
    state.loop = asyncio.get_running_loop()
    await bot.setup_hook()
    harness = BotHarness(bot, app, fake, monkeypatch)
    try:
        yield harness
    finally:
        try:
            await dpytest.empty_queue()
            events = bot.get_cog("Events")
            for name in list(bot.extensions):
                await bot.unload_extension(name)
            del events
        finally:
            await recommender.aclose()

