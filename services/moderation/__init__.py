"""Moderation service (:4003): consumes CommentCreated, decides, emits CommentModerated through its outbox.

It has no routes of its own besides `POST /events`: the bus (or its broker queue) brings it
every new comment, and its catch-up reads the log for any it missed while it was down or
before it first started.
"""
from services.shared.events import CommentModerated
from services.shared.service import Service

from .store import HANDLERS, SCHEMA, ModerationSettings, ModerationStore

SERVICE = Service(
    "moderation", 4003, title="Moderation service", schema=SCHEMA, store=ModerationStore.open,
    handlers=HANDLERS, emits=(CommentModerated,), health=ModerationStore.health, settings=ModerationSettings,
)
