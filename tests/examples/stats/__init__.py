"""Stats (an example service, docs/extending.md): how many posts were written each hour, from
PostCreated alone. Its package is its store, its handler, its route and its declaration; in a
formation it would be one more line in services/table.py and one in the Procfile."""
from __future__ import annotations

from flask import Flask, jsonify

from services.shared.consumer import POSITION_SCHEMA, ConsumingStore, Context
from services.shared.db import Database
from services.shared.events import Event, PostCreated
from services.shared.openapi import Operation
from services.shared.service import Built, Service

SCHEMA = """
CREATE TABLE IF NOT EXISTS counted (id TEXT PRIMARY KEY);  -- each post counted once
CREATE TABLE IF NOT EXISTS posts_per_hour (hour TEXT PRIMARY KEY, posts INTEGER NOT NULL);
""" + POSITION_SCHEMA


class StatsStore(ConsumingStore):
    def __init__(self, db: Database) -> None:
        super().__init__(db, HANDLERS)

    def per_hour(self) -> dict[str, int]:
        rows = self.db.connection().execute("SELECT hour, posts FROM posts_per_hour ORDER BY hour")
        return {row["hour"]: row["posts"] for row in rows}


def count_post(post: PostCreated, event: Event, ctx: Context[StatsStore]) -> None:
    """One more post in the hour the log received it (the event's `time`, UTC: `2026-12-03T06`)."""
    if ctx.conn.execute("INSERT OR IGNORE INTO counted (id) VALUES (?)", (post.id,)).rowcount:
        ctx.conn.execute("INSERT INTO posts_per_hour (hour, posts) VALUES (?, 1)"
                         " ON CONFLICT (hour) DO UPDATE SET posts = posts + 1", (event.time[:13],))


HANDLERS = {PostCreated: count_post}


def routes(app: Flask, built: Built[StatsStore]) -> list[Operation]:
    @app.get("/stats")
    def posts_per_hour():
        return jsonify(built.store.per_hour())

    return [Operation("get", "/stats", "Posts written each hour (UTC), oldest first", {200: dict[str, int]})]


SERVICE = Service(
    "stats", 4006, title="Stats service", schema=SCHEMA, store=lambda db, config: StatsStore(db),
    handlers=HANDLERS, routes=routes, health=lambda store: dict(hours=len(store.per_hour())),
)
