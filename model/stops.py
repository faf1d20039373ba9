"""Stop strings enforced on the client side (not every server honours ``stop``; transformers' continuous
batching ignores it): text is held back while it could be the start of a stop string, and the reply
ends just before the first stop string found. Pure string work; no I/O."""

from __future__ import annotations


def find_stop(text: str, stop: list[str]) -> int | None:
    """Index in ``text`` of the earliest stop string, ``None`` when there is none."""
    hits = [i for s in stop if s and (i := text.find(s)) >= 0]
    return min(hits) if hits else None


def partial_stop(text: str, stop: list[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    best = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                best = max(best, n)
                break
    return best


class StopFilter:
    """Feed it the streamed deltas; it returns what may be shown now.

    ``stopped`` becomes ``True`` once a stop string was found (everything from it on is dropped; feed no
    more). ``held`` is the text held back as a possible stop-string start; :meth:`flush` returns it at
    the end of a reply that did not stop.
    """

    def __init__(self, stop: list[str]) -> None:
        self.stop = [s for s in stop if s]
        self.held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add a delta; returns the text now safe to show (possibly ``""``)."""
        self.held += text
        cut = find_stop(self.held, self.stop)
        if cut is not None:
            out, self.held, self.stopped = self.held[:cut], "", True
            return out
        keep = partial_stop(self.held, self.stop)
        out, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return out

    def flush(self) -> str:
        """The held-back text (the reply ended without a stop string); empties the buffer."""
        out, self.held = self.held, ""
        return out
