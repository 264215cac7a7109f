"""Events are data: the envelope every event travels in, and the known event types.

On the wire an event is the course's bare `{"type", "data"}`; the bus adds the
envelope fields (`id`, `seq`, `source`, `time`). Either shape is accepted.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

TITLE_MAX = 200
CONTENT_MAX = 2000
ID_MAX = 64
TYPE_MAX = 100


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# Stored exactly as given (no stripping): only the checks say what is allowed.
Title = Annotated[str, StringConstraints(min_length=1, max_length=TITLE_MAX), AfterValidator(_not_blank)]
Content = Annotated[str, StringConstraints(min_length=1, max_length=CONTENT_MAX), AfterValidator(_not_blank)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX, pattern=r"^[A-Za-z0-9_-]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class PostCreated(Strict):
    id: Identifier
    title: Title


class CommentCreated(Strict):
    id: Identifier
    content: Content
    postId: Identifier


# The event types this system understands; any other type is carried and ignored.
SCHEMAS: dict[str, type[Strict]] = {"PostCreated": PostCreated, "CommentCreated": CommentCreated}


class Envelope(Strict):
    type: Annotated[str, StringConstraints(min_length=1, max_length=TYPE_MAX)]
    data: Any = None
    id: Identifier | None = None
    seq: int | None = Field(default=None, ge=1)
    source: Annotated[str, StringConstraints(max_length=100)] | None = None
    time: Annotated[str, StringConstraints(max_length=40)] | None = None


class InvalidEvent(ValueError):
    """An event whose envelope or (known type's) data does not fit its schema."""


def new_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Event:
    type: str
    data: Any
    id: str = field(default_factory=new_id)
    source: str | None = None
    time: str = field(default_factory=utc_now)
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"type": self.type, "data": self.data, "id": self.id, "source": self.source, "time": self.time}
        if self.seq is not None:
            out["seq"] = self.seq
        return out

    @classmethod
    def from_dict(cls, raw: Any, *, source: str | None = None) -> Event:
        """Validate a wire event; bare `{"type","data"}` events get an id and a time here."""
        if not isinstance(raw, dict):
            raise InvalidEvent("an event must be a JSON object with 'type' and 'data'")
        try:
            envelope = Envelope.model_validate(raw)
        except ValidationError as exc:
            raise InvalidEvent(describe(exc)) from None
        event = cls(
            type=envelope.type,
            data=envelope.data,
            id=envelope.id or new_id(),
            source=envelope.source or source,
            time=envelope.time or utc_now(),
            seq=envelope.seq,
        )
        event.payload()  # a known type must carry valid data
        return event

    def payload(self) -> Strict | None:
        """The typed data of a known event type; None for types this system does not know."""
        schema = SCHEMAS.get(self.type)
        if schema is None:
            return None
        if not isinstance(self.data, dict):
            raise InvalidEvent(f"{self.type}: 'data' must be an object")
        try:
            return schema.model_validate(self.data)
        except ValidationError as exc:
            raise InvalidEvent(f"{self.type}: {describe(exc)}") from None


def post_created(post_id: str, title: str, source: str = "posts") -> Event:
    return Event("PostCreated", {"id": post_id, "title": title}, source=source)


def comment_created(comment_id: str, content: str, post_id: str, source: str = "comments") -> Event:
    return Event("CommentCreated", {"id": comment_id, "content": content, "postId": post_id}, source=source)


def describe(exc: ValidationError) -> str:
    """A pydantic error as one line a person can act on: `title: must not be blank`."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "body"
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if error["type"] != "missing" else f"'{where}' is required")
    return "; ".join(parts)


Handler = Any  # a callable taking (payload, event, *context)


def dispatch(handlers: dict[str, Handler], event: Event, *context: Any) -> bool:
    """Route `event` to its handler; unknown types are acknowledged and ignored (returns False)."""
    handler = handlers.get(event.type)
    if handler is None:
        return False
    handler(event.payload(), event, *context)
    return True
