"""A guild's well-rated stories, for ``campfire model finetune --guild`` (read only).

Candidates: the guild's ``story`` items (``/story``; first parts only — a continuation was asked with
another prompt) and ``imported`` catalogue items (``campfire import-items``); NSFW items never (the
tuned model answers in every channel). Never anything of a
member who opted out or was forgotten: items they authored are left out (``Store.is_opted_out``,
which also covers forgotten members' tombstones, and ``Store.recordable_items`` for forgotten message
ids), and their votes and reactions do not count.

Score of an item (the ``--min-rating`` threshold applies to it, strictly above):
- a story: 👍 − 👎 (``rated_up`` / ``rated_down`` interactions) plus reactions (``reacted``) on the story
  or on the message that posted it (``meta.message_id``), counted over members who may be recorded now.
  The stored ``items.rating`` is not used for stories: it is a running sum that still holds the votes of
  members who opted out or were forgotten since.
- a catalogue item: its stored rating (the catalogue's own, e.g. the wiki's votes, moved by members'
  👍/👎 from ``/recommend``) plus the reactions counted as above.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from recsys.store import Item, Store

VOTE = {"rated_up": 1.0, "rated_down": -1.0, "reacted": 1.0}


@dataclass(frozen=True)
class RatedStory:
    """A story to train on: ``id`` (a catalogue entry's own id, else the item id, as text), ``title``, ``text``, ``score`` (see the module
    docstring), ``theme`` (what ``/story`` was asked; empty for catalogue items), ``genre``, ``length``,
    ``language`` (from the story's meta; empty = unknown), ``credit`` (author and url of an imported
    entry, for attribution) and ``kind`` (``story`` | ``imported``)."""

    id: str
    title: str
    text: str
    score: float
    kind: str
    theme: str = ""
    genre: str = "any"
    length: str = ""
    language: str = ""
    credit: str = ""


async def _votes(store: Store, guild_id: int, items: list[Item]) -> Counter[int]:
    """Item id -> votes and reactions by members who may be recorded now."""
    anchor: dict[int, int] = {}
    for it in items:
        anchor[it.id] = it.id
        message_id = (it.meta or {}).get("message_id")
        if isinstance(message_id, int):
            anchor[message_id] = it.id
    rows = [i for i in await store.interactions(guild_id) if i.kind in VOTE and i.item_id in anchor]
    allowed = {m: not await store.is_opted_out(m) for m in {i.member_id for i in rows}}
    votes: Counter[int] = Counter()
    for i in rows:
        if allowed[i.member_id]:
            votes[anchor[i.item_id]] += VOTE[i.kind]  # type: ignore[index]
    return votes


async def _recordable(store: Store, items: list[Item]) -> list[Item]:
    """``items`` without those of a member who opted out or was forgotten."""
    items = await store.recordable_items(items)
    authors = {it.author_id for it in items if it.author_id is not None}
    out_ids = {a for a in authors if await store.is_opted_out(a)}
    return [it for it in items if it.author_id not in out_ids]


async def rated_stories(store: Store, guild_id: int, *, min_rating: float = 0.0) -> list[RatedStory]:
    """The guild's stories and catalogue items scored above ``min_rating`` (see the module docstring),
    best first. Reads only."""
    stories = [it for it in await store.items(guild_id, kind="story") if it.parent_item_id is None]
    imported = await store.items(guild_id, kind="imported")
    items = await _recordable(store, stories + imported)
    votes = await _votes(store, guild_id, items)
    out: list[RatedStory] = []
    for it in items:
        meta = it.meta or {}
        score = votes[it.id] + (it.rating if it.kind == "imported" else 0.0)
        if score <= min_rating or it.nsfw or not it.text.strip():
            continue
        out.append(RatedStory(
            id=it.external_id or str(it.id), title=it.title or str(meta.get("theme") or "Untitled"), text=it.text, score=score, kind=it.kind,
            theme=str(meta.get("theme") or "") if it.kind == "story" else "", genre=str(meta.get("genre") or "any"),
            length=str(meta.get("length") or "") if it.kind == "story" else "",
            language=str(meta.get("language") or "") if it.kind == "story" else "",
            credit=str(meta.get("credit") or ""),
        ))
    out.sort(key=lambda s: -s.score)
    return out
