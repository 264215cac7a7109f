"""The one HTTP client: the command line, the bench and the tests drive the services through it.

It sits on the services' own urllib3 client (`services.shared.http.HttpClient`): the bench's
load generator runs it from eight threads beside the services on two cores, where `requests`
costs three times the CPU per request and took 15-40% off the load it could generate.

Every failure (nothing listening, a timeout, a 4xx/5xx answer, a body that is not JSON)
becomes a `ServiceError` whose message is one line naming the service and what to do.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

import orjson

from services.shared.config import Config
from services.shared.http import Answer, HttpClient, TimedOut, Unreachable

from .errors import BlogctlError
from .polling import wait_for

JSON = {"Content-Type": "application/json"}


class ServiceError(BlogctlError):
    def __init__(self, message: str, *, service: str, status: int | None = None, holder: str | None = None,
                 body: dict | None = None) -> None:
        super().__init__(message)
        self.service = service
        self.status = status  # the HTTP status, or None when no answer came back
        self.holder = holder  # another program answering on the service's port, in words
        self.body = body  # the service's own JSON answer to a refused request


class Http(Protocol):
    """What the client needs of `HttpClient` (the CLI's tests hand in one backed by Flask test clients).

    Raises `Unreachable` (or `TimedOut`) when no answer comes back.
    """

    def request(self, method: str, url: str, *, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                params: Mapping[str, Any] | None = None, timeout: float | None = None) -> Answer: ...

    def close(self) -> None: ...


class BlogClient:
    def __init__(self, config: Config, *, http: Http | None = None, timeout: float = 5.0) -> None:
        self.config = config
        self.http = http or HttpClient(timeout=timeout)
        self.timeout = timeout
        self._base = {name: config.url(name) for name in config.ports}

    def address(self, service: str) -> str:
        return urlsplit(self._base[service]).netloc

    def request(self, service: str, method: str, path: str, *, json: Any = None, body: bytes | None = None,
                params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
                timeout: float | None = None) -> Answer:
        """One request to `service`; its answer unless it failed (2xx and 304 are answers, the rest ServiceError)."""
        if json is not None:
            body, headers = orjson.dumps(json), {**JSON, **(headers or {})}
        url = self._base[service] + path
        if params and method != "GET":
            url += "?" + urlencode(params)
            params = None
        try:
            answer = self.http.request(method, url, body=body, headers=headers, params=params,
                                       timeout=timeout or self.timeout)
        except TimedOut:
            raise ServiceError(
                f"{service} service at {self.address(service)} did not answer within {timeout or self.timeout:g}s — "
                f"is it overloaded? check `blogctl logs {service}`", service=service,
            ) from None
        except Unreachable:
            raise ServiceError(
                f"{service} service is not reachable at {self.address(service)} — is it running? try `blogctl up`",
                service=service,
            ) from None
        if answer.status_code >= 400:
            body = _json_or_none(answer)
            if not (isinstance(body, dict) and isinstance(body.get("error"), str)):  # how every service says no
                raise self._foreign(service, answer)
            raise ServiceError(
                f"{service} service refused {method} {path} ({answer.status_code}): {body['error']}",
                service=service, status=answer.status_code, body=body,
            )
        return answer

    def _request(self, service: str, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.request(service, method, path, **kwargs)
        body = _json_or_none(answer)
        if body is None:
            raise self._foreign(service, answer)
        return body

    def _foreign(self, service: str, answer: Answer) -> ServiceError:
        """Something that is not the service answered on its port."""
        holder = f"another program ({_describe(answer)})"
        return ServiceError(
            f"{holder} answers on {self.address(service)}, not the {service} service — stop it, or give {service} "
            f"another port (--port {service}=N or BLOG_{service.upper()}_PORT)",
            service=service, status=answer.status_code, holder=holder,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> BlogClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Every service
    def health(self, service: str, *, timeout: float = 1.0) -> dict:
        return self._request(service, "GET", "/health", timeout=timeout)

    def metrics(self, service: str, *, timeout: float = 1.0) -> str:
        """`GET /metrics`: the service's counters and levels in Prometheus' text format."""
        return self.request(service, "GET", "/metrics", timeout=timeout).text

    # Posts
    def create_post(self, title: str) -> dict:
        return self._request("posts", "POST", "/posts", json={"title": title})

    def posts(self) -> dict:
        return self._request("posts", "GET", "/posts")

    # Comments
    def create_comment(self, post_id: str, content: str, *, wait: float = 0.0) -> list[dict]:
        """Add a comment; for up to `wait` seconds, retry while Comments has not yet heard of the post."""
        outcome: dict[str, Any] = {}

        def attempt() -> bool:
            try:
                outcome["comments"] = self._request(
                    "comments", "POST", f"/posts/{_segment(post_id)}/comments", json={"content": content}
                )
                return True
            except ServiceError as exc:
                if exc.status != 404:
                    raise
                outcome["error"] = exc
                return False

        if wait_for(attempt, timeout=wait, interval=0.05):
            return outcome["comments"]
        raise ServiceError(
            f"post {post_id!r} is not known to the comments service — check the id with `blogctl post list`",
            service="comments", status=404,
        ) from outcome["error"]

    def comments(self, post_id: str) -> list[dict]:
        return self._request("comments", "GET", f"/posts/{_segment(post_id)}/comments")

    # Query
    def view(self) -> dict:
        return self._request("query", "GET", "/posts")

    def page_url(self) -> str:
        """The blog page, served by Query."""
        return self.config.url("query") + "/"


def _segment(value: str) -> str:
    """`value` as one URL path segment: a post id like `a/b` or `..` must not change the route."""
    return quote(value, safe="")


def _json_or_none(answer: Answer) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None


def _describe(answer: Answer) -> str:
    """What a foreign answer was, without its page: `HTTP 404, text/html, server nginx`."""
    parts = [f"HTTP {answer.status_code}", answer.headers.get("Content-Type", "no content type").split(";")[0]]
    if answer.headers.get("Server"):
        parts.append(f"server {answer.headers['Server'][:60]}")
    return ", ".join(parts)
