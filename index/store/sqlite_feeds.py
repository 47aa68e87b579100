"""The embedded backend's bot state: feeds with their polling state and leases, posted digests, the
announcement outbox and the servers' follows, in a small SQLite file beside the index.

It is a file of its own, so the registry can change (an admin adds a feed) while the index is being
written, and the index can be rebuilt without losing the list. A feed belongs to a collection:
"shared" for feeds from config.toml, which every server reads, and "guild:<id>" for a feed one
server's admins added, which only that server reads.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from index.article import DEFAULT_COLLECTION, utcnow
from index.store.types import (
    ALREADY_FOLLOWED, Announcement, Feed, Follow, Shards, StoreError, too_many_follows, vector_bytes, vector_from,
)
from index.urls import check_feed_url

FILE = "feeds.sqlite3"
# follows' ids AUTOINCREMENT: a removed follow's id is never given again, so its waiting matches
# cannot pass for another follow's.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS feeds (
    url TEXT NOT NULL, collection TEXT NOT NULL, channel_id INTEGER NOT NULL DEFAULT 0,
    added_by INTEGER NOT NULL DEFAULT 0, from_config INTEGER NOT NULL DEFAULT 0,
    added_at REAL NOT NULL, last_polled REAL, last_error TEXT,
    PRIMARY KEY (url, collection));
CREATE TABLE IF NOT EXISTS digests (
    channel_id INTEGER NOT NULL, day TEXT NOT NULL, posted_at REAL NOT NULL,
    PRIMARY KEY (channel_id, day));
CREATE TABLE IF NOT EXISTS announcements (
    id INTEGER PRIMARY KEY, guild_id INTEGER NOT NULL, channel_id INTEGER NOT NULL, article_ids TEXT NOT NULL,
    created_at REAL NOT NULL, taken_by TEXT, taken_until REAL, sent_at REAL);
CREATE INDEX IF NOT EXISTS announcements_unsent ON announcements (id) WHERE sent_at IS NULL;
CREATE TABLE IF NOT EXISTS follows (
    id INTEGER PRIMARY KEY AUTOINCREMENT, guild_id INTEGER NOT NULL, channel_id INTEGER NOT NULL, topic TEXT NOT NULL,
    level TEXT NOT NULL, vector BLOB NOT NULL, created_by INTEGER NOT NULL, created_at REAL NOT NULL,
    feed_url TEXT NOT NULL, format TEXT NOT NULL, UNIQUE (guild_id, channel_id, topic, feed_url));
CREATE TABLE IF NOT EXISTS channel_posts (channel_id INTEGER NOT NULL, posted_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS channel_posts_time ON channel_posts (channel_id, posted_at);
"""
# Columns that files written by earlier versions lack, added when such a file is opened.
_ADDED_COLUMNS = {
    "feeds": {"guild_id": "INTEGER NOT NULL DEFAULT 0", "lease_holder": "TEXT", "lease_until": "REAL"},
    "announcements": {"follow_id": "INTEGER NOT NULL DEFAULT 0", "held": "INTEGER NOT NULL DEFAULT 0"},
}
_COLUMNS = "url, collection, channel_id, added_by, from_config, last_polled, last_error, added_at, guild_id"


def from_timestamp(value: float | None) -> datetime | None:
    """A stored Unix time as an aware datetime (SQLite keeps times as REAL)."""
    return datetime.fromtimestamp(value, timezone.utc) if value is not None else None


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=10)


@contextmanager
def _state(path: Path, *, write: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection to the state file for one call (in a transaction with `write`). A file locked
    past the timeout, or one that cannot be read, is a StoreError, as a database away is: the bot's
    loops wait for it and retry instead of stopping."""
    try:
        with closing(_connect(path)) as db:
            if write:
                with db:
                    yield db
            else:
                yield db
    except sqlite3.OperationalError as exc:
        raise StoreError(f"the bot's state file {path.name} is busy or unreadable ({exc}); it is tried again") from None


def open_state(path: str | Path) -> Path:
    """The state file, created or brought up to date (under the write lock: two processes may open
    an old file at once)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(_connect(path)) as db:
        db.isolation_level = None
        db.execute("BEGIN IMMEDIATE")
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)
        for table, columns in _ADDED_COLUMNS.items():
            present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            for column, declaration in columns.items():
                if column not in present:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        db.execute("COMMIT")
    return path


class SQLiteFeedRegistry:
    """Each call opens its own connection, so the registry can be used from any thread."""

    FILE = FILE

    def __init__(self, path: str | Path) -> None:
        self.path = open_state(path)

    def sync_config(self, feeds: Iterable[Feed]) -> None:
        wanted = {(check_feed_url(f.url), f.collection): f for f in feeds}
        now = utcnow().timestamp()
        with _state(self.path, write=True) as db:
            present = {(u, c) for u, c in db.execute("SELECT url, collection FROM feeds WHERE from_config = 1")}
            for url, collection in present - set(wanted):
                db.execute("DELETE FROM feeds WHERE url = ? AND collection = ?", (url, collection))
            for (url, collection), feed in wanted.items():
                db.execute(
                    "INSERT INTO feeds (url, collection, channel_id, guild_id, from_config, added_at)"
                    " VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (url, collection) DO UPDATE"
                    " SET channel_id = excluded.channel_id, guild_id = excluded.guild_id, from_config = 1",
                    (url, collection, feed.channel_id, feed.guild_id, now),
                )

    def add(self, url: str, *, collection: str, channel_id: int = 0, added_by: int = 0, guild_id: int = 0) -> Feed:
        url = check_feed_url(url)
        added_at = utcnow()
        with _state(self.path, write=True) as db:
            try:
                db.execute(
                    "INSERT INTO feeds (url, collection, channel_id, added_by, added_at, guild_id) VALUES (?, ?, ?, ?, ?, ?)",
                    (url, collection, channel_id, added_by, added_at.timestamp(), guild_id),
                )
            except sqlite3.IntegrityError:
                raise ValueError("That feed is already on the list.") from None
        return Feed(url, collection, channel_id, added_by, added_at=added_at, guild_id=guild_id)

    def remove(self, url: str, *, collection: str) -> bool:
        with _state(self.path, write=True) as db:
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
        with _state(self.path) as db:
            rows = db.execute(query, params).fetchall()
        return [_feed(row) for row in rows]

    def due(self, *, every: timedelta, now: datetime | None = None) -> list[Feed]:
        cutoff = ((now or utcnow()) - every).timestamp()
        with _state(self.path) as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM feeds WHERE last_polled IS NULL OR last_polled <= ?"
                " ORDER BY coalesce(last_polled, 0), added_at",
                (cutoff,),
            ).fetchall()
        return [_feed(row) for row in rows]

    def claim_due(self, *, every: timedelta, holder: str, lease: timedelta, limit: int = 10) -> list[Feed]:
        now = utcnow().timestamp()
        with _state(self.path, write=True) as db:
            db.execute("BEGIN IMMEDIATE")  # two workers on one machine must not claim the same feed
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM feeds WHERE (last_polled IS NULL OR last_polled <= ?)"
                " AND (lease_until IS NULL OR lease_until < ?) ORDER BY coalesce(last_polled, 0), added_at LIMIT ?",
                (now - every.total_seconds(), now, limit),
            ).fetchall()
            db.executemany("UPDATE feeds SET lease_holder = ?, lease_until = ? WHERE url = ? AND collection = ?",
                           [(holder, now + lease.total_seconds(), row[0], row[1]) for row in rows])
        return [_feed(row) for row in rows]

    def renew(self, feed: Feed, *, holder: str, lease: timedelta) -> bool:
        with _state(self.path, write=True) as db:
            cursor = db.execute(
                "UPDATE feeds SET lease_until = ? WHERE url = ? AND collection = ? AND lease_holder = ?",
                (utcnow().timestamp() + lease.total_seconds(), feed.url, feed.collection, holder),
            )
        return cursor.rowcount > 0

    def mark_polled(self, feed: Feed, *, when: datetime, error: str | None = None, holder: str | None = None) -> None:
        with _state(self.path, write=True) as db:
            db.execute("UPDATE feeds SET last_polled = ?, last_error = ? WHERE url = ? AND collection = ?",
                       (when.timestamp(), error, feed.url, feed.collection))
            db.execute("UPDATE feeds SET lease_holder = NULL, lease_until = NULL WHERE url = ? AND collection = ?"
                       " AND (? IS NULL OR lease_holder = ?)", (feed.url, feed.collection, holder, holder))

    def claim_digest(self, channel_id: int, day: date) -> bool:
        with _state(self.path, write=True) as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO digests VALUES (?, ?, ?)", (channel_id, day.isoformat(), utcnow().timestamp())
            )
        return cursor.rowcount > 0

    def restore(self, feeds: Iterable[Feed]) -> int:
        rows = [
            (f.url, f.collection, f.channel_id, f.added_by, int(f.from_config),
             f.last_polled.timestamp() if f.last_polled else None, f.last_error, (f.added_at or utcnow()).timestamp(),
             f.guild_id)
            for f in feeds
        ]
        with _state(self.path, write=True) as db:
            before = db.total_changes
            db.executemany(f"INSERT OR IGNORE INTO feeds ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            return db.total_changes - before


class SQLiteOutbox:
    """Announcements in the state file: several processes on one machine can share it."""

    def __init__(self, path: str | Path) -> None:
        self.path = open_state(path)

    def add(self, announcement: Announcement) -> int:
        now = utcnow().timestamp()
        not_before = now + announcement.delay.total_seconds() if announcement.delay else None
        with _state(self.path, write=True) as db:
            return db.execute(
                "INSERT INTO announcements (guild_id, channel_id, article_ids, created_at, follow_id, taken_until)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (announcement.guild_id, announcement.channel_id, json.dumps(list(announcement.article_ids)), now,
                 announcement.follow_id, not_before),
            ).lastrowid

    def take(self, *, holder: str, shards: Shards, lease: timedelta, limit: int = 20) -> list[Announcement]:
        now = utcnow().timestamp()
        with _state(self.path, write=True) as db:
            db.execute("BEGIN IMMEDIATE")
            marks = ",".join("?" * len(shards.ids))
            rows = db.execute(
                f"SELECT {_ANNOUNCEMENT_COLUMNS} FROM announcements"
                " WHERE sent_at IS NULL AND (taken_until IS NULL OR taken_until < ?)"
                f" AND (guild_id >> 22) % ? IN ({marks}) ORDER BY id LIMIT ?",
                (now, shards.count, *shards.ids, limit),
            ).fetchall()
            db.executemany("UPDATE announcements SET taken_by = ?, taken_until = ? WHERE id = ?",
                           [(holder, now + lease.total_seconds(), row[0]) for row in rows])
        return [_announcement(row) for row in rows]

    def mark_sent(self, announcement_id: int) -> None:
        with _state(self.path, write=True) as db:
            db.execute("UPDATE announcements SET sent_at = ? WHERE id = ?", (utcnow().timestamp(), announcement_id))

    def hold(self, announcement_ids: Sequence[int], *, wait: timedelta) -> None:
        until = (utcnow() + wait).timestamp()
        with _state(self.path, write=True) as db:
            db.executemany("UPDATE announcements SET held = 1, taken_by = NULL, taken_until = ? WHERE id = ?",
                           [(until, id_) for id_ in announcement_ids])

    def waiting(self, channel_id: int) -> list[Announcement]:
        with _state(self.path) as db:
            rows = db.execute(
                f"SELECT {_ANNOUNCEMENT_COLUMNS} FROM announcements"
                " WHERE channel_id = ? AND follow_id != 0 AND sent_at IS NULL AND held = 0 AND taken_by IS NULL"
                " AND taken_until >= ? ORDER BY id", (channel_id, utcnow().timestamp()),
            ).fetchall()
        return [_announcement(row) for row in rows]

    def record_post(self, channel_id: int) -> None:
        with _state(self.path, write=True) as db:
            db.execute("INSERT INTO channel_posts VALUES (?, ?)", (channel_id, utcnow().timestamp()))

    def recent_posts(self, channel_id: int, within: timedelta) -> list[timedelta]:
        now = utcnow()
        with _state(self.path) as db:
            rows = db.execute("SELECT posted_at FROM channel_posts WHERE channel_id = ? AND posted_at >= ?"
                              " ORDER BY posted_at", (channel_id, (now - within).timestamp())).fetchall()
        return [now - from_timestamp(posted) for posted, in rows]

    def unsent(self) -> int:
        with _state(self.path) as db:
            return db.execute("SELECT count(*) FROM announcements WHERE sent_at IS NULL").fetchone()[0]

    def prune(self, *, older_than: timedelta) -> int:
        cutoff = utcnow().timestamp() - older_than.total_seconds()
        with _state(self.path, write=True) as db:
            db.execute("DELETE FROM channel_posts WHERE posted_at < ?", (cutoff,))
            return db.execute("DELETE FROM announcements WHERE sent_at < ?", (cutoff,)).rowcount


class SQLiteFollowRegistry:
    """Follows in the state file, with their topic's embedding as float32 bytes."""

    def __init__(self, path: str | Path) -> None:
        self.path = open_state(path)

    def add(self, *, guild_id: int, channel_id: int, topic: str, vector: np.ndarray, level: str = "normal",
            created_by: int = 0, limit: int = 50, feed_url: str = "", format: str = "summary") -> Follow:
        created_at = utcnow()
        with _state(self.path, write=True) as db:
            db.execute("BEGIN IMMEDIATE")  # the count and the insert, as one: two admins at once stay under `limit`
            (count,) = db.execute("SELECT count(*) FROM follows WHERE guild_id = ?", (guild_id,)).fetchone()
            if count >= limit:
                raise ValueError(too_many_follows(limit))
            try:
                follow_id = db.execute(
                    "INSERT INTO follows (guild_id, channel_id, topic, level, vector, created_by, created_at, feed_url,"
                    " format) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (guild_id, channel_id, topic, level, vector_bytes(vector), created_by, created_at.timestamp(),
                     feed_url, format),
                ).lastrowid
            except sqlite3.IntegrityError:
                raise ValueError(ALREADY_FOLLOWED) from None
        return Follow(follow_id, guild_id, channel_id, topic, vector, level, created_by, created_at, feed_url, format)

    def remove(self, follow_id: int, *, guild_id: int) -> bool:
        with _state(self.path, write=True) as db:
            return db.execute("DELETE FROM follows WHERE id = ? AND guild_id = ?", (follow_id, guild_id)).rowcount > 0

    def follows(self, *, guild_id: int | None = None) -> list[Follow]:
        query = ("SELECT id, guild_id, channel_id, topic, vector, level, created_by, created_at, feed_url, format"
                 " FROM follows")
        params: tuple = ()
        if guild_id is not None:
            query, params = query + " WHERE guild_id = ?", (guild_id,)
        with _state(self.path) as db:
            rows = db.execute(query + " ORDER BY id", params).fetchall()
        return [Follow(id_, guild, channel, topic, vector_from(blob), level, by, from_timestamp(at), feed, shown)
                for id_, guild, channel, topic, blob, level, by, at, feed, shown in rows]


_ANNOUNCEMENT_COLUMNS = "id, guild_id, channel_id, article_ids, created_at, follow_id, held"


def _announcement(row: tuple) -> Announcement:
    id_, guild_id, channel_id, article_ids, created, follow_id, held = row
    return Announcement(guild_id, channel_id, tuple(json.loads(article_ids)), id_, utcnow() - from_timestamp(created),
                        follow_id=follow_id, held=bool(held))


def _feed(row: tuple) -> Feed:
    url, collection, channel_id, added_by, from_config, last_polled, last_error, added_at, guild_id = row
    return Feed(url, collection, channel_id, added_by, bool(from_config), from_timestamp(last_polled), last_error,
                from_timestamp(added_at), guild_id)
