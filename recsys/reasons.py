"""Step 5 of the pipeline: one-line reasons for picks ("because you replied to: …"), for many
members at once (:func:`reasons_many`; one member is a batch of one).

A reason that quotes starts with "because "; the others quote nothing ("popular in this server
lately", "new in this server", :data:`NEUTRAL_REASON`). What a reason may quote depends on who reads
it (:mod:`recsys.audience`): ``reasons_many``'s ``allow`` masks say which interactions may be quoted.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np

from recsys.conversations_text import index_of
from recsys.embed import embedding_text
from recsys.store import Interaction

MIN_REASON_CHARS = 20  # a reason quotes an interaction at least this long when the member has one
# Cosine (all-MiniLM-L6-v2) below which the nearest interaction does not explain a pick: unrelated
# sentences mostly score under ~0.2 with this model, so quoting one as "because you wrote about"
# would mislead; the pick is then explained by what drove it instead (popular / new).
MIN_REASON_SIMILARITY = 0.3
#: The reason of a pick explained by an interaction its readers may not see quoted (a daily post in
#: a channel, where the member's nearest interaction is in a channel some readers cannot view).
NEUTRAL_REASON = "close to what you engage with here"
POPULAR_REASON = "popular in this server lately"
NEW_REASON = "new in this server"
_VERBS = {
    "authored": "you wrote about",
    "replied": "you replied to",
    "reacted": "you reacted to",
    "requested": "you asked for a story about",
    "rated_up": "you liked",
    "clicked": "you opened",
    "viewed": "you read",
}


def _about(inter: Interaction, quote: str | None, names: Collection[str] = ()) -> str:
    """The text a reason quotes for ``inter``: what the member wrote/asked, else ``quote`` (its item's
    title or text), leading addressees among ``names`` dropped (:func:`recsys.embed.embedding_text`),
    whitespace collapsed."""
    if inter.kind in ("authored", "requested") and inter.text:
        about = inter.text
    elif quote is not None:
        about = quote
    else:
        about = inter.text
    return " ".join(embedding_text(about or "", names).split())


def _quoted_item(inter: Interaction) -> int | None:
    """The item :func:`_about` quotes for ``inter`` (not the member's own words), if any."""
    return None if inter.kind in ("authored", "requested") and inter.text else inter.item_id


def reason_for(inter: Interaction, quote: str | None, names: Collection[str] = ()) -> str:
    """One line naming the interaction: "because you replied to: <title or first words>" (whitespace
    and newlines collapsed, the quote cut to 80 characters); ``quote``: its item's title or text;
    ``names``: the guild's member display names, lower-case (addressees are not quoted)."""
    verb = _VERBS.get(inter.kind, "you engaged with")
    about = _about(inter, quote, names)
    if len(about) > 80:
        about = about[:77].rstrip() + "…"
    return f"because {verb}: {about}"


def pick_reason(
    used: list[Interaction], hv: np.ndarray, vec: np.ndarray, quotes: Mapping[int, str], popular: bool
) -> str:
    """The reason for one pick with vector ``vec (dim,)``: :func:`pick_reasons` for one pick."""
    return pick_reasons(used, hv, np.asarray(vec)[None], quotes, [popular])[0][0]


def pick_reasons(
    used: list[Interaction], hv: np.ndarray, vecs: np.ndarray, quotes: Mapping[int, str], popular: list[bool],
    names: Collection[str] = (),
) -> list[tuple[str, int | None]]:
    """Reasons for one member's picks: :func:`reasons_many` for one member."""
    return reasons_many([(used, hv, np.atleast_2d(vecs), popular)], quotes, names)[0]


def reasons_many(
    members: list[tuple[list[Interaction], np.ndarray, np.ndarray, list[bool]]], quotes: Mapping[int, str],
    names: Collection[str] = (), allow: Sequence[np.ndarray] | None = None,
) -> list[list[tuple[str, int | None]]]:
    """Reasons for the picks of many members, all at once. Per member ``(used, hv, vecs, popular)``:
    its profile interactions ``used`` with their vectors ``hv (n, dim)``, its picks' vectors
    ``vecs (k, dim)`` (2-D, the same ``dim`` for every member) and whether each pick is popular.
    A pick's reason quotes the member's positive interaction nearest to it, among the *substantive*
    ones (quoted text of at least ``MIN_REASON_CHARS`` characters) when the member has any, if its
    cosine reaches ``MIN_REASON_SIMILARITY``; else "popular in this server lately" / "new in this server".
    ``quotes``: item id -> its title or text (:meth:`Store.item_quotes`); ``names``: the guild's member
    display names, lower-case (a quote does not start with whom it addressed). ``allow``: per member,
    which of ``used`` may be quoted (bool ``(n,)``; None: all) — the nearest allowed one is quoted;
    when only a disallowed one explains the pick, the reason is :data:`NEUTRAL_REASON`. Returns one
    list per member of ``(reason, quoted item)``: the item whose title or text is quoted, ``None``
    when the quote is the member's own words or there is none."""
    names = index_of(names)  # the names index once for every quote (not once per quote)
    dim = members[0][2].shape[1] if members else 0
    used = [i for u, _, _, _ in members for i in u]
    u_quote = [quotes.get(i.item_id) if i.item_id is not None else None for i in used]
    u_n = np.array([len(u) for u, _, _, _ in members], np.int64)
    u_seg = np.repeat(np.arange(len(members)), u_n)
    positive = np.array([i.weight > 0 for i in used], bool)
    long_ = np.array([len(_about(i, q, names)) >= MIN_REASON_CHARS for i, q in zip(used, u_quote, strict=True)], bool)
    allowed = np.concatenate([np.asarray(a, bool) for a in allow] or [np.zeros(0, bool)]) if allow is not None \
        else np.ones(len(used), bool)
    p_n = np.array([len(v) for _, _, v, _ in members], np.int64)
    pv = np.concatenate([v for _, _, v, _ in members] or [np.zeros((0, dim))]).astype(np.float32)
    hv = np.concatenate([h.reshape(-1, dim) for _, h, _, _ in members] or [np.zeros((0, dim))]).astype(np.float32)
    # every (pick, interaction of the same member) pair, pairs of a pick contiguous
    p_seg = np.repeat(np.arange(len(members)), p_n)
    per = u_n[p_seg]
    pair_p = np.repeat(np.arange(len(pv)), per)
    u_start = np.cumsum(u_n) - u_n
    pair_u = np.repeat(u_start[p_seg], per) + (np.arange(len(pair_p)) - np.repeat(np.cumsum(per) - per, per))
    sims = np.empty(len(pair_p), np.float32)
    for s in range(0, len(pair_p), 65536):
        t = slice(s, s + 65536)
        sims[t] = np.einsum("nd,nd->n", hv[pair_u[t]], pv[pair_p[t]])
    sims = np.where(np.any(pv != 0, axis=1)[pair_p], sims, -np.inf)
    best_any = _nearest(sims, pair_p, pair_u, _eligible(positive, long_, u_seg, len(members)), len(pv))
    best_u = _nearest(sims, pair_p, pair_u, _eligible(positive & allowed, long_, u_seg, len(members)), len(pv))
    out: list[list[tuple[str, int | None]]] = []
    c = 0
    for _, _, _, popular in members:
        reasons = []
        for flag in popular:
            u = best_u[c]
            if u >= 0:
                reasons.append((reason_for(used[u], u_quote[u], names), _quoted_item(used[u])))
            elif best_any[c] >= 0:
                reasons.append((NEUTRAL_REASON, None))
            else:
                reasons.append((POPULAR_REASON if flag else NEW_REASON, None))
            c += 1
        out.append(reasons)
    return out


def _eligible(positive: np.ndarray, long_: np.ndarray, u_seg: np.ndarray, n_members: int) -> np.ndarray:
    """The interactions a reason may be chosen from: the substantive ``positive`` ones when the member
    has any, else all its ``positive`` ones."""
    has_long = np.bincount(u_seg[positive & long_], minlength=n_members) > 0
    return positive & (long_ | ~has_long[u_seg])


def _nearest(sims: np.ndarray, pair_p: np.ndarray, pair_u: np.ndarray, eligible: np.ndarray, n_picks: int) -> np.ndarray:
    """Per pick, the eligible interaction nearest to it when its cosine reaches
    ``MIN_REASON_SIMILARITY`` (ties: the earlier interaction), else -1: ``(n_picks,) int64``."""
    best_u = np.full(n_picks, -1, np.int64)
    if not len(pair_p):
        return best_u
    s = np.where(eligible[pair_u], sims, -np.inf)
    order = np.lexsort((-s, pair_p))  # per pick, best first; ties: the earlier interaction
    first = order[np.r_[0, np.flatnonzero(np.diff(pair_p[order])) + 1]]
    ok = s[first] >= MIN_REASON_SIMILARITY
    best_u[pair_p[first[ok]]] = pair_u[first[ok]]
    return best_u
