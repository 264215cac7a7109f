"""Each service's recent finished spans, kept locally so `blogctl trace` works with no collector.

One SQLite file per process, `<data dir>/traces/<instance>.db`, written by the tracer's batching
processor in its own thread (never on a request's path), not fsynced (a span lost in a power cut
is only a span), and pruned to the newest `keep` spans. Indexed by trace id and by the ids people
look up: a post's, a comment's, an event's. `find_traces` and `read_spans` read every file of a
data directory, with the services running or not.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

KEEP = 20_000  # spans per process

SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    pos        INTEGER PRIMARY KEY,
    trace_id   TEXT NOT NULL,
    span_id    TEXT NOT NULL,
    parent_id  TEXT,
    service    TEXT NOT NULL,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    start_ns   INTEGER NOT NULL,
    end_ns     INTEGER NOT NULL,
    status     TEXT NOT NULL,
    attributes TEXT NOT NULL,
    post_id    TEXT,
    comment_id TEXT,
    message_id TEXT
);
CREATE INDEX IF NOT EXISTS spans_by_trace ON spans (trace_id);
CREATE INDEX IF NOT EXISTS spans_by_post ON spans (post_id) WHERE post_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS spans_by_comment ON spans (comment_id) WHERE comment_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS spans_by_message ON spans (message_id) WHERE message_id IS NOT NULL;
"""
COLUMNS = "trace_id, span_id, parent_id, service, name, kind, start_ns, end_ns, status, attributes"


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=5, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    return conn


class SpanStore(SpanExporter):
    """A span exporter into the process's own SQLite file."""

    def __init__(self, path: Path, keep: int = KEEP) -> None:
        self.path = Path(path)
        self.keep = keep
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # export runs in the processor's thread; a flush at shutdown in another

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = _open(self.path)
            self._conn.executescript(SCHEMA)
        return self._conn

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        rows = [_row(span) for span in spans]
        try:
            with self._lock:
                conn = self._connection()
                with conn:
                    conn.execute("BEGIN")
                    conn.executemany(
                        f"INSERT INTO spans ({COLUMNS}, post_id, comment_id, message_id) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                    conn.execute("DELETE FROM spans WHERE pos <= (SELECT max(pos) FROM spans) - ?", (self.keep,))
        except (sqlite3.Error, OSError):  # a full or read-only disk: the spans are dropped, the service goes on
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _hex(number: int, width: int) -> str:
    return f"{number:0{width}x}"


def _row(span: ReadableSpan) -> tuple:
    attributes = dict(span.attributes or {})
    parent = span.parent
    return (
        _hex(span.context.trace_id, 32), _hex(span.context.span_id, 16),
        _hex(parent.span_id, 16) if parent is not None else None,
        str(span.resource.attributes.get("service.name", "unknown")), span.name, span.kind.name.lower(),
        span.start_time or 0, span.end_time or span.start_time or 0, span.status.status_code.name.lower(),
        json.dumps(attributes, default=str), attributes.get("blog.post.id"), attributes.get("blog.comment.id"),
        attributes.get("messaging.message.id"),
    )


# Reading, for `blogctl trace`

def stores(data_dir: Path) -> list[Path]:
    return sorted((Path(data_dir) / "traces").glob("*.db"))


def _each(data_dir: Path):
    for path in stores(data_dir):
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        except sqlite3.Error:
            continue
        conn.row_factory = sqlite3.Row
        try:
            yield conn
        finally:
            conn.close()


def find_traces(data_dir: Path, ident: str) -> list[str]:
    """The traces in which `ident` was made: the post's, the comment's, or the event's (else any
    trace it appears in, a trace id included), oldest first."""
    where = [
        "post_id = :id AND comment_id IS NULL",  # the post's own write, not the comments on it
        "comment_id = :id", "message_id = :id", "trace_id = :id", "post_id = :id",
    ]
    for condition in where:
        found: dict[str, int] = {}
        for conn in _each(data_dir):
            try:
                rows = conn.execute(f"SELECT trace_id, min(start_ns) AS start FROM spans WHERE {condition} "
                                    "GROUP BY trace_id", {"id": ident}).fetchall()
            except sqlite3.Error:
                continue
            for row in rows:
                found[row["trace_id"]] = min(found.get(row["trace_id"], row["start"]), row["start"])
        if found:
            return sorted(found, key=found.get)
    return []


def read_spans(data_dir: Path, trace_id: str) -> list[dict]:
    """Every kept span of one trace, from every process's store, by start time."""
    spans = []
    for conn in _each(data_dir):
        try:
            rows = conn.execute(f"SELECT {COLUMNS} FROM spans WHERE trace_id = ?", (trace_id,)).fetchall()
        except sqlite3.Error:
            continue
        for row in rows:
            span = dict(row)
            span["attributes"] = json.loads(span["attributes"])
            spans.append(span)
    return sorted(spans, key=lambda span: (span["start_ns"], span["end_ns"]))


def kept(data_dir: Path) -> tuple[int, int | None]:
    """How many spans the stores hold, and the start (ns) of the oldest."""
    total, oldest = 0, None
    for conn in _each(data_dir):
        try:
            count, first = conn.execute("SELECT count(*), min(start_ns) FROM spans").fetchone()
        except sqlite3.Error:
            continue
        total += count
        if first is not None:
            oldest = first if oldest is None else min(oldest, first)
    return total, oldest
