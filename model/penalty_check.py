"""The request fields of repetition control, read and checked without torch: what both engines of
``campfire serve`` accept (:mod:`model.penalties` applies them under transformers' continuous batching;
:mod:`model.llama_server` hands them to llama.cpp). Semantics: see :mod:`model.penalties`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Accepted ranges: OpenAI's for frequency/presence; repetition_penalty > 0 as vLLM, capped where every
# repeated token is all but banned.
PENALTY_RANGE = (-2.0, 2.0)
REPETITION_RANGE = (0.0, 5.0)  # exclusive of 0
FIELDS = ("frequency_penalty", "presence_penalty", "repetition_penalty")


@dataclass(frozen=True)
class Penalties:
    """One request's repetition control; the defaults switch everything off."""

    frequency: float = 0.0
    presence: float = 0.0
    repetition: float = 1.0

    @property
    def active(self) -> bool:
        return self.frequency != 0.0 or self.presence != 0.0 or self.repetition != 1.0

    def kwargs(self) -> dict[str, float]:
        """The ``add_request`` keyword arguments :class:`model.penalties.PenaltyProcessor` reads (only those not off)."""
        out: dict[str, float] = {}
        if self.frequency:
            out["frequency_penalty"] = float(self.frequency)
        if self.presence:
            out["presence_penalty"] = float(self.presence)
        if self.repetition != 1.0:
            out["repetition_penalty"] = float(self.repetition)
        return out


def _number(body: dict, name: str, default: float, low: float, high: float, *, low_open: bool = False) -> float:
    value = body.pop(name, None)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"'{name}' must be a number, got {value!r}.")
    if value > high or value < low or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise ValueError(f"'{name}' must be in {bracket}{low:g}, {high:g}], got {value:g}.")
    return float(value)


def pop_penalties(body: dict) -> Penalties:
    """Remove ``frequency_penalty``, ``presence_penalty`` and ``repetition_penalty`` (an extra field,
    as vLLM and llama.cpp accept it) from a chat-completion ``body`` (mutated) and return them.
    Raises ``ValueError`` with a one-line reason for a non-number or an out-of-range value
    (frequency/presence in [−2, 2], repetition in (0, 5])."""
    return Penalties(
        frequency=_number(body, "frequency_penalty", 0.0, *PENALTY_RANGE),
        presence=_number(body, "presence_penalty", 0.0, *PENALTY_RANGE),
        repetition=_number(body, "repetition_penalty", 1.0, *REPETITION_RANGE, low_open=True),
    )


MAX_STOPS = 4  # OpenAI's limit on `stop` strings


def check_request(body: dict) -> None:
    """Check the fields of a chat-completion ``body`` that both engines must refuse alike (OpenAI's
    ranges): ``messages`` a non-empty list of objects; ``temperature`` a number in [0, 2]; ``top_p``
    in (0, 1]; ``max_tokens`` / ``max_completion_tokens`` an integer ≥ 1; ``n`` 1 (one choice per
    request); ``stream`` a boolean; ``stop`` a string or up to 4 non-empty strings. Raises
    ``ValueError`` with a one-line reason (the fronts answer HTTP 400 with it); changes nothing."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ValueError("'messages' must be a non-empty list of message objects.")
    probe = {k: body[k] for k in ("temperature", "top_p") if k in body}
    _number(probe, "temperature", 1.0, 0.0, 2.0)
    _number(probe, "top_p", 1.0, 0.0, 1.0, low_open=True)
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"'{name}' must be an integer of at least 1, got {value!r}.")
    if body.get("n", 1) != 1 or isinstance(body.get("n"), bool):
        raise ValueError(f"'n' must be 1 (one choice per request), got {body.get('n')!r}.")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise ValueError(f"'stream' must be true or false, got {body['stream']!r}.")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop
    if stop is not None and (not isinstance(stops, list) or len(stops) > MAX_STOPS
                             or not all(isinstance(x, str) and x for x in stops)):
        raise ValueError(f"'stop' must be a non-empty string or up to {MAX_STOPS} of them, got {stop!r}.")
