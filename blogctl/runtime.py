"""What a command works with: the configuration, the HTTP client and the supervisor, built from the global options.

The services' configuration module is the only port table: `--host`, `--port` and `--data-dir`
become `BLOG_*` variables and go through `config.load()` like everything else.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

import typer

from services import table
from services.shared import config as config_module
from services.shared import transport as transport_module
from services.shared.config import Config, service_of
from services.table import SERVICE_TABLE, SERVICES
from services.shared.transport import Inspection

from . import gateway
from .client import BlogClient, ServiceError
from .errors import BlogctlError
from .formation import Formation, PortTaken, RunLock, child_environment, listening, read_dotenv
from .render import err_console, text
from .restarts import RESTARTS_FILE

# The formation: the project's top-level Procfile, which the package carries as `blogctl/Procfile`
# (in the source tree a link to it; in a built package a copy), so an installed blogctl runs anywhere.
PROCFILE = Path(__file__).with_name("Procfile")

# Where `up` records the settings that shape the formation (`--broker`, `--replicas`, `--database`), so later
# commands on the same data directory (status, kill, start, down) see the same formation.
FORMATION_RECORD = "formation.json"
RECORDED_SETTINGS = ("BLOG_BROKER_URL", "BLOG_BROKER_NAMESPACE", "BLOG_REPLICAS", "BLOG_DATABASE_URL", "BLOG_GATEWAY")


def make_formation(config: Config, procfile: Path, env: Mapping[str, str], **supervision) -> Formation:
    """The supervisor for `config`'s formation; `supervision` is passed on (`identify`, `service_env`, `prefix`)."""
    addresses = {name: (urlsplit(config.url(name)).hostname, port) for name, port in config.ports.items()}
    carrier = inspect(config).describe()
    skipped = {  # a transport's own process (the bus) runs only when the transport in use needs it
        spec.name: f"events go through {carrier.name} ({carrier.url}), there is no {spec.name} process"
        for spec in SERVICE_TABLE if spec.bus and spec.name != carrier.process
    }
    # The packaged Procfile's services run in the data directory; another Procfile's in its own directory.
    cwd = config.data_dir if procfile == PROCFILE else None
    replicas = {name: service_of(name) for name in config.instances if name != service_of(name)}  # query.2: query
    extra = {}
    if config.gateway:  # nginx in front, started after every service (it is no entry of the service table)
        extra[gateway.PROCESS] = gateway.COMMAND
        addresses[gateway.PROCESS] = gateway.address(config)
    return Formation(procfile, run_dir=config.run_dir, env=env, addresses=addresses, skipped=skipped, cwd=cwd,
                     replicas=replicas, extra=extra, **supervision)


@dataclass(frozen=True)
class Listener:
    """Who answers `GET /health` on a service's port."""

    health: dict | None = None  # the answer, when a service of ours gave it
    holder: str | None = None  # who it is, in words ("posts (pid 12)", "another program (...)"); None: nobody
    ours: bool = False  # the process of that name serving this data directory
    problem: str | None = None  # why it is not healthy although it answers (its storage, say)

    @property
    def pid(self) -> int | None:
        return self.health.get("pid") if self.health else None


def inspect(config: Config) -> Inspection:
    """The configured transport, as tools see it: describe, backlog, read the log, reset."""
    return transport_module.from_config(config)


@dataclass(frozen=True)
class Wiring:
    """Factories for a command's collaborators. Tests hand in fakes: `CliRunner().invoke(app, args, obj=Wiring(...))`."""

    client: Callable[[Config], BlogClient] = BlogClient
    formation: Callable[..., Formation] = make_formation  # (config, procfile, env, **supervision), as make_formation
    inspection: Callable[[Config], Inspection] = inspect
    # After `up --detach`, starts what watches the formation (None: `blogctl supervise`, supervisor.py) and says who
    # watches; tests whose services run in-process hand in one that starts nothing.
    detach: Callable[[Runtime], Any] | None = None


class Runtime:
    """Built lazily, so `--help` works even when a `BLOG_*` variable is broken.

    `service_env` and `prefix` (per process: more environment, a command to run under) go to the
    supervisor, which reads them at each start; the bench and the tests set them.
    """

    def __init__(self, *, overrides: dict[str, str], procfile: Path | None, wiring: Wiring | None = None,
                 service_env: dict[str, dict[str, str]] | None = None,
                 prefix: dict[str, list[str]] | None = None) -> None:
        self.overrides = overrides
        self.procfile = procfile or PROCFILE
        self.wiring = wiring or Wiring()
        self.service_env = service_env if service_env is not None else {}
        self.prefix = prefix if prefix is not None else {}

    @cached_property
    def dotenv(self) -> dict[str, str]:
        """What `.env` in the current directory says, as read for `env`."""
        return read_dotenv(Path.cwd())

    @cached_property
    def env(self) -> dict[str, str]:
        env = child_environment(Path.cwd(), self.overrides, self.dotenv)
        # One rule for --data-dir and BLOG_DATA_DIR: relative to the current directory; the services get it absolute.
        env["BLOG_DATA_DIR"] = os.path.abspath(env.get("BLOG_DATA_DIR") or ".blog")
        # A formation started with `up --broker` or `--replicas` keeps them; the environment says otherwise only
        # for what it sets itself.
        recorded = self._recorded(Path(env["BLOG_DATA_DIR"]) / "run")
        if env.get("BLOG_BROKER_URL"):
            recorded = {k: v for k, v in recorded.items() if not k.startswith("BLOG_BROKER_")}
        env.update({k: v for k, v in recorded.items() if not env.get(k)})
        return env

    @staticmethod
    def _recorded(run_dir: Path) -> dict[str, str]:
        try:
            recorded = json.loads((run_dir / FORMATION_RECORD).read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in recorded.items() if k in RECORDED_SETTINGS and isinstance(v, str)} if isinstance(
            recorded, dict) else {}

    def use(self, setting: str, value: str) -> None:
        """Run the formation with `setting` (`up --broker` sets BLOG_BROKER_URL, `--replicas` BLOG_REPLICAS)."""
        self.overrides[setting] = value
        for name in ("dotenv", "env", "config", "client", "formation", "inspection"):
            self.__dict__.pop(name, None)

    def reread(self) -> Runtime:
        """This formation as a `blogctl up` with the same options would see it if started now: `.env` (from the
        current directory) and the Procfile read again, the recorded settings too; this process's own environment
        and options stay. BlogctlError when what it reads is wrong (a bad setting, no Procfile)."""
        fresh = Runtime(overrides=dict(self.overrides), procfile=self.procfile, wiring=self.wiring,
                        service_env=self.service_env, prefix=self.prefix)
        _ = fresh.formation  # read now: a bad setting or Procfile is said before anything changes
        return fresh

    def record(self) -> None:
        """Remember the settings that shape this formation for later commands (it may hold a broker's
        password: owner-only)."""
        path = self.config.run_dir / FORMATION_RECORD
        settings = {k: self.env[k] for k in RECORDED_SETTINGS if self.env.get(k)}
        if not settings:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(settings, out)

    def forget(self) -> None:
        for name in (FORMATION_RECORD, RESTARTS_FILE):
            (self.config.run_dir / name).unlink(missing_ok=True)

    @cached_property
    def config(self) -> Config:
        try:
            return table.load(self.env)
        except config_module.ConfigError as exc:
            raise BlogctlError(f"bad configuration: {exc} — fix the variable or pass --host/--port") from None

    @cached_property
    def client(self) -> BlogClient:
        return self.wiring.client(self.config)

    @cached_property
    def formation(self) -> Formation:
        return self.wiring.formation(
            self.config, self.procfile, self.env, service_env=self.service_env, prefix=self.prefix,
            identify=self.holder,  # names what holds a port a start needs
        )

    def holder(self, name: str) -> str | None:
        """Who answers on `name`'s port: a service says who it is; on another process's port (the
        gateway's), whatever listens is someone else."""
        if name in self.config.ports:
            return self.listener(name).holder
        address = self.formation.addresses.get(name)
        return "another program" if address and listening(*address) else None

    def exclusive(self, command: str) -> RunLock:
        """Hold this while changing the formation: one blogctl at a time per data directory."""
        def waiting(holder: str) -> None:
            err_console.print(text(f"waiting for another blogctl ({holder}) at work on {self.config.data_dir}…",
                                   "yellow"), soft_wrap=True)

        return RunLock(self.config.data_dir, command, on_wait=waiting)

    @cached_property
    def inspection(self) -> Inspection:
        """The transport that carries the events, as the seam shows it (whichever it is)."""
        return self.wiring.inspection(self.config)

    def listener(self, name: str) -> Listener:
        """Ask `name`'s port who answers there: each service says its name, pid and data directory."""
        problem = None
        try:
            health = self.client.health(name)
        except ServiceError as exc:
            if exc.body is None:
                return Listener(holder=exc.holder)
            health, problem = exc.body, str(exc.body.get("error"))  # it answers, but is not well
        service, pid, data_dir = (health.get(key) for key in ("service", "pid", "data_dir"))
        if not isinstance(service, str) or not isinstance(pid, int):
            return Listener(holder="another program (its /health names no service and pid)")
        process = health.get("instance") or service  # a replica answers as `query.2`
        # The formation's data directory, unless this process was given one of its own.
        expected = self.service_env.get(name, {}).get("BLOG_DATA_DIR") or str(self.config.data_dir)
        ours = process == name and data_dir == expected
        holder = f"{process} (pid {pid})" + ("" if data_dir == expected else f" of {data_dir}")
        return Listener(health=health, holder=holder, ours=ours, problem=problem)

    def is_healthy(self, name: str) -> bool:
        """True once the answer on `name`'s port comes from the process started for it; PortTaken when
        someone else answers there (the service cannot have its port)."""
        if name not in self.config.ports:  # a process that is not one of our services (the gateway, another entry)
            address = self.formation.addresses.get(name)  # listening there, where it has a known port
            return self.formation.state(name).running and (address is None or listening(*address))
        listener = self.listener(name)
        if listener.holder is None:
            return False
        if listener.ours and self.formation.owns(name, listener.pid):
            return listener.problem is None
        raise PortTaken(name, self.config.ports[name], listener.holder)


def runtime(ctx: typer.Context) -> Runtime:
    return ctx.find_root().obj


def port_overrides(values: list[str]) -> dict[str, str]:
    """`--port posts=5100` as `BLOG_POSTS_PORT=5100`."""
    overrides = {}
    for value in values:
        name, sep, port = value.partition("=")
        if not sep or name not in SERVICES or not port.isdigit():
            raise typer.BadParameter(f"{value!r} is not SERVICE=PORT with SERVICE one of {', '.join(SERVICES)}")
        overrides[f"BLOG_{name.upper()}_PORT"] = port
    return overrides
