"""Posts and their outbox in one SQLite file (or the `posts` schema of BLOG_DATABASE_URL's PostgreSQL
database): a post and its PostCreated commit together."""
from __future__ import annotations

from services.shared import outbox
from services.shared.db import Connection, Database, insert_with_new_id
from services.shared.events import Event, PostCreated

SCHEMA = """
CREATE TABLE IF NOT EXISTS posts (
    pos   INTEGER PRIMARY KEY,
    id    TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL
);
""" + outbox.SCHEMA


class PostStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, title: str) -> dict:
        def write(conn: Connection, post_id: str) -> dict:
            conn.execute("INSERT INTO posts (id, title) VALUES (?, ?)", (post_id, title))
            outbox.add(conn, Event.of(PostCreated(id=post_id, title=title), source="posts"))
            return {"id": post_id, "title": title}

        return insert_with_new_id(self.db, write)

    def all(self) -> dict[str, dict]:
        rows = self.db.connection().execute("SELECT id, title FROM posts ORDER BY pos")
        return {row["id"]: {"id": row["id"], "title": row["title"]} for row in rows}

    def count(self) -> int:
        return self.db.connection().execute("SELECT count(*) FROM posts").fetchone()[0]
