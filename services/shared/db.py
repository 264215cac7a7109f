"""SQLite storage shared by every service: one file per service, WAL, one connection per thread.

The writers (Posts, Comments, Moderation) may keep theirs in PostgreSQL instead
(BLOG_DATABASE_URL, `postgres.PostgresDatabase`; `postgres.writer_database` opens the one configured),
and the helpers here work on both.
"""
from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psycopg

from .worker import Worker

T = TypeVar("T")

# Storage that cannot be reached or written just now (a read-only disk, a server gone): retried, or a 503.
UNAVAILABLE = (sqlite3.OperationalError, psycopg.OperationalError)
STORAGE_ERRORS = (sqlite3.Error, psycopg.Error)
DUPLICATE = (sqlite3.IntegrityError, psycopg.IntegrityError)  # a unique key already taken


class Connection(Protocol):
    """What the stores use of a connection: a `sqlite3.Connection`, or `postgres.Connection`."""

    def execute(self, sql: str, params: Any = ..., /) -> Any: ...

log = logging.getLogger(__name__)
SQLITE_READONLY = 8
PAGE_CACHE_KIB = 256


class GroupSync:
    """Makes commits durable with as few fsyncs as possible: a thread that committed waits until
    an fsync of the WAL that began after its commit has finished. While one fsync runs, every
    commit made meanwhile queues for the next one, which then covers them all (group commit)."""

    def __init__(self, wal: Path, fsync: Callable[[int], None] | None = None) -> None:
        self.wal = wal
        self._fsync = fsync or os.fsync
        self._syncing = threading.Lock()  # one fsync at a time
        self._counts = threading.Lock()
        self._committed = 0  # commits counted so far
        self._synced = 0  # every commit up to this count is on disk

    def committed(self) -> int:
        """Count a commit that has just returned; the ticket to wait for."""
        with self._counts:
            self._committed += 1
            return self._committed

    def wait(self, ticket: int) -> None:
        """Return once commit `ticket` is on disk."""
        with self._syncing:
            with self._counts:
                if self._synced >= ticket:
                    return  # an fsync that began after this commit has covered it
                covers = self._committed
            fd = os.open(self.wal, os.O_RDONLY)
            try:
                self._fsync(fd)
            finally:
                os.close(fd)
            with self._counts:
                self._synced = max(self._synced, covers)


class Database:
    """A service's SQLite file. Connections are per thread; writes go through `transaction()`.

    `durable`: a transaction returns only once its commit is on disk (an fsync of the WAL, shared
    by the commits made at the same time), so what a client was told is stored survives a power
    cut. Without it (a store that can be rebuilt, such as Query's view), a commit survives the
    process being killed but not the machine losing power.
    """

    concurrent = False  # one process writes it: the outbox relay reads rows without locking them

    def __init__(self, path: Path | str, schema: str, *, durable: bool = True) -> None:
        self.path = Path(path)
        self._schema = schema
        self.cache_kib = PAGE_CACHE_KIB  # each connection's page cache; set before the threads open theirs
        self._sync = GroupSync(self.path.with_name(self.path.name + "-wal")) if durable else None
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # One writer at a time inside this process, queued on a lock that hands over at once. Left
        # to SQLite, a thread that finds the write lock taken sleeps in its busy handler (1, 2, 5,
        # 10, 15, 20, 25... ms) and does not wake when the lock is freed: profiled under 16
        # connections, a third of the request threads of POST /posts were in that sleep, and it
        # made the p99. Other processes (the CLI, a test) still meet SQLite's busy timeout.
        self._writer = threading.RLock()
        self._generation = 0  # bumped by reopen(): every thread's connection from before is stale
        self._autocheckpoint = True  # until a Checkpointer takes the checkpoints off the writers
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
            # a durable database then fsyncs the WAL itself, once for many commits (GroupSync),
            # rather than SQLite's FULL, which fsyncs every commit while holding the write lock.
            conn.execute("PRAGMA synchronous=NORMAL")
            # Every thread has its own connection and page cache: keep each small, so memory does
            # not grow with the log (measured: the bus's RSS went 1.44x from 1k to 100k events
            # with SQLite's 2 MiB default, 1.17x with this). The OS caches the file anyway.
            conn.execute(f"PRAGMA cache_size=-{self.cache_kib}")
            if not self._autocheckpoint:
                conn.execute("PRAGMA wal_autocheckpoint=0")
            self._local.conn = conn
            self._local.generation = self._generation
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """All or nothing: a write and its outbox row, or a batch of events, commit together.

        On a durable database it returns once the commit is on disk; `durable=False` skips that
        for a write whose loss is harmless (a delivery cursor: at worst an event is sent again).
        """
        conn = self.connection()
        try:
            with self._writer:
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
        if durable and self._sync is not None:
            self._sync.wait(self._sync.committed())

    def columns(self, table: str) -> set[str]:
        return {row["name"] for row in self.connection().execute(f"PRAGMA table_info({table})")}

    def upkeep(self) -> Checkpointer:
        """What the service runs beside it for this database: WAL checkpoints off the writers."""
        return Checkpointer(self)

    def checkpoint_in_background(self) -> None:
        """Connections opened from now on leave checkpoints to a `Checkpointer` thread."""
        self._autocheckpoint = False

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


class Checkpointer(Worker):
    """Copies the WAL back into the database file from a thread of its own.

    Left to SQLite, the writer whose commit takes the WAL past 1,000 pages runs the checkpoint
    (writes and fsyncs the database file) before its COMMIT returns, holding up that request
    and every writer queued behind it. A passive checkpoint here never blocks a writer.
    """

    thread_name = "wal-checkpoint"
    what = "checkpointing the WAL"
    retry_on = sqlite3.OperationalError
    idle_wait = 0.5  # seconds between looks at the WAL's size

    def __init__(self, db: Database, *, pages: int = 1000) -> None:
        super().__init__()
        self.db = db
        self.pages = pages
        self.checkpoints = 0

    def start(self) -> None:
        self.db.checkpoint_in_background()
        super().start()

    def step(self) -> int:
        """One passive checkpoint if the WAL has grown past `pages`; 0 either way (then wait)."""
        conn = self.db.connection()
        wal = self.db.path.with_name(self.db.path.name + "-wal")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        if wal.exists() and wal.stat().st_size >= self.pages * page_size:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.checkpoints += 1
        return 0


def ensure_column(db: Database, table: str, column: str, definition: str) -> None:
    """Add `column` to a `table` made by an older version of the schema (`CREATE TABLE IF NOT
    EXISTS` leaves an existing table as it was); a no-op once it is there."""
    with db.transaction() as conn:
        if column not in db.columns(table):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def insert_with_new_id(db: Database, write: Callable[[Connection, str], T], attempts: int = 10) -> T:
    """Run `write(conn, id)` in one transaction with a new short id (8 hex digits, as the course's
    `randomBytes(4)`); such an id can collide, and then the write is tried again with another."""
    for _ in range(attempts):
        try:
            with db.transaction() as conn:
                return write(conn, secrets.token_hex(4))
        except DUPLICATE:
            continue
    raise RuntimeError(f"no free id found in {attempts} tries")
