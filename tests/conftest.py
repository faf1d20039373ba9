"""Shared fixtures. Real models run offline; they load once per session (see tests/plugins/)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from campfire.config import Settings  # noqa: E402
from recsys.store import Store  # noqa: E402

pytest_plugins = ["tests.plugins.generator", "tests.plugins.recsys"]

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
MODEL_CACHE = Path(os.environ.get("CAMPFIRE_TEST_CACHE", ROOT / ".cache")) / "models" / "smollm2-135m-instruct"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data; skips the test with a clear message when the folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found: {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def prepared_model() -> Path:
    """The packaged SmolLM2 converted once per machine into .cache/ (≈ 35 s the first time)."""
    from model.prepare import prepare_model

    return prepare_model(MODEL_CACHE)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def make_settings(data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """Build Settings on a temporary data dir, ignoring the repo's config.toml and CAMPFIRE_ env."""
    for key in list(os.environ):
        if key.startswith("CAMPFIRE_"):
            monkeypatch.delenv(key)

    def make(**overrides) -> Settings:
        overrides.setdefault("data_dir", data_dir)
        return Settings(**overrides)

    return make


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings()


@pytest.fixture
async def store(data_dir: Path):
    s = await Store.open(data_dir / "campfire.db")
    try:
        yield s
    finally:
        await s.close()
