"""The home-made event bus over HTTP (`services/bus`): the default transport.

Publishing is `POST /events` to the bus, which logs before it answers; delivery is pushed by
the bus to each subscriber's `POST /events` (the service's own route), so `start_consuming` only
records which types a consumer takes, for a receiver that hands it what the bus pushed.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson

from .. import signing
from ..events import Event
from ..http import HttpClient, Unreachable
from . import Consumer, Description, TransportError


class HttpTransport:
    kind = "http"

    def __init__(
        self, bus_url: str, *, timeout: float = 5.0, source: str | None = None, secret: str | None = None,
        http: HttpClient | None = None,
    ) -> None:
        self.bus_url = bus_url.rstrip("/")
        self.secret = secret
        self.source = source  # the publisher, as the bus's log names it
        self._http = http or HttpClient(timeout=timeout)  # keep-alive, shared by the relay and catch-up threads
        self._receivers: dict[str, Consumer] = {}

    @classmethod
    def from_url(cls, url: str, config: Any = None, source: str | None = None) -> HttpTransport:
        return cls(url, source=source, secret=getattr(config, "secret", None))

    # Transport

    def publish(self, events: Sequence[Event]) -> None:
        body = orjson.dumps([event.to_dict() for event in events])
        response = self._call("POST", "/events", body=body, headers=signing.headers(self.secret, body))
        if response.status_code != 200:
            raise TransportError(f"event bus answered {response.status_code}: {response.text[:200]}")

    def read_log(self, after: int = 0, limit: int = 1000) -> list[Event]:
        response = self._call("GET", "/events", params={"after": after, "limit": limit})
        try:
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}: {response.text[:200]}")
            return [Event.from_dict(raw) for raw in response.json()]
        except ValueError as exc:
            raise TransportError(f"could not read the event log at {self.bus_url}: {exc}") from None

    def start_consuming(self, name: str, consumer: Consumer, types: Iterable[str] = ("#",)) -> None:
        """Nothing to start: the bus pushes to the service's `POST /events`. Recorded for `receiver`."""
        wanted = frozenset(types)
        self._receivers[name] = lambda events: consumer(
            [e for e in events if "#" in wanted or e.type in wanted]
        )

    def receiver(self, name: str) -> Consumer:
        """What a `POST /events` route for consumer `name` hands its events to: only the types it asked
        for (KeyError: nothing consumes as `name` here, or the transport was closed)."""
        return self._receivers[name]

    def close(self) -> None:
        self._receivers.clear()  # a closed transport takes nothing more
        self._http.close()

    # Inspection

    def describe(self) -> Description:
        return Description(
            kind=self.kind, name="the HTTP bus", url=self.bus_url, process="bus", log="the bus log",
            backlog_of="subscribers", dead_letters=True,
        )

    def backlog(self) -> list[dict[str, Any]]:
        """Each subscriber of the bus: its cursor, its lag (`waiting`), failures and last error."""
        response = self._call("GET", "/subscribers")
        if response.status_code != 200:
            raise TransportError(f"event bus answered GET /subscribers with {response.status_code}")
        return [dict(subscriber, waiting=subscriber.get("lag")) for subscriber in response.json()]

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
