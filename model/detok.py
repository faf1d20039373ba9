"""Incremental detokenisation that never emits U+FFFD (the stream of ``campfire serve``).

transformers' CB streamer decodes with tokenizers' ``DecodeStream``, which holds back a chunk while
it *ends* in an incomplete UTF-8 sequence — but emits it as soon as the next token decodes cleanly.
A byte-level BPE model (SmolLM2 spells most Chinese characters as 2–3 byte tokens) that samples the
first byte token of a character and then anything but its continuation produced an invalid sequence,
which was streamed as "�" and saved in a story (issue 14). Measured with SmolLM2's tokenizer: the
first token of "月" (``0xE6 0x9C``) followed by "a" streams as ``"�a"``.

:class:`SafeDecodeStream` wraps ``DecodeStream``: incomplete bytes at the end are still held back
(a character split across tokens comes out whole), invalid bytes are dropped (they are the model's
error, not text), and :meth:`SafeDecodeStream.flush` returns what was held back at the end, minus any
trailing incomplete bytes.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


class SafeDecodeStream:
    """Drop-in for ``tokenizers.decoders.DecodeStream`` (``step(tokenizer, token_id) -> str | None``)
    whose output never contains U+FFFD. ``tokenizer``: a ``tokenizers.Tokenizer`` (a fast tokenizer's
    ``._tokenizer``)."""

    def __init__(self, skip_special_tokens: bool = True) -> None:
        from tokenizers.decoders import DecodeStream

        self._skip = skip_special_tokens
        self._stream = DecodeStream([], skip_special_tokens=skip_special_tokens)
        self._ids: list[int] = []
        self._raw: list[str] = []  # what DecodeStream emitted, U+FFFD included
        self._raw_len = 0

    def step(self, tokenizer: Any, token_id: int) -> str | None:
        """Feed one token id; returns new clean text, or ``None`` while bytes are held back (or when
        the new text was only invalid bytes)."""
        self._ids.append(int(token_id))
        try:
            text = self._stream.step(tokenizer, int(token_id))
        except Exception:  # noqa: BLE001 — DecodeStream's prefix check (a tokenizers error): fall back to a full decode
            text = self._full_decode_tail(tokenizer, hold_incomplete=True)
            self._stream = _resumed_stream(self._skip)
        if text is None:
            return None
        self._raw.append(text)
        self._raw_len += len(text)
        clean = text.replace(REPLACEMENT, "")
        return clean or None

    def flush(self, tokenizer: Any) -> str:
        """The text still held back at the end of the stream (complete characters only); ''."""
        tail = self._full_decode_tail(tokenizer, hold_incomplete=False) or ""
        if tail:
            self._raw.append(tail)
            self._raw_len += len(tail)
        return tail.replace(REPLACEMENT, "")

    def _full_decode_tail(self, tokenizer: Any, *, hold_incomplete: bool) -> str | None:
        full = tokenizer.decode(self._ids, skip_special_tokens=self._skip)
        emitted = "".join(self._raw)
        if not full.startswith(emitted) or len(full) == len(emitted):
            return None
        tail = full[len(emitted):]
        if hold_incomplete and tail.endswith(REPLACEMENT):
            return None
        return tail.rstrip(REPLACEMENT) or None


def _resumed_stream(skip_special_tokens: bool) -> Any:
    from tokenizers.decoders import DecodeStream

    return DecodeStream([], skip_special_tokens=skip_special_tokens)


def clean_text(text: str) -> str:
    """``text`` without U+FFFD (the non-streamed reply of ``campfire serve``)."""
    return text.replace(REPLACEMENT, "")
