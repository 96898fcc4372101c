"""A small database port shared by consumers, relays and projections.

Services write SQL with ``?`` placeholders; the PostgreSQL backend translates
them to psycopg's ``%s``. ``INSERT ... ON CONFLICT`` and ``excluded.`` work in
both dialects, so most statements need no dialect switch; for the few that do,
``Database.dialect`` / ``Transaction.dialect`` tell which backend runs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import orjson

Dialect = Literal["sqlite", "postgresql"]

log = logging.getLogger(__name__)

# A checkpoint copies every page written since the last one, so a longer interval copies a page that
# batch after batch rewrites less often (a referral catch-up's facts: 2.1 CPU-s with a checkpoint after
# every batch, 1.7 after every 4th), but each checkpoint is a longer burst: at 2 s the p99 of
# `kim bench latency` was 48-235 ms (3 of 6 runs over 100 ms), at 0.5 s 47-87 ms.
CHECKPOINT_INTERVAL_S = 0.5


def sortable(instant: datetime) -> str:
    """An aware instant as a fixed-width UTC string (`2026-08-01T09:30:00.000000Z`), so that comparing
    the strings in SQL compares the instants. `isoformat` takes 60 % of `strftime`'s time, and a
    catch-up writes two per event."""
    if instant.tzinfo is not timezone.utc:
        instant = instant.astimezone(timezone.utc)
    return instant.isoformat(timespec="microseconds")[:26] + "Z"


@lru_cache(maxsize=1024)
def qmark_to_format(sql: str) -> str:
    """Translate ``?`` placeholders to ``%s`` for psycopg.

    ``?`` inside quoted literals or identifiers stays as it is; every ``%``
    is doubled because psycopg reads ``%`` as a placeholder marker anywhere
    in a parameterised query, literals included.
    """
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if ch == "%":
            out.append("%%")
        elif quote is not None:
            out.append(ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        else:
            out.append(ch)
    return "".join(out)


def upsert_sql(
    table: str,
    columns: Sequence[str],
    key: Sequence[str],
    update: Sequence[str] | None = None,
) -> str:
    """``INSERT ... ON CONFLICT`` valid in SQLite (>= 3.24) and PostgreSQL.

    ``update`` names the columns overwritten on conflict; ``None`` means all
    non-key columns, an empty sequence means "keep the existing row".
    """
    if update is None:
        update = [c for c in columns if c not in key]
    head = (
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)}) "
        f"ON CONFLICT ({', '.join(key)}) "
    )
    if not update:
        return head + "DO NOTHING"
    return head + "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in update)


_INSERT_VALUES = re.compile(r"\s*INSERT\s+INTO\s+(\w+)\s*\(([^()]*)\)\s*VALUES\s*\(([^()]*)\)(.*)",
                            re.IGNORECASE | re.DOTALL)
_ROWS_PER_INSERT = 5000


@lru_cache(maxsize=256)
def _insert_from_json(sql: str) -> tuple[str, tuple[str, ...]]:
    """``INSERT INTO t (a, b, c) VALUES (?, ?, 1) ...`` as ``INSERT INTO t (a, b, c) SELECT a, b, 1 FROM
    json_populate_recordset(NULL::t, ?) ...`` (PostgreSQL), and the columns that the rows' values fill."""
    match = _INSERT_VALUES.fullmatch(sql)
    if match is None:
        raise ValueError(f"not an INSERT INTO <table> (<columns>) VALUES (<one row>) statement: {sql!r}")
    table, column_list, value_list, tail = match.groups()
    columns = [c.strip() for c in column_list.split(",")]
    values = [v.strip() for v in value_list.split(",")]
    if len(columns) != len(values):
        raise ValueError(f"{len(columns)} columns but {len(values)} values: {sql!r}")
    selected = ", ".join(column if value == "?" else value for column, value in zip(columns, values))
    return (f"INSERT INTO {table} ({', '.join(columns)}) SELECT {selected} "
            f"FROM json_populate_recordset(NULL::{table}, ?::json){tail}",
            tuple(column for column, value in zip(columns, values) if value == "?"))


class Transaction:
    """Cursor-like handle valid inside ``Database.transaction()``."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self._cursor = cursor
        self.dialect: Dialect = dialect
        self._rowcount: int | None = None  # summed over the statements of `insert_many`

    def _sql(self, sql: str) -> str:
        return qmark_to_format(sql) if self.dialect == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Transaction:
        self._rowcount = None
        self._cursor.execute(self._sql(sql), params)
        return self

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Transaction:
        self._rowcount = None
        if params:
            self._cursor.executemany(self._sql(sql), params)
        return self

    def insert_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> Transaction:
        """``executemany`` of one ``INSERT INTO t (...) VALUES (...) [ON CONFLICT ...]``, all rows at once.

        On PostgreSQL ``executemany`` runs the statement once per row, a round trip's worth of work on
        both sides for each (measured: computing a catch-up's persons spent 42 % of its time there), and
        a statement of many ``VALUES`` rows is parsed anew on both sides each time. So the rows go as one
        JSON parameter, which the server turns into rows of the table's own column types. SQLite runs
        in-process, where one statement per row is the cheap way. Values must be text, numbers,
        booleans or None; with ``DO UPDATE`` no two rows may have the same key (one statement cannot
        update a row twice).
        """
        if self.dialect != "postgresql" or not rows:
            return self.executemany(sql, rows)
        statement, columns = _insert_from_json(sql)
        count = 0
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            records = [dict(zip(columns, row)) for row in rows[start:start + _ROWS_PER_INSERT]]
            self._cursor.execute(self._sql(statement), [orjson.dumps(records).decode()])
            count += self._cursor.rowcount
        self._rowcount = count
        return self

    def refresh_statistics(self, *tables: str) -> Transaction:
        """Let the query planner know what ``tables`` hold now, after they grew fast.

        PostgreSQL plans by statistics of each table that autovacuum refreshes only a minute or more
        after it grew; until then it took the rows of a key for few and scanned far more than it
        needed (measured: the referral read all facts for every chunk of persons, the gateway all keys
        of a source for every group). SQLite plans by its indexes alone: nothing to do.
        """
        if self.dialect == "postgresql":
            self.execute(f"ANALYZE {', '.join(tables)}")
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._cursor.fetchall()

    @property
    def rowcount(self) -> int:
        """Rows changed by the last statement (summed over ``executemany`` and ``insert_many``)."""
        return self._rowcount if self._rowcount is not None else self._cursor.rowcount

    def upsert(
        self,
        table: str,
        key: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
        update: Sequence[str] | None = None,
    ) -> None:
        """Insert ``rows`` (all with the same keys), updating on key conflict."""
        if not rows:
            return
        columns = list(rows[0])
        self.executemany(
            upsert_sql(table, columns, key, update),
            [[row[c] for c in columns] for row in rows],
        )


class Database(ABC):
    """Common interface; build one with :meth:`from_url`."""

    dialect: Dialect

    @staticmethod
    def from_url(url: str, *, pool_size: int = 4, timeout: float = 30.0) -> Database:
        """``sqlite:///relative/path``, ``sqlite:////absolute/path`` or
        ``postgresql://user:password@host:port/dbname``.

        ``timeout`` bounds the wait for a lock (SQLite) or a pooled
        connection (PostgreSQL).
        """
        scheme = url.split(":", 1)[0].lower()
        if scheme == "sqlite":
            return SQLiteDatabase(sqlite_path(url), timeout=timeout)
        if scheme in ("postgresql", "postgres"):
            return PostgresDatabase(url, pool_size=pool_size, timeout=timeout)
        raise ValueError(f"unsupported database URL scheme {scheme!r} in {url!r}")

    @abstractmethod
    def transaction(
        self, *, readonly: bool = False
    ) -> AbstractContextManager[Transaction]:
        """Commit when the block ends, roll back when it raises.

        ``readonly`` promises no writes, so SQLite need not take its write
        lock and readers never queue behind a consumer's batch.
        """

    @abstractmethod
    def close(self) -> None: ...

    def ensure_schema(self, statements: Sequence[str]) -> None:
        """Run idempotent DDL (``CREATE ... IF NOT EXISTS``) in one transaction.

        PostgreSQL raises on concurrent ``CREATE TABLE IF NOT EXISTS`` of the
        same table, so processes starting together take a shared lock first.
        """
        with self.transaction() as tx:
            if self.dialect == "postgresql":
                tx.execute("SELECT pg_advisory_xact_lock(7283510)")
            for statement in statements:
                tx.execute(statement)


def sqlite_path(url: str) -> str:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if not path or path == ":memory:":
        # Every thread gets its own connection, so an in-memory database
        # would silently be a different database per thread.
        raise ValueError(f"SQLite URL needs a file path: {url!r}")
    return unquote(path)


class SQLiteDatabase(Database):
    dialect: Dialect = "sqlite"

    def __init__(self, path: str, *, timeout: float = 30.0) -> None:
        self.path = path
        self._timeout = timeout
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # sqlite3 connections must stay in the thread that made them;
        # consumers run their batches in worker threads.
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._write_locks: list[int] = []  # file descriptors
        self._lock = threading.Lock()
        self._connection().execute("PRAGMA journal_mode=WAL")
        self._closing = threading.Event()
        self._checkpoints = threading.Thread(target=self._checkpoint_continually, name=f"checkpoints of {path}",
                                             daemon=True)
        self._checkpoints.start()

    def _checkpoint_continually(self) -> None:
        """Copies the log into the database file in the background: a checkpoint that a commit runs
        itself holds up that commit (and every writer behind it) for as long as it copies."""
        conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
        try:
            while not self._closing.wait(CHECKPOINT_INTERVAL_S):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # never waits for readers or writers
                except sqlite3.Error as exc:
                    log.debug("checkpoint of %s failed: %r", self.path, exc)
        finally:
            conn.close()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            # check_same_thread=False only so close() may run in any thread;
            # otherwise each connection stays in the thread that made it.
            conn = sqlite3.connect(
                self.path,
                timeout=self._timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL
            # Projections insert at random places of their indexes (keyed by person): a
            # checkpoint every 4 MB of log (the default) and a 2 MB page cache made
            # SQLite rewrite and reread the same pages for every batch.
            conn.execute("PRAGMA cache_size=-65536")  # KiB, filled only as pages are read
            # Checkpoints run in the background; a commit runs one only if the log grows past 400 MB.
            conn.execute("PRAGMA wal_autocheckpoint=100000")  # pages
            self._local.conn = conn
            # Its own open file, so that the lock also excludes this process's other threads.
            self._local.write_lock = os.open(self.path + ".writelock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            with self._lock:
                self._connections.append(conn)
                self._write_locks.append(self._local.write_lock)
        return conn

    @contextmanager
    def transaction(self, *, readonly: bool = False) -> Iterator[Transaction]:
        conn = self._connection()
        if readonly:
            yield from self._run(conn, "BEGIN")
            return
        # Writers queue on a file lock first. SQLite's own wait for its write lock polls with sleeps of up
        # to 100 ms, so a process committing batch after batch starved the writers of another process
        # (a service's helper); the kernel hands a file lock over the moment it is released, and also
        # releases it when its holder dies.
        lock = self._local.write_lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield from self._run(conn, "BEGIN IMMEDIATE")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _run(conn: sqlite3.Connection, begin: str) -> Iterator[Transaction]:
        cursor = conn.cursor()
        cursor.execute(begin)
        try:
            yield Transaction(cursor, "sqlite")
        except BaseException:
            conn.rollback()
            raise
        else:
            conn.commit()
        finally:
            cursor.close()

    def close(self) -> None:
        self._closing.set()
        self._checkpoints.join()  # ends at once: no thread of ours is left behind
        with self._lock:
            for conn in self._connections:
                conn.close()
            for fd in self._write_locks:
                os.close(fd)
            self._connections.clear()
            self._write_locks.clear()
        self._local = threading.local()


class PostgresDatabase(Database):
    dialect: Dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 4, timeout: float = 30.0) -> None:
        from psycopg_pool import ConnectionPool

        self.url = url
        self._timeout = timeout
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},  # transactions are explicit blocks
            timeout=timeout,
            open=True,
        )

    @contextmanager
    def transaction(self, *, readonly: bool = False) -> Iterator[Transaction]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield Transaction(cur, "postgresql")

    def close(self) -> None:
        self._pool.close()


def eventsourcing_env(url: str) -> dict[str, str]:
    """Environment for an ``eventsourcing`` Application on the same database."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": sqlite_path(url),
        }
    if scheme in ("postgresql", "postgres"):
        parts = urlsplit(url)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
            "POSTGRES_HOST": parts.hostname or "localhost",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
        }
    raise ValueError(f"unsupported database URL scheme {scheme!r} in {url!r}")
