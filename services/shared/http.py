"""Service-to-service HTTP: keep-alive connections through urllib3, the library under `requests`.

The relay's publish and the bus's deliveries are on the path of every write. Measured on the
2-core machine against a bare endpoint, one POST costs its caller about 0.5 ms of CPU through
`requests` and 0.16 ms through urllib3 directly; with a relay and three deliveries per write,
that difference is most of a millisecond of one core. blogctl's one client (the command line,
the bench's load generator and the tests) is built on it for the same reason.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import urllib3


class Unreachable(Exception):
    """No answer: the connection was refused, dropped or timed out."""


class TimedOut(Unreachable):
    """Connected (or trying to), but no answer came within the timeout."""


@dataclass(frozen=True)
class Answer:
    status_code: int
    content: bytes
    headers: Mapping[str, str]

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return orjson.loads(self.content)


class HttpClient:
    """Pooled keep-alive connections to any number of hosts; safe to share between threads.

    Nothing is retried here (as with `requests`' default): every caller has its own retry
    policy, and a publish or a delivery retried blindly could hide a lost answer.
    """

    def __init__(self, *, timeout: float | tuple[float, float] = 5.0, connections: int = 4) -> None:
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        self._pool = urllib3.PoolManager(
            num_pools=16, maxsize=connections, retries=False, timeout=urllib3.Timeout(connect=connect, read=read)
        )

    def request(self, method: str, url: str, *, body: bytes | None = None,
                headers: Mapping[str, str] | None = None, params: Mapping[str, Any] | None = None,
                timeout: float | None = None) -> Answer:
        """One request; `timeout` (seconds) overrides the client's for this request only."""
        extra = {"timeout": urllib3.Timeout(connect=timeout, read=timeout)} if timeout is not None else {}
        try:
            response = self._pool.request(method, url, body=body, headers=headers, fields=params, **extra)
        except urllib3.exceptions.HTTPError as exc:
            timed_out = (isinstance(exc, urllib3.exceptions.TimeoutError)
                         and not isinstance(exc, urllib3.exceptions.NewConnectionError))  # a refusal is not a timeout
            raise (TimedOut if timed_out else Unreachable)(f"{type(exc).__name__}: {exc}") from None
        return Answer(response.status, response.data, response.headers)

    def post(self, url: str, body: bytes, headers: Mapping[str, str] | None = None) -> Answer:
        return self.request("POST", url, body=body, headers=headers)

    def get(self, url: str, params: Mapping[str, Any] | None = None,
            headers: Mapping[str, str] | None = None) -> Answer:
        return self.request("GET", url, params=params, headers=headers)

    def close(self) -> None:
        self._pool.clear()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
