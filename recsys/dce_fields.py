"""Reading the fields of a DiscordChatExporter message or user one at a time, so that a bad field
costs that field (or, for the fields a message cannot be placed without, that message) and one
line naming the file, the message id and the field — never the file, never a traceback.

Required (a bad value skips the message): ``id``, ``timestamp``, ``author`` and ``author.id``; a
user in ``mentions`` or ``reactions[].users`` without a valid ``id`` is skipped alone. Everything
else is optional: missing or ``null`` is normal (other exporters omit fields), a value of the wrong
type is reported and ignored. Ids are Discord snowflakes: positive integers, as JSON numbers or
digit strings (DCE writes strings). Field names follow DCE's JSON writer
(Tyrrrz/DiscordChatExporter, ``JsonMessageWriter``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MISSING = object()
MAX_ID = 2**63 - 1  # SQLite INTEGER


@dataclass(slots=True)
class Msg:
    """One readable message: ``created_at`` UNIX s; ``reactions`` the total count; ``reactors`` user
    ids that reacted (where the export lists them); ``mention_ids`` the users it @mentions (DCE
    ``mentions[].id``, each once, in order)."""

    id: int
    type: str
    created_at: float
    author_id: int
    text: str
    reply_to: int | None
    reactions: int = 0
    reactors: list[int] = field(default_factory=list)
    mention_ids: tuple[int, ...] = ()


@dataclass(slots=True)
class User:
    """A user as exported: ``name`` the first of nickname → global name → name that is a non-empty
    string ("" when none is); ``roles`` role ids, ``None`` when the export does not list them."""

    id: int
    name: str
    is_bot: bool
    roles: list[int] | None


class Problems:
    """One line per problem with a field of one file, each line kept once (in order)."""

    def __init__(self, path: Path):
        self.path = path
        self.lines: list[str] = []
        self._seen: set[str] = set()

    def add(self, where: str, name: str, value: Any, cost: str) -> None:
        """Record ``<file>: <where>: field '<name>' <what the value is> — <cost>``."""
        line = f"{self.path}: {where}: field '{name}' {describe(value)} — {cost}"
        if line not in self._seen:
            self._seen.add(line)
            self.lines.append(line)


def describe(value: Any) -> str:
    """What is wrong with a value, in a few words ("is missing", "is null", "is the text 'many'")."""
    if value is MISSING:
        return "is missing"
    if value is None:
        return "is null"
    if isinstance(value, bool):
        return f"is {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "…"
        return f"is the text {shown!r}"
    if isinstance(value, list):
        return "is a list"
    if isinstance(value, dict):
        return "is an object"
    return f"is {value!r}"


def as_id(value: Any) -> int | None:
    """A snowflake from a JSON number or digit string; ``None`` when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer() and value < 2**53:
        n = int(value)
    elif isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
        n = int(value.strip())
    else:
        return None
    return n if 0 < n <= MAX_ID else None


def as_time(value: Any) -> float | None:
    """ISO-8601 (naive = UTC) or UNIX seconds -> UNIX seconds; ``None`` when neither."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if abs(value) < 1e11 else None
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def optional(obj: dict[str, Any], key: str, kind: type, problems: Problems, where: str,
             name: str, cost: str) -> Any:
    """``obj[key]`` when it has type ``kind``; ``None`` when missing or null, or (reported) of another type."""
    value = obj.get(key, MISSING)
    if value is MISSING or value is None:
        return None
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    problems.add(where, name, value, cost)
    return None


def read_user(u: Any, problems: Problems, where: str, name: str, cost: str) -> User | None:
    """A user object (author, mention or reactor) or ``None`` (reported, ``cost`` saying what is lost)."""
    if not isinstance(u, dict):
        problems.add(where, name, u, cost)
        return None
    uid = as_id(u.get("id", MISSING))
    if uid is None:
        problems.add(where, f"{name}.id", u.get("id", MISSING), cost)
        return None
    display = ""
    for key in ("nickname", "globalName", "global_name", "name"):
        v = optional(u, key, str, problems, where, f"{name}.{key}", "not used as the name")
        if v and v.strip() and not display:
            display = v.strip()
    is_bot = bool(optional(u, "isBot", bool, problems, where, f"{name}.isBot", "taken as not a bot"))
    roles = optional(u, "roles", list, problems, where, f"{name}.roles", "roles unknown")
    role_ids: list[int] | None = None
    if roles is not None:
        role_ids = []
        for i, r in enumerate(roles):
            rid = as_id(r.get("id", MISSING)) if isinstance(r, dict) else None
            if rid is not None:
                role_ids.append(rid)
            elif isinstance(r, dict):
                problems.add(where, f"{name}.roles[{i}].id", r.get("id", MISSING), "that role skipped")
            else:
                problems.add(where, f"{name}.roles[{i}]", r, "that role skipped")
    return User(uid, display, is_bot, role_ids)


def message_text(m: dict[str, Any], problems: Problems, where: str) -> str:
    """The message's content, with each link preview's title and description appended (what a link
    is about) when not already in it."""
    text = (optional(m, "content", str, problems, where, "content", "text taken as empty") or "").strip()
    for i, e in enumerate(optional(m, "embeds", list, problems, where, "embeds", "link previews skipped") or []):
        if not isinstance(e, dict):
            problems.add(where, f"embeds[{i}]", e, "that link preview skipped")
            continue
        parts = [optional(e, k, str, problems, where, f"embeds[{i}].{k}", "not used") for k in ("title", "description")]
        extra = " — ".join(s.strip() for s in parts if s and s.strip())
        if extra and extra not in text:
            text = f"{text}\n{extra}" if text else extra
    return text


def read_message(obj: Any, index: int, problems: Problems) -> tuple[Msg | None, int | None, list[User]]:
    """``(message, its id, users met in it)``: the message is ``None`` when a required field is bad
    (its id, when readable, is still returned: the message exists even if it cannot be used)."""
    if not isinstance(obj, dict):
        problems.add(f"message #{index + 1}", f"messages[{index}]", obj, "message skipped")
        return None, None, []
    mid = as_id(obj.get("id", MISSING))
    where = f"message {mid}" if mid is not None else f"message #{index + 1} (no id)"
    if mid is None:
        problems.add(where, "id", obj.get("id", MISSING), "message skipped")
        return None, None, []
    created = as_time(obj.get("timestamp", MISSING))
    if created is None:
        problems.add(where, "timestamp", obj.get("timestamp", MISSING), "message skipped")
        return None, mid, []
    author = read_user(obj.get("author", MISSING), problems, where, "author", "message skipped")
    if author is None:
        return None, mid, []
    kind = optional(obj, "type", str, problems, where, "type", "taken as Default") or "Default"
    msg = Msg(id=mid, type=kind, created_at=created, author_id=author.id, text=message_text(obj, problems, where),
              reply_to=None)
    ref = optional(obj, "reference", dict, problems, where, "reference", "not counted as a reply")
    if ref is not None and ref.get("messageId") is not None:
        target = as_id(ref["messageId"])
        if target is None:
            problems.add(where, "reference.messageId", ref["messageId"], "not counted as a reply")
        else:
            msg.reply_to = target
    users = [author]
    for i, u in enumerate(optional(obj, "mentions", list, problems, where, "mentions", "mentions skipped") or []):
        user = read_user(u, problems, where, f"mentions[{i}]", "that mention skipped")
        if user is not None:
            users.append(user)
            if user.id not in msg.mention_ids:
                msg.mention_ids += (user.id,)
    _read_reactions(obj, msg, users, problems, where)
    return msg, mid, users


def _read_reactions(obj: dict[str, Any], msg: Msg, users: list[User], problems: Problems, where: str) -> None:
    for i, r in enumerate(optional(obj, "reactions", list, problems, where, "reactions", "reactions skipped") or []):
        if not isinstance(r, dict):
            problems.add(where, f"reactions[{i}]", r, "that reaction skipped")
            continue
        reactors = []
        for j, u in enumerate(optional(r, "users", list, problems, where, f"reactions[{i}].users", "reactors unknown") or []):
            user = read_user(u, problems, where, f"reactions[{i}].users[{j}]", "that reactor skipped")
            if user is not None:
                users.append(user)
                reactors.append(user.id)
                if user.id != msg.author_id and user.id not in msg.reactors:
                    msg.reactors.append(user.id)
        count = r.get("count", MISSING)
        n = count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None
        if n is None and count is not MISSING and count is not None:
            problems.add(where, f"reactions[{i}].count", count, "counted as the reactors listed (at least 1)")
        msg.reactions += n if n is not None else max(1, len(reactors))
