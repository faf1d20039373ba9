"""Shared recsys fixtures (session-scoped real models load once)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def embedder():
    """The real packaged all-MiniLM-L6-v2 (384-d), loaded once per test session (≈ 2 s on CPU)."""
    from recsys.embed import Embedder

    return Embedder()
