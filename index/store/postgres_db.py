"""Connections to PostgreSQL: a psycopg 3 pool, bounded waits, and errors that are one clear line.

The URL is a secret (it may carry a password): it is never logged, and every message that leaves
this module has it, and its password, taken out. A question that meets a restarting database fails
with StoreError at once; the pool checks each connection before lending it, so the next question
gets a fresh one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit

import psycopg
import psycopg_pool
from pgvector.psycopg import register_vector

from index.store.types import StoreError, StoreSettings

log = logging.getLogger(__name__)
# The pool warns at every failed connection attempt; a request that cannot get a connection raises
# StoreError, which its caller reports once per outage.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def _secrets_of(url: str) -> list[str]:
    """The URL and its password, in the forms an error message could quote them."""
    secrets = [url]
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password is None and "password=" in url:  # a key=value connection string
        password = url.split("password=", 1)[1].split()[0].strip("'")
    if password:
        secrets += [password, unquote(password)]
    return [s for s in secrets if s]


class Database:
    """A pool of connections to one database, shared by a process's threads."""

    def __init__(self, url: str, settings: StoreSettings, *, session: dict[str, str] | None = None) -> None:
        self._secrets = _secrets_of(url)
        self._session = session or {}
        self.schema = settings.schema
        # No statement may hold a question or a writer longer than statement_timeout.
        options = f"-c statement_timeout={round(settings.statement_timeout_seconds * 1000)}"
        if self.schema:  # checked to be a plain name; the extension's types stay reachable in public
            options += f" -c search_path={self.schema},public"
        self._connect_kwargs = {
            "connect_timeout": max(1, round(settings.connect_timeout_seconds)),
            "options": options,
            "application_name": "newsdesk",
        }
        self._timeout = settings.connect_timeout_seconds
        self._statement_timeout = settings.statement_timeout_seconds
        self._pool_size = settings.pool_size
        with self.guard():
            try:
                psycopg.conninfo.conninfo_to_dict(url)
            except psycopg.ProgrammingError:
                raise StoreError("the database URL is not valid: expected postgresql://user:password@host:port/database") from None
        self._url = url
        self._pool: psycopg_pool.ConnectionPool | None = None
        self._pool_lock = threading.Lock()

    @property
    def pool(self) -> psycopg_pool.ConnectionPool:
        """The pool, made and opened on first use: `db upgrade` and schema checks never start one."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = psycopg_pool.ConnectionPool(
                    self._url, kwargs={**self._connect_kwargs, "autocommit": True}, min_size=1,
                    max_size=self._pool_size, configure=self._configure,
                    check=psycopg_pool.ConnectionPool.check_connection, timeout=self._timeout, name="newsdesk",
                    # Give up a reconnection soon, so that the next request starts a fresh attempt: left
                    # to its exponential backoff, the pool could wait a minute after the database is back.
                    reconnect_timeout=max(1.0, self._timeout), open=True,
                )
            return self._pool

    def _configure(self, conn: psycopg.Connection) -> None:
        register_vector(conn)
        for name, value in self._session.items():
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))

    def connect(self) -> psycopg.Connection:
        """A connection of its own, outside the pool (for schema upgrades); close it when done."""
        with self.guard():
            return psycopg.connect(self._url, **self._connect_kwargs, autocommit=True)

    def describe(self, exc: BaseException) -> str:
        """One line about a database error, with no URL or password in it."""
        diag = getattr(exc, "diag", None)
        text = (getattr(diag, "message_primary", None) or str(exc) or type(exc).__name__).strip()
        text = " ".join(text.splitlines()[:1]) if text else type(exc).__name__
        if text.startswith("connection failed: "):  # libpq repeats the address; keep its reason
            text = text.rsplit(": ", 1)[-1] if ": " in text else text
        for secret in self._secrets:
            text = text.replace(secret, "redacted")
        return text[:200]

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Database failures as StoreError: one line, nothing secret, no traceback to show a user."""
        try:
            yield
        except StoreError:
            raise
        except psycopg_pool.PoolTimeout:
            raise StoreError(f"PostgreSQL did not answer within {self._timeout:g} s (or all {self._pool_size} "
                             "connections of [store] pool_size were busy): is it running, and is the database URL "
                             "right?") from None
        except psycopg.errors.QueryCanceled:
            raise StoreError(f"PostgreSQL stopped a statement that took longer than {self._statement_timeout:g} s "
                             "([store] statement_timeout_seconds): the database is overloaded, or a lock is held "
                             "too long") from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            reason = self.describe(exc)
            if "connection option" in reason or "invalid URI" in reason:  # libpq read the URL and gave up
                raise StoreError(f"the database URL is not valid: {reason.removeprefix('connection is bad: ')}") from None
            raise StoreError(f"PostgreSQL is unavailable: {reason}") from None
        except psycopg.Error as exc:
            log.debug("database error", exc_info=True)
            raise StoreError(f"PostgreSQL refused a query: {self.describe(exc)}") from None

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection, in autocommit mode, for the length of the block."""
        with self.guard(), self.pool.connection() as conn:
            yield conn

    def acquire(self) -> psycopg.Connection:
        """A pooled connection to hold past one block (a writer's transaction); give it back with `release`."""
        with self.guard():
            return self.pool.getconn()

    def release(self, conn: psycopg.Connection) -> None:
        self.pool.putconn(conn)  # a broken connection is discarded, an open transaction rolled back

    def rows(self, sql: str, params=(), *, binary: bool = False) -> list[tuple]:
        with self.connection() as conn:
            return conn.execute(sql, params, binary=binary).fetchall()

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
