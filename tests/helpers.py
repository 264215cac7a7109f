"""Test helpers: free ports, waiting for a condition, and real service processes that cannot leak."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import ChainMap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, cached_property, partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from blogctl import polling
from blogctl.bench.load import LoadGenerator, worker_client
from blogctl.client import BlogClient, ServiceError
from blogctl.steps import bring_up
from blogctl.runtime import Runtime, Wiring, make_formation
from blogctl.supervise import free_port
from services.shared import transport as transport_module
from services.shared.config import host_variable
from services.table import SERVICE_TABLE, SERVICES, WRITER_SCHEMAS, load
from services.shared.http import HttpClient, Unreachable
from services.shared.transport import Inspection


ROOT = Path(__file__).resolve().parent.parent


# The one wait-until (blogctl.polling's), counting a service not answering yet or an assertion not yet
# true as "not yet".
wait_until = partial(polling.wait_until, interval=0.02, ignoring=(ServiceError, AssertionError, requests.RequestException))


def port_is_listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# RabbitMQ for the tests that run on both transports: the machine's broker unless told otherwise.
BROKER_URL = os.environ.get("BLOG_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
# Run a shared test body on the HTTP bus and on RabbitMQ (the `transport` fixture skips RabbitMQ without a broker).
TRANSPORTS = ["http", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)]
on_both_transports = pytest.mark.parametrize("transport", TRANSPORTS, indirect=True)


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


# PostgreSQL for the writers' tests: the machine's server unless told otherwise (a database is made per run).
POSTGRES_SERVER = os.environ.get("BLOG_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


@cache
def postgres_missing() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when a server answers at POSTGRES_SERVER."""
    import psycopg

    try:
        psycopg.connect(f"{POSTGRES_SERVER}/postgres", connect_timeout=3).close()
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        return (f"no PostgreSQL server answers at {POSTGRES_SERVER} ({reason}); start one (`pg_ctlcluster "
                "--skip-systemctl-redirect $(ls /etc/postgresql) main start`) or set BLOG_TEST_POSTGRES_URL")
    return None


def postgres_admin(statement: str) -> None:
    """Run one statement on the test server's maintenance database (CREATE/DROP DATABASE cannot run in a transaction)."""
    import psycopg

    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(statement)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new database `blog_test_<random>` on the test server, its URL; dropped on leaving, with any
    connection still open to it."""
    name = f"blog_test_{uuid.uuid4().hex[:12]}"
    postgres_admin(f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        postgres_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def drop_writer_schemas(url: str) -> None:
    """Empty a test database of the writers' schemas, so the next test starts from none."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {', '.join(WRITER_SCHEMAS)} CASCADE")


def apt_install(package: str, installs: Path) -> str | None:
    """Install a Debian package when `installs` is missing and we may (root, apt-get); why not, or None."""
    if installs.exists():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{installs} is not installed: run `apt-get install {package}` (as root) to run these tests"
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (apt + ["update", "-qq"], apt + ["install", "-y", "-qq", package]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"installing {package} failed: {' '.join(command)}: {done.stderr.strip()[-300:]}"
    return None if installs.exists() else f"apt-get installed no {installs}"


@cache
def nginx_missing() -> str | None:
    """Why the gateway tests cannot run here (Debian's nginx, installed here when we may), or None."""
    from blogctl import gateway

    if gateway.nginx_missing() is None:
        return None
    return apt_install("nginx-light", Path("/usr/sbin/nginx")) or gateway.nginx_missing()


@cache
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


class RunningBlog:
    """The services as real processes on free ports, run by blogctl's supervisor (the Procfile's
    commands, a process group each, run state and logs in `<data_dir>/run`) as `blogctl up` runs them,
    and reached through blogctl's client.

    `transport="rabbitmq"`: events go through the broker at `broker_url` under a namespace of this
    formation's own, and the bus process is not started; `remove_broker_objects()` deletes the
    namespace's queues, stream and exchange. `env`, `service_env` (per service) and `launch_prefix`
    (per service, e.g. `ip netns exec HOST`) apply from the next start; `addresses` says where the
    test reaches a service that runs on a test host.
    """

    def __init__(self, data_dir: Path, extra_env: dict[str, str] | None = None, transport: str = "http",
                 broker_url: str = BROKER_URL) -> None:
        self.data_dir = data_dir
        self.transport = transport
        self.broker_url = broker_url
        self.ports = {service: free_port() for service in SERVICES}
        self.namespace = f"test{uuid.uuid4().hex[:10]}"
        broker = ({"BLOG_BROKER_URL": broker_url, "BLOG_BROKER_NAMESPACE": self.namespace} if transport == "rabbitmq"
                  else {"BLOG_BROKER_URL": ""})  # not the machine's setting, if it has one: the HTTP bus
        self.env = {  # blogctl's overrides: on top of the OS environment and .env, as `blogctl up` gives them
            "BLOG_DATA_DIR": str(data_dir),
            "BLOG_HOST": "127.0.0.1",
            **{f"BLOG_{s.upper()}_PORT": str(p) for s, p in self.ports.items()},
            **broker,
            **(extra_env or {}),
        }
        self.service_env: dict[str, dict[str, str]] = {}
        self.launch_prefix: dict[str, list[str]] = {}
        self.addresses: dict[str, str] = {}

    @cached_property
    def runtime(self) -> Runtime:
        """What `blogctl` works with for this formation: its supervisor, and this formation's client."""
        def supervisor(config, procfile, env, **supervision):  # what the test sets in `env` wins, at each start
            return make_formation(config, procfile, ChainMap(self.env, env), **supervision)

        return Runtime(overrides=dict(self.env), procfile=None,  # blogctl's own Procfile, as `blogctl up` runs
                       wiring=Wiring(client=lambda config: self.client, formation=supervisor),
                       service_env=self.service_env, prefix=self.launch_prefix)

    @cached_property
    def client(self) -> BlogClient:
        """blogctl's client, to this formation's ports (and test hosts' addresses, once set)."""
        return BlogClient(load({
            **{f"BLOG_{s.upper()}_PORT": str(p) for s, p in self.ports.items()},
            **{k: v for k, v in self.env.items() if k in ("BLOG_REPLICAS", "BLOG_DATABASE_URL") or k.endswith("_PORT")},
            **{host_variable(name): address for name, address in self.addresses.items()},
        }), timeout=10)

    def new_client(self) -> BlogClient:
        """A client of its own (one connection), for a load worker."""
        return worker_client(self.client.config, timeout=10)

    def url(self, service: str) -> str:
        return self.client.config.url(service)

    @cached_property
    def inspection(self) -> Inspection:
        """The seam's view of this formation's transport: describe, backlog, read the log, reset."""
        return transport_module.from_config(load(self.env))

    @property
    def services(self) -> tuple[str, ...]:
        """The processes this formation runs: a transport's own process (the bus) only when it uses one."""
        process = self.inspection.describe().process
        return tuple(spec.name for spec in SERVICE_TABLE if not spec.bus or spec.name == process)

    def start(self, *services: str, wait: bool = True) -> None:
        """Start `services` (default: all this transport needs) as `blogctl up` does, in the order of need."""
        supervisor = self.runtime.formation
        names = list(services or supervisor.names)
        if wait:
            bring_up(self.runtime, names)
        else:
            for name in names:
                supervisor.start(name)

    def health(self, service: str) -> dict:
        return self.client.health(service)

    def kill(self, service: str, sig: int = signal.SIGKILL) -> None:
        """Signal `service`'s process group (SIGKILL unless told) and wait until it is gone."""
        self.runtime.formation.stop(service, sig)

    def stop(self) -> None:
        if "runtime" in self.__dict__:  # started at least once
            for name in self.runtime.formation.names:
                self.runtime.formation.stop(name)

    # The transport, through the seam: no test asks which one it is

    @contextmanager
    def transport_down(self) -> Iterator[None]:
        """Inside: the transport's process (the bus) SIGKILLed, or the machine's broker stopped. Back on leaving."""
        process = self.inspection.describe().process
        if process is not None:
            self.kill(process)
            try:
                yield
            finally:
                self.start(process)
            return
        if reason := restart_missing():
            pytest.skip(reason)
        try:
            stop_broker()
            yield
        finally:
            start_broker()

    def backlog(self, service: str) -> int | None:
        """Events waiting for `service` at the transport."""
        return next(entry["waiting"] for entry in self.inspection.backlog()
                    if entry.get("service", entry["name"]) == service)

    def logged(self, type: str | None = None) -> list[dict]:
        """The transport's event log, read through (`type` filters it)."""
        return [event.to_dict() for page in self.inspection.iter_log() for event in page
                if type is None or event.type == type]

    def remove_broker_objects(self) -> None:
        """What the tests put in a transport outside the formation (a broker); the bus's log goes with tmp_path."""
        if self.inspection.describe().process is None:
            self.inspection.reset()


# What the end-to-end tests do through blogctl's client, by name.

def writers(formation: RunningBlog, count: int, each: int, write: Callable[[BlogClient, int, int], Any]) -> LoadGenerator:
    """The bench's load generator: `count` workers, each with blogctl's client, calling `write(client, worker, i)`
    `each` times; its `done` counts the writes made, `join` fails on any worker's error."""
    def call(client: BlogClient, worker: int, i: int) -> int:
        write(client, worker, i)
        return 1

    return LoadGenerator(call, threads=count, each=each, client=formation.new_client).start()


def create_post(formation: RunningBlog, title: str) -> dict:
    return formation.client.create_post(title)


def create_comment(formation: RunningBlog, post_id: str, content: str) -> list:
    """Comments learns of posts from events: the client retries while it has not heard of this one."""
    return formation.client.create_comment(post_id, content, wait=10)


def view(formation: RunningBlog) -> dict:
    """The Query service's read model."""
    return formation.client.view()


def assembled_view(formation: RunningBlog) -> dict:
    """What the Query view must equal: Posts' own posts, each with Comments' own comments on it."""
    client = formation.client
    return {post_id: {**post, "comments": client.comments(post_id)} for post_id, post in client.posts().items()}


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


class AckDroppingProxy:
    """A loopback proxy in front of the bus that loses acknowledgements on purpose.

    Point a publisher at it (its `BLOG_BUS_PORT`). Every request is passed to the bus; for every
    `every`-th `POST /events` the bus's answer is read and then thrown away, and the connection
    closed: the bus has committed the events, the publisher never hears so and sends them again.
    """

    def __init__(self, target_port: int, *, every: int) -> None:
        self.target = f"http://127.0.0.1:{target_port}"
        self.every = every
        self.posts = 0
        self.dropped = 0  # answers of the bus that were committed (2xx) and lost
        self._lock = threading.Lock()
        proxy = self
        upstream = HttpClient(timeout=30)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the relay expects

            def _forward(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                try:
                    answer = upstream.request(method, proxy.target + self.path, body=body, headers=headers)
                except Unreachable:
                    self.close_connection = True  # the bus is down: so is the way to it
                    return
                if method == "POST" and proxy._lose(answer.status_code):
                    self.close_connection = True  # committed by the bus, never acknowledged
                    return
                self.send_response(answer.status_code)
                for name in ("Content-Type", "ETag", "X-Total-Count"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ack-dropping-proxy", daemon=True)

    def _lose(self, status: int) -> bool:
        with self._lock:
            self.posts += 1
            lose = 200 <= status < 300 and self.posts % self.every == 0
            self.dropped += lose
            return lose

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> AckDroppingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
