"""Events are data: the envelope every event travels in, and the known event types.

On the wire an event is the course's bare `{"type", "data"}`; the bus adds the
envelope fields (`id`, `seq`, `source`, `time`). Either shape is accepted.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError

TITLE_MAX = 200
CONTENT_MAX = 2000
ID_MAX = 64
TYPE_MAX = 100
SEQ_MAX = 2**63 - 1  # SQLite's largest integer
# "Not blank": at least one character that is not ASCII white space. A pattern rather than a
# check in code, so that the OpenAPI document states exactly the same rule.
NOT_BLANK = r"[^ \t\n\r\f\v]"


def _whole_number(value: Any) -> Any:
    """JSON does not tell 3 from 3.0: accept a float with no fraction where a whole number goes."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Stored exactly as given (no stripping): only the checks say what is allowed.
Title = Annotated[str, StringConstraints(min_length=1, max_length=TITLE_MAX, pattern=NOT_BLANK)]
Content = Annotated[str, StringConstraints(min_length=1, max_length=CONTENT_MAX, pattern=NOT_BLANK)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX, pattern=r"^[A-Za-z0-9_-]+$")]
Seq = Annotated[int, Field(ge=1, le=SEQ_MAX), BeforeValidator(_whole_number)]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class PostCreated(Strict):
    id: Identifier
    title: Title


class CommentCreated(Strict):
    id: Identifier
    content: Content
    postId: Identifier


class Envelope(Strict):
    """What the bus adds to an event; a publisher may leave every field out."""

    id: Identifier | None = None
    seq: Seq | None = None
    source: Annotated[str, StringConstraints(max_length=100)] | None = None
    time: Annotated[str, StringConstraints(max_length=40)] | None = None


class PostCreatedEvent(Envelope):
    type: Literal["PostCreated"]
    data: PostCreated


class CommentCreatedEvent(Envelope):
    type: Literal["CommentCreated"]
    data: CommentCreated


# The event types this system understands, by name; any other type is carried and ignored.
SCHEMAS: dict[str, type[Envelope]] = {"PostCreated": PostCreatedEvent, "CommentCreated": CommentCreatedEvent}


class OtherEvent(Envelope):
    type: Annotated[
        str,
        StringConstraints(min_length=1, max_length=TYPE_MAX),
        Field(json_schema_extra={"not": {"enum": list(SCHEMAS)}}),
    ]
    data: Any = None


# One event on the wire, as the OpenAPI documents describe it.
WireEvent = PostCreatedEvent | CommentCreatedEvent | OtherEvent


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
    # The validated data of a known type, kept from from_dict so handlers do not validate twice.
    typed: BaseModel | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = {"type": self.type, "data": self.data, "id": self.id, "source": self.source, "time": self.time}
        if self.seq is not None:
            out["seq"] = self.seq
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> Event:
        """Validate a wire event; bare `{"type","data"}` events get an id and a time here."""
        if not isinstance(raw, dict):
            raise InvalidEvent("an event must be a JSON object with 'type' and 'data'")
        schema = SCHEMAS.get(raw.get("type"), OtherEvent) if isinstance(raw.get("type"), str) else OtherEvent
        try:
            wire = schema.model_validate(raw)
        except ValidationError as exc:
            prefix = f"{raw['type']}: " if schema is not OtherEvent else ""
            raise InvalidEvent(prefix + describe(exc)) from None
        return cls(
            type=wire.type,
            data=raw.get("data"),
            id=wire.id or new_id(),
            source=wire.source,
            time=wire.time or utc_now(),
            seq=wire.seq,
            typed=wire.data if schema is not OtherEvent else None,
        )

    def payload(self) -> BaseModel | None:
        """The typed data of a known event type; None for types this system does not know."""
        if self.typed is not None:
            return self.typed
        schema = SCHEMAS.get(self.type)
        if schema is None:
            return None
        return schema.model_fields["data"].annotation.model_validate(self.data)


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
        if error["type"] == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NOT_BLANK:
            message = "must not be blank"
        elif error["type"] in ("model_type", "dict_type"):
            message = "must be an object"
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
