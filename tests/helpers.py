"""Test helpers: free ports, waiting for a condition, and real service processes that cannot leak."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

import pytest
import requests

from services.shared.config import CONSUMERS, DEFAULT_SUBSCRIBERS, SERVICES

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


# RabbitMQ for the tests that run on both transports: the machine's broker unless told otherwise.
BROKER_URL = os.environ.get("BLOG_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
# Run a shared test body on the HTTP bus and on RabbitMQ (the `transport` fixture skips RabbitMQ without a broker).
TRANSPORTS = ["http", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)]
on_both_transports = pytest.mark.parametrize("transport", TRANSPORTS, indirect=True)


@cache
def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@contextmanager
def tmpfs(mount_point: Path, options: str = "size=1m") -> Iterator[Path]:
    """A small tmpfs mounted at `mount_point` (the test skips where mounting is not permitted); unmounted on leaving."""
    mount_point.mkdir(exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) on this machine: the full and read-only disk tests need one")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({result.stderr.strip()}): needs root or CAP_SYS_ADMIN")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=True)


def broker_missing() -> str | None:
    """Why the RabbitMQ tests cannot run here, or None when a broker answers at BROKER_URL."""
    from kombu import Connection

    conn = Connection(BROKER_URL, connect_timeout=2)
    try:
        conn.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001 - any failure means: no broker for the tests
        return (f"no RabbitMQ broker answers at {conn.as_uri()} ({type(exc).__name__}: {exc}); "
                "start one (`rabbitmq-server -detached`) or set BLOG_TEST_BROKER_URL")
    finally:
        conn.release()
    return None


def rabbitmqctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout)


def restart_missing() -> str | None:
    """Why this test cannot stop and start the broker, or None."""
    if BROKER_URL.split("@")[-1].split("/")[0] not in ("127.0.0.1:5672", "localhost:5672"):
        return "the test broker is not the local one: only the local broker is restarted"
    if shutil.which("rabbitmqctl") is None:
        return "no rabbitmqctl on this machine to stop and start the broker"
    return None


def stop_broker() -> None:
    """Stop the RabbitMQ application (the Erlang node stays up to start it again)."""
    result = rabbitmqctl("stop_app")
    assert result.returncode == 0, result.stderr


def start_broker() -> None:
    """Start the RabbitMQ application and wait, bounded, until it accepts work."""
    result = rabbitmqctl("start_app")
    assert result.returncode == 0, result.stderr
    wait_until(lambda: rabbitmqctl("-q", "await_startup", "--timeout", "5").returncode == 0, timeout=60,
               interval=0.2, message="RabbitMQ to finish starting")


class Formation:
    """The services as real processes on free ports, each in its own process group.

    `transport="rabbitmq"`: events go through the broker at BROKER_URL under a namespace of
    this formation's own, and the bus process is not started; `remove_broker_objects()` deletes
    the namespace's queues, stream and exchange.
    """

    def __init__(self, data_dir: Path, extra_env: dict[str, str] | None = None, transport: str = "http",
                 broker_url: str = BROKER_URL) -> None:
        self.data_dir = data_dir
        self.transport = transport
        self.broker_url = broker_url
        self.ports = {service: free_port() for service in SERVICES}
        self.namespace = f"test{uuid.uuid4().hex[:10]}"
        broker = {"BLOG_BROKER_URL": broker_url, "BLOG_BROKER_NAMESPACE": self.namespace}
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("BLOG_BROKER_URL", "BLOG_BROKER_NAMESPACE")},
            "PYTHONUNBUFFERED": "1",
            "BLOG_DATA_DIR": str(data_dir),
            "BLOG_HOST": "127.0.0.1",
            **{f"BLOG_{s.upper()}_PORT": str(p) for s, p in self.ports.items()},
            **(broker if transport == "rabbitmq" else {}),
            **(extra_env or {}),
        }
        self.processes: dict[str, subprocess.Popen] = {}
        # Per-service overrides of `env`, e.g. a data directory of its own for one service.
        self.service_env: dict[str, dict[str, str]] = {}
        # Per-service command prefix, e.g. `ip netns exec HOST` to run a service on a test host,
        # and where the test then reaches it.
        self.launch_prefix: dict[str, list[str]] = {}
        self.addresses: dict[str, str] = {}

    def url(self, service: str) -> str:
        return f"http://{self.addresses.get(service, '127.0.0.1')}:{self.ports[service]}"

    @property
    def services(self) -> tuple[str, ...]:
        return SERVICES if self.transport == "http" else DEFAULT_SUBSCRIBERS

    def start(self, *services: str, wait: bool = True) -> None:
        if not services and self.transport == "rabbitmq":
            self.start(*CONSUMERS, wait=True)  # consumers first, so their queues exist
            self.start(*(name for name in DEFAULT_SUBSCRIBERS if name not in CONSUMERS), wait=wait)
            return
        for service in services or SERVICES:
            log = open(self.data_dir / f"{service}.log", "ab")
            self.processes[service] = subprocess.Popen(
                [*self.launch_prefix.get(service, []), sys.executable, "-m", f"services.{service}"],
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

    # What differs by transport, behind one name each

    def rabbit(self):
        from services.shared.transport.rabbitmq import RabbitTransport

        return RabbitTransport(self.broker_url, namespace=self.namespace)

    @contextmanager
    def transport_down(self) -> Iterator[None]:
        """Inside: the bus SIGKILLed, or the machine's broker stopped. Always back on leaving."""
        if self.transport == "http":
            self.kill("bus")
            try:
                yield
            finally:
                self.start("bus")
            return
        if reason := restart_missing():
            pytest.skip(reason)
        try:
            stop_broker()
            yield
        finally:
            start_broker()

    def backlog(self, service: str) -> int:
        """Events waiting for `service`: its lag at the bus, or the messages ready in its queue."""
        if self.transport == "http":
            return next(s["lag"] for s in self.health("bus")["subscribers"] if s["name"] == service)
        queue = next(q for q in self.rabbit().queues() if q["service"] == service)
        return queue["messages"]

    def logged(self, **params) -> list[dict]:
        """The event log: the bus's, or the broker's stream (`type` filters either)."""
        if self.transport == "http":
            return bus_log(self, **params)
        log, transport = [], self.rabbit()
        while True:
            page = transport.read_log(after=len(log), limit=1000)
            log += [event.to_dict() for event in page]
            if len(page) < 1000:
                break
        return [e for e in log if "type" not in params or e["type"] == params["type"]]

    def remove_broker_objects(self) -> None:
        if self.transport == "rabbitmq":
            self.rabbit().reset()


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
