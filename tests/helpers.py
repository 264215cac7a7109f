"""Test helpers: free ports, waiting for a condition, and real service processes that cannot leak."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

import requests

from services.shared.config import SERVICES

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, message: str = "") -> T:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (requests.RequestException, AssertionError) as exc:
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or condition}: last error {last_exc}")


def port_is_listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Formation:
    """The four services as real processes on free ports, each in its own process group."""

    def __init__(self, data_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.ports = {service: free_port() for service in SERVICES}
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "BLOG_DATA_DIR": str(data_dir),
            "BLOG_HOST": "127.0.0.1",
            **{f"BLOG_{s.upper()}_PORT": str(p) for s, p in self.ports.items()},
            **(extra_env or {}),
        }
        self.processes: dict[str, subprocess.Popen] = {}
        # Per-service overrides of `env`, e.g. a data directory of its own for one service.
        self.service_env: dict[str, dict[str, str]] = {}

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def start(self, *services: str, wait: bool = True) -> None:
        for service in services or SERVICES:
            log = open(self.data_dir / f"{service}.log", "ab")
            self.processes[service] = subprocess.Popen(
                [sys.executable, "-m", f"services.{service}"],
                cwd=ROOT, env={**self.env, **self.service_env.get(service, {})}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
            log.close()
        if wait:
            for service in services or SERVICES:
                wait_until(lambda: self.health(service), timeout=15, message=f"{service} to be healthy")

    def health(self, service: str) -> dict:
        response = requests.get(f"{self.url(service)}/health", timeout=1)
        response.raise_for_status()
        return response.json()

    def kill(self, service: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(service)
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)

    def stop(self) -> None:
        for service in list(self.processes):
            self.kill(service, signal.SIGTERM)


# The one HTTP client of the end-to-end tests: the wire API, as a user of the blog calls it.

def create_post(formation: Formation, title: str, session: requests.Session | None = None) -> dict:
    response = (session or requests).post(f"{formation.url('posts')}/posts", json={"title": title}, timeout=5)
    assert response.status_code == 201, response.text
    return response.json()


def create_comment(formation: Formation, post_id: str, content: str) -> list:
    """Comments learns of posts from events: wait until it knows this one, then comment."""
    def attempt():
        response = requests.post(
            f"{formation.url('comments')}/posts/{post_id}/comments", json={"content": content}, timeout=5
        )
        assert response.status_code != 404 or "not known" in response.json()["error"]
        return response if response.status_code == 201 else None

    return wait_until(attempt, message=f"comments to accept a comment on {post_id}").json()


def view(formation: Formation) -> dict:
    """The Query service's read model."""
    return requests.get(f"{formation.url('query')}/posts", timeout=5).json()


def assembled_view(formation: Formation) -> dict:
    """What the Query view must equal: Posts' own posts, each with Comments' own comments on it."""
    posts = requests.get(f"{formation.url('posts')}/posts", timeout=10).json()
    with requests.Session() as session:
        return {
            post_id: {**post, "comments": session.get(
                f"{formation.url('comments')}/posts/{post_id}/comments", timeout=10).json()}
            for post_id, post in posts.items()
        }


def bus_log(formation: Formation, **params) -> list[dict]:
    response = requests.get(f"{formation.url('bus')}/events", params=params, timeout=30)
    response.raise_for_status()
    return response.json()


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() when the request arrived
    event: dict
    status: int  # what the fake answered


class FakeSubscriber:
    """A stand-in subscriber on a free loopback port, for `BLOG_SUBSCRIBERS=name=url`.

    The bus posts it one event per request; `respond(event)` says which status to answer, and may
    block (a hanging subscriber) until `release` is set. `stop()` sets `release` and shuts it down.
    """

    def __init__(self, respond: Callable[[dict], int] = lambda event: 200) -> None:
        self.respond = respond
        self.received: list[Received] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.monotonic()
                event = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                status = fake.respond(event)
                with fake._lock:
                    fake.received.append(Received(arrived, event, status))
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the bus gave up waiting (a hanging subscriber): nothing to answer

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-subscriber", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/events"

    def start(self) -> FakeSubscriber:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def answered(self, status: int) -> list[dict]:
        """The events it answered with `status`, in arrival order."""
        with self._lock:
            return [r.event for r in self.received if r.status == status]

    def arrivals(self, predicate: Callable[[dict], bool]) -> list[Received]:
        with self._lock:
            return [r for r in self.received if predicate(r.event)]
