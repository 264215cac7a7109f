"""The one HTTP client blogctl uses to talk to the services.

Every failure (nothing listening, a timeout, a 4xx/5xx answer, a body that is not JSON)
becomes a `ServiceError` whose message is one line naming the service and what to do.
"""
from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from services.shared.config import Config

from .errors import BlogctlError
from .polling import wait_for


class ServiceError(BlogctlError):
    def __init__(self, message: str, *, service: str, status: int | None = None, holder: str | None = None,
                 body: dict | None = None) -> None:
        super().__init__(message)
        self.service = service
        self.status = status  # the HTTP status, or None when no answer came back
        self.holder = holder  # another program answering on the service's port, in words
        self.body = body  # the service's own JSON answer to a refused request


class Session(Protocol):
    """The part of `requests.Session` the client uses (tests hand in one backed by Flask test clients)."""

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response: ...


class BlogClient:
    def __init__(self, config: Config, *, session: Session | None = None, timeout: float = 5.0) -> None:
        self.config = config
        self.session = session or requests.Session()
        self.timeout = timeout

    def address(self, service: str) -> str:
        return urlsplit(self.config.url(service)).netloc

    def _request(self, service: str, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
        url = self.config.url(service) + path
        where = self.address(service)
        try:
            response = self.session.request(method, url, timeout=timeout or self.timeout, **kwargs)
        except requests.ConnectionError:
            raise ServiceError(
                f"{service} service is not reachable at {where} — is it running? try `blogctl up`", service=service
            ) from None
        except requests.Timeout:
            raise ServiceError(
                f"{service} service at {where} did not answer within {timeout or self.timeout:g}s — "
                f"is it overloaded? check `blogctl logs {service}`", service=service,
            ) from None
        except requests.RequestException as exc:
            raise ServiceError(f"request to {service} service at {where} failed: {exc}", service=service) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        refusal = isinstance(body, dict) and isinstance(body.get("error"), str)  # how every service says no
        if body is None or (response.status_code >= 400 and not refusal):
            holder = f"another program ({_answer(response)})"
            raise ServiceError(
                f"{holder} answers on {where}, not the {service} service — stop it, or give {service} another port "
                f"(--port {service}=N or BLOG_{service.upper()}_PORT)",
                service=service, status=response.status_code, holder=holder,
            )
        if response.status_code >= 400:
            raise ServiceError(
                f"{service} service refused {method} {path} ({response.status_code}): {body['error']}",
                service=service, status=response.status_code, body=body,
            )
        return body

    # Every service
    def health(self, service: str, *, timeout: float = 1.0) -> dict:
        return self._request(service, "GET", "/health", timeout=timeout)

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

    # Bus
    def events(self, *, after: int = 0, limit: int | None = None, event_type: str | None = None) -> list[dict]:
        params: dict[str, Any] = {"after": after}
        if limit is not None:
            params["limit"] = limit
        if event_type:
            params["type"] = event_type
        return self._request("bus", "GET", "/events", params=params)

    def subscribers(self) -> list[dict]:
        return self._request("bus", "GET", "/subscribers")

    def dead_letters(self, subscriber: str | None = None) -> list[dict]:
        params = {"subscriber": subscriber} if subscriber else {}
        return self._request("bus", "GET", "/dead-letters", params=params)

    def redeliver(self, subscriber: str, seq: int) -> dict:
        return self._request("bus", "POST", f"/dead-letters/{_segment(subscriber)}/{seq}/redeliver")

    def page_url(self) -> str:
        """The blog page, served by Query."""
        return self.config.url("query") + "/"


def _segment(value: str) -> str:
    """`value` as one URL path segment: a post id like `a/b` or `..` must not change the route."""
    return requests.utils.quote(value, safe="")


def _answer(response: requests.Response) -> str:
    """What a foreign answer was, without its page: `HTTP 404, text/html, server nginx`."""
    parts = [f"HTTP {response.status_code}", response.headers.get("Content-Type", "no content type").split(";")[0]]
    if response.headers.get("Server"):
        parts.append(f"server {response.headers['Server'][:60]}")
    return ", ".join(parts)
