"""The real packaged all-MiniLM-L6-v2 through recsys.embed."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.embed import Embedder, EmbedderNotFound, load_embedder


def test_shape_dtype_and_normalisation(embedder: Embedder):
    v = embedder.encode(["Which hops give a citrus aroma?", "How long can I store a stout?", ""])
    assert embedder.name == "all-MiniLM-L6-v2"
    assert embedder.dim == 384
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_meaning_is_captured(embedder: Embedder):
    a, b, c = embedder.encode([
        "Citra and Mosaic hops give this IPA its grapefruit aroma.",
        "Which hop varieties make a beer smell like citrus?",
        "The football match was postponed because of the rain.",
    ])
    assert a @ b > a @ c + 0.2


async def test_aencode_runs_off_the_loop_and_matches(embedder: Embedder):
    texts = ["dry hopping a pale ale", "cellaring barley wine"]
    np.testing.assert_allclose(await embedder.aencode(texts), embedder.encode(texts), atol=1e-5)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(EmbedderNotFound, match="recsys.embedder"):
        Embedder(tmp_path / "nope")


async def test_load_embedder_from_settings(settings):
    e = await load_embedder(settings.recsys)
    assert (e.name, e.dim) == ("all-MiniLM-L6-v2", 384)


def test_embedding_text_drops_addressees_so_replies_embed_by_what_they_say(embedder):
    """Real ubuntu_irc lines: two unrelated replies to similar nicks look alike until the nicks go."""
    from recsys.embed import embedding_text

    names = {"eager_tapir279", "eager_marten004", "thomas"}
    a, b = "eager_tapir279 here?", "eager_marten004, thats what I figured, just making sure :)"
    assert embedding_text(b, names) == "thats what I figured, just making sure :)"
    assert embedding_text("@Thomas <@1012> that is off topic", names) == "that is off topic"
    assert embedding_text("<@123> look at <#55>", names).split() == ["look", "at"]
    assert embedding_text("Note: the package is broken", names) == "Note: the package is broken"  # not a member
    assert embedding_text("eager_tapir279", names) == "eager_tapir279"  # nothing else: kept whole
    raw = embedder.encode([a, b])
    clean = embedder.encode([embedding_text(a, names), embedding_text(b, names)])
    assert float(raw[0] @ raw[1]) > 0.5 > 0.2 > float(clean[0] @ clean[1])
