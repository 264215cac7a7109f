"""SQLite storage shared by every service: one file per service, WAL, one connection per thread."""
from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)
SQLITE_READONLY = 8
PAGE_CACHE_KIB = 256


class Database:
    """A service's SQLite file. Connections are per thread; writes go through `transaction()`."""

    def __init__(self, path: Path | str, schema: str) -> None:
        self.path = Path(path)
        self._schema = schema
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._generation = 0  # bumped by reopen(): every thread's connection from before is stale
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # executescript commits as it goes; every statement in a schema is IF NOT EXISTS.
        self.connection().executescript(schema)

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.generation != self._generation:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly one block.
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=10, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives the process being killed (the WAL is in the OS);
            # only a power loss can take the last commits.
            conn.execute("PRAGMA synchronous=NORMAL")
            # Every thread has its own connection and page cache: keep each small, so memory does
            # not grow with the log (measured: the bus's RSS went 1.44x from 1k to 100k events
            # with SQLite's 2 MiB default, 1.17x with this). The OS caches the file anyway.
            conn.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
            self._local.conn = conn
            self._local.generation = self._generation
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing: a write and its outbox row, or a batch of events, commit together."""
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF == SQLITE_READONLY:
                self.reopen()
            raise

    def reopen(self) -> None:
        """Close every connection, so the next ones are opened afresh.

        A connection opened while the directory was read-only stays read-only for life, and
        SQLite keeps new ones read-only too while any old one is open: only closing them all
        lets the service write again once the disk is writable.
        """
        log.warning("%s is read-only; reopening every connection", self.path)
        with self._lock:
            self._generation += 1
            stale, self._all = self._all, []
        for conn in stale:
            conn.close()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


def insert_with_new_id(db: Database, write: Callable[[sqlite3.Connection, str], T], attempts: int = 10) -> T:
    """Run `write(conn, id)` in one transaction with a new short id (8 hex digits, as the course's
    `randomBytes(4)`); such an id can collide, and then the write is tried again with another."""
    for _ in range(attempts):
        try:
            with db.transaction() as conn:
                return write(conn, secrets.token_hex(4))
        except sqlite3.IntegrityError:
            continue
    raise RuntimeError(f"no free id found in {attempts} tries")
