"""What a Campfire bot sends to Discord under dpytest, recorded: :class:`SentLog` (message sends and
edits through dpytest, with their payloads) and :class:`InteractionRecorder` (the interaction and
webhook calls that dpytest 0.7 does not answer), plus :class:`Invocation`, one dispatched interaction
and everything sent for it. Used by :mod:`bot.testing.harness`; see its docstring.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import discord
import pytest
from discord.webhook.async_ import AsyncWebhookAdapter


ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024  # bytes; Discord's default upload limit, sent in every interaction

# ---- what the bot sends through dpytest -------------------------------------------------------


@dataclass
class Sent:
    """One HTTP call the bot made to Discord."""

    kind: str
    payload: dict[str, Any]
    channel_id: int | None = None
    message_id: int | None = None
    files: list[tuple[str, bytes]] = field(default_factory=list)
    at: float = field(default_factory=time.perf_counter)


class SentLog:
    """Wraps dpytest's ``send_message``/``edit_message`` to keep each call's payload (dpytest itself
    drops ``allowed_mentions`` and ``message_reference``). ``calls`` in order; :meth:`contents` gives
    each message's final text. It also makes dpytest behave like Discord where the bot's memory
    depends on it: a sent reply keeps its ``message_reference`` (so reply chains through the bot's
    messages resolve, cached or fetched), and an edit updates the cached message (the gateway's
    MESSAGE_UPDATE echo)."""

    def __init__(self, http: Any, state: Any, stored: dict[int, list[dict[str, Any]]]) -> None:
        self.calls: list[Sent] = []
        self._references: dict[int, dict[str, Any]] = {}
        original_send, original_edit = http.send_message, http.edit_message
        log = self

        def fix_stored(channel_id: int, message_id: int) -> dict[str, Any] | None:
            for data in stored.get(channel_id, []):
                if int(data["id"]) == message_id:
                    ref = log._references.get(message_id)
                    data["type"] = 19 if ref else 0
                    data["channel_id"] = channel_id
                    if not isinstance(data.get("timestamp"), str):
                        data["timestamp"] = discord.utils.snowflake_time(message_id).isoformat()
                    if ref:
                        data["message_reference"] = ref
                    return data
            return None

        async def send_message(channel_id: int, *, params: Any, **kwargs: Any) -> Any:
            # dpytest reads the caller's local ``channel`` from the frame above it: keep it visible here
            channel = sys._getframe(1).f_locals.get("channel")  # noqa: F841
            data = await original_send(channel_id, params=params, **kwargs)
            payload = dict(params.payload or {})
            mid = int(data["id"])
            ref = payload.get("message_reference")
            if ref:
                log._references[mid] = {"message_id": str(ref["message_id"]), "channel_id": str(ref.get("channel_id") or channel_id)}
                cached = state._get_message(mid)
                if cached is not None:
                    cached.reference = discord.MessageReference.with_state(state, log._references[mid])
                    cached.type = discord.MessageType.reply
            fix_stored(int(channel_id), mid)
            log.calls.append(Sent("send", payload, int(channel_id), mid))
            return data

        async def edit_message(channel_id: int, message_id: int, **fields: Any) -> Any:
            self = sys._getframe(1).f_locals.get("self")  # noqa: F841  (dpytest reads the caller's ``self``)
            data = await original_edit(channel_id, message_id, **fields)
            fixed = fix_stored(int(channel_id), int(message_id))
            if fixed is not None:
                echo = {k: v for k, v in fixed.items() if k != "message_reference"}
                state.parse_message_update(echo)
            log.calls.append(Sent("edit", dict(fields["params"].payload or {}), int(channel_id), int(message_id)))
            return data

        http.send_message = send_message
        http.edit_message = edit_message

    def sends(self, channel_id: int | None = None) -> list[Sent]:
        return [c for c in self.calls if c.kind == "send" and (channel_id is None or c.channel_id == channel_id)]

    def edits(self, message_id: int | None = None) -> list[Sent]:
        return [c for c in self.calls if c.kind == "edit" and (message_id is None or c.message_id == message_id)]

    def contents(self, channel_id: int | None = None) -> list[str]:
        """Final content of each message the bot sent (in ``channel_id``), in the order sent."""
        out: list[str] = []
        for s in self.sends(channel_id):
            content = s.payload.get("content") or ""
            for e in self.edits(s.message_id):
                if "content" in e.payload:
                    content = e.payload["content"] or ""
            out.append(content)
        return out

    def clear(self) -> None:
        self.calls.clear()


# ---- interactions -----------------------------------------------------------------------------

_ids = itertools.count(1)


def snowflake() -> int:
    """A fresh snowflake-shaped id (now, unique in the session)."""
    return ((int(time.time() * 1000) - 1420070400000) << 22) | (next(_ids) % (1 << 22))


_MESSAGE_ID = re.compile(r"/messages/(\d+)")


@dataclass
class Invocation:
    """One dispatched interaction and everything the bot sent for it (see the module docstring)."""

    interaction: discord.Interaction
    arrived: float
    recorder: InteractionRecorder
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)  # started by the dispatch itself

    async def wait(self, timeout_s: float = 120.0) -> None:
        """Wait for the tasks the dispatch started (the command or button callback) to finish."""
        if self.tasks:
            done, pending = await asyncio.wait(self.tasks, timeout=timeout_s)
            if pending:
                raise TimeoutError(f"interaction {self.interaction.id} still running after {timeout_s} s")

    @property
    def responses(self) -> list[Sent]:
        return [r for r in self.recorder.calls if r.channel_id == self.interaction.id]

    @property
    def defer_s(self) -> float | None:
        cb = [r for r in self.responses if r.kind == "callback"]
        return cb[0].at - self.arrived if cb else None

    @property
    def callback_type(self) -> int | None:
        cb = [r for r in self.responses if r.kind == "callback"]
        return cb[0].payload.get("type") if cb else None

    @property
    def ephemeral(self) -> bool:
        cb = [r for r in self.responses if r.kind in ("callback", "followup")]
        return bool(cb) and all(((r.payload.get("data") or r.payload).get("flags") or 0) & 64 for r in cb)

    @property
    def messages(self) -> list[dict[str, Any]]:
        ids = self.recorder.message_ids.get(self.interaction.id, [])
        return [self.recorder.messages[i] for i in ids if i in self.recorder.messages]

    @property
    def message(self) -> dict[str, Any] | None:
        msgs = self.messages
        return msgs[-1] if msgs else None

    @property
    def text(self) -> str:
        parts = []
        for m in self.messages:
            parts.append(m.get("content") or "")
            for e in m.get("embeds") or []:
                parts += [e.get("title") or "", e.get("description") or ""]
                parts += [f.get("name", "") + " " + f.get("value", "") for f in e.get("fields") or []]
        return "\n".join(p for p in parts if p)


class InteractionRecorder:
    """Answers the interaction and webhook HTTP calls in place of Discord (``AsyncWebhookAdapter.request``
    is patched for the test), recording each as a :class:`Sent` (``channel_id`` holds the interaction
    id) and keeping the messages they create in ``messages`` (id → Discord message dict)."""

    def __init__(self, bot: discord.Client, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bot = bot
        self.calls: list[Sent] = []
        self.messages: dict[int, dict[str, Any]] = {}
        self.message_ids: dict[int, list[int]] = {}  # interaction id -> message ids
        self.by_token: dict[str, discord.Interaction] = {}
        self.original: dict[int, int] = {}  # interaction id -> original response message id
        recorder = self

        async def request(adapter: Any, route: Any, session: Any = None, **kwargs: Any) -> Any:
            return recorder._answer(route, **kwargs)

        monkeypatch.setattr(AsyncWebhookAdapter, "request", request)

    def _message(self, interaction: discord.Interaction, payload: dict[str, Any], files: list[tuple[str, bytes]],
                 message_id: int | None = None) -> dict[str, Any]:
        user = self.bot.user
        assert user is not None
        mid = message_id or snowflake()
        old = self.messages.get(mid, {})
        msg = {
            "id": str(mid),
            "channel_id": str(interaction.channel_id),
            "author": {"id": str(user.id), "username": user.name, "discriminator": "0001", "avatar": None, "bot": True},
            "content": "",
            "timestamp": discord.utils.utcnow().isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 20 if interaction.type is discord.InteractionType.application_command else 0,
            "flags": 0,
            "components": [],
            "webhook_id": str(interaction.application_id),
            "application_id": str(interaction.application_id),
            **({"guild_id": str(interaction.guild_id)} if interaction.guild_id else {}),
        }
        msg.update({k: v for k, v in old.items() if k in msg})
        for key in ("content", "embeds", "components", "flags", "allowed_mentions"):
            if key in payload and payload[key] is not None:
                msg[key] = payload[key]
        if files:
            msg["attachments"] = [
                {"id": str(snowflake()), "filename": name, "size": len(data), "url": f"https://cdn.invalid/{name}",
                 "proxy_url": f"https://cdn.invalid/{name}"}
                for name, data in files
            ]
            msg["_files"] = files
        if old:
            msg["edited_timestamp"] = discord.utils.utcnow().isoformat()
        self.messages[mid] = msg
        ids = self.message_ids.setdefault(interaction.id, [])
        if mid not in ids:
            ids.append(mid)
        return msg

    @staticmethod
    def _payload(kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
        payload = kwargs.get("payload")
        files: list[tuple[str, bytes]] = []
        if payload is None and kwargs.get("multipart"):
            for part in kwargs["multipart"]:
                if part.get("name") == "payload_json":
                    payload = json.loads(part["value"])
        for f in kwargs.get("files") or []:
            f.reset()
            files.append((f.filename or "file", f.fp.read()))
        return dict(payload or {}), files

    def _answer(self, route: Any, **kwargs: Any) -> Any:
        interaction = self.by_token.get(route.webhook_token)
        if interaction is None:
            raise AssertionError(f"HTTP call for an interaction this test did not dispatch: {route.method} {route.path}")
        payload, files = self._payload(kwargs)
        path, method = route.path, route.method
        mid_match = _MESSAGE_ID.search(route.url)
        mid = int(mid_match.group(1)) if mid_match else None
        iid = interaction.id

        def record(kind: str, message_id: int | None = None) -> None:
            self.calls.append(Sent(kind, payload, iid, message_id, files))

        if path.endswith("/callback"):
            rtype = payload.get("type")
            data = payload.get("data") or {}
            record("callback")
            body: dict[str, Any] = {"interaction": {"id": str(iid), "type": int(interaction.type.value),
                                                    "response_message_loading": rtype == 5,
                                                    "response_message_ephemeral": bool((data.get("flags") or 0) & 64)}}
            if rtype in (4, 5):
                msg = self._message(interaction, data, files)
                self.original[iid] = int(msg["id"])
                body["interaction"]["response_message_id"] = msg["id"]
                body["resource"] = {"type": rtype, "message": msg}
            elif rtype == 7 and interaction.message is not None:
                msg = self._message(interaction, data, files, interaction.message.id)
                body["resource"] = {"type": rtype, "message": msg}
            else:
                body["resource"] = {"type": rtype}
            return body
        if path.endswith("/messages/@original"):
            original = self.original.get(iid) or (interaction.message.id if interaction.message else None)
            if method == "DELETE":
                record("delete_original", original)
                self.messages.pop(original or 0, None)
                return None
            if original is None:
                raise discord.NotFound(_FakeResponse(404), {"message": "Unknown Message", "code": 10008})
            if method == "GET":
                record("get_original", original)
                return self.messages.get(original) or self._message(interaction, {}, [], original)
            record("edit_original", original)
            return self._message(interaction, payload, files, original)
        if mid is not None:
            if method == "DELETE":
                record("delete_message", mid)
                self.messages.pop(mid, None)
                return None
            if method == "GET":
                record("get_message", mid)
                return self.messages[mid]
            record("edit_message", mid)
            return self._message(interaction, payload, files, mid)
        if method == "POST":  # a follow-up (webhook execute)
            msg = self._message(interaction, payload, files)
            record("followup", int(msg["id"]))
            return msg
        raise AssertionError(f"unexpected interaction HTTP call {method} {path}")


class _FakeResponse:
    def __init__(self, status: int) -> None:
        self.status = status
        self.reason = "fake"


