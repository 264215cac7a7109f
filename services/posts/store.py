"""Posts and their outbox in one SQLite file: a post and its PostCreated commit together."""
from __future__ import annotations

import secrets
import sqlite3

from services.shared import outbox
from services.shared.db import Database
from services.shared.events import post_created

SCHEMA = """
CREATE TABLE IF NOT EXISTS posts (
    pos   INTEGER PRIMARY KEY,
    id    TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL
);
""" + outbox.SCHEMA


def new_post_id() -> str:
    return secrets.token_hex(4)  # the course's randomBytes(4).toString('hex')


class PostStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, title: str) -> dict:
        for _ in range(10):  # an 8-hex-digit id can collide; pick another
            post = {"id": new_post_id(), "title": title}
            try:
                with self.db.transaction() as conn:
                    conn.execute("INSERT INTO posts (id, title) VALUES (?, ?)", (post["id"], title))
                    outbox.add(conn, post_created(post["id"], title))
                return post
            except sqlite3.IntegrityError:
                continue
        raise RuntimeError("could not find a free post id")

    def all(self) -> dict[str, dict]:
        rows = self.db.connection().execute("SELECT id, title FROM posts ORDER BY pos")
        return {row["id"]: {"id": row["id"], "title": row["title"]} for row in rows}

    def count(self) -> int:
        return self.db.connection().execute("SELECT count(*) FROM posts").fetchone()[0]
