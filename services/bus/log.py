"""The bus's durable event log and its subscribers' cursors, in one SQLite file (WAL).

An event is committed before its publisher is answered. Reads go page by page, so
neither a reader nor the bus holds the log in memory.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from services.shared.db import Database
from services.shared.events import Event

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq    INTEGER PRIMARY KEY,
    id     TEXT NOT NULL UNIQUE,
    type   TEXT NOT NULL,
    source TEXT,              -- who published it, as the publisher named itself to the bus ("unknown" if not)
    time   TEXT NOT NULL,     -- when the bus received it
    data   TEXT NOT NULL,
    sent_source TEXT,         -- the event's own `source` and `time` as the publisher sent them, if any
    sent_time   TEXT
);
CREATE INDEX IF NOT EXISTS events_by_type ON events (type, seq);
CREATE TABLE IF NOT EXISTS cursors (
    subscriber TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL DEFAULT 0
);
-- Events a subscriber kept rejecting: parked so that the ones after them flow on.
CREATE TABLE IF NOT EXISTS dead_letters (
    subscriber TEXT NOT NULL,
    seq        INTEGER NOT NULL REFERENCES events (seq),
    attempts   INTEGER NOT NULL,
    error      TEXT NOT NULL,
    parked_at  TEXT NOT NULL,
    PRIMARY KEY (subscriber, seq)
);
"""
PAGE = 1000
# An event as wire JSON, written by SQLite itself from the stored columns (the data is stored as JSON).
# What the publisher sent as the event's own source and time follows, when it sent any.
# Its trace context follows, when it has one (the optional fields are left out, not null).
_WIRE = "'seq', seq, 'id', id, 'type', type, 'source', source, 'time', time, 'data', json(data)"
_SENT = "'sent_source', sent_source, 'sent_time', sent_time"
_TRACE = "'traceparent', traceparent, 'tracestate', tracestate"
WIRE_JSON = (
    "CASE WHEN traceparent IS NULL THEN "
    f"CASE WHEN sent_source IS NULL AND sent_time IS NULL THEN json_object({_WIRE}) "
    f"ELSE json_object({_WIRE}, {_SENT}) END "
    "ELSE "
    f"CASE WHEN sent_source IS NULL AND sent_time IS NULL THEN json_object({_WIRE}, {_TRACE}) "
    f"ELSE json_object({_WIRE}, {_SENT}, {_TRACE}) END "
    "END"
)
# Columns added since the first release, added to a log made before them (and to a new one): an event's
# `traceparent`/`tracestate` are the W3C trace context of the bus's span for it, which deliveries continue.
ADDED_COLUMNS = {"sent_source": "TEXT", "sent_time": "TEXT", "traceparent": "TEXT", "tracestate": "TEXT"}


@dataclass(frozen=True)
class Appended:
    id: str
    seq: int
    duplicate: bool


@dataclass(frozen=True)
class Sent:
    """What a publisher put in an event's own `source` and `time` (kept beside what the bus records)."""

    source: str | None = None
    time: str | None = None


class EventLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._wakeups: list[threading.Event] = []
        self._wakeups_changing = threading.Lock()
        have = {row["name"] for row in db.connection().execute("PRAGMA table_info(events)")}
        with db.transaction() as conn:
            for column, kind in ADDED_COLUMNS.items():
                if column not in have:
                    conn.execute(f"ALTER TABLE events ADD COLUMN {column} {kind}")

    def wakeup(self) -> threading.Event:
        """An event set after every commit that adds events: delivery waits on it instead of polling."""
        flag = threading.Event()
        self.add_wakeup(flag)
        return flag

    def add_wakeup(self, flag) -> None:
        """Anything with `set()`, called after every commit that adds events."""
        with self._wakeups_changing:  # a new list: an append going through the old one misses none
            self._wakeups = [*self._wakeups, flag]

    def remove_wakeup(self, flag) -> None:
        """Stop setting `flag` (a stream that ended)."""
        with self._wakeups_changing:
            self._wakeups = [f for f in self._wakeups if f is not flag]

    def append(self, events: Sequence[Event], sent: Sequence[Sent] | None = None) -> list[Appended]:
        """Log events in one transaction; an id already in the log is acknowledged, not logged again."""
        results = []
        with self.db.transaction() as conn:
            for event, as_sent in zip(events, sent or [Sent()] * len(events), strict=True):
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO events (id, type, source, time, data, sent_source, sent_time, "
                    "traceparent, tracestate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (event.id, event.type, event.source, event.time, json.dumps(event.data, ensure_ascii=False),
                     as_sent.source, as_sent.time, event.traceparent, event.tracestate),
                )
                if cursor.rowcount:
                    results.append(Appended(event.id, cursor.lastrowid, False))
                else:
                    seq = conn.execute("SELECT seq FROM events WHERE id = ?", (event.id,)).fetchone()[0]
                    results.append(Appended(event.id, seq, True))
        if any(not r.duplicate for r in results):
            for flag in self._wakeups:
                flag.set()
        return results

    def pages(self, after: int = 0, limit: int | None = None, type: str | None = None) -> Iterator[list[sqlite3.Row]]:
        """Rows with seq > after, oldest first, a page at a time; each row's `wire` is its JSON."""
        conn = self.db.connection()
        remaining = limit if limit is not None else float("inf")
        while remaining > 0:
            page = int(min(PAGE, remaining))
            rows = conn.execute(
                f"SELECT *, {WIRE_JSON} AS wire FROM events WHERE seq > ? AND (? IS NULL OR type = ?) "
                "ORDER BY seq LIMIT ?",
                (after, type, type, page),
            ).fetchall()
            if rows:
                yield rows
            if len(rows) < page:
                return
            after = rows[-1]["seq"]
            remaining -= len(rows)

    def read_after(self, after: int = 0, limit: int | None = None, type: str | None = None) -> Iterator[sqlite3.Row]:
        for page in self.pages(after, limit, type):
            yield from page

    def reset(self) -> None:
        """Forget everything: the log, every cursor and dead letter (sequence numbers start at 1 again)."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM dead_letters")
            conn.execute("DELETE FROM cursors")
            conn.execute("DELETE FROM events")

    def last_seq(self) -> int:
        return self.db.connection().execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]

    def cursor(self, subscriber: str) -> int:
        row = self.db.connection().execute("SELECT seq FROM cursors WHERE subscriber = ?", (subscriber,)).fetchone()
        return row[0] if row else 0

    def advance(self, subscriber: str, seq: int) -> None:
        with self.db.transaction(durable=False) as conn:  # a cursor lost in a power cut: events sent again
            _move_cursor(conn, subscriber, seq)


    def park(self, subscriber: str, seq: int, attempts: int, error: str, parked_at: str) -> None:
        """Move `seq` to the subscriber's dead letters and its cursor past it, together."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO dead_letters (subscriber, seq, attempts, error, parked_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (subscriber, seq, attempts, error, parked_at),
            )
            _move_cursor(conn, subscriber, seq)

    def dead_letters(self, subscriber: str | None = None) -> list[sqlite3.Row]:
        query = (
            f"SELECT d.subscriber, d.attempts, d.error, d.parked_at, e.*, {WIRE_JSON} AS wire FROM dead_letters d "
            "JOIN events e USING (seq) WHERE ? IS NULL OR d.subscriber = ? ORDER BY d.subscriber, d.seq"
        )
        return self.db.connection().execute(query, (subscriber, subscriber)).fetchall()

    def dead_letter(self, subscriber: str, seq: int) -> sqlite3.Row | None:
        return next((row for row in self.dead_letters(subscriber) if row["seq"] == seq), None)

    def forget_dead_letter(self, subscriber: str, seq: int) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM dead_letters WHERE subscriber = ? AND seq = ?", (subscriber, seq))


def _move_cursor(conn: sqlite3.Connection, subscriber: str, seq: int) -> None:
    conn.execute(
        "INSERT INTO cursors (subscriber, seq) VALUES (?, ?) "
        "ON CONFLICT (subscriber) DO UPDATE SET seq = max(seq, excluded.seq)",
        (subscriber, seq),
    )


def row_to_json(row: sqlite3.Row) -> str:
    return row["wire"]


def row_to_event(row: sqlite3.Row) -> Event:
    return Event(row["type"], json.loads(row["data"]), row["id"], row["source"], row["time"], row["seq"],
                 traceparent=row["traceparent"], tracestate=row["tracestate"])
