"""The home-made event bus over HTTP (`services/bus`): the default transport.

Publishing is `POST /events` to the bus, which logs before it answers; delivery is pushed by
the bus to each subscriber's `POST /events` (the service's own route, `web.events_blueprint`),
every event to every subscriber (a handler table acknowledges the types it does not take), so
`start_consuming` has nothing to start. An event a subscriber keeps rejecting is parked as a
dead letter, listed and sent again through this transport's inspection.

It also works with the course's own bus in our place (one `{"type","data"}` per POST, a log
of bare events without ids or sequence numbers, a 100 kB body limit). Ours answers
`GET /health` with `{"service": "bus"}`; any other bus is sent the course's shape, one event
per request, and its log is read by position (an event's seq is its index + 1). A batch
refused as too large (413) is split in halves until it passes, down to one event.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from .. import signing
from ..events import Event, InvalidEvent
from ..http import Answer, HttpClient, Unreachable
from . import PAGE, Consumer, Description, RecentIds, RedeliveryRefused, TransportError, log_pages

log = logging.getLogger(__name__)
NOT_FOUND = 404
TOO_LARGE = 413
REFUSED_AGAIN = 502  # what the bus answers when a dead letter sent again is refused again
UNREADABLE = "Unreadable"  # the type given to an entry of another bus's log that is not an event


class HttpTransport:
    kind = "http"
    messaging_system = "blogctl_bus"  # what a trace's `messaging.system` says
    between_processes = True

    def __init__(
        self, bus_url: str, *, timeout: float = 5.0, source: str | None = None, secret: str | None = None,
        http: HttpClient | None = None,
    ) -> None:
        self.bus_url = bus_url.rstrip("/")
        self.secret = secret
        self.source = source  # the publisher, as the bus's log names it
        self._http = http or HttpClient(timeout=timeout)  # keep-alive, shared by the relay and catch-up threads
        self._ours: bool | None = None  # is the bus ours? asked on first use, again after a failure
        self._sent = RecentIds()  # to another bus, one event per request: a retried batch skips what it took

    @classmethod
    def from_url(cls, url: str, config: Any = None, source: str | None = None) -> HttpTransport:
        return cls(url, source=source, secret=getattr(config, "secret", None))

    # Transport

    def publish(self, events: Sequence[Event], *, timeout: float | None = None) -> None:
        try:
            if self._is_ours():
                self._publish_batch(list(events), timeout)
            else:
                for event in events:
                    if event.id not in self._sent:
                        self._post({"type": event.type, "data": event.data}, timeout=timeout)
                        self._sent.add(event.id)
        except TransportError:
            self._ours = None  # the bus may have been replaced: ask again next time
            raise

    def _publish_batch(self, events: list[Event], timeout: float | None) -> None:
        answer = self._post([event.to_dict() for event in events], refuse_too_large=len(events) == 1, timeout=timeout)
        if answer is None:  # too large: each half on its own, in order
            half = len(events) // 2
            log.info("the bus refused %d events as too large; sending them in halves", len(events))
            self._publish_batch(events[:half], timeout)
            self._publish_batch(events[half:], timeout)

    def _post(self, payload, *, refuse_too_large: bool = True, timeout: float | None = None) -> Answer | None:
        body = orjson.dumps(payload)
        own_timeout = {} if timeout is None else {"timeout": timeout}
        response = self._call("POST", "/events", body=body, headers=signing.headers(self.secret, body, self.source),
                              **own_timeout)
        if response.status_code == TOO_LARGE and not refuse_too_large:
            return None
        if not 200 <= response.status_code < 300:
            raise TransportError(f"event bus answered {response.status_code}: {response.text[:200]}")
        return response

    def _is_ours(self) -> bool:
        """Whether the bus is this project's (its /health says so), else the course's or another."""
        if self._ours is None:
            response = self._call("GET", "/health")
            try:
                self._ours = response.status_code == 200 and response.json().get("service") == "bus"
            except (ValueError, AttributeError):  # not JSON, or not an object: not ours
                self._ours = False
            if not self._ours:
                log.info("the bus at %s is not this project's: one event per request, its log read by position",
                         self.bus_url)
        return self._ours

    def read_log(self, after: int = 0, limit: int = 1000) -> list[Event]:
        try:
            ours = self._is_ours()
            response = self._call("GET", "/events", params={"after": after, "limit": limit})
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}: {response.text[:200]}")
            if ours:
                return [Event.logged(raw) for raw in response.json()]  # validated by the bus when appended
            return _by_position(response.json(), after, limit)
        except ValueError as exc:
            self._ours = None
            raise TransportError(f"could not read the event log at {self.bus_url}: {exc}") from None
        except TransportError:
            self._ours = None
            raise

    def start_consuming(self, name: str, consumer: Consumer, types: Iterable[str] = ("#",)) -> None:
        """Nothing to start: the bus pushes every event to the consumer's own `POST /events` route."""

    def close(self) -> None:
        self._http.close()

    # Inspection

    def describe(self) -> Description:
        return Description(
            kind=self.kind, name="the HTTP bus", url=self.bus_url, process="bus", log="the bus log",
            backlog_of="subscribers", dead_letters=True, filters_by_type=False, publish_url=self.bus_url + "/events",
        )

    def iter_log(self, after: int = 0, page: int = PAGE) -> Iterator[list[Event]]:
        return log_pages(self.read_log, after, page)

    def backlog(self) -> list[dict[str, Any]]:
        """Each subscriber of the bus: its cursor, its lag (`waiting`), failures and last error."""
        response = self._call("GET", "/subscribers")
        if response.status_code != 200:
            raise TransportError(f"event bus answered GET /subscribers with {response.status_code}")
        return [dict(subscriber, waiting=subscriber.get("lag")) for subscriber in response.json()]

    def dead_letters(self, subscriber: str | None = None) -> list[dict[str, Any]]:
        """`GET /dead-letters`: each parked event with its subscriber, attempts and last error."""
        response = self._call("GET", "/dead-letters", params={"subscriber": subscriber} if subscriber else {})
        return self._answer(response, "GET /dead-letters")

    def redeliver(self, subscriber: str, seq: int) -> None:
        """`POST /dead-letters/{subscriber}/{seq}/redeliver`: the bus sends it now and answers with the outcome."""
        response = self._call("POST", f"/dead-letters/{quote(subscriber, safe='')}/{seq}/redeliver")
        self._answer(response, "POST /dead-letters/.../redeliver")

    def _answer(self, response, what: str) -> Any:
        """The JSON of a 200; the bus's own error as LookupError (404), RedeliveryRefused (502), else TransportError."""
        if response.status_code == 200:
            return response.json()
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            error = response.text[:200]
        if response.status_code == NOT_FOUND:
            raise LookupError(error)
        if response.status_code == REFUSED_AGAIN:
            raise RedeliveryRefused(error)
        raise TransportError(f"event bus answered {what} with {response.status_code}: {error}")

    def reset(self) -> None:
        """Delete the bus's log, cursors and dead letters (`DELETE /events`)."""
        response = self._call("DELETE", "/events", body=b"", headers=signing.headers(self.secret, b""))
        if response.status_code != 200:
            raise TransportError(f"event bus answered DELETE /events with {response.status_code}: "
                                 f"{response.text[:200]}")

    def _call(self, method: str, path: str, **kwargs: Any):
        try:
            return self._http.request(method, self.bus_url + path, **kwargs)
        except Unreachable as exc:
            where = urlsplit(self.bus_url).netloc
            raise TransportError(f"bus service is not reachable at {where} ({exc})") from None


def _by_position(whole: object, after: int, limit: int) -> list[Event]:
    """A log in the course's shape (the whole array, bare events): each event's seq is its index + 1.

    An entry that is not a valid event (the course's bus logs whatever it was sent) is read as an
    event of type `Unreadable`, which no handler takes: reading goes on past it, positions intact.
    An entry without an id gets one made from its position and content, the same at every read.
    """
    if not isinstance(whole, list):
        raise ValueError("the event log is not a JSON array")
    events = []
    for seq, raw in enumerate(whole[after : after + limit], start=after + 1):
        try:
            event = Event.from_dict(raw)
        except InvalidEvent as exc:
            log.warning("entry %d of the event log is not an event (%s); passed over", seq, exc)
            event = Event(UNREADABLE, None)
        if not (isinstance(raw, dict) and raw.get("id")):
            entry = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS, default=str)
            event = replace(event, id="entry-" + hashlib.sha256(b"%d:%b" % (seq, entry)).hexdigest()[:40])
        events.append(replace(event, seq=seq))
    return events
