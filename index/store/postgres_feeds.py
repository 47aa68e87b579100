"""The server backend's bot state in PostgreSQL: feeds with their polling state and leases, posted
digests, the announcement outbox and the servers' follows, shared by every worker and bot process.

Leases are taken with `FOR UPDATE SKIP LOCKED` and timed by the database's clock, so workers on
machines whose clocks differ still agree on when a lease has run out (when a feed was polled is the
worker's time, as the interface passes it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta

import numpy as np
import psycopg

from index.article import DEFAULT_COLLECTION, utcnow
from index.store.postgres_db import Database
from index.store.types import (
    ALREADY_FOLLOWED, Announcement, Feed, Follow, Shards, too_many_follows, vector_bytes, vector_from,
)
from index.urls import check_feed_url

_COLUMNS = "url, collection, channel_id, added_by, from_config, last_polled, last_error, added_at, guild_id"


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
                    "INSERT INTO feeds (url, collection, channel_id, guild_id, from_config, added_at)"
                    " VALUES (%s, %s, %s, %s, true, now()) ON CONFLICT (url, collection) DO UPDATE"
                    " SET channel_id = excluded.channel_id, guild_id = excluded.guild_id, from_config = true",
                    (url, collection, feed.channel_id, feed.guild_id),
                )

    def add(self, url: str, *, collection: str, channel_id: int = 0, added_by: int = 0, guild_id: int = 0) -> Feed:
        url = check_feed_url(url)
        added_at = utcnow()
        rows = self.db.rows(
            "INSERT INTO feeds (url, collection, channel_id, added_by, added_at, guild_id) VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING url",
            (url, collection, channel_id, added_by, added_at, guild_id),
        )
        if not rows:
            raise ValueError("That feed is already on the list.")
        return Feed(url, collection, channel_id, added_by, added_at=added_at, guild_id=guild_id)

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

    def claim_due(self, *, every: timedelta, holder: str, lease: timedelta, limit: int = 10) -> list[Feed]:
        rows = self.db.rows(
            f"""WITH due AS (
                    SELECT url, collection FROM feeds
                    WHERE (last_polled IS NULL OR last_polled <= now() - %s) AND (lease_until IS NULL OR lease_until < now())
                    ORDER BY last_polled NULLS FIRST, added_at LIMIT %s
                    FOR UPDATE SKIP LOCKED)
                UPDATE feeds f SET lease_holder = %s, lease_until = now() + %s
                FROM due WHERE f.url = due.url AND f.collection = due.collection
                RETURNING {", ".join(f"f.{c.strip()}" for c in _COLUMNS.split(","))}""",
            (every, limit, holder, lease),
        )
        return sorted((Feed(*row) for row in rows), key=lambda f: (f.last_polled is not None, f.last_polled or f.added_at))

    def renew(self, feed: Feed, *, holder: str, lease: timedelta) -> bool:
        return bool(self.db.rows(
            "UPDATE feeds SET lease_until = now() + %s WHERE url = %s AND collection = %s AND lease_holder = %s"
            " RETURNING url", (lease, feed.url, feed.collection, holder),
        ))

    def mark_polled(self, feed: Feed, *, when: datetime, error: str | None = None, holder: str | None = None) -> None:
        self.db.rows(
            "UPDATE feeds SET last_polled = %s, last_error = %s,"
            " lease_holder = CASE WHEN %s::text IS NULL OR lease_holder = %s THEN NULL ELSE lease_holder END,"
            " lease_until = CASE WHEN %s::text IS NULL OR lease_holder = %s THEN NULL ELSE lease_until END"
            " WHERE url = %s AND collection = %s RETURNING url",
            (when, error, holder, holder, holder, holder, feed.url, feed.collection),
        )

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
                    f"INSERT INTO feeds ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (f.url, f.collection, f.channel_id, f.added_by, f.from_config, f.last_polled, f.last_error,
                     f.added_at or utcnow(), f.guild_id),
                )
                added += cursor.rowcount
        return added


def queue_announcement(conn: psycopg.Connection, announcement: Announcement) -> int:
    """Insert it on `conn` (a writer's transaction, or a connection of its own); its delay starts
    by the database's clock."""
    return conn.execute(
        "INSERT INTO announcements (guild_id, channel_id, article_ids, follow_id, taken_until)"
        " VALUES (%s, %s, %s, %s, CASE WHEN %s > interval '0' THEN now() + %s END) RETURNING id",
        (announcement.guild_id, announcement.channel_id, list(announcement.article_ids), announcement.follow_id,
         announcement.delay, announcement.delay),
    ).fetchone()[0]


class PostgresOutbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, announcement: Announcement) -> int:
        with self.db.connection() as conn:
            return queue_announcement(conn, announcement)

    def take(self, *, holder: str, shards: Shards, lease: timedelta, limit: int = 20) -> list[Announcement]:
        rows = self.db.rows(
            """WITH mine AS (
                   SELECT id FROM announcements
                   WHERE sent_at IS NULL AND (taken_until IS NULL OR taken_until < now())
                     AND (guild_id >> 22) %% %s = ANY(%s)
                   ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)
               UPDATE announcements a SET taken_by = %s, taken_until = now() + %s FROM mine WHERE a.id = mine.id
               RETURNING a.id, a.guild_id, a.channel_id, a.article_ids, now() - a.created_at, a.follow_id, a.held""",
            (shards.count, list(shards.ids), limit, holder, lease),
        )
        return sorted(map(_announcement, rows), key=lambda a: a.id)

    def mark_sent(self, announcement_id: int) -> None:
        self.db.rows("UPDATE announcements SET sent_at = now() WHERE id = %s RETURNING id", (announcement_id,))

    def hold(self, announcement_ids: Sequence[int], *, wait: timedelta) -> None:
        self.db.rows("UPDATE announcements SET held = true, taken_by = NULL, taken_until = now() + %s"
                     " WHERE id = ANY(%s) RETURNING id", (wait, list(announcement_ids)))

    def waiting(self, channel_id: int) -> list[Announcement]:
        rows = self.db.rows(
            "SELECT id, guild_id, channel_id, article_ids, now() - created_at, follow_id, held FROM announcements"
            " WHERE channel_id = %s AND follow_id <> 0 AND sent_at IS NULL AND NOT held AND taken_by IS NULL"
            " AND taken_until >= now() ORDER BY id", (channel_id,),
        )
        return [_announcement(row) for row in rows]

    def record_post(self, channel_id: int) -> None:
        self.db.rows("INSERT INTO channel_posts (channel_id) VALUES (%s) RETURNING channel_id", (channel_id,))

    def recent_posts(self, channel_id: int, within: timedelta) -> list[timedelta]:
        rows = self.db.rows("SELECT now() - posted_at FROM channel_posts WHERE channel_id = %s"
                            " AND posted_at >= now() - %s ORDER BY posted_at", (channel_id, within))
        return [age for age, in rows]

    def unsent(self) -> int:
        return self.db.rows("SELECT count(*) FROM announcements WHERE sent_at IS NULL")[0][0]

    def prune(self, *, older_than: timedelta) -> int:
        with self.db.connection() as conn, conn.transaction():
            conn.execute("DELETE FROM channel_posts WHERE posted_at < now() - %s", (older_than,))
            return conn.execute("DELETE FROM announcements WHERE sent_at < now() - %s", (older_than,)).rowcount


def _announcement(row: tuple) -> Announcement:
    id_, guild_id, channel_id, article_ids, age, follow_id, held = row
    return Announcement(guild_id, channel_id, tuple(article_ids), id_, age, follow_id=follow_id, held=held)


class PostgresFollowRegistry:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, *, guild_id: int, channel_id: int, topic: str, vector: np.ndarray, level: str = "normal",
            created_by: int = 0, limit: int = 50, feed_url: str = "", format: str = "summary") -> Follow:
        with self.db.connection() as conn, conn.transaction():
            # One server's adds in turn: the count and the insert must agree, or two admins pass `limit`.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_FOLLOWS_LOCK ^ guild_id,))
            (count,) = conn.execute("SELECT count(*) FROM follows WHERE guild_id = %s", (guild_id,)).fetchone()
            if count >= limit:
                raise ValueError(too_many_follows(limit))
            row = conn.execute(
                "INSERT INTO follows (guild_id, channel_id, topic, level, vector, created_by, feed_url, format)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id, created_at",
                (guild_id, channel_id, topic, level, vector_bytes(vector), created_by, feed_url, format),
            ).fetchone()
        if row is None:
            raise ValueError(ALREADY_FOLLOWED)
        return Follow(row[0], guild_id, channel_id, topic, vector, level, created_by, row[1], feed_url, format)

    def remove(self, follow_id: int, *, guild_id: int) -> bool:
        return bool(self.db.rows("DELETE FROM follows WHERE id = %s AND guild_id = %s RETURNING id",
                                 (follow_id, guild_id)))

    def follows(self, *, guild_id: int | None = None) -> list[Follow]:
        rows = self.db.rows(
            "SELECT id, guild_id, channel_id, topic, vector, level, created_by, created_at, feed_url, format FROM follows"
            " WHERE %s::bigint IS NULL OR guild_id = %s ORDER BY id", (guild_id, guild_id),
        )
        return [Follow(id_, guild, channel, topic, vector_from(blob), level, by, at, feed, shown)
                for id_, guild, channel, topic, blob, level, by, at, feed, shown in rows]


_FOLLOWS_LOCK = 0x6E657773_64736B02  # pg_advisory_xact_lock's key for a server's follows, xor its id
