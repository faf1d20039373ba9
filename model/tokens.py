"""Token counts for prompt budgets, with the generator's own tokenizer (transformers ``AutoTokenizer``).

Loading a tokenizer takes ≈ 0.1–0.3 s and is done once per :class:`TokenCounter`. When none can be
loaded (a remote generator with no local tokenizer) counts fall back to ``ceil(chars / 3.5)`` — the
usual English average for BPE vocabularies (OpenAI's "1 token ≈ 4 characters" rule, rounded down to
stay on the safe side) — which over-counts Chinese a little less than it should, hence CJK characters
count as one token each in the fallback.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 3.5
_CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
# Tokens a chat template adds around each message when no tokenizer is loaded (ChatML: "<|im_start|>role\n … <|im_end|>\n").
FALLBACK_MESSAGE_OVERHEAD = 5


class TokenCounter:
    """Count tokens of text and of chat messages (chat template applied).

    ``tokenizer_path``: a local folder with a tokenizer (the prepared model); ``None``/missing → fallback.
    ``exact`` tells whether a real tokenizer is in use.
    """

    def __init__(self, tokenizer_path: str | Path | None = None) -> None:
        self._tok = None
        if tokenizer_path and Path(tokenizer_path).exists():
            try:
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                from transformers import AutoTokenizer

                self._tok = AutoTokenizer.from_pretrained(str(tokenizer_path))
            except Exception as err:  # a broken folder must not stop the bot: fall back
                log.warning("cannot load tokenizer from %s (%s); estimating tokens from characters", tokenizer_path, err)
        elif tokenizer_path:
            log.info("no tokenizer at %s; estimating tokens from characters", tokenizer_path)

    @property
    def exact(self) -> bool:
        return self._tok is not None

    def count(self, text: str) -> int:
        """Tokens of ``text`` (no special tokens added)."""
        if self._tok is not None:
            return len(self._tok.encode(text, add_special_tokens=False))
        cjk = len(_CJK.findall(text))
        return cjk + math.ceil((len(text) - cjk) / CHARS_PER_TOKEN)

    def count_messages(self, messages: list[dict]) -> int:
        """Tokens of a chat prompt: ``messages`` rendered with the model's chat template, generation prompt included."""
        if self._tok is not None and getattr(self._tok, "chat_template", None):
            ids = self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return len(ids)
        return sum(self.count(str(m.get("content", ""))) + FALLBACK_MESSAGE_OVERHEAD for m in messages) + 3
