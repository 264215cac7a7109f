"""The read model: posts with their comments, written only by events, read as one JSON document.

Applying is idempotent (ids are keys: a redelivered event changes nothing) and order-tolerant
(a comment that arrives before its post waits in the table and shows once the post does;
a comment's update that arrives before the comment is kept, and the comment, when it comes,
does not take it back to `pending`).
An event pushed without a log position (a broker's queue carries none) goes after every
positioned one, in arrival order, and takes its position when the log supplies it.
The view remembers `applied_seq`, the log position up to which it has every event, so a
restarted Query asks the bus only for what it missed.
"""
from __future__ import annotations

import bisect
import hashlib
import itertools
import sqlite3
import threading
import time
from dataclasses import dataclass, field

import orjson

from services.shared.consumer import POSITION_SCHEMA, apply_batch, process
from services.shared.consumer import applied_seq as position_of
from services.shared.db import Database, ensure_column
from services.shared.events import SEQ_MAX, CommentCreated, CommentUpdated, Event, Handlers, PostCreated, by_type_name
from services.shared.tracing import sampled

SCHEMA = """
CREATE TABLE IF NOT EXISTS posts (
    id    TEXT PRIMARY KEY,
    seq   INTEGER,             -- the event's log position: creation order
    title TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS comments (
    id      TEXT PRIMARY KEY,
    seq     INTEGER,
    post_id TEXT NOT NULL,
    content TEXT NOT NULL,
    status  TEXT NOT NULL DEFAULT 'pending'
);
-- Read in log order only when Query starts (a scan and a sort): an index on seq cost every row of a rebuild
-- another B-tree insert for nothing. Dropped from a view made before.
DROP INDEX IF EXISTS posts_in_order;
DROP INDEX IF EXISTS comments_in_order;
""" + POSITION_SCHEMA


# Each statement takes a batch's rows as one JSON array (`json_each`): one statement, one step, where
# `executemany` steps once a row. Measured: sqlite3 lets the GIL go for every step and takes it back
# after, so beside any other busy thread (the read-ahead, RabbitMQ's stream reader) each row waited
# for its turn and a rebuild's writes took twice their time; with one step a page, SQLite's work
# runs beside them instead (docs/performance-redesign.md). Rows are taken in order, as executemany takes them.
_ROWS = "SELECT {} FROM json_each(?) WHERE true"  # `WHERE true`: SQLite's rule for an upsert from a SELECT


def _row(*columns: str) -> str:
    """The SELECT over a JSON array of rows: each column a row's item by index, or a literal."""
    return _ROWS.format(", ".join(f"json_extract(value, '$[{c}]')" if c.isdigit() else c for c in columns))


ADD_POSTS = (
    f"INSERT INTO posts (id, seq, title) {_row('0', '1', '2')} ON CONFLICT (id) DO UPDATE SET seq = excluded.seq"
    " WHERE posts.seq IS NULL AND excluded.seq IS NOT NULL"
)
# A comment seen again (or after its update) only takes the log position it lacked.
ADD_COMMENTS = (
    f"INSERT INTO comments (id, seq, post_id, content, status) {_row('0', '1', '2', '3', '4')} ON CONFLICT (id) DO UPDATE"
    " SET seq = excluded.seq WHERE comments.seq IS NULL AND excluded.seq IS NOT NULL"
)
# An update before its comment is kept (with no position until the comment comes); none goes back to pending.
UPDATE_COMMENTS = (
    f"INSERT INTO comments (id, seq, post_id, content, status) {_row('0', 'NULL', '1', '2', '3')} ON CONFLICT (id) DO UPDATE"
    " SET content = excluded.content, status = excluded.status"
    " WHERE excluded.status != 'pending' AND (comments.content != excluded.content OR comments.status != excluded.status)"
)


@dataclass
class Changes:
    """What a batch of events changes, recorded once by the handlers: written to SQLite with one
    statement per table, then, once committed, to the in-memory mirror from the same rows."""

    posts: list[tuple] = field(default_factory=list)  # (id, seq, title)
    comments: list[tuple] = field(default_factory=list)  # (id, seq, post id, content, status)
    updates: list[tuple] = field(default_factory=list)  # (id, post id, content, status)

    def write(self, conn: sqlite3.Connection) -> None:
        for statement, rows in ((ADD_POSTS, self.posts), (ADD_COMMENTS, self.comments), (UPDATE_COMMENTS, self.updates)):
            if rows:
                conn.execute(statement, (orjson.dumps(rows),))


def add_post(post: PostCreated, event: Event, changes: Changes) -> None:
    changes.posts.append((post.id, event.seq, post.title))


def add_comment(comment: CommentCreated, event: Event, changes: Changes) -> None:
    changes.comments.append((comment.id, event.seq, comment.postId, comment.content, comment.status))


def update_comment(update: CommentUpdated, event: Event, changes: Changes) -> None:
    changes.updates.append((update.id, update.postId, update.content, update.status))


HANDLERS: Handlers[Changes] = {PostCreated: add_post, CommentCreated: add_comment, CommentUpdated: update_comment}
_BY_TYPE = by_type_name(HANDLERS)

# The same rows, read straight from the data of an event read from the log, which validated it
# when it was appended: no model is made per event (a rebuild applies tens of thousands a second).
# tests/unit/test_query_view.py checks a page applied this way equals its events applied one by one.
LOGGED_ROWS = {
    PostCreated.__name__: lambda data, seq, changes: changes.posts.append((data["id"], seq, data["title"])),
    CommentCreated.__name__: lambda data, seq, changes: changes.comments.append(
        (data["id"], seq, data["postId"], data["content"], data.get("status", "pending"))),
    CommentUpdated.__name__: lambda data, seq, changes: changes.updates.append(
        (data["id"], data["postId"], data["content"], data["status"])),
}


def take_logged(events: list[Event], changes: Changes, handlers: dict) -> None:
    """Record the rows of events read from the log, in order. A traced event goes through its
    handler in `handlers` (which makes its span), as does one whose data lacks a field (validated there)."""
    for event in events:
        rows = LOGGED_ROWS.get(event.type)
        if rows is None:
            continue  # a type Query does not handle
        if not sampled(event.traceparent) and isinstance(event.data, dict):
            try:
                rows(event.data, event.seq, changes)
                continue
            except KeyError:
                pass
        process(handlers, event, changes)


@dataclass(frozen=True)
class Rendering:
    version: int
    etag: str
    body: bytes
    total: int  # posts in the whole view, for paging


NO_COMMENTS = ()  # the comments of a post that has none yet: one shared empty sequence, rendered as []
CACHED_PAGES = 64  # renderings kept per version: the whole view and the most asked-for pages
# SQLite's default page cache for the view's connections: a rebuild inserts into B-trees keyed by
# random ids, and with the 256 KiB the other services keep it spent a third more CPU a row (measured).
VIEW_CACHE_KIB = 2048


class _Ordered:
    """Values kept in log order (seq, then arrival), appended in O(1) when events come in order."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int]] = []
        self.values: list = []

    def add(self, key: tuple[int, int], value) -> None:
        if not self.keys or key >= self.keys[-1]:
            self.keys.append(key)
            self.values.append(value)
        else:  # a late arrival: put it where the log has it
            at = bisect.bisect(self.keys, key)
            self.keys.insert(at, key)
            self.values.insert(at, value)

    def rekey(self, keys: dict, ident=lambda value: value) -> None:
        """Give the values named in `keys` (by `ident`) their new keys, and re-sort once."""
        pairs = sorted(
            (keys.get(ident(value), key), value) for key, value in zip(self.keys, self.values)
        ) if keys else []
        if pairs:
            self.keys[:] = [key for key, _ in pairs]
            self.values[:] = [value for _, value in pairs]


class QueryView:
    """The view in SQLite (durable) and mirrored in memory (fast to render); apply writes both."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.cache_kib = VIEW_CACHE_KIB  # for the connections the catch-up and delivery threads open
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified when the version moves
        self._version = 0  # bumped by every apply that changed something
        self._arrivals = itertools.count()
        self._posts: dict[str, dict] = {}  # id -> {"id", "title", "comments": [...]}
        self._order = _Ordered()  # post ids in creation order
        self._comments: dict[str, _Ordered] = {}  # post id -> its comments, in order
        self._comments_by_id: dict[str, dict] = {}  # comment id -> its entry in its post's list
        # Applied without a log position (pushed by a broker's queue): id -> post id, until the log gives one.
        self._unplaced_posts: set[str] = set()
        self._unplaced_comments: dict[str, str] = {}
        self._placed: list[tuple[str, int, str | None]] = []  # (id, seq, post id of a comment) found by an apply
        self._renderings: dict[tuple[int, int | None], Rendering] = {}
        self._rendered_version = 0
        self._load()

    def _load(self) -> None:
        ensure_column(self.db, "comments", "status", "TEXT NOT NULL DEFAULT 'pending'")
        conn = self.db.connection()
        conn.execute("BEGIN")  # one snapshot for both reads
        try:
            for row in conn.execute("SELECT id, seq, title FROM posts ORDER BY seq IS NULL, seq, rowid"):
                self._add_post(row["id"], row["seq"], row["title"])
            for row in conn.execute(
                "SELECT id, seq, post_id, content, status FROM comments ORDER BY seq IS NULL, seq, rowid"
            ):
                self._add_comment(row["id"], row["seq"], row["post_id"], row["content"], row["status"])
        finally:
            conn.execute("COMMIT")

    def _key(self, seq: int | None) -> tuple[int, int]:
        return (SEQ_MAX + 1 if seq is None else seq, next(self._arrivals))

    def _add_post(self, post_id: str, seq: int | None, title: str) -> None:
        if post_id in self._posts:
            if seq is not None and post_id in self._unplaced_posts:
                self._unplaced_posts.discard(post_id)
                self._placed.append((post_id, seq, None))
            return
        if seq is None:
            self._unplaced_posts.add(post_id)
        comments = self._comments.get(post_id)  # a post's list is made with its first comment (most have none)
        self._posts[post_id] = {"id": post_id, "title": title, "comments": NO_COMMENTS if comments is None else comments.values}
        self._order.add(self._key(seq), post_id)

    def _add_comment(self, comment_id: str, seq: int | None, post_id: str, content: str, status: str) -> None:
        if comment_id in self._comments_by_id:
            if seq is not None and comment_id in self._unplaced_comments:
                self._placed.append((comment_id, seq, self._unplaced_comments.pop(comment_id)))
            return
        if seq is None:
            self._unplaced_comments[comment_id] = post_id
        comment = self._comments_by_id[comment_id] = {"id": comment_id, "content": content, "status": status}
        # A comment before its post waits here; the post's entry shares this list when it comes.
        self._comments_of(post_id).add(self._key(seq), comment)

    def _update_comment(self, comment_id: str, post_id: str, content: str, status: str) -> None:
        comment = self._comments_by_id.get(comment_id)
        if comment is None:  # the update came first: the comment takes its position when it comes
            self._add_comment(comment_id, None, post_id, content, status)
        elif status != "pending":
            comment["content"], comment["status"] = content, status

    def _comments_of(self, post_id: str) -> _Ordered:
        comments = self._comments.get(post_id)
        if comments is None:
            comments = self._comments[post_id] = _Ordered()
            post = self._posts.get(post_id)
            if post is not None:  # its entry shares the list from now on
                post["comments"] = comments.values
        return comments

    def _mirror(self, changes: Changes) -> None:
        for row in changes.posts:
            self._add_post(*row)
        for row in changes.comments:
            self._add_comment(*row)
        for row in changes.updates:
            self._update_comment(*row)

    def _place(self) -> None:
        """Move what was applied without a log position to the position the log now gave it."""
        if not self._placed:
            return
        self._order.rekey({i: self._key(seq) for i, seq, post_id in self._placed if post_id is None})
        by_post: dict[str, dict] = {}
        for i, seq, post_id in self._placed:
            if post_id is not None:
                by_post.setdefault(post_id, {})[i] = self._key(seq)
        for post_id, keys in by_post.items():
            self._comments[post_id].rekey(keys, ident=lambda comment: comment["id"])
        self._placed.clear()

    @property
    def applied_seq(self) -> int:
        return position_of(self.db)

    def apply(self, events: list[Event], *, from_log: bool = False) -> bool:
        """Apply events in one transaction, then to the mirror. Returns True when a gap shows
        events were missed (see `apply_batch`)."""
        changes = Changes()
        changed = False

        def handle(conn: sqlite3.Connection, ordered: list[Event]) -> None:
            nonlocal changed
            if from_log:
                take_logged(ordered, changes, _BY_TYPE)
            else:
                for event in ordered:
                    process(_BY_TYPE, event, changes)
            before = conn.total_changes
            changes.write(conn)
            changed = conn.total_changes != before

        gap = apply_batch(self.db, events, handle, from_log=from_log)
        if changed:  # committed: now the memory copy, which readers see
            with self._lock:
                self._mirror(changes)
                self._place()
                self._version += 1
                self._changed.notify_all()
        return gap

    def render(self, offset: int = 0, limit: int | None = None) -> Rendering:
        """The view (or a page of it) as JSON bytes, rendered once per version and shared by every reader."""
        key = (offset, limit)
        with self._lock:
            if self._rendered_version != self._version:
                self._renderings, self._rendered_version = {}, self._version
            cached = self._renderings.get(key)
            if cached is not None:
                return cached
            ids = self._order.values
            chosen = ids[offset:] if limit is None else ids[offset : offset + limit]
            body = orjson.dumps({post_id: self._posts[post_id] for post_id in chosen})
            rendering = Rendering(
                self._version, hashlib.blake2b(body, digest_size=12).hexdigest(), body, len(ids)
            )
            if len(self._renderings) < CACHED_PAGES:
                self._renderings[key] = rendering
            return rendering

    def render_changed(self, offset: int, limit: int | None, known: Rendering, timeout: float) -> Rendering:
        """The page, once it differs from `known` (its rendering a reader holds), or as it is
        when `timeout` seconds pass.

        A reader that already has the page waits here instead of asking again and again: it is
        answered as soon as an apply changes what it would see.
        """
        deadline = time.monotonic() + timeout
        rendering = known
        while rendering.etag == known.etag:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with self._changed:
                self._changed.wait_for(lambda: self._version != rendering.version, left)
            rendering = self.render(offset, limit)
        return rendering

    def as_dict(self) -> dict[str, dict]:
        return orjson.loads(self.render().body)

    def counts(self) -> tuple[int, int]:
        """Posts and comments in the view, from the memory copy: /health answers it on every poll, and
        SQLite's count(*) reads the whole table (13% of Query's CPU in a rebuild polled every 20 ms)."""
        with self._lock:
            return len(self._posts), len(self._comments_by_id)
