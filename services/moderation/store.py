"""What Moderation decided, its outbox and its position in the log, in one SQLite file (or the
`moderation` schema of BLOG_DATABASE_URL's PostgreSQL database).

The course's rule: a comment containing a rejected word ("orange" by default) is rejected,
any other approved. Each comment is decided once: the decision is stored with the comment's
id as key, and a CommentCreated seen again (redelivered, or both pushed and read from the log)
changes nothing and emits nothing.
"""
from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from services.shared import outbox
from services.shared.config import Config, Words
from services.shared.consumer import POSITION_SCHEMA, ConsumingStore, Context
from services.shared.db import Database
from services.shared.events import CommentCreated, CommentModerated, Decision, Event

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id      TEXT PRIMARY KEY,  -- the comment's id: one decision per comment
    post_id TEXT NOT NULL,
    status  TEXT NOT NULL
);
""" + outbox.SCHEMA + POSITION_SCHEMA


class ModerationSettings(BaseModel):
    """Moderation's own settings, each read from BLOG_MODERATION_<FIELD> by `config.load`."""

    model_config = ConfigDict(frozen=True)

    reject: Words = ("orange",)  # BLOG_MODERATION_REJECT: comma-separated words; any case


class Rule:
    """Reject a comment that contains any of `words`, ignoring case; approve any other."""

    def __init__(self, words: Iterable[str]) -> None:
        self.words = tuple(word.lower() for word in words if word)

    def decide(self, content: str) -> Decision:
        lowered = content.lower()
        return "rejected" if any(word in lowered for word in self.words) else "approved"


class ModerationStore(ConsumingStore):
    def __init__(self, db: Database, rule: Rule) -> None:
        super().__init__(db, HANDLERS)
        self.rule = rule

    @classmethod
    def open(cls, db: Database, config: Config) -> ModerationStore:
        """The store deciding by the rule Moderation's settings give."""
        settings: ModerationSettings = config.settings["moderation"]
        return cls(db, Rule(settings.reject))

    def decided(self) -> dict[str, int]:
        rows = self.db.connection().execute("SELECT status, count(*) AS n FROM decisions GROUP BY status")
        return {"approved": 0, "rejected": 0, **{row["status"]: row["n"] for row in rows}}

    def health(self) -> dict:
        return dict(decided=self.decided(), rejected_words=list(self.rule.words))


def moderate(comment: CommentCreated, event: Event, ctx: Context[ModerationStore]) -> None:
    """Decide a pending comment once, and emit the decision through the outbox in the same transaction."""
    if comment.status != "pending":  # published already decided: nothing to moderate
        return
    status = ctx.store.rule.decide(comment.content)
    inserted = ctx.conn.execute(
        "INSERT INTO decisions (id, post_id, status) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (comment.id, comment.postId, status),
    ).rowcount
    if inserted:
        decision = CommentModerated(id=comment.id, postId=comment.postId, status=status, content=comment.content)
        outbox.add(ctx.conn, Event.of(decision, source="moderation"))


HANDLERS = {CommentCreated: moderate}
