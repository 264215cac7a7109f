"""Comments service (:4001): comments per post; each new comment emits CommentCreated, and
Moderation's decision on it CommentUpdated, through the outbox."""
from services.shared.events import CommentCreated, CommentUpdated
from services.shared.service import FrontRoute, Service

from .routes import routes
from .store import HANDLERS, SCHEMA, CommentStore

SERVICE = Service(
    "comments", 4001, title="Comments service", schema=SCHEMA, store=lambda db, config: CommentStore(db),
    handlers=HANDLERS, emits=(CommentCreated, CommentUpdated), routes=routes, health=CommentStore.health,
    browser=True, front_door=(FrontRoute("~ ^/posts/[^/]+/comments$", ingress="/posts/?(.*)/comments"),),
)
