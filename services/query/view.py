"""The read model: posts with their comments, written only by events, read as one JSON document.

Applying is idempotent (ids are keys: a redelivered event changes nothing) and order-tolerant
(a comment that arrives before its post waits in the table and shows once the post does).
The view remembers `applied_seq`, the log position up to which it has every event, so a
restarted Query asks the bus only for what it missed.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass

from services.shared.db import Database
from services.shared.events import CommentCreated, Event, PostCreated, dispatch

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
    content TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS posts_in_order ON posts (seq);
CREATE INDEX IF NOT EXISTS comments_in_order ON comments (seq);
CREATE TABLE IF NOT EXISTS position (
    one         INTEGER PRIMARY KEY CHECK (one = 1),
    applied_seq INTEGER NOT NULL
);
INSERT OR IGNORE INTO position (one, applied_seq) VALUES (1, 0);
"""


def add_post(post: PostCreated, event: Event, conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO posts (id, seq, title) VALUES (?, ?, ?)", (post.id, event.seq, post.title)
    )


def add_comment(comment: CommentCreated, event: Event, conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO comments (id, seq, post_id, content) VALUES (?, ?, ?, ?)",
        (comment.id, event.seq, comment.postId, comment.content),
    )


HANDLERS = {"PostCreated": add_post, "CommentCreated": add_comment}


@dataclass(frozen=True)
class Rendering:
    version: int
    etag: str
    body: bytes
    total: int  # posts in the whole view, for paging


CACHED_PAGES = 64  # renderings kept per version: the whole view and the most asked-for pages


class QueryView:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._version = 0  # bumped by every apply that changed something
        self._cached_version = -1
        self._posts: list[dict] = []  # the view of _cached_version, in order
        self._renderings: dict[tuple[int, int | None], Rendering] = {}

    @property
    def applied_seq(self) -> int:
        return self.db.connection().execute("SELECT applied_seq FROM position").fetchone()[0]

    def apply(self, events: list[Event], *, from_log: bool = False) -> bool:
        """Apply events in one transaction. Returns True when a gap shows events were missed.

        `from_log`: the events are a contiguous read of the log, so the position moves to the
        last one. Pushed events move it only while they follow on without a gap.
        """
        with self.db.transaction() as conn:
            applied = conn.execute("SELECT applied_seq FROM position").fetchone()[0]
            before = conn.total_changes
            gap = False
            for event in sorted(events, key=lambda e: e.seq or 0):
                dispatch(HANDLERS, event, conn)
                if event.seq is None:
                    continue
                if from_log or event.seq == applied + 1:
                    applied = max(applied, event.seq)
                elif event.seq > applied + 1:
                    gap = True
            changed = conn.total_changes != before
            conn.execute("UPDATE position SET applied_seq = ?", (applied,))
        if changed:
            with self._lock:
                self._version += 1
        return gap

    def render(self, offset: int = 0, limit: int | None = None) -> Rendering:
        """The view (or a page of it) as JSON bytes, rendered once per version and shared by every reader."""
        key = (offset, limit)
        with self._lock:
            version = self._version
            if self._cached_version == version:
                cached = self._renderings.get(key)
                if cached is not None:
                    return cached
                posts = self._posts
            else:
                posts = None
        if posts is None:
            posts = list(self.as_dict().values())
        chosen = posts[offset:] if limit is None else posts[offset : offset + limit]
        body = json.dumps({p["id"]: p for p in chosen}, ensure_ascii=False, separators=(",", ":")).encode()
        rendering = Rendering(version, hashlib.blake2b(body, digest_size=12).hexdigest(), body, len(posts))
        with self._lock:
            if self._version == version:
                if self._cached_version != version:
                    self._cached_version, self._posts, self._renderings = version, posts, {}
                if len(self._renderings) < CACHED_PAGES:
                    self._renderings[key] = rendering
        return rendering

    def as_dict(self) -> dict[str, dict]:
        conn = self.db.connection()
        conn.execute("BEGIN")  # one snapshot for both reads
        try:
            posts = {
                row["id"]: {"id": row["id"], "title": row["title"], "comments": []}
                for row in conn.execute("SELECT id, title FROM posts ORDER BY seq, rowid")
            }
            for row in conn.execute("SELECT id, post_id, content FROM comments ORDER BY seq, rowid"):
                post = posts.get(row["post_id"])
                if post is not None:
                    post["comments"].append({"id": row["id"], "content": row["content"]})
        finally:
            conn.execute("COMMIT")
        return posts

    def counts(self) -> tuple[int, int]:
        conn = self.db.connection()
        return (
            conn.execute("SELECT count(*) FROM posts").fetchone()[0],
            conn.execute("SELECT count(*) FROM comments").fetchone()[0],
        )
