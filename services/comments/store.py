"""Comments, the posts Comments has heard of (from PostCreated), and the outbox, in one SQLite file
(or the `comments` schema of BLOG_DATABASE_URL's PostgreSQL database).

A new comment is `pending`; Moderation's decision (CommentModerated) sets its status once and
is announced as CommentUpdated, in the same transaction. A repeated decision changes nothing.
"""
from __future__ import annotations

from services.shared import outbox
from services.shared.consumer import POSITION_SCHEMA, ConsumingStore, Context
from services.shared.db import Connection, Database, ensure_column, insert_with_new_id
from services.shared.events import CommentCreated, CommentModerated, CommentUpdated, Event, PostCreated

SCHEMA = """
CREATE TABLE IF NOT EXISTS known_posts (
    id TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS comments (
    pos     INTEGER PRIMARY KEY,
    id      TEXT NOT NULL UNIQUE,
    post_id TEXT NOT NULL,
    content TEXT NOT NULL,
    status  TEXT NOT NULL DEFAULT 'pending'
);
CREATE INDEX IF NOT EXISTS comments_by_post ON comments (post_id, pos);
""" + outbox.SCHEMA + POSITION_SCHEMA


class UnknownPost(LookupError):
    """A comment names a post this service has never heard of."""


class CommentStore(ConsumingStore):
    def __init__(self, db: Database) -> None:
        super().__init__(db, HANDLERS)
        ensure_column(db, "comments", "status", "TEXT NOT NULL DEFAULT 'pending'")

    def create(self, post_id: str, content: str) -> list[dict]:
        """Add a comment and its CommentCreated; return all of the post's comments."""
        def write(conn: Connection, comment_id: str) -> list[dict]:
            if conn.execute("SELECT 1 FROM known_posts WHERE id = ?", (post_id,)).fetchone() is None:
                raise UnknownPost(post_id)
            conn.execute(
                "INSERT INTO comments (id, post_id, content) VALUES (?, ?, ?)", (comment_id, post_id, content)
            )
            outbox.add(conn, Event.of(CommentCreated(id=comment_id, content=content, postId=post_id), source="comments"))
            return self._for_post(conn, post_id)

        return insert_with_new_id(self.db, write)

    def for_post(self, post_id: str) -> list[dict]:
        return self._for_post(self.db.connection(), post_id)

    @staticmethod
    def _for_post(conn: Connection, post_id: str) -> list[dict]:
        rows = conn.execute("SELECT id, content, status FROM comments WHERE post_id = ? ORDER BY pos", (post_id,))
        return [{"id": row["id"], "content": row["content"], "status": row["status"]} for row in rows]

    def count(self) -> tuple[int, int]:
        conn = self.db.connection()
        posts = conn.execute("SELECT count(*) FROM known_posts").fetchone()[0]
        comments = conn.execute("SELECT count(*) FROM comments").fetchone()[0]
        return posts, comments

    def health(self) -> dict:
        posts, comments = self.count()
        return dict(known_posts=posts, comments=comments)


def remember_post(post: PostCreated, event: Event, ctx: Context[CommentStore]) -> None:
    ctx.conn.execute("INSERT INTO known_posts (id) VALUES (?) ON CONFLICT DO NOTHING", (post.id,))


def record_decision(decision: CommentModerated, event: Event, ctx: Context[CommentStore]) -> None:
    """Store Moderation's decision on a pending comment and announce it; a comment is decided once."""
    conn = ctx.conn
    row = conn.execute(
        "UPDATE comments SET status = ? WHERE id = ? AND status = 'pending' RETURNING post_id, content",
        (decision.status, decision.id),
    ).fetchone()
    if row is not None:
        update = CommentUpdated(id=decision.id, postId=row["post_id"], status=decision.status, content=row["content"])
        outbox.add(conn, Event.of(update, source="comments"))


HANDLERS = {PostCreated: remember_post, CommentModerated: record_decision}

