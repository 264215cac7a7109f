"""Events are data: the envelope every event travels in, and the known event types.

Each event type is declared once, below, as a data model with `@declare`: its name, its
fields, and how it reads in a summary. The wire model (`SCHEMAS`), validation, the OpenAPI
union (`WireEvent`) and the factory (`Event.of`) are derived from the declarations.

On the wire an event is the course's bare `{"type", "data"}`; the bus adds the
envelope fields (`id`, `seq`, `source`, `time`). Either shape is accepted. An event made inside
a traced request or handler also carries its W3C trace context (`traceparent`, `tracestate`),
so the hops it causes join the same trace (services/shared/tracing.py).
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError, create_model

TITLE_MAX = 200
CONTENT_MAX = 2000
ID_MAX = 64
TYPE_MAX = 100
SEQ_MAX = 2**63 - 1  # SQLite's largest integer
TRACE_CONTEXT_MAX = 512  # the W3C's limit for tracestate; a traceparent is 55 characters


# "Not blank": at least one character that is neither white space (`str.isspace()`) nor an
# invisible format character (category Cf: U+200B, U+2060, U+FEFF, ...). A pattern rather than a
# check in code, so that the OpenAPI document states exactly the same rule; `\uXXXX` is read
# alike by Python, the Rust engine pydantic validates with and ECMAScript, and the characters
# above plane 0 are written as themselves. tests/unit/test_events.py derives it from unicodedata.
NOT_BLANK = (
    "[^\\u0009-\\u000d\\u001c-\\u0020\\u0085\\u00a0\\u00ad\\u0600-\\u0605\\u061c\\u06dd\\u070f\\u0890-\\u0891"
    "\\u08e2\\u1680\\u180e\\u2000-\\u200f\\u2028-\\u202f\\u205f-\\u2064\\u2066-\\u206f\\u3000\\ufeff"
    "\\ufff9-\\ufffb\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f]"
)


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


class Envelope(Strict):
    """What the bus adds to an event; a publisher may leave every field out."""

    id: Identifier | None = None
    seq: Seq | None = None
    source: Annotated[str, StringConstraints(max_length=100)] | None = None
    time: Annotated[str, StringConstraints(max_length=40)] | None = None
    # W3C trace context; one that does not parse is ignored, as the W3C spec says (tracing.py).
    traceparent: Annotated[str, StringConstraints(max_length=TRACE_CONTEXT_MAX)] | None = None
    tracestate: Annotated[str, StringConstraints(max_length=TRACE_CONTEXT_MAX)] | None = None


# The event types this system understands, by name (their wire models); any other type is carried and ignored.
SCHEMAS: dict[str, type[Envelope]] = {}


class EventData(Strict):
    """The data of an event type. A subclass declared with `@declare` is the whole declaration:
    its class name is the type's name, its fields the data, and the wire model, validation,
    OpenAPI schema and `Event.of` follow from it."""

    summary: ClassVar[str] = ""  # how `blogctl events` shows one, formatted with the data's fields


def declare(summary: str) -> Callable[[type[D]], type[D]]:
    """Register an event type: `@declare("post {id}: {title!r}") class PostCreated(EventData): ...`."""

    def register(data: type[D]) -> type[D]:
        name = data.__name__
        data.summary = summary
        SCHEMAS[name] = create_model(
            f"{name}Event", __base__=Envelope, __module__=__name__, type=(Literal[name], ...), data=(data, ...)
        )
        return data

    return register


D = TypeVar("D", bound=EventData)
Status = Literal["pending", "approved", "rejected"]  # a comment's moderation state
Decision = Literal["approved", "rejected"]


@declare("post {id}: {title!r}")
class PostCreated(EventData):
    """Posts: a post was written."""

    id: Identifier
    title: Title


@declare("comment {id} on post {postId}: {content!r}")
class CommentCreated(EventData):
    """Comments: a comment was written; it waits for moderation (events from before moderation carry no status)."""

    id: Identifier
    content: Content
    postId: Identifier
    status: Status = "pending"


@declare("comment {id} on post {postId} {status}: {content!r}")
class CommentModerated(EventData):
    """Moderation: a comment was decided."""

    id: Identifier
    postId: Identifier
    status: Decision
    content: Content


@declare("comment {id} on post {postId} now {status}: {content!r}")
class CommentUpdated(EventData):
    """Comments: a comment's status (and content) changed."""

    id: Identifier
    postId: Identifier
    status: Status
    content: Content


class OtherEvent(Envelope):
    type: Annotated[
        str,
        StringConstraints(min_length=1, max_length=TYPE_MAX),
        Field(json_schema_extra={"not": {"enum": list(SCHEMAS)}}),
    ]
    data: Any = None


# One event on the wire, as the OpenAPI documents describe it.
WireEvent = Union[(*SCHEMAS.values(), OtherEvent)]  # noqa: UP007 - built from the declarations


def summary(event_type: Any, data: Any) -> str | None:
    """One line about an event of a declared type (None for other types, or data that does not fit)."""
    if not isinstance(event_type, str) or event_type not in SCHEMAS or not isinstance(data, dict):
        return None
    try:
        return data_model(event_type).summary.format_map(data)
    except (KeyError, ValueError, IndexError, AttributeError):
        return None


def data_model(event_type: str) -> type[EventData]:
    return SCHEMAS[event_type].model_fields["data"].annotation


class InvalidEvent(ValueError):
    """An event whose envelope or (known type's) data does not fit its schema."""


def new_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, init=False)
class Event:
    type: str
    data: Any
    id: str = field(default_factory=new_id)
    source: str | None = None
    time: str = field(default_factory=utc_now)
    seq: int | None = None
    # The validated data of a known type, kept from from_dict so handlers do not validate twice.
    typed: BaseModel | None = field(default=None, compare=False, repr=False)
    traceparent: str | None = None  # the W3C trace context of the span that made or last carried it
    tracestate: str | None = None

    def __init__(self, type: str, data: Any, id: str | None = None, source: str | None = None,
                 time: str | None = None, seq: int | None = None, typed: BaseModel | None = None,
                 traceparent: str | None = None, tracestate: str | None = None) -> None:
        # Written to the instance's dict at once: a frozen dataclass's own __init__ sets each field
        # through object.__setattr__, 4x the cost, and a rebuild makes tens of thousands a second.
        self.__dict__.update(
            type=type, data=data, id=new_id() if id is None else id, source=source,
            time=utc_now() if time is None else time, seq=seq, typed=typed, traceparent=traceparent,
            tracestate=tracestate,
        )

    def to_dict(self) -> dict[str, Any]:
        out = {"type": self.type, "data": self.data, "id": self.id, "source": self.source, "time": self.time}
        if self.seq is not None:
            out["seq"] = self.seq
        if self.traceparent is not None:
            out["traceparent"] = self.traceparent
            if self.tracestate:
                out["tracestate"] = self.tracestate
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
            traceparent=wire.traceparent,
            tracestate=wire.tracestate,
        )

    @classmethod
    def logged(cls, raw: Any) -> Event:
        """An event read back from a log of ours, which validated it when it was appended: made as it
        is, not validated again (a rebuild reads tens of thousands a second; validating each was half
        of Query's CPU). What lacks the envelope a log gives (an id, a time) is validated as any other."""
        if not isinstance(raw, dict) or not (isinstance(raw.get("id"), str) and isinstance(raw.get("time"), str)
                                             and isinstance(raw.get("type"), str)):
            return cls.from_dict(raw)
        get = raw.get
        return cls(raw["type"], get("data"), raw["id"], get("source"), raw["time"], get("seq"), None,
                   get("traceparent"), get("tracestate"))

    def payload(self) -> BaseModel | None:
        """The typed data of a known event type; None for types this system does not know."""
        if self.typed is not None:
            return self.typed
        schema = SCHEMAS.get(self.type)
        if schema is None:
            return None
        return data_model(self.type).model_validate(self.data)

    @classmethod
    def of(cls, data: EventData, source: str | None = None) -> Event:
        """A new event carrying `data`, of the type `data` declares."""
        return cls(type(data).__name__, data.model_dump(), source=source, typed=data)


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


C = TypeVar("C")  # what a store hands each handler: its transaction, the changes it collects, ...

# Every service's handlers have this one signature: `handler(data, event, ctx)`, `data` the
# event's typed data (the `@declare`d class), `ctx` what the service's store passes.
Handler = Callable[[Any, "Event", C], None]
# A service's handler table, keyed by event class: what the service consumes is its keys.
Handlers = Mapping[type[EventData], Handler[C]]


def by_type_name(handlers: Handlers[C]) -> dict[str, Handler[C]]:
    """The handler table by type name, as an event names its type on the wire: what `dispatch` takes."""
    return {data.__name__: handler for data, handler in handlers.items()}


def dispatch(handlers: Mapping[str, Handler[C]], event: Event, ctx: C) -> bool:
    """Route `event` to its handler (`handlers` from `by_type_name`); unknown types are acknowledged
    and ignored (returns False)."""
    handler = handlers.get(event.type)
    if handler is None:
        return False
    handler(event.payload(), event, ctx)
    return True
