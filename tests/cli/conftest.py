"""CliRunner tests: the real commands against the real services' apps, in this process.

`InProcessBlog` wires Posts, Comments and Query through the in-memory bus and mirrors every
event into the real bus app, so `events` and `status` read a real log and real cursors. Its
`http` stands in for the services' `HttpClient` (by port, to each app's Flask test client), and
`FakeFormation` stands in for the supervisor: "starting" a service makes it reachable.
"""
from __future__ import annotations

import os

# Stable output: no colour, no terminal detection, wide enough that nothing wraps (see FACTS.md).
for _name in ("FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "TTY_COMPATIBLE", "NO_COLOR"):
    os.environ.pop(_name, None)
os.environ["_TYPER_FORCE_DISABLE_TERMINAL"] = "1"
os.environ["COLUMNS"] = "200"

import json  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from blogctl.cli import app  # noqa: E402
from blogctl.client import BlogClient  # noqa: E402
from blogctl.formation import ProcessState, ServiceFailed  # noqa: E402
from blogctl.runtime import Wiring  # noqa: E402
from blogctl.supervisor import Watching  # noqa: E402
from services.bus.app import create_app as create_bus  # noqa: E402
from services.shared.config import Config  # noqa: E402
from services.shared.http import Answer, Unreachable  # noqa: E402
from services.shared.transport import InMemoryBus  # noqa: E402
from services.table import SERVICES, load  # noqa: E402
from tests.in_process import create_apps, relay  # noqa: E402
from services.shared.transport.bus import HttpTransport  # noqa: E402


class InProcessHttp:
    """The services' `HttpClient`, answered by the apps' test clients, or refused like a closed port: what
    blogctl's client and the transport seam's inspection read through."""

    def __init__(self, blog: InProcessBlog, config: Config) -> None:
        self.blog = blog
        self.by_port = {port: name for name, port in config.ports.items()}

    def request(self, method: str, url: str, *, body=None, headers=None, params=None, timeout=None) -> Answer:
        parts = urlsplit(url)
        service = self.by_port.get(parts.port)
        if service not in self.blog.running:
            raise Unreachable(f"connection refused: {url}")
        answer = self.blog.clients[service].open(
            parts.path, method=method, query_string=params or parts.query, data=body, headers=dict(headers or {}))
        self.blog.relay()  # as the relay threads would, meanwhile
        return Answer(answer.status_code, answer.get_data(), answer.headers)

    def close(self) -> None:
        pass


class InProcessBlog:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.config = load({"BLOG_DATA_DIR": str(data_dir)})
        self.bus = InMemoryBus()
        self.apps = {**create_apps(self.config, self.bus), "bus": create_bus(self.config)}
        self.clients = {name: app.test_client() for name, app in self.apps.items()}
        # The real bus app logs what the in-memory bus carried, so `events` shows a real log.
        self.bus.subscribe("bus-log", lambda events: self.clients["bus"].post(
            "/events", json=[{k: v for k, v in e.to_dict().items() if k != "seq"} for e in events]))
        self.running: set[str] = set(SERVICES)
        self.formation = FakeFormation(self, data_dir / "run")

    def relay(self) -> None:
        """Move outboxes to the bus now, as the relay threads would (unless the bus is down)."""
        self.bus.down = "bus" not in self.running
        if not self.bus.down:
            relay({name: app for name, app in self.apps.items() if name in self.running})

    def wiring(self) -> Wiring:
        return Wiring(
            client=lambda config: BlogClient(config, http=InProcessHttp(self, config)),
            formation=lambda config, procfile, env, **supervision: self.formation,
            inspection=lambda config: HttpTransport(config.url("bus"), http=InProcessHttp(self, config)),
            detach=lambda rt: Watching(os.getpid(), "supervise"),  # the services are in this process: nothing to start
        )


class FakeFormation:
    """The supervisor's interface over `InProcessBlog.running`; logs are real files."""

    def __init__(self, blog: InProcessBlog, run_dir: Path) -> None:
        self.blog = blog
        self.run_dir = run_dir
        self.names = list(SERVICES)
        self.pids = {name: 1000 + i for i, name in enumerate(self.names)}
        self.broken: set[str] = set()  # services that will not come up
        self.service_env: dict[str, dict[str, str]] = {}  # as the supervisor's: per-process environment
        self.addresses: dict[str, tuple[str, int]] = {}  # as the supervisor's: where a process without a service port listens
        run_dir.mkdir(parents=True, exist_ok=True)

    def check(self, names):
        assert set(names) <= set(self.names)

    def strays(self) -> list[str]:
        return []  # every process it runs is one of its names

    def owns(self, name: str, pid: int) -> bool:
        return name in self.blog.running  # every app answers with this test's pid

    def state(self, name: str) -> ProcessState:
        if name in self.blog.running:
            return ProcessState(name, "running", self.pids[name], time.time() - 5)
        return ProcessState(name, "stopped")

    def states(self):
        return [self.state(name) for name in self.names]

    def start(self, name: str) -> ProcessState:
        self.check([name])
        if name not in self.blog.running:
            self.pids[name] += 100
            self._log(name, "--- starting ---")
            if name in self.broken:
                self._log(name, f"{name}: cannot listen on 127.0.0.1: address in use")
            else:
                self.blog.running.add(name)
        return self.state(name)

    def stop(self, name: str, sig: int = signal.SIGTERM, grace: float = 5.0) -> ProcessState:
        before = self.state(name)
        if before.running:
            self._log(name, f"--- stopped with {signal.Signals(sig).name} ---")
        self.blog.running.discard(name)
        return before

    def wait_healthy(self, names, is_healthy, timeout=20.0) -> None:
        for name in names:
            if not is_healthy(name):
                raise ServiceFailed(name, "it exited with code 1", self.log_path(name), self.tail(name))

    def exit_code(self, name):
        return None

    def log_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def tail(self, name: str, lines: int = 15) -> list[str]:
        path = self.log_path(name)
        return path.read_text().splitlines()[-lines:] if path.exists() and lines else []

    def _log(self, name: str, line: str) -> None:
        with open(self.log_path(name), "a") as log:
            log.write(line + "\n")


@pytest.fixture
def blog(tmp_path) -> InProcessBlog:
    return InProcessBlog(tmp_path / "data")


class Cli:
    def __init__(self, blog: InProcessBlog | None) -> None:
        self.blog = blog
        self.runner = CliRunner()

    def __call__(self, *args: str, wiring: Wiring | None = None, env: dict | None = None):
        obj = wiring or (self.blog.wiring() if self.blog else None)
        if self.blog:  # the run directory (its lock) beside the in-process services' data; the services are
            # in this process, so nothing restarts them
            env = {"BLOG_DATA_DIR": str(self.blog.config.data_dir), "BLOG_RESTART": "no", **(env or {})}
        return self.runner.invoke(app, list(args), obj=obj, env=env, prog_name="blogctl")

    def ok(self, *args: str):
        result = self(*args)
        assert result.exit_code == 0, (result.output, result.stderr, result.exception)
        return result

    def json(self, *args: str):
        result = self.ok(*args, "--json")
        return json.loads(result.stdout)


@pytest.fixture
def cli(blog) -> Cli:
    return Cli(blog)
