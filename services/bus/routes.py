"""The bus's routes: publish into the log, read it, reset it, its subscribers and dead letters;
and the bus's store, the log with its deliveries."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, jsonify, request, stream_with_context
from pydantic import BaseModel, Field

from services.shared import logs, tracing
from services.shared.components import components
from services.shared.config import Config
from services.shared.db import Database
from services.shared.events import SEQ_MAX, Event, WireEvent, utc_now
from services.shared.metrics import Subscribers, metrics_of
from services.shared.openapi import Error, Operation, Param
from services.shared.service import Built
from services.shared.signing import HEADER, SOURCE_HEADER, SignatureError, verify
from services.shared.transport import UNKNOWN_SOURCE
from services.shared.web import ApiError, int_arg, json_body, parse_events

from .delivery import Delivery, DeliveryFailed
from .log import EventLog, Sent, row_to_event
from .stream import PastTheEnd, Streams, TooManyStreams

PUBLISHER = re.compile(r"[A-Za-z0-9_.:-]{1,100}")  # a publisher's or subscriber's name


class Cursor(BaseModel):
    """What a streaming subscriber says: it has applied every event up to `seq`."""

    seq: int = Field(ge=0, le=SEQ_MAX)


NAME = Param("name", "path", {"type": "string"})
SUBSCRIBER = Param("subscriber", "query", {"type": "string"})
OPERATIONS = [
    Operation("post", "/events", "Publish one event or an array of events; each is logged before the answer",
              {200: dict[str, Any], 400: Error, 401: Error}, body=WireEvent | list[WireEvent]),
    Operation("get", "/events", "The event log, oldest first, streamed", {200: list[WireEvent], 400: Error}, params=(
        Param("after", "query", {"type": "integer", "minimum": 0, "maximum": SEQ_MAX}),
        Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": SEQ_MAX}),
        Param("type", "query", {"type": "string"}),
    )),
    Operation("get", "/events/stream", "The log after `after` as one long-lived response, one JSON event a line"
              " (an empty line when idle), for `subscriber`, which is not pushed to meanwhile",
              {200: None, 400: Error, 409: Error, 503: Error}, params=(
        Param("after", "query", {"type": "integer", "minimum": 0, "maximum": SEQ_MAX}),
        Param("subscriber", "query", {"type": "string", "pattern": f"^{PUBLISHER.pattern}$"}, required=True),
    )),
    Operation("delete", "/events", "Delete the whole log, every cursor and dead letter (tests and the bench reset with it)",
              {200: dict[str, Any], 401: Error}),
    Operation("get", "/subscribers", "Each subscriber's cursor, lag and last error", {200: list[dict[str, Any]]}),
    Operation("put", "/events/cursors/{name}", "A streaming subscriber says it has every event up to `seq`",
              {200: dict[str, Any], 400: Error, 401: Error, 404: Error}, params=(NAME,), body=Cursor),
    Operation("get", "/dead-letters", "Events parked after a subscriber kept rejecting them",
              {200: list[dict[str, Any]]}, params=(SUBSCRIBER,)),
    Operation("post", "/dead-letters/{name}/{seq}/redeliver", "Send one dead letter to its subscriber again",
              {200: dict[str, Any], 502: Error}, params=(NAME, Param("seq", "path", {"type": "integer", "minimum": 0, "maximum": SEQ_MAX}))),
]




def publisher() -> str:
    """Who sent this request, as it named itself in X-Blog-Source (covered by the signature when
    the formation signs); "unknown" when it did not say."""
    name = request.headers.get(SOURCE_HEADER)
    if name is None:
        return UNKNOWN_SOURCE
    if not PUBLISHER.fullmatch(name):
        raise ApiError(400, f"{SOURCE_HEADER} must be 1-100 letters, digits or '_.:-', not {name[:120]!r}")
    return name


@dataclass(frozen=True)
class Bus:
    """The bus's store: the log, the deliveries from it to each subscriber, and the streams of it."""

    log: EventLog
    delivery: Delivery
    streams: Streams

    def subscribers(self) -> list[dict]:
        last = self.log.last_seq()
        return [dict(vars(s), lag=last - s.cursor) for s in self.delivery.statuses()]

    def health(self) -> dict:
        return dict(last_seq=self.log.last_seq(), subscribers=self.subscribers(), streams=self.streams.open())


def open_bus(db: Database, config: Config, **delivery_options) -> Bus:
    """The log in `db`, delivered to the configured subscribers; those whose service the table
    says is delivered first (Query: its view is what a reader waits for) are served first."""
    event_log = EventLog(db)
    options = dict(attempts=config.delivery_attempts, timeout=config.delivery_timeout, secret=config.secret)
    first = tuple(s.name for s in config.subscribers
                  if s.name in config.instances and config.service(s.name).delivered_first)
    delivery = Delivery(event_log, config.subscribers, **{"first": first, **options, **delivery_options})
    return Bus(event_log, delivery, Streams(event_log, delivery))


def routes(app: Flask, built: Built[Bus]) -> list[Operation]:
    config, event_log, delivery, streams = built.config, built.store.log, built.store.delivery, built.store.streams
    components(app).add("delivery", delivery)
    components(app).add("streams", streams)
    metrics_of(app).add(Subscribers(event_log.last_seq, delivery.statuses))

    @app.post("/events")
    def publish():
        events = parse_events()
        body = json_body()  # parsed once, cached
        raw = body if isinstance(body, list) else [body]
        # The bus, not the publisher, says who published and when: what an event carried is kept beside.
        source, received = publisher(), utc_now()
        # Each sampled event's `append` span is what the log keeps as its trace context (deliveries follow
        # it); an event published without one may start a trace here.
        def stamp(e: Event, traceparent: str | None, tracestate: str | None) -> Event:
            return Event(e.type, e.data, e.id, source, received, None, e.typed, traceparent, tracestate)

        with tracing.appending(events, stamp) as traced:
            appended = event_log.append(traced, [Sent(r.get("source"), r.get("time")) for r in raw])
        logged = [(event, a.seq) for event, a in zip(traced, appended) if not a.duplicate]  # a retry is acknowledged only
        logs.event_lines("appended", [event for event, _ in logged], seqs=[seq for _, seq in logged],
                         detail=f"from {source}", source=source)
        if isinstance(body, list):
            return jsonify(status="OK", events=[vars(a) for a in appended])
        return jsonify(status="OK", **vars(appended[0]))

    @app.get("/events")
    def read_log():
        after = int_arg("after", 0, 0)
        limit = int_arg("limit", None, 1)
        event_type = request.args.get("type") or None
        pages = event_log.pages(after, limit, event_type)

        def stream():
            # A page at a time, one chunk each: the response is never built whole in memory.
            yield "["
            for i, page in enumerate(pages):
                yield ("," if i else "") + ",".join(row["wire"] for row in page)
            yield "]"

        return Response(stream_with_context(stream()), mimetype="application/json")

    @app.get("/events/stream")
    def stream_log():
        after = int_arg("after", 0, 0)
        subscriber = request.args.get("subscriber", "")
        if not PUBLISHER.fullmatch(subscriber):
            raise ApiError(400, f"subscriber must be 1-100 letters, digits or '_.:-', not {subscriber[:120]!r}")
        try:
            lines = streams.follow(subscriber, after)
        except PastTheEnd as exc:
            raise ApiError(409, str(exc)) from None
        except TooManyStreams as exc:
            raise ApiError(503, f"{exc}; events are pushed to {subscriber} meanwhile") from None
        return Response(lines, mimetype="application/x-ndjson", headers={"Cache-Control": "no-store"})

    @app.delete("/events")
    def reset():
        if config.secret:  # a write like any other: signed (over the empty body) when the formation is
            try:
                verify(config.secret, request.get_data(), request.headers.get(HEADER))
            except SignatureError as exc:
                raise ApiError(401, f"unauthorised reset: {exc}") from None
        event_log.reset()
        delivery.reset()
        streams.reset()
        return jsonify(status="OK")

    @app.get("/subscribers")
    def list_subscribers():
        return jsonify(built.store.subscribers())

    def deliverer(name: str):
        found = delivery.deliverers.get(name)
        if found is None:
            raise ApiError(404, f"no subscriber named {name!r} (subscribers: {', '.join(delivery.deliverers)})")
        return found

    @app.put("/events/cursors/<name>")
    def acknowledge(name: str):
        if config.secret:  # it decides what a subscriber is sent again: signed when the formation signs
            try:
                verify(config.secret, request.get_data(), request.headers.get(HEADER),
                       source=request.headers.get(SOURCE_HEADER))
            except SignatureError as exc:
                raise ApiError(401, f"unauthorised cursor move: {exc}") from None
        body = json_body()
        seq = body.get("seq") if isinstance(body, dict) else None
        if isinstance(seq, float) and seq.is_integer():  # JSON's 3.0 is the integer 3
            seq = int(seq)
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= SEQ_MAX:
            raise ApiError(400, f'the body must be {{"seq": N}} with N from 0 to {SEQ_MAX}')
        deliverer(name).acknowledged(seq)
        return jsonify(status="OK", subscriber=name, cursor=deliverer(name).status.cursor)

    @app.get("/dead-letters")
    def list_dead_letters():
        name = request.args.get("subscriber") or None
        if name is not None:
            deliverer(name)
        return jsonify([
            {"subscriber": row["subscriber"], "seq": row["seq"], "attempts": row["attempts"],
             "error": row["error"], "parked_at": row["parked_at"], "event": row_to_event(row).to_dict()}
            for row in event_log.dead_letters(name)
        ])

    @app.post("/dead-letters/<name>/<int:seq>/redeliver")
    def redeliver(name: str, seq: int):
        try:
            deliverer(name).redeliver(seq)
        except LookupError as exc:
            raise ApiError(404, str(exc)) from None
        except DeliveryFailed as exc:
            raise ApiError(502, f"{name} refused event {seq} again: {exc}; it stays a dead letter") from None
        return jsonify(status="OK", subscriber=name, seq=seq)

    return OPERATIONS
