"""The embedded backend's feed registry: feeds, their polling state and posted digests, in a small SQLite file.

It is a file of its own beside the index, so the registry can change (an admin adds a feed) while
the index is being written, and the index can be rebuilt without losing the list. A feed belongs to
a collection: "shared" for feeds from config.toml, which every server reads, and "guild:<id>" for a
feed one server's admins added, which only that server reads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import closing
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from index.article import DEFAULT_COLLECTION, utcnow
from index.store.types import Feed
from index.urls import check_feed_url

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feeds (
    url TEXT NOT NULL, collection TEXT NOT NULL, channel_id INTEGER NOT NULL DEFAULT 0,
    added_by INTEGER NOT NULL DEFAULT 0, from_config INTEGER NOT NULL DEFAULT 0,
    added_at REAL NOT NULL, last_polled REAL, last_error TEXT,
    PRIMARY KEY (url, collection));
CREATE TABLE IF NOT EXISTS digests (
    channel_id INTEGER NOT NULL, day TEXT NOT NULL, posted_at REAL NOT NULL,
    PRIMARY KEY (channel_id, day));
"""
_COLUMNS = "url, collection, channel_id, added_by, from_config, last_polled, last_error, added_at"


def from_timestamp(value: float | None) -> datetime | None:
    """A stored Unix time as an aware datetime (SQLite keeps times as REAL)."""
    return datetime.fromtimestamp(value, timezone.utc) if value is not None else None


class SQLiteFeedRegistry:
    """Each call opens its own connection, so the registry can be used from any thread."""

    FILE = "feeds.sqlite3"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def sync_config(self, feeds: Iterable[Feed]) -> None:
        wanted = {(check_feed_url(f.url), f.collection): f for f in feeds}
        now = utcnow().timestamp()
        with closing(self._connect()) as db, db:
            present = {(u, c) for u, c in db.execute("SELECT url, collection FROM feeds WHERE from_config = 1")}
            for url, collection in present - set(wanted):
                db.execute("DELETE FROM feeds WHERE url = ? AND collection = ?", (url, collection))
            for (url, collection), feed in wanted.items():
                db.execute(
                    "INSERT INTO feeds (url, collection, channel_id, from_config, added_at) VALUES (?, ?, ?, 1, ?)"
                    " ON CONFLICT (url, collection) DO UPDATE SET channel_id = excluded.channel_id, from_config = 1",
                    (url, collection, feed.channel_id, now),
                )

    def add(self, url: str, *, collection: str, channel_id: int = 0, added_by: int = 0) -> Feed:
        url = check_feed_url(url)
        added_at = utcnow()
        with closing(self._connect()) as db, db:
            try:
                db.execute(
                    "INSERT INTO feeds (url, collection, channel_id, added_by, added_at) VALUES (?, ?, ?, ?, ?)",
                    (url, collection, channel_id, added_by, added_at.timestamp()),
                )
            except sqlite3.IntegrityError:
                raise ValueError("That feed is already on the list.") from None
        return Feed(url, collection, channel_id, added_by, added_at=added_at)

    def remove(self, url: str, *, collection: str) -> bool:
        with closing(self._connect()) as db, db:
            cursor = db.execute(
                "DELETE FROM feeds WHERE url = ? AND collection = ? AND from_config = 0", (url.strip(), collection)
            )
        return cursor.rowcount > 0

    def feeds(self, *, collections: Iterable[str] | None = None) -> list[Feed]:
        query = f"SELECT {_COLUMNS} FROM feeds"
        params: list = []
        if collections is not None:
            params = list(collections)
            query += f" WHERE collection IN ({', '.join('?' * len(params)) or 'NULL'})"
        query += " ORDER BY collection != ?, collection, added_at, url"
        params.append(DEFAULT_COLLECTION)
        with closing(self._connect()) as db:
            rows = db.execute(query, params).fetchall()
        return [_feed(row) for row in rows]

    def due(self, *, every: timedelta, now: datetime | None = None) -> list[Feed]:
        cutoff = ((now or utcnow()) - every).timestamp()
        with closing(self._connect()) as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM feeds WHERE last_polled IS NULL OR last_polled <= ?"
                " ORDER BY coalesce(last_polled, 0), added_at",
                (cutoff,),
            ).fetchall()
        return [_feed(row) for row in rows]

    def mark_polled(self, feed: Feed, *, when: datetime, error: str | None = None) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "UPDATE feeds SET last_polled = ?, last_error = ? WHERE url = ? AND collection = ?",
                (when.timestamp(), error, feed.url, feed.collection),
            )

    def claim_digest(self, channel_id: int, day: date) -> bool:
        with closing(self._connect()) as db, db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO digests VALUES (?, ?, ?)", (channel_id, day.isoformat(), utcnow().timestamp())
            )
        return cursor.rowcount > 0

    def restore(self, feeds: Iterable[Feed]) -> int:
        rows = [
            (f.url, f.collection, f.channel_id, f.added_by, int(f.from_config),
             (f.added_at or utcnow()).timestamp(), f.last_polled.timestamp() if f.last_polled else None, f.last_error)
            for f in feeds
        ]
        with closing(self._connect()) as db, db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO feeds (url, collection, channel_id, added_by, from_config, added_at, last_polled,"
                " last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return db.total_changes - before


def _feed(row: tuple) -> Feed:
    url, collection, channel_id, added_by, from_config, last_polled, last_error, added_at = row
    return Feed(url, collection, channel_id, added_by, bool(from_config), from_timestamp(last_polled), last_error, from_timestamp(added_at))
