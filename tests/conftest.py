"""Shared fixtures: an isolated data folder per test, a fake embedder, and a service built on both."""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakes import FakeEmbedder  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = Path(os.environ.get("NEWSDESK_SHARED_DATA", SHARED / "data"))
SEED = Path(__file__).resolve().parents[1] / "index" / "sample" / "nato-iraq-soleimani.txt"


def shared_data(relative: str) -> Path:
    """A file in ../shared/data; the test is skipped, saying so, where that folder is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def config(tmp_path):
    from bot.config import Config

    config = Config(base_dir=tmp_path)
    config.index.dir = str(tmp_path / "data")
    config.retrieval.recency_weight = 0.0  # deterministic rankings regardless of today's date
    return config


@pytest.fixture
def service(config, fake_embedder):
    from bot.service import NewsService

    return NewsService(config, embedder=fake_embedder)


def article(title: str, text: str, *, days_ago: float = 1, outlet: str = "Test Wire", url: str | None = None,
            collection: str = "shared"):
    """A small Article for tests that don't read files."""
    from index.article import Article, make_article_id

    published = datetime.now(timezone.utc) - timedelta(days=days_ago)
    return Article(
        id=make_article_id(url=url, text=title + text), title=title, text=text, url=url, outlet=outlet,
        published=published, collection=collection,
    )


@pytest.fixture(autouse=True)
def _quiet_third_party_logs():
    logging.getLogger("faiss").setLevel(logging.WARNING)
    yield
