"""The server backend's feed registry: feeds, their polling state and posted digests, in PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta

from index.article import DEFAULT_COLLECTION, utcnow
from index.store.postgres_db import Database
from index.store.types import Feed
from index.urls import check_feed_url

_COLUMNS = "url, collection, channel_id, added_by, from_config, last_polled, last_error, added_at"


class PostgresFeedRegistry:
    def __init__(self, db: Database) -> None:
        self.db = db

    def sync_config(self, feeds: Iterable[Feed]) -> None:
        wanted = {(check_feed_url(f.url), f.collection): f for f in feeds}
        with self.db.connection() as conn, conn.transaction():
            present = {(u, c) for u, c in conn.execute("SELECT url, collection FROM feeds WHERE from_config")}
            for url, collection in present - set(wanted):
                conn.execute("DELETE FROM feeds WHERE url = %s AND collection = %s", (url, collection))
            for (url, collection), feed in wanted.items():
                conn.execute(
                    "INSERT INTO feeds (url, collection, channel_id, from_config, added_at) VALUES (%s, %s, %s, true, now())"
                    " ON CONFLICT (url, collection) DO UPDATE SET channel_id = excluded.channel_id, from_config = true",
                    (url, collection, feed.channel_id),
                )

    def add(self, url: str, *, collection: str, channel_id: int = 0, added_by: int = 0) -> Feed:
        url = check_feed_url(url)
        added_at = utcnow()
        rows = self.db.rows(
            "INSERT INTO feeds (url, collection, channel_id, added_by, added_at) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING url",
            (url, collection, channel_id, added_by, added_at),
        )
        if not rows:
            raise ValueError("That feed is already on the list.")
        return Feed(url, collection, channel_id, added_by, added_at=added_at)

    def remove(self, url: str, *, collection: str) -> bool:
        return bool(self.db.rows(
            "DELETE FROM feeds WHERE url = %s AND collection = %s AND NOT from_config RETURNING url", (url.strip(), collection)
        ))

    def feeds(self, *, collections: Iterable[str] | None = None) -> list[Feed]:
        where, params = "TRUE", []
        if collections is not None:
            where, params = "collection = ANY(%s)", [list(collections)]
        rows = self.db.rows(
            f"SELECT {_COLUMNS} FROM feeds WHERE {where} ORDER BY collection <> %s, collection, added_at, url",
            (*params, DEFAULT_COLLECTION),
        )
        return [Feed(*row) for row in rows]

    def due(self, *, every: timedelta, now: datetime | None = None) -> list[Feed]:
        rows = self.db.rows(
            f"SELECT {_COLUMNS} FROM feeds WHERE last_polled IS NULL OR last_polled <= %s"
            " ORDER BY last_polled NULLS FIRST, added_at",
            ((now or utcnow()) - every,),
        )
        return [Feed(*row) for row in rows]

    def mark_polled(self, feed: Feed, *, when: datetime, error: str | None = None) -> None:
        self.db.rows("UPDATE feeds SET last_polled = %s, last_error = %s WHERE url = %s AND collection = %s RETURNING url",
                     (when, error, feed.url, feed.collection))

    def claim_digest(self, channel_id: int, day: date) -> bool:
        return bool(self.db.rows(
            "INSERT INTO digests (channel_id, day) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING channel_id",
            (channel_id, day),
        ))

    def restore(self, feeds: Iterable[Feed]) -> int:
        added = 0
        with self.db.connection() as conn, conn.transaction():
            for f in feeds:
                cursor = conn.execute(
                    f"INSERT INTO feeds ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (f.url, f.collection, f.channel_id, f.added_by, f.from_config, f.last_polled, f.last_error,
                     f.added_at or utcnow()),
                )
                added += cursor.rowcount
        return added
