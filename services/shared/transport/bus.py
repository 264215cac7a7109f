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
import time
from dataclasses import replace
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
import urllib3

from .. import signing
from ..events import Event, InvalidEvent
from ..http import Answer, HttpClient, Unreachable
from ..worker import Worker
from . import PAGE, Consumer, Description, RecentIds, RedeliveryRefused, TransportError, read_ahead

log = logging.getLogger(__name__)
NOT_FOUND = 404
TOO_LARGE = 413
REFUSED_AGAIN = 502  # what the bus answers when a dead letter sent again is refused again
HEARTBEAT = 2.0  # seconds: the bus sends an empty line on a stream idle this long (services/bus/stream.py)
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
        self._followers: list[LogFollower] = []

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
        return self._decode_log(self._fetch_log(after, limit), after, limit)

    def _fetch_log(self, after: int, limit: int) -> tuple[bool, Answer]:
        """`GET /events` after `after`: whether the bus is ours, and its answer (read, not decoded)."""
        try:
            ours = self._is_ours()
            response = self._call("GET", "/events", params={"after": after, "limit": limit})
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}: {response.text[:200]}")
            return ours, response
        except ValueError as exc:
            self._ours = None
            raise TransportError(f"could not read the event log at {self.bus_url}: {exc}") from None
        except TransportError:
            self._ours = None
            raise

    def _decode_log(self, fetched: tuple[bool, Answer], after: int, limit: int) -> list[Event]:
        ours, response = fetched
        try:
            if ours:
                return [Event.logged(raw) for raw in response.json()]  # validated by the bus when appended
            return _by_position(response.json(), after, limit)
        except ValueError as exc:
            self._ours = None
            raise TransportError(f"could not read the event log at {self.bus_url}: {exc}") from None

    def start_consuming(self, name: str, consumer: Consumer, types: Iterable[str] = ("#",), *,
                        position: Callable[[], int | None] | None = None) -> None:
        """The bus pushes every event to the consumer's own `POST /events` route: nothing to start. With
        `position` (the consumer's own, read at each connection), the log is also followed as one
        long-lived stream from there (`LogFollower`), and the bus pushes nothing while that stream is open."""
        if position is not None:
            follower = LogFollower(self, name, consumer, position)
            self._followers.append(follower)
            follower.start()

    def close(self) -> None:
        for follower in self._followers:
            follower.stop()
        self._http.close()

    # Inspection

    def describe(self) -> Description:
        return Description(
            kind=self.kind, name="the HTTP bus", url=self.bus_url, process="bus", log="the bus log",
            backlog_of="subscribers", dead_letters=True, filters_by_type=False, publish_url=self.bus_url + "/events",
        )

    def iter_log(self, after: int = 0, page: int = PAGE) -> Iterator[list[Event]]:
        return read_ahead(self._fetch_log, self._decode_log, after, page)

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


class LogFollower(Worker):
    """A consumer taking the bus's log as one long-lived stream (`GET /events/stream`, services/bus/stream.py)
    from its own position: each chunk of lines, as it comes, is one batch into the consumer.

    The events come in log order without a gap from the position asked for, so the consumer's
    position moves with them as with pushed events. When the stream drops (the bus restarted, the
    consumer failed to apply a batch, nothing heard for `SILENCE` seconds), it asks again from
    the consumer's position, with the one retry policy's backoff while that fails; the bus
    pushes meanwhile. A bus that has no stream to offer (another bus; one too busy) is pushing.
    """

    thread_name = "follow-log"
    idle_wait = None  # a bus with no stream: pushed to from then on

    SILENCE = 3 * HEARTBEAT
    NOT_YET = 0.1  # seconds between looks at a position not given yet

    def __init__(self, transport: HttpTransport, name: str, consumer: Consumer,
                 position: Callable[[], int | None]) -> None:
        super().__init__()
        self.transport = transport
        self.name = name
        self.consumer = consumer
        self.position = position
        self.thread_name = f"{name}-follow-log"
        self.what = f"following the event log for {name}"
        self.retry_on = TransportError
        self.streaming = False
        self.acknowledger = Acknowledger(transport, name, position)
        self._response: urllib3.BaseHTTPResponse | None = None
        self._pool = urllib3.PoolManager(
            num_pools=1, maxsize=1, retries=False, timeout=urllib3.Timeout(connect=1.0, read=self.SILENCE),
        )

    def step(self) -> int:
        """Follow one stream until it ends; the events it carried (raises TransportError when none could be read)."""
        after = self.position()
        if after is None:  # the consumer is still reading what it lacks from the log: the bus pushes meanwhile
            self._stop.wait(self.NOT_YET)
            return 1
        if not self.transport._is_ours():
            return 0
        try:
            response = self._pool.request(
                "GET", self.transport.bus_url + "/events/stream", fields={"after": after, "subscriber": self.name},
                preload_content=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise TransportError(f"could not open the event stream at {self.transport.bus_url}: {exc}") from None
        if response.status == NOT_FOUND:  # a bus from before streams: pushes carry everything
            response.drain_conn()
            log.info("the bus at %s offers no stream of its log; %s is pushed to", self.transport.bus_url, self.name)
            return 0
        if response.status != 200:
            detail = response.data[:200].decode("utf-8", "replace")
            raise TransportError(f"the bus refused to stream its log to {self.name}: HTTP {response.status}: {detail}")
        return self._follow(response)

    def _follow(self, response: urllib3.BaseHTTPResponse) -> int:
        taken = 0
        self._response, self.streaming = response, True
        # The bus pushes nothing while the stream is open, and the stream carries only what is after
        # the position: said at once, the consumer's cursor there moves past what its catch-up (or
        # pushes before) applied, which no stream batch would ever acknowledge.
        self.acknowledger.notify()
        try:
            rest = b""
            for chunk in response.read_chunked():
                *lines, rest = (rest + chunk).split(b"\n")
                events = [Event.logged(orjson.loads(line)) for line in lines if line]
                if events:
                    self.consumer(events)
                    taken += len(events)
                    self.acknowledger.notify()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if not taken and not self._stop.is_set():
                raise TransportError(f"the event stream from {self.transport.bus_url} dropped: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the consumer failed: asked for again from its position, later
            raise TransportError(f"{self.name} could not apply events from the stream: {exc}") from None
        finally:
            self._response, self.streaming = None, False
            response.close()  # never back into the pool half read
            response.release_conn()
        return max(taken, 1)  # a stream that carried on and ended is asked for again at once

    def start(self) -> None:
        self.acknowledger.start()
        super().start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            response.shutdown()  # the read in progress returns now, not after SILENCE
        super().stop(timeout)
        self._pool.clear()
        self.acknowledger.stop(timeout)


class Acknowledger(Worker):
    """Tells the bus the consumer's position after the batches it applied from the stream
    (`PUT /events/cursors/NAME`): the bus moves its cursor, so its backlog is what the
    consumer lacks and pushes resume from there if the stream ends. Off the events' path: the
    stream reader only wakes it. At once after a quiet spell, then at most every `INTERVAL`
    seconds, each saying the newest position: one request per write, on the bus, cost more CPU
    than the push it replaced."""

    INTERVAL = 0.05

    idle_wait = None

    def __init__(self, transport: HttpTransport, name: str, position: Callable[[], int | None]) -> None:
        super().__init__()
        self.transport = transport
        self.name = name
        self.position = position
        self.thread_name = f"{name}-acknowledge"
        self.what = f"telling the bus {name}'s position"
        self.retry_on = TransportError
        self.said = -1
        self.said_at = 0.0

    def step(self) -> int:
        if self.position() in (None, self.said):
            return 0
        pause = self.said_at + self.INTERVAL - time.monotonic()
        if pause > 0 and self._stop.wait(pause):
            return 0
        self.said_at = time.monotonic()
        seq = self.position()
        body = orjson.dumps({"seq": seq})
        response = self.transport._call("PUT", f"/events/cursors/{quote(self.name, safe='')}", body=body,
                                        headers=signing.headers(self.transport.secret, body, self.name))
        if response.status_code == NOT_FOUND:  # not one of the bus's subscribers: it keeps no cursor for it
            self.said = seq
            return 0
        if response.status_code != 200:
            raise TransportError(f"the bus answered {self.name}'s position with {response.status_code}: "
                                 f"{response.text[:200]}")
        self.said = seq
        return 1


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
